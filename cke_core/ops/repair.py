"""Repair-queue operations (§F.2, §C.2).

Scripted like the reboot operations (``cke_core.ops.reboot``: the plan is a
generator replayed over the results, ``now`` is truncated to the second, a
failed queue write stops the script and sets ``fatal_error``). CKE's repair
operators are not InfoOperators, but their commands handle the failures of
the drain and of the repair and success commands themselves (backoff,
``failed``), so the operations that run those commands tolerate failures and
leave ``info`` empty.

Every operation targets the entry's address. Kubernetes calls use the Node
name (``entry.nodename``, refilled from cluster.yml at every observation;
the address when it is empty).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import ClassVar

import attrs

from cke_core.backoff import repair_drain_backoff_expire
from cke_core.cluster import Repair, RepairOperation, RepairStep
from cke_core.commands.kube import CordonNode, EvictPods
from cke_core.commands.queue import (
    DeleteRepairQueueEntry,
    RunLocalCommand,
    UpdateRepairQueueEntry,
)
from cke_core.ops.base import (
    Command,
    CommandResult,
    Operation,
    Script,
    ScriptedOperation,
    Trace,
    nth,
)
from cke_core.ops.reboot import transition_time
from cke_core.queues import RepairQueueEntry, RepairStatus, RepairStepStatus


def repair_backed_off(
    entry: RepairQueueEntry, now: datetime.datetime, seed: int
) -> RepairQueueEntry:
    """CKE's ``repairDrainBackOff``: processing/waiting, count + 1, linear backoff."""
    count = entry.drain_backoff_count + 1
    return attrs.evolve(
        entry,
        status=RepairStatus.PROCESSING,
        step_status=RepairStepStatus.WAITING,
        last_transition_time=now,
        drain_backoff_count=count,
        drain_backoff_expire=repair_drain_backoff_expire(now, count, seed, entry.index),
    )


def _write(entry: RepairQueueEntry, trace: Trace) -> Script:
    """Write ``entry``; a failure is fatal (``trace.fatal``)."""
    written = yield UpdateRepairQueueEntry(entry)
    if not written.ok:
        trace.fatal = f"failed to update repair queue entry {entry.index}: {written.error}"


def _node_name(entry: RepairQueueEntry) -> str:
    return entry.nodename or entry.address


@attrs.frozen
class RepairDrainStartOp(ScriptedOperation):
    """``repair-drain-start``: write the entry processing/draining (LTT = now),
    run the eviction dry run (before the cordon), cordon the Node, evict with
    the repair queue's selectors. Any failure → processing/waiting with the
    next linear backoff."""

    NAME: ClassVar[str] = "repair-drain-start"
    tolerates_failures: ClassVar[bool] = True

    apiserver: str
    entry: RepairQueueEntry
    repair: Repair
    now: datetime.datetime = attrs.field(converter=transition_time)
    seed: int

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.entry.address,)

    def _evict(self, *, dry_run: bool) -> EvictPods:
        return EvictPods(
            apiserver=self.apiserver,
            node=_node_name(self.entry),
            dry_run=dry_run,
            protected_namespaces=self.repair.protected_namespaces,
            protected_job_pods=self.repair.protected_job_pods,
            evict_retries=self.repair.evict_retries,
            evict_interval=self.repair.evict_interval,
        )

    def script(self, trace: Trace) -> Script:
        draining = attrs.evolve(
            self.entry,
            status=RepairStatus.PROCESSING,
            step_status=RepairStepStatus.DRAINING,
            last_transition_time=self.now,
        )
        result = yield UpdateRepairQueueEntry(draining)
        if result.ok:
            result = yield self._evict(dry_run=True)
        if result.ok:
            result = yield CordonNode(self.apiserver, (_node_name(self.entry),))
        if result.ok:
            result = yield self._evict(dry_run=False)
        if result.ok:
            return
        trace.failed.append(self.entry.address)
        yield from _write(repair_backed_off(draining, self.now, self.seed), trace)


@attrs.frozen
class RepairDrainTimeoutOp(Operation):
    """``repair-drain-timeout``: a drain that took too long, or that the disabled
    queue abandons, goes back to processing/waiting with the next backoff."""

    NAME: ClassVar[str] = "repair-drain-timeout"

    entry: RepairQueueEntry
    now: datetime.datetime = attrs.field(converter=transition_time)
    seed: int

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.entry.address,)

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        backed_off = repair_backed_off(self.entry, self.now, self.seed)
        return nth((UpdateRepairQueueEntry(backed_off),), results)


@attrs.frozen
class RepairExecuteOp(ScriptedOperation):
    """``repair-execute``: write the entry processing/watching (LTT = now), then
    run ``repair_command <address>`` with the step's timeout, retries and
    interval. If every try fails the entry becomes ``failed``."""

    NAME: ClassVar[str] = "repair-execute"
    tolerates_failures: ClassVar[bool] = True

    entry: RepairQueueEntry
    step: RepairStep
    now: datetime.datetime = attrs.field(converter=transition_time)

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.entry.address,)

    def script(self, trace: Trace) -> Script:
        watching = attrs.evolve(
            self.entry,
            status=RepairStatus.PROCESSING,
            step_status=RepairStepStatus.WATCHING,
            last_transition_time=self.now,
        )
        yield from _write(watching, trace)
        if trace.fatal:
            return
        result = yield RunLocalCommand(
            argv=(*self.step.repair_command, self.entry.address),
            timeout_seconds=self.step.command_timeout_seconds,
            retries=self.step.command_retries,
            interval=self.step.command_interval,
            address=self.entry.address,
        )
        if result.ok:
            return
        trace.failed.append(self.entry.address)
        failed = attrs.evolve(watching, status=RepairStatus.FAILED, last_transition_time=self.now)
        yield from _write(failed, trace)


@attrs.frozen
class RepairFinishOp(ScriptedOperation):
    """``repair-finish``: finish the entry (LTT = now).

    ``succeeded``: the machine is healthy. Then ``operation`` (the entry's
    repair operation; None when it cannot be resolved) decides: its
    ``success_command <address>`` runs first if it has one (timeout
    ``success_command_timeout``, no retries) and the entry becomes
    ``succeeded`` if it exits 0, ``failed`` otherwise; an unresolvable
    operation also means ``failed`` (CKE's error path). Not ``succeeded``
    (the steps ran out): ``failed`` without running anything.
    """

    NAME: ClassVar[str] = "repair-finish"
    tolerates_failures: ClassVar[bool] = True

    entry: RepairQueueEntry
    succeeded: bool
    operation: RepairOperation | None
    now: datetime.datetime = attrs.field(converter=transition_time)

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.entry.address,)

    def script(self, trace: Trace) -> Script:
        status = RepairStatus.FAILED
        if self.succeeded and self.operation is not None:
            status = RepairStatus.SUCCEEDED
            if self.operation.success_command:
                result = yield RunLocalCommand(
                    argv=(*self.operation.success_command, self.entry.address),
                    timeout_seconds=self.operation.success_command_timeout,
                    address=self.entry.address,
                )
                if not result.ok:
                    trace.failed.append(self.entry.address)
                    status = RepairStatus.FAILED
        finished = attrs.evolve(self.entry, status=status, last_transition_time=self.now)
        yield from _write(finished, trace)


@attrs.frozen
class RepairDequeueOp(Operation):
    """``repair-dequeue``: delete an entry marked ``deleted``."""

    NAME: ClassVar[str] = "repair-dequeue"

    entry: RepairQueueEntry

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.entry.address,)

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((DeleteRepairQueueEntry(self.entry.index, self.entry.address),), results)
