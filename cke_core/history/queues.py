"""The reboot queue and the repair queue (§F) as aggregates with CKE's state
machines.

Each queue is a singleton holding ``enabled``, the write index (the next entry
index, from 0) and its entries in CKE's JSON form (what ``reboots/data/<%016x>``
and ``repairs/data/<%016x>`` hold, §E.1). Every change is an event; a change
§F does not allow raises ``TransitionError`` and records nothing.

Who writes what. The engine's operations write whole entries
(``UpdateRebootQueueEntry`` / ``UpdateRepairQueueEntry``): ``update(entry, at)``
takes the fields the engine owns from ``entry`` (status, step, step status,
last transition time, drain backoff) and checks the transition. The identity
of an entry (index, node or address, serial, machine type, operation) never
changes. ``ckecli`` cancels reboot entries, marks repair entries deleted and
resets backoffs, each with its own method.

Reboot queue (§F.1), by status::

    queued   -> draining                    reboot-drain-start
    draining -> queued                      drain failure or timeout: backoff,
                                            drain_backoff_count + 1
    draining -> rebooting                   reboot-reboot
    queued | draining | rebooting -> cancelled      ckecli reboot-queue cancel
    removed: rebooting (reboot-dequeue after the boot check),
             cancelled (reboot-cancel), any (dequeued: node not in cluster.yml)

Repair queue (§F.2), by state = status, plus step status while processing::

    queued              -> processing/waiting | draining | watching   (step kept)
    processing/waiting  -> processing/draining | processing/watching  (step kept)
    processing/draining -> processing/waiting (backoff, count + 1)
                         | processing/watching                        (step kept)
    processing/watching -> processing/waiting | draining | watching   (next step: step + 1)
    any unfinished      -> succeeded (health check passed)            (step kept)
    any unfinished      -> failed (steps ran out, command failed)     (step kept,
                                                                       or + 1 from watching)
    deleted: false -> true (ckecli repair-queue delete*), any state
    removed: only entries marked deleted (repair-dequeue)

In both queues the last transition time may change with any transition;
``drain_backoff_count`` and ``drain_backoff_expire`` change only with a
backoff (count + 1) or a backoff reset (both to zero, state unchanged).
An update that changes nothing records nothing.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Collection, Mapping
from typing import Any, Final

import attrs

from cke_core.cluster import Cluster
from cke_core.codec import structure, unstructure
from cke_core.history.base import (
    HistoryAggregate,
    HistoryError,
    TransitionError,
    compact_json,
    event_time,
)
from cke_core.history.ids import REBOOT_QUEUE_ID, REPAIR_QUEUE_ID
from cke_core.queues import (
    RebootQueueEntry,
    RebootStatus,
    RepairQueueEntry,
    RepairStatus,
)
from cke_core.timefmt import ZERO_TIME, format_rfc3339

__all__ = [
    "REBOOT_REMOVALS",
    "REBOOT_TRANSITIONS",
    "REPAIR_TRANSITIONS",
    "QueueAggregate",
    "RebootQueue",
    "RemovalReason",
    "RepairQueue",
    "RepairState",
    "repair_state",
]


class RemovalReason(enum.StrEnum):
    """Why an entry left its queue."""

    #: reboot-dequeue: the node booted (a rebooting entry).
    DEQUEUED = "dequeued"
    #: reboot-cancel: the entry was cancelled.
    CANCELLED = "cancelled"
    #: reboot-dequeue: the node is no longer in cluster.yml.
    NOT_IN_CLUSTER = "not-in-cluster"
    #: repair-dequeue: the entry was marked deleted.
    DELETED = "deleted"


_Q, _D, _R, _C = (
    RebootStatus.QUEUED,
    RebootStatus.DRAINING,
    RebootStatus.REBOOTING,
    RebootStatus.CANCELLED,
)

#: The reboot-queue status changes §F.1 allows.
REBOOT_TRANSITIONS: Final = frozenset({(_Q, _D), (_D, _Q), (_D, _R), (_Q, _C), (_D, _C), (_R, _C)})

#: The statuses from which an entry may be removed, by reason.
REBOOT_REMOVALS: Final[Mapping[RemovalReason, frozenset[RebootStatus]]] = {
    RemovalReason.DEQUEUED: frozenset({_R}),
    RemovalReason.CANCELLED: frozenset({_C}),
    RemovalReason.NOT_IN_CLUSTER: frozenset(RebootStatus),
}


class RepairState(enum.StrEnum):
    """A repair entry's state: its status, and its step status while processing."""

    QUEUED = "queued"
    WAITING = "processing/waiting"
    DRAINING = "processing/draining"
    WATCHING = "processing/watching"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def repair_state(entry: RepairQueueEntry) -> RepairState:
    if entry.status is RepairStatus.PROCESSING:
        return RepairState(f"processing/{entry.step_status.value}")
    return RepairState(entry.status.value)


_UNFINISHED: Final = (RepairState.QUEUED, RepairState.WAITING, RepairState.DRAINING)
_SAME: Final = frozenset({0})
_NEXT: Final = frozenset({1})


def _repair_table() -> dict[tuple[RepairState, RepairState], frozenset[int]]:
    s = RepairState
    table: dict[tuple[RepairState, RepairState], frozenset[int]] = {
        (s.QUEUED, s.WAITING): _SAME,
        (s.QUEUED, s.DRAINING): _SAME,
        (s.QUEUED, s.WATCHING): _SAME,
        (s.WAITING, s.DRAINING): _SAME,
        (s.WAITING, s.WATCHING): _SAME,
        (s.DRAINING, s.WAITING): _SAME,
        (s.DRAINING, s.WATCHING): _SAME,
        (s.WATCHING, s.WAITING): _NEXT,
        (s.WATCHING, s.DRAINING): _NEXT,
        (s.WATCHING, s.WATCHING): _NEXT,
        (s.WATCHING, s.SUCCEEDED): _SAME,
        (s.WATCHING, s.FAILED): frozenset({0, 1}),
    }
    for state in _UNFINISHED:
        table[(state, s.SUCCEEDED)] = _SAME
        table[(state, s.FAILED)] = _SAME
    return table


#: The repair-queue state changes §F.2 allows, with the allowed step increments.
REPAIR_TRANSITIONS: Final[Mapping[tuple[RepairState, RepairState], frozenset[int]]] = (
    _repair_table()
)

_LTT: Final = "last_transition_time"
_COUNT: Final = "drain_backoff_count"
_EXPIRE: Final = "drain_backoff_expire"
_ZERO: Final = format_rfc3339(ZERO_TIME)


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class QueueAggregate(HistoryAggregate):
    """What both queues share: enabled, the write index and the entries."""

    # The queue's name in messages and its etcd key prefix. (No annotations in
    # aggregate bodies: eventsourcing would make the class a dataclass.)
    NAME = ""
    PREFIX = ""

    class Created(HistoryAggregate.Created):
        enabled: bool

    class Enabled(HistoryAggregate.Event):
        def apply(self, aggregate: QueueAggregate) -> None:
            aggregate.enabled = True

    class Disabled(HistoryAggregate.Event):
        def apply(self, aggregate: QueueAggregate) -> None:
            aggregate.enabled = False

    class EntryAdded(HistoryAggregate.Event):
        index: int
        entry: dict[str, Any]

        def apply(self, aggregate: QueueAggregate) -> None:
            aggregate.entry_docs = {**aggregate.entry_docs, str(self.index): dict(self.entry)}
            aggregate.write_index = self.index + 1

    class EntryTransitioned(HistoryAggregate.Event):
        """The engine moved an entry: ``from_state -> to_state``; ``changes`` holds
        the fields that changed, in CKE's JSON form."""

        index: int
        from_state: str
        to_state: str
        changes: dict[str, Any]

        def apply(self, aggregate: QueueAggregate) -> None:
            _replace(aggregate, self.index, self.changes)

    class BackoffReset(HistoryAggregate.Event):
        index: int

        def apply(self, aggregate: QueueAggregate) -> None:
            _replace(aggregate, self.index, {_COUNT: 0, _EXPIRE: _ZERO})

    class EntryRemoved(HistoryAggregate.Event):
        index: int
        reason: str

        def apply(self, aggregate: QueueAggregate) -> None:
            docs = dict(aggregate.entry_docs)
            del docs[str(self.index)]
            aggregate.entry_docs = docs

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        #: The index the next entry gets (CKE's ``write-index``).
        self.write_index = 0
        #: Entries in CKE's JSON form, by decimal index.
        self.entry_docs: dict[str, dict[str, Any]] = {}

    # --- enable / disable ---------------------------------------------------------------

    def enable(self, at: datetime.datetime) -> bool:
        """``ckecli ... enable``. False if already enabled."""
        if self.enabled:
            return False
        self.trigger_event(self.Enabled, timestamp=event_time(at))
        return True

    def disable(self, at: datetime.datetime) -> bool:
        """``ckecli ... disable``. False if already disabled."""
        if not self.enabled:
            return False
        self.trigger_event(self.Disabled, timestamp=event_time(at))
        return True

    # --- shared helpers --------------------------------------------------------------------

    def _doc(self, index: int) -> dict[str, Any]:
        if not _is_index(index):
            raise HistoryError(f"{self.NAME} entry index must be an integer >= 0, got {index!r}")
        try:
            return self.entry_docs[str(index)]
        except KeyError:
            raise HistoryError(f"{self.NAME} has no entry {index}") from None

    def _add(self, entry: Any, at: datetime.datetime) -> int:
        index = self.write_index
        doc = unstructure(attrs.evolve(entry, index=index))
        self.trigger_event(self.EntryAdded, timestamp=event_time(at), index=index, entry=doc)
        return index

    def _reset_backoff(self, index: int, at: datetime.datetime) -> bool:
        doc = self._doc(index)
        if doc[_COUNT] == 0 and doc[_EXPIRE] == _ZERO:
            return False
        self.trigger_event(self.BackoffReset, timestamp=event_time(at), index=index)
        return True

    def _check_backoff(
        self, index: int, old: dict[str, Any], changes: dict[str, Any], backoff: bool, move: str
    ) -> None:
        """A backoff move counts one more backoff; no other move touches the backoff."""
        count = changes.get(_COUNT, old[_COUNT])
        if backoff and count != old[_COUNT] + 1:
            raise TransitionError(
                f"{self.NAME} entry {index}: {move} is a drain backoff and must count it "
                f"(drain_backoff_count {old[_COUNT]} -> {old[_COUNT] + 1}, got {count})"
            )
        if not backoff and (_COUNT in changes or _EXPIRE in changes):
            raise TransitionError(
                f"{self.NAME} entry {index}: {move} cannot change the drain backoff; "
                "only a drain backoff or a backoff reset does"
            )

    def _indices(self) -> list[int]:
        return sorted(int(k) for k in self.entry_docs)

    def _etcd_keys(self) -> dict[str, str]:
        keys = {
            f"{self.PREFIX}/disabled": "false" if self.enabled else "true",
            f"{self.PREFIX}/write-index": str(self.write_index),
        }
        for index in self._indices():
            keys[f"{self.PREFIX}/data/{index:016x}"] = compact_json(self.entry_docs[str(index)])
        return keys


def _replace(aggregate: QueueAggregate, index: int, changes: Mapping[str, Any]) -> None:
    """Copy on write: state that a snapshot or an event shares is never mutated."""
    key = str(index)
    aggregate.entry_docs = {**aggregate.entry_docs, key: {**aggregate.entry_docs[key], **changes}}


def _changes(
    old: Mapping[str, Any], new: Mapping[str, Any], owned: tuple[str, ...]
) -> dict[str, Any]:
    return {k: new[k] for k in owned if new[k] != old[k]}


def _check_identity(
    name: str, index: int, old: Mapping[str, Any], new: Mapping[str, Any], fields: tuple[str, ...]
) -> None:
    for field in fields:
        if new[field] != old[field]:
            raise HistoryError(
                f"{name} entry {index}: {field} cannot change ({old[field]!r} -> {new[field]!r})"
            )


def _structured(doc: Mapping[str, Any], cls: type[Any]) -> Any:
    value, problems, _ = structure(dict(doc), cls)
    if value is None or problems:
        raise HistoryError(f"a stored queue entry cannot be read back: {problems}")
    return value


# ---------------------------------------------------------------------------
# Reboot queue
# ---------------------------------------------------------------------------

_REBOOT_OWNED: Final = ("status", _LTT, _COUNT, _EXPIRE)


class RebootQueue(QueueAggregate):
    """The reboot queue (§F.1), id ``REBOOT_QUEUE_ID``."""

    NAME = "reboot queue"
    PREFIX = "reboots"

    @classmethod
    def create(cls, at: datetime.datetime, *, enabled: bool = True) -> RebootQueue:
        """The queue; CKE's queues are enabled until ``ckecli ... disable``."""
        return cls._create(
            cls.Created, id=REBOOT_QUEUE_ID, timestamp=event_time(at), enabled=enabled
        )

    def add(
        self, node: str, at: datetime.datetime, *, known_nodes: Collection[str] | None = None
    ) -> int:
        """Queue ``node`` (an address); returns its index. ``known_nodes``: the
        addresses of cluster.yml, as ``ckecli reboot-queue add`` validates."""
        if not isinstance(node, str) or not node:
            raise HistoryError(f"a reboot queue entry needs a node address, got {node!r}")
        if known_nodes is not None and node not in known_nodes:
            raise HistoryError(f"{node} is not a node of the cluster")
        return self._add(RebootQueueEntry(node=node), at)

    def update(self, entry: RebootQueueEntry, at: datetime.datetime) -> bool:
        """The engine wrote ``entry``; False if nothing it owns changed."""
        old = self._doc(entry.index)
        new = unstructure(entry)
        _check_identity(self.NAME, entry.index, old, new, ("node",))
        changes = _changes(old, new, _REBOOT_OWNED)
        if not changes:
            return False
        before, after = RebootStatus(old["status"]), entry.status
        move = f"{before.value} -> {after.value}"
        if before == after:
            if changes.keys() <= {_COUNT, _EXPIRE} and new[_COUNT] == 0 and new[_EXPIRE] == _ZERO:
                return self._reset_backoff(entry.index, at)
            raise TransitionError(
                f"{self.NAME} entry {entry.index}: {move} may only reset the drain backoff"
            )
        if (before, after) not in REBOOT_TRANSITIONS:
            raise TransitionError(
                f"{self.NAME} entry {entry.index}: {move} is not allowed (§F.1: "
                f"{_describe(REBOOT_TRANSITIONS)})"
            )
        self._check_backoff(entry.index, old, changes, (before, after) == (_D, _Q), move)
        self.trigger_event(
            self.EntryTransitioned,
            timestamp=event_time(at),
            index=entry.index,
            from_state=before.value,
            to_state=after.value,
            changes=changes,
        )
        return True

    # --- the engine's and ckecli's moves, by name -------------------------------------------

    def start_drain(self, index: int, at: datetime.datetime) -> None:
        """reboot-drain-start: queued -> draining (LTT = at)."""
        self._move(index, _D, at)

    def back_off(self, index: int, expire: datetime.datetime, at: datetime.datetime) -> None:
        """A drain failed or timed out: draining -> queued, count + 1, ``expire``."""
        entry = self.entry(index)
        self.update(
            attrs.evolve(
                entry,
                status=_Q,
                last_transition_time=at,
                drain_backoff_count=entry.drain_backoff_count + 1,
                drain_backoff_expire=expire,
            ),
            at,
        )

    def start_reboot(self, index: int, at: datetime.datetime) -> None:
        """reboot-reboot: draining -> rebooting (LTT = at)."""
        self._move(index, _R, at)

    def cancel(self, index: int, at: datetime.datetime) -> bool:
        """``ckecli reboot-queue cancel``; False if already cancelled."""
        entry = self.entry(index)
        if entry.status is _C:
            return False
        return self.update(attrs.evolve(entry, status=_C), at)

    def reset_backoff(self, index: int, at: datetime.datetime) -> bool:
        """``ckecli reboot-queue reset-backoff`` for one entry."""
        return self._reset_backoff(index, at)

    def remove(self, index: int, reason: RemovalReason, at: datetime.datetime) -> None:
        """reboot-dequeue / reboot-cancel: the entry leaves the queue."""
        status = RebootStatus(self._doc(index)["status"])
        allowed = REBOOT_REMOVALS.get(RemovalReason(reason))
        if allowed is None or status not in allowed:
            raise TransitionError(
                f"{self.NAME} entry {index}: a {status.value} entry cannot be removed "
                f"as {RemovalReason(reason).value}"
            )
        self.trigger_event(
            self.EntryRemoved,
            timestamp=event_time(at),
            index=index,
            reason=RemovalReason(reason).value,
        )

    def _move(self, index: int, to: RebootStatus, at: datetime.datetime) -> None:
        self.update(attrs.evolve(self.entry(index), status=to, last_transition_time=at), at)

    # --- views -----------------------------------------------------------------------------

    def entry(self, index: int) -> RebootQueueEntry:
        entry: RebootQueueEntry = _structured(self._doc(index), RebootQueueEntry)
        return entry

    def entries(self) -> tuple[RebootQueueEntry, ...]:
        """The entries in index order, as ``cke_core.queues`` values."""
        return tuple(self.entry(i) for i in self._indices())

    def etcd_keys(self) -> dict[str, str]:
        """``reboots/disabled``, ``reboots/running`` (enabled and not empty),
        ``reboots/write-index`` and ``reboots/data/<%016x>``."""
        keys = self._etcd_keys()
        keys["reboots/running"] = "true" if self.enabled and self.entry_docs else "false"
        return keys


# ---------------------------------------------------------------------------
# Repair queue
# ---------------------------------------------------------------------------

_REPAIR_OWNED: Final = ("status", "step", "step_status", _LTT, _COUNT, _EXPIRE)
_REPAIR_IDENTITY: Final = ("address", "serial", "machine_type", "operation")


class RepairQueue(QueueAggregate):
    """The repair queue (§F.2), id ``REPAIR_QUEUE_ID``."""

    NAME = "repair queue"
    PREFIX = "repairs"

    class MarkedDeleted(HistoryAggregate.Event):
        index: int

        def apply(self, aggregate: RepairQueue) -> None:
            _replace(aggregate, self.index, {"deleted": True})

    @classmethod
    def create(cls, at: datetime.datetime, *, enabled: bool = True) -> RepairQueue:
        return cls._create(
            cls.Created, id=REPAIR_QUEUE_ID, timestamp=event_time(at), enabled=enabled
        )

    def add(
        self,
        operation: str,
        machine_type: str,
        address: str,
        at: datetime.datetime,
        *,
        serial: str = "",
        cluster: Cluster | None = None,
    ) -> int:
        """``ckecli repair-queue add OPERATION MACHINE_TYPE ADDRESS [SERIAL]``; with
        ``cluster``, the procedure and the operation must exist in it."""
        for name, value in (
            ("operation", operation),
            ("machine type", machine_type),
            ("address", address),
        ):
            if not isinstance(value, str) or not value:
                raise HistoryError(f"a repair queue entry needs an {name}, got {value!r}")
        if cluster is not None and cluster.repair.find_operation(machine_type, operation) is None:
            raise HistoryError(
                f"no repair operation {operation!r} for machine type {machine_type!r} "
                "in cluster.yml"
            )
        entry = RepairQueueEntry(
            address=address, serial=serial, machine_type=machine_type, operation=operation
        )
        return self._add(entry, at)

    def update(self, entry: RepairQueueEntry, at: datetime.datetime) -> bool:
        """The engine wrote ``entry``; False if nothing it owns changed.
        ``deleted`` and ``nodename`` are not the engine's and are ignored."""
        old = self._doc(entry.index)
        new = unstructure(entry)
        _check_identity(self.NAME, entry.index, old, new, _REPAIR_IDENTITY)
        changes = _changes(old, new, _REPAIR_OWNED)
        if not changes:
            return False
        before = repair_state(_structured(old, RepairQueueEntry))
        after = repair_state(entry)
        move = f"{before.value} -> {after.value}"
        if before == after and changes.keys() <= {_COUNT, _EXPIRE}:
            if new[_COUNT] == 0 and new[_EXPIRE] == _ZERO:
                return self._reset_backoff(entry.index, at)
            raise TransitionError(
                f"{self.NAME} entry {entry.index}: {move} may only reset the drain backoff"
            )
        steps = REPAIR_TRANSITIONS.get((before, after))
        if steps is None:
            raise TransitionError(
                f"{self.NAME} entry {entry.index}: {move} is not allowed (§F.2: "
                f"{_describe(REPAIR_TRANSITIONS)})"
            )
        step_change = new["step"] - old["step"]
        if step_change not in steps:
            raise TransitionError(
                f"{self.NAME} entry {entry.index}: {move} cannot move from step "
                f"{old['step']} to step {new['step']}"
            )
        backoff = (before, after) == (RepairState.DRAINING, RepairState.WAITING)
        self._check_backoff(entry.index, old, changes, backoff, move)
        self.trigger_event(
            self.EntryTransitioned,
            timestamp=event_time(at),
            index=entry.index,
            from_state=before.value,
            to_state=after.value,
            changes=changes,
        )
        return True

    def mark_deleted(self, index: int, at: datetime.datetime) -> bool:
        """``ckecli repair-queue delete`` (and delete-finished/-unfinished): set
        ``deleted``; False if already set."""
        if self._doc(index)["deleted"]:
            return False
        self.trigger_event(self.MarkedDeleted, timestamp=event_time(at), index=index)
        return True

    def reset_backoff(self, index: int, at: datetime.datetime) -> bool:
        """``ckecli repair-queue reset-backoff`` for one entry."""
        return self._reset_backoff(index, at)

    def remove(self, index: int, at: datetime.datetime) -> None:
        """repair-dequeue: only an entry marked deleted leaves the queue."""
        if not self._doc(index)["deleted"]:
            raise TransitionError(
                f"{self.NAME} entry {index}: only an entry marked deleted can be removed"
            )
        self.trigger_event(
            self.EntryRemoved,
            timestamp=event_time(at),
            index=index,
            reason=RemovalReason.DELETED.value,
        )

    # --- views -----------------------------------------------------------------------------

    def entry(self, index: int, cluster: Cluster | None = None) -> RepairQueueEntry:
        """Entry ``index``; with ``cluster``, ``nodename`` refilled as observation does."""
        entry: RepairQueueEntry = _structured(self._doc(index), RepairQueueEntry)
        if cluster is not None:
            names = {n.address: n.nodename for n in cluster.nodes}
            entry = attrs.evolve(entry, nodename=names.get(entry.address, ""))
        return entry

    def entries(self, cluster: Cluster | None = None) -> tuple[RepairQueueEntry, ...]:
        """The entries in index order, as ``cke_core.queues`` values."""
        return tuple(self.entry(i, cluster) for i in self._indices())

    def etcd_keys(self) -> dict[str, str]:
        """``repairs/disabled``, ``repairs/write-index`` and ``repairs/data/<%016x>``."""
        return self._etcd_keys()


def _describe(table: Collection[tuple[enum.StrEnum, enum.StrEnum]]) -> str:
    return ", ".join(f"{a.value} -> {b.value}" for a, b in sorted(table))
