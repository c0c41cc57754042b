"""Aggregate ids of the event log: name-based (uuid5), so the same name always
gives the same id and nothing random is drawn.

Every aggregate of the history is a singleton or is keyed by a number CKE
already has (the record id), so its id is ``uuid5(NAMESPACE, name)`` with a
readable name such as ``cke/records/0000000000000001``.
"""

from __future__ import annotations

from typing import Final
from uuid import NAMESPACE_URL, UUID, uuid5

__all__ = [
    "CLUSTER_CONFIGURATION_ID",
    "DECISION_LOG_ID",
    "LEADERSHIP_ID",
    "NAMESPACE",
    "REBOOT_QUEUE_ID",
    "RECORD_COUNTER_ID",
    "REPAIR_QUEUE_ID",
    "STORAGE_VERSION_ID",
    "UUID",
    "history_id",
    "record_id",
]

#: The namespace of every id of the history.
NAMESPACE: Final = uuid5(NAMESPACE_URL, "urn:cke-py:history")


def history_id(*parts: str) -> UUID:
    """The id named ``cke/<parts...>``."""
    return uuid5(NAMESPACE, "/".join(("cke", *parts)))


def record_id(number: int) -> UUID:
    """The id of operation record ``number`` (named like its etcd key, §E.1)."""
    return history_id("records", f"{number:016x}")


CLUSTER_CONFIGURATION_ID: Final = history_id("cluster-configuration")
RECORD_COUNTER_ID: Final = history_id("records")
REBOOT_QUEUE_ID: Final = history_id("reboots")
REPAIR_QUEUE_ID: Final = history_id("repairs")
LEADERSHIP_ID: Final = history_id("leader")
DECISION_LOG_ID: Final = history_id("decisions")
STORAGE_VERSION_ID: Final = history_id("config-version")
