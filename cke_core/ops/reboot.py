"""Reboot-queue operations (§F.1, §C.2).

Theory of operation
-------------------
CKE runs each reboot operation as one big command that loops over the
entries, writes the queue and calls the Kubernetes API, deciding on the way
what to do after a failure. Here the same loop is a *script*: a generator that
yields one command at a time and receives its result. ``next_command(results)``
replays the script from the start with the results so far (``ScriptedOperation``),
so the plan stays a pure function of ``(operation, results)`` while reading
like CKE's code.

Failures
--------
The drain-start, delete-DaemonSet-pod and reboot operations are CKE's
InfoOperators: a node that fails is noted (``info``: "failed to drain some
nodes: [10.0.0.14]") and the others go on, so they have
``tolerates_failures = True``. A failed *queue write or read* is different: in
CKE it fails the whole operation. A scripted operation then stops (its next
command is ``None``) and ``fatal_error(results)`` returns the reason; the
executor must treat a non-empty ``fatal_error`` as the operation's failure.

Times and jitter
----------------
``now`` is the decision's time, truncated to the second as CKE truncates
``time.Now()``; it is the ``last_transition_time`` of every write and the base
of every backoff. (CKE stamps the backoff when the drain fails, after the
eviction has run; here it is the decision's time, so an expiry can be earlier by
the duration of the drain.) The jitter is ``cke_core.backoff``'s, from ``seed``
and the entry index and count.

Batches
-------
Every plan stays within 100 commands (``ops.base``) however long the queue:
an operation over entries takes at most ``BATCH`` of them, in order, and its
targets are those; the next decision takes the rest, which are still in the
state that selected them. ``BATCH`` is what the worst case per entry allows
(a drain start: 6 commands; a reboot: 2; a timeout: 2; a deletion: 1). The
delete-DaemonSet-pod and reboot operations run over the same entries, so they
share a batch. ``reboot-uncordon`` is one ``uncordon-node`` command for all
its Nodes.

The "is it cancelled now?" check
--------------------------------
CKE's ``drainBackOff`` re-reads the entry and leaves it alone when ``ckecli
reboot-queue cancel`` has marked it ``cancelled`` during the drain. The script
models that read with ``get-reboot-queue-entry``: the backoff is written only
when the stored entry still exists and is not cancelled. The count and the
rest of the written entry come from the decision's entry, as in CKE.
"""

from __future__ import annotations

import datetime
from collections.abc import Generator, Iterable, Sequence
from typing import ClassVar, Final

import attrs

from cke_core.backoff import reboot_drain_backoff_expire
from cke_core.cluster import Reboot
from cke_core.commands.kube import CordonNode, DeleteDaemonSetPods, EvictPods, UncordonNode
from cke_core.commands.queue import (
    DeleteRebootQueueEntry,
    GetRebootQueueEntry,
    RunLocalCommand,
    UpdateRebootQueueEntry,
)
from cke_core.ops.base import (
    MAX_COMMANDS,
    Command,
    CommandResult,
    Operation,
    Script,
    ScriptedOperation,
    Trace,
    nth,
)
from cke_core.queues import RebootQueueEntry, RebootStatus
from cke_core.timefmt import to_utc


def transition_time(now: datetime.datetime) -> datetime.datetime:
    """``now`` in UTC truncated to the second: CKE's ``time.Now().Truncate(time.Second).UTC()``."""
    return to_utc(now).replace(microsecond=0)


def _entries(value: Iterable[RebootQueueEntry]) -> tuple[RebootQueueEntry, ...]:
    return tuple(value)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _entry_nodes(entries: Sequence[RebootQueueEntry]) -> tuple[str, ...]:
    return tuple(entry.node for entry in entries)


#: The entries a drain of reboot candidates takes at once (≤ 6 commands each).
DRAIN_BATCH: Final = MAX_COMMANDS // 6
#: The drained entries rebooted at once (2 commands each; also the DaemonSet pod batch).
REBOOT_BATCH: Final = MAX_COMMANDS // 2
#: The timed-out drains backed off at once (a read and a write each).
TIMEOUT_BATCH: Final = MAX_COMMANDS // 2
#: The entries deleted at once by reboot-dequeue and reboot-cancel.
DELETE_BATCH: Final = MAX_COMMANDS


class _Batched:
    """Mixin of the operations over ``entries``: they process ``batch``, the first
    ``BATCH`` entries, and target those entries' nodes."""

    __slots__ = ()
    BATCH: ClassVar[int] = MAX_COMMANDS
    entries: tuple[RebootQueueEntry, ...]

    @property
    def batch(self) -> tuple[RebootQueueEntry, ...]:
        """The entries this operation processes (the others wait for the next decision)."""
        return self.entries[: self.BATCH]

    @property
    def targets(self) -> tuple[str, ...]:
        return _entry_nodes(self.batch)


def reboot_backoff(
    entry: RebootQueueEntry, now: datetime.datetime, seed: int, trace: Trace
) -> Generator[Command, CommandResult, bool]:
    """CKE's ``drainBackOff``: unless the stored entry is now cancelled (or gone),
    write it back ``queued`` with the next backoff. False (and ``trace.fatal``)
    when the queue read or write failed."""
    read = yield GetRebootQueueEntry(entry.index, entry.node)
    if not read.ok:
        trace.fatal = f"failed to read reboot queue entry {entry.index}: {read.error}"
        return False
    stored = read.value
    if stored is None:
        return True
    if not isinstance(stored, RebootQueueEntry):
        trace.fatal = f"reading reboot queue entry {entry.index} returned {type(stored).__name__}"
        return False
    if stored.status is RebootStatus.CANCELLED:
        return True
    count = entry.drain_backoff_count + 1
    backed_off = attrs.evolve(
        entry,
        status=RebootStatus.QUEUED,
        last_transition_time=now,
        drain_backoff_count=count,
        drain_backoff_expire=reboot_drain_backoff_expire(now, count, seed, entry.index),
    )
    written = yield UpdateRebootQueueEntry(backed_off)
    if not written.ok:
        trace.fatal = f"failed to update reboot queue entry {entry.index}: {written.error}"
        return False
    return True


# ---------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------


@attrs.frozen
class RebootDrainStartOp(_Batched, ScriptedOperation):
    """``reboot-drain-start`` (§F.1), sequential over its ``batch`` of ``entries``.

    For each entry: write it ``draining`` (LTT = now), cordon the Node, run the
    eviction dry run. Then, for the entries that got through, the real
    eviction. Any failure of an entry backs it off (``reboot_backoff``) and
    lists its node in ``info``.
    """

    NAME: ClassVar[str] = "reboot-drain-start"
    BATCH: ClassVar[int] = DRAIN_BATCH
    INFO_FORMAT: ClassVar[str] = "failed to drain some nodes: {}"
    tolerates_failures: ClassVar[bool] = True

    apiserver: str
    entries: tuple[RebootQueueEntry, ...] = attrs.field(converter=_entries)
    reboot: Reboot
    now: datetime.datetime = attrs.field(converter=transition_time)
    seed: int

    def _evict(self, node: str, *, dry_run: bool) -> EvictPods:
        return EvictPods(
            apiserver=self.apiserver,
            node=node,
            dry_run=dry_run,
            protected_namespaces=self.reboot.protected_namespaces,
            protected_job_pods=self.reboot.protected_job_pods,
            evict_retries=self.reboot.evict_retries,
            evict_interval=self.reboot.evict_interval,
        )

    def script(self, trace: Trace) -> Script:
        passed: list[RebootQueueEntry] = []
        for entry in self.batch:
            draining = attrs.evolve(
                entry, status=RebootStatus.DRAINING, last_transition_time=self.now
            )
            result = yield UpdateRebootQueueEntry(draining)
            if result.ok:
                result = yield CordonNode(self.apiserver, (entry.node,))
            if result.ok:
                result = yield self._evict(entry.node, dry_run=True)
            if result.ok:
                passed.append(draining)
                continue
            trace.failed.append(entry.node)
            if not (yield from reboot_backoff(draining, self.now, self.seed, trace)):
                return
        for entry in passed:
            result = yield self._evict(entry.node, dry_run=False)
            if result.ok:
                continue
            trace.failed.append(entry.node)
            if not (yield from reboot_backoff(entry, self.now, self.seed, trace)):
                return


@attrs.frozen
class RebootDeleteDaemonSetPodOp(_Batched, ScriptedOperation):
    """``reboot-delete-daemonset-pod``: delete the pods of OnDelete DaemonSets on
    each drained node before its reboot; a failure is noted in ``info`` only."""

    NAME: ClassVar[str] = "reboot-delete-daemonset-pod"
    BATCH: ClassVar[int] = REBOOT_BATCH
    INFO_FORMAT: ClassVar[str] = "failed to delete DaemonSet pods on some nodes: {}"
    tolerates_failures: ClassVar[bool] = True

    apiserver: str
    entries: tuple[RebootQueueEntry, ...] = attrs.field(converter=_entries)

    def script(self, trace: Trace) -> Script:
        for entry in self.batch:
            result = yield DeleteDaemonSetPods(self.apiserver, entry.node)
            if not result.ok:
                trace.failed.append(entry.node)


@attrs.frozen
class RebootRebootOp(_Batched, ScriptedOperation):
    """``reboot-reboot``: per entry, write it ``rebooting`` (LTT = now), then run
    ``reboot_command <address>`` on the engine's host with the configured
    timeout, retries and interval. If every try fails the node is listed in
    ``info`` and the entry stays ``rebooting`` (the boot check never passes;
    an operator cancels it). CKE runs the entries in parallel; here they run
    in order."""

    NAME: ClassVar[str] = "reboot-reboot"
    BATCH: ClassVar[int] = REBOOT_BATCH
    INFO_FORMAT: ClassVar[str] = "failed to reboot some nodes: {}"
    tolerates_failures: ClassVar[bool] = True

    entries: tuple[RebootQueueEntry, ...] = attrs.field(converter=_entries)
    reboot: Reboot
    now: datetime.datetime = attrs.field(converter=transition_time)

    def script(self, trace: Trace) -> Script:
        for entry in self.batch:
            rebooting = attrs.evolve(
                entry, status=RebootStatus.REBOOTING, last_transition_time=self.now
            )
            written = yield UpdateRebootQueueEntry(rebooting)
            if not written.ok:
                trace.fatal = f"failed to update reboot queue entry {entry.index}: {written.error}"
                return
            result = yield RunLocalCommand(
                argv=(*self.reboot.reboot_command, entry.node),
                timeout_seconds=self.reboot.command_timeout_seconds,
                retries=self.reboot.command_retries,
                interval=self.reboot.command_interval,
                address=entry.node,
            )
            if not result.ok:
                trace.failed.append(entry.node)


@attrs.frozen
class RebootDrainTimeoutOp(_Batched, ScriptedOperation):
    """``reboot-drain-timeout``: back off every entry that drained for longer than
    ``eviction_timeout_seconds`` (the same backoff as a failed drain)."""

    NAME: ClassVar[str] = "reboot-drain-timeout"
    BATCH: ClassVar[int] = TIMEOUT_BATCH

    entries: tuple[RebootQueueEntry, ...] = attrs.field(converter=_entries)
    now: datetime.datetime = attrs.field(converter=transition_time)
    seed: int

    def script(self, trace: Trace) -> Script:
        for entry in self.batch:
            if not (yield from reboot_backoff(entry, self.now, self.seed, trace)):
                return


@attrs.frozen
class RebootUncordonOp(Operation):
    """``reboot-uncordon``: remove the reboot annotation and make the Nodes
    schedulable again, with one ``uncordon-node`` command for all of them (CKE's
    ``rebootUncordonCommand``). Targets: the Node names."""

    NAME: ClassVar[str] = "reboot-uncordon"

    apiserver: str
    node_names: tuple[str, ...] = attrs.field(converter=_strings)

    @property
    def targets(self) -> tuple[str, ...]:
        return self.node_names

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((UncordonNode(self.apiserver, self.node_names),), results)


@attrs.frozen
class RebootDequeueOp(_Batched, Operation):
    """``reboot-dequeue``: delete the entries of nodes that have booted."""

    NAME: ClassVar[str] = "reboot-dequeue"
    BATCH: ClassVar[int] = DELETE_BATCH

    entries: tuple[RebootQueueEntry, ...] = attrs.field(converter=_entries)

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        commands = tuple(DeleteRebootQueueEntry(e.index, e.node) for e in self.batch)
        return nth(commands, results)


@attrs.frozen
class RebootCancelOp(RebootDequeueOp):
    """``reboot-cancel``: delete the entries marked ``cancelled``."""

    NAME: ClassVar[str] = "reboot-cancel"
