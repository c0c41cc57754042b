"""CKE's ``config-version`` key (§E.1): the version of the stored data layout.

A missing key means ``"1"`` (clusters that predate the ``etcd-added-member``
volume); the ``upgrade`` operation marks the members and sets ``"2"``. It is
its own singleton because nothing else changes with it.
"""

from __future__ import annotations

import datetime

from cke_core.history.base import HistoryAggregate, HistoryError, event_time
from cke_core.history.ids import STORAGE_VERSION_ID
from cke_core.status import DEFAULT_CONFIG_VERSION

__all__ = ["StorageVersion"]


class StorageVersion(HistoryAggregate):
    """The ``config-version`` singleton (id ``STORAGE_VERSION_ID``)."""

    class Created(HistoryAggregate.Created):
        pass

    class VersionSet(HistoryAggregate.Event):
        version: str

        def apply(self, aggregate: StorageVersion) -> None:
            aggregate.config_version = self.version

    def __init__(self) -> None:
        self.config_version = DEFAULT_CONFIG_VERSION

    @classmethod
    def create(cls, at: datetime.datetime) -> StorageVersion:
        return cls._create(cls.Created, id=STORAGE_VERSION_ID, timestamp=event_time(at))

    def set_version(self, version: str, at: datetime.datetime) -> bool:
        """Set ``config-version``; False (and no event) when it already is ``version``."""
        if not isinstance(version, str) or not version.isdigit():
            raise HistoryError(f"config-version must be a decimal string, got {version!r}")
        if version == self.config_version:
            return False
        self.trigger_event(self.VersionSet, timestamp=event_time(at), version=version)
        return True

    def etcd_keys(self) -> dict[str, str]:
        return {"config-version": self.config_version}
