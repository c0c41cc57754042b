"""Reboot-queue and repair-queue entries (§F), in CKE's JSON form.

The same values are stored under ``reboots/data/<%016x>`` and
``repairs/data/<%016x>`` in etcd (§E.1), listed by ``ckecli reboot-queue list``
and embedded in the cluster status (``cke_core.status``), so their wire form is
CKE's own:

* keys are CKE's snake_case JSON names;
* ``index`` is an integer written as a decimal *string* (Go's ``json:",string"``):
  ``"index": "12"``; a bare number is rejected, as CKE rejects it;
* statuses are lower-case words; anything else is an error naming the choices;
* times are RFC 3339 strings in UTC (``2024-05-01T10:00:00Z``, fractional
  seconds kept to the microsecond). Go's zero ``time.Time``
  (``0001-01-01T00:00:00Z``) means "never" and is the default, so "is the
  backoff over?" is an ordinary comparison without a None case.

The codec (``cke_core.codec``) handles enums, times and string-encoded
integers for every model.
"""

from __future__ import annotations

import datetime
import enum
from typing import Any

import attrs

from cke_core.fields import INT_AS_STRING
from cke_core.timefmt import UTC, ZERO_TIME, to_utc

__all__ = ["UTC", "ZERO_TIME"]


class RebootStatus(enum.StrEnum):
    """``RebootQueueEntry.status`` (§F.1)."""

    QUEUED = "queued"
    DRAINING = "draining"
    REBOOTING = "rebooting"
    CANCELLED = "cancelled"


class RepairStatus(enum.StrEnum):
    """``RepairQueueEntry.status`` (§F.2)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RepairStepStatus(enum.StrEnum):
    """``RepairQueueEntry.step_status`` (§F.2)."""

    WAITING = "waiting"
    DRAINING = "draining"
    WATCHING = "watching"


def time_field() -> Any:
    """A UTC time field defaulting to Go's zero time."""
    return attrs.field(default=ZERO_TIME, converter=to_utc)


def index_field() -> Any:
    """CKE writes entry indices as decimal strings (Go's ``json:",string"``)."""
    return attrs.field(default=0, metadata={INT_AS_STRING: True})


@attrs.frozen
class RebootQueueEntry:
    """One entry of the reboot queue (§F.1). ``node`` is an address of cluster.yml."""

    index: int = index_field()
    node: str = ""
    status: RebootStatus = RebootStatus.QUEUED
    last_transition_time: datetime.datetime = time_field()
    drain_backoff_count: int = 0
    drain_backoff_expire: datetime.datetime = time_field()

    @property
    def is_processing(self) -> bool:
        """Draining or rebooting: the node is taken out of service by the queue."""
        return self.status in (RebootStatus.DRAINING, RebootStatus.REBOOTING)

    def backoff_expired(self, now: datetime.datetime) -> bool:
        """The drain backoff is over (CKE: ``!DrainBackOffExpire.After(now)``)."""
        return self.drain_backoff_expire <= now

    def is_drainable(self, now: datetime.datetime) -> bool:
        """Queued with its drain backoff over: a candidate for the next drain."""
        return self.status is RebootStatus.QUEUED and self.backoff_expired(now)


@attrs.frozen
class RepairQueueEntry:
    """One entry of the repair queue (§F.2).

    ``nodename`` is not the operator's input: observation refills it from
    cluster.yml every cycle (empty when the address is not in the cluster).
    """

    index: int = index_field()
    address: str = ""
    nodename: str = ""
    serial: str = ""
    machine_type: str = ""
    operation: str = ""
    status: RepairStatus = RepairStatus.QUEUED
    step: int = 0
    step_status: RepairStepStatus = RepairStepStatus.WAITING
    deleted: bool = False
    last_transition_time: datetime.datetime = time_field()
    drain_backoff_count: int = 0
    drain_backoff_expire: datetime.datetime = time_field()

    @property
    def is_finished(self) -> bool:
        """Succeeded or failed (CKE's ``HasFinished``); finished entries persist."""
        return self.status in (RepairStatus.SUCCEEDED, RepairStatus.FAILED)

    @property
    def is_processing(self) -> bool:
        return self.status is RepairStatus.PROCESSING

    @property
    def is_in_cluster(self) -> bool:
        """The address belongs to a node of cluster.yml (CKE's ``IsInCluster``)."""
        return self.nodename != ""

    def backoff_expired(self, now: datetime.datetime) -> bool:
        """The drain backoff is over (CKE: ``!DrainBackOffExpire.After(now)``)."""
        return self.drain_backoff_expire <= now
