"""Operation records (§E.3) as aggregates: CKE's lifecycle, CKE's record JSON.

One ``OperationRecord`` per operation run, keyed by its record id; ids come
from the ``RecordCounter`` singleton (CKE's ``records`` key: the next id), so
they increase by one from 1. The lifecycle is CKE's ``runOp``::

    new --command_started--> running --command_started--> running ...
    new | running --cancelled(error)--> cancelled
    running --completed(info)--> completed

``completed`` and ``cancelled`` are final. Anything else raises
``TransitionError`` and records nothing. CKE keeps only the newest 1,000
records in etcd; here every record stays (``etcd_key`` and ``record_view``
give what CKE would store).
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Sequence
from typing import Any, Final

from cke_core.history.base import (
    HistoryAggregate,
    HistoryError,
    TransitionError,
    compact_json,
    event_time,
)
from cke_core.history.ids import RECORD_COUNTER_ID, record_id
from cke_core.ops.base import Operation
from cke_core.timefmt import ZERO_TIME, format_rfc3339

__all__ = [
    "FIRST_RECORD_ID",
    "OperationRecord",
    "RecordCounter",
    "RecordStatus",
    "record_key",
]

#: CKE's first record id (the ``records`` key is missing: 1).
FIRST_RECORD_ID: Final = 1


class RecordStatus(enum.StrEnum):
    NEW = "new"
    RUNNING = "running"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


_FINAL: Final = frozenset({RecordStatus.CANCELLED, RecordStatus.COMPLETED})


def record_key(number: int) -> str:
    """The etcd key CKE stores record ``number`` under (§E.1)."""
    return f"records/{number:016x}"


class RecordCounter(HistoryAggregate):
    """CKE's ``records`` key: the next record id. A singleton."""

    class Created(HistoryAggregate.Created):
        pass

    class Allocated(HistoryAggregate.Event):
        record_id: int

        def apply(self, aggregate: RecordCounter) -> None:
            aggregate.next_id = self.record_id + 1

    def __init__(self) -> None:
        self.next_id = FIRST_RECORD_ID

    @classmethod
    def create(cls, at: datetime.datetime) -> RecordCounter:
        return cls._create(cls.Created, id=RECORD_COUNTER_ID, timestamp=event_time(at))

    def allocate(self, at: datetime.datetime) -> int:
        """Take the next record id."""
        number = self.next_id
        self.trigger_event(self.Allocated, timestamp=event_time(at), record_id=number)
        return number

    def etcd_keys(self) -> dict[str, str]:
        return {"records": str(self.next_id)}


class OperationRecord(HistoryAggregate):
    """One operation's record (§E.3)."""

    class Registered(HistoryAggregate.Created):
        record_id: int
        operation: str
        targets: list[str]
        decision: int

    class CommandStarted(HistoryAggregate.Event):
        name: str
        target: str

        def apply(self, aggregate: OperationRecord) -> None:
            aggregate.status = RecordStatus.RUNNING.value
            aggregate.command = {"name": self.name, "target": self.target}

    class Completed(HistoryAggregate.Event):
        info: str

        def apply(self, aggregate: OperationRecord) -> None:
            aggregate.status = RecordStatus.COMPLETED.value
            aggregate.info = self.info
            aggregate.end_at = self.timestamp

    class Cancelled(HistoryAggregate.Event):
        error: str

        def apply(self, aggregate: OperationRecord) -> None:
            aggregate.status = RecordStatus.CANCELLED.value
            aggregate.error = self.error
            aggregate.end_at = self.timestamp

    def __init__(self, record_id: int, operation: str, targets: list[str], decision: int) -> None:
        self.record_id = record_id
        self.operation = operation
        self.targets = list(targets)
        #: The position of the decision (``DecisionRecorded``) that chose the operation; 0: none.
        self.decision = decision
        self.status = RecordStatus.NEW.value
        self.command = {"name": "", "target": ""}
        self.info = ""
        self.error = ""
        self.end_at: datetime.datetime | None = None

    # --- commands ---------------------------------------------------------------

    @classmethod
    def register(
        cls,
        number: int,
        operation: str,
        targets: Sequence[str],
        at: datetime.datetime,
        *,
        decision: int = 0,
    ) -> OperationRecord:
        """A new record (status ``new``, start-at = ``at``)."""
        if isinstance(number, bool) or not isinstance(number, int) or number < FIRST_RECORD_ID:
            raise HistoryError(f"record ids are integers from {FIRST_RECORD_ID}, got {number!r}")
        if not operation:
            raise HistoryError("a record needs the operation's name")
        if isinstance(targets, str) or not all(isinstance(t, str) for t in targets):
            raise HistoryError(f"targets must be a list of strings, got {targets!r}")
        return cls._create(
            cls.Registered,
            id=record_id(number),
            timestamp=event_time(at),
            record_id=number,
            operation=operation,
            targets=list(targets),
            decision=decision,
        )

    @classmethod
    def for_operation(
        cls, number: int, op: Operation, at: datetime.datetime, *, decision: int = 0
    ) -> OperationRecord:
        """The record of ``op`` (its CKE name and targets)."""
        return cls.register(number, op.name, op.targets, at, decision=decision)

    def start_command(self, name: str, target: str, at: datetime.datetime) -> None:
        """The operation runs its next command (new|running -> running)."""
        self._require({RecordStatus.NEW, RecordStatus.RUNNING}, "start a command")
        if not name:
            raise HistoryError("a command needs a name")
        self.trigger_event(self.CommandStarted, timestamp=event_time(at), name=name, target=target)

    def complete(self, info: str, at: datetime.datetime) -> None:
        """Every command succeeded (running -> completed)."""
        self._require({RecordStatus.RUNNING}, "complete")
        self.trigger_event(self.Completed, timestamp=event_time(at), info=info)

    def cancel(self, error: str, at: datetime.datetime) -> None:
        """A command failed or the run was interrupted (new|running -> cancelled)."""
        self._require({RecordStatus.NEW, RecordStatus.RUNNING}, "cancel")
        self.trigger_event(self.Cancelled, timestamp=event_time(at), error=error)

    def _require(self, allowed: set[RecordStatus], action: str) -> None:
        if self.status not in allowed:
            choices = " or ".join(sorted(s.value for s in allowed))
            raise TransitionError(
                f"record {self.record_id}: cannot {action} a {self.status} record "
                f"(only a {choices} one)"
            )

    # --- views ---------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """New or running: what a new leader cancels (``checkLastOp``, §E.2)."""
        return self.status not in _FINAL

    @property
    def start_at(self) -> datetime.datetime:
        return self.created_on

    def record_view(self) -> dict[str, Any]:
        """CKE's record JSON (§E.3): its keys, ``id`` as a string, RFC 3339 times
        (``end-at`` is Go's zero time until the record ends)."""
        return {
            "id": str(self.record_id),
            "status": self.status,
            "operation": self.operation,
            "command": dict(self.command),
            "targets": list(self.targets),
            "info": self.info,
            "error": self.error,
            "start-at": format_rfc3339(self.created_on),
            "end-at": format_rfc3339(self.end_at or ZERO_TIME),
        }

    def etcd_key(self) -> str:
        return record_key(self.record_id)

    def etcd_keys(self) -> dict[str, str]:
        return {self.etcd_key(): compact_json(self.record_view())}
