"""Repair-queue decisions (§B.2.6, §F.2): which entries move, and how.

Rules, in CKE's order:

1. Every entry is classified: ``deleted`` ones are dequeued (even while the
   queue is disabled); finished ones stay as they are; one whose health
   check passed is finished as succeeded; the others wait in four buckets,
   by priority: processing control planes, processing others, queued
   control planes, queued others. A processing/waiting entry still in drain
   backoff is skipped and does not count.
2. Up to ``max_concurrent_repairs`` entries are admitted. A control plane is
   admitted only if no other control plane is, and fewer than two control
   planes are being rebooted (and if one is, it is this machine): etcd
   survives only one missing member.
3. An admitted entry's current step decides its action:
   - *waiting*: a disabled queue does nothing; a step that needs a drain, for
     a machine in the cluster, starts draining; otherwise the step runs;
   - *draining*: a disabled queue abandons the drain (timeout + backoff); a
     completed drain runs the step; a drain past the eviction timeout backs off;
   - *watching*: when ``watch_seconds`` is unset or elapsed, the entry moves to
     the next step (waiting) and is evaluated again; past the last step it
     is finished as failed.
   An entry whose operation is not configured is skipped.

Whenever an entry is admitted or an action is chosen, the repair is
*active*: the decision ends here, which is what keeps reboots away while a
machine is repaired.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

import attrs

from cke_core.cluster import Cluster
from cke_core.queues import RepairQueueEntry, RepairStatus, RepairStepStatus
from cke_core.status import RepairQueueStatus

#: The action chosen for an entry: one per repair operation of §C.2.
DEQUEUE = "repair-dequeue"
FINISH_SUCCEEDED = "repair-finish-succeeded"
FINISH_FAILED = "repair-finish-failed"
DRAIN_START = "repair-drain-start"
DRAIN_TIMEOUT = "repair-drain-timeout"
EXECUTE = "repair-execute"


@attrs.frozen
class RepairAction:
    """What happens to ``entry`` this round (``entry`` may have advanced its step)."""

    action: str
    entry: RepairQueueEntry


@attrs.frozen
class RepairDecision:
    actions: tuple[RepairAction, ...] = ()
    #: CKE's ``phaseRepair``: a repair is in progress, so the decision ends here.
    active: bool = False


def repair_processing(entry: RepairQueueEntry) -> bool:
    """An in-cluster machine that the repair queue is draining or watching."""
    return (
        entry.is_in_cluster
        and entry.status is RepairStatus.PROCESSING
        and entry.step_status in (RepairStepStatus.DRAINING, RepairStepStatus.WATCHING)
    )


def repair_processing_addresses(queue: RepairQueueStatus) -> frozenset[str]:
    return frozenset(e.address for e in queue.entries if repair_processing(e))


def decide_repairs(
    cluster: Cluster,
    queue: RepairQueueStatus,
    reboot_processing: frozenset[str],
    now: datetime.datetime,
) -> RepairDecision:
    """Classify, admit and resolve the repair queue's entries (rules 1-3 above)."""
    control_planes = frozenset(n.address for n in cluster.control_planes)
    actions: list[RepairAction] = []
    buckets: tuple[list[RepairQueueEntry], ...] = ([], [], [], [])
    for entry in _with_nodenames(cluster, queue.entries):
        if entry.deleted:
            actions.append(RepairAction(DEQUEUE, entry))
        elif entry.is_finished:
            continue
        elif queue.repair_completed.get(entry.address, False):
            actions.append(RepairAction(FINISH_SUCCEEDED, entry))
        elif (
            entry.is_processing
            and entry.step_status is RepairStepStatus.WAITING
            and not entry.backoff_expired(now)
        ):
            # Only a processing/waiting entry waits for its drain backoff (§B.2.6).
            continue
        else:
            is_cp = entry.is_in_cluster and entry.address in control_planes
            buckets[(0 if entry.is_processing else 2) + (0 if is_cp else 1)].append(entry)

    active = bool(actions)
    admitted_cp = False
    admitted = 0
    cps_rebooting = reboot_processing & control_planes
    for entry in (e for bucket in buckets for e in bucket):
        if admitted >= cluster.repair.max_concurrent_repairs:
            break
        if entry.is_in_cluster and entry.address in control_planes:
            if admitted_cp or len(cps_rebooting) >= 2:
                continue
            if len(cps_rebooting) == 1 and entry.address not in cps_rebooting:
                continue
            admitted_cp = True
        admitted += 1
        resolved = _resolve(cluster, queue, entry, now)
        if resolved is None:
            continue
        active = True
        if resolved.action:
            actions.append(resolved)
    return RepairDecision(tuple(actions), active)


def _with_nodenames(
    cluster: Cluster, entries: Iterable[RepairQueueEntry]
) -> Iterable[RepairQueueEntry]:
    """Refill ``nodename`` from cluster.yml, as CKE's observation does every cycle."""
    names = {n.address: n.nodename for n in cluster.nodes}
    for entry in entries:
        nodename = names.get(entry.address, "")
        yield entry if entry.nodename == nodename else attrs.evolve(entry, nodename=nodename)


def _resolve(
    cluster: Cluster, queue: RepairQueueStatus, entry: RepairQueueEntry, now: datetime.datetime
) -> RepairAction | None:
    """The action for an admitted entry; ``None`` if its operation is not configured.

    An action with an empty name means "nothing this round", which still
    counts as an active repair.
    """
    operation = cluster.repair.find_operation(entry.machine_type, entry.operation)
    if operation is None:
        return None
    for _ in range(len(operation.repair_steps) + 1):
        if entry.step >= len(operation.repair_steps):
            return RepairAction(FINISH_FAILED, entry)
        step = operation.repair_steps[entry.step]
        lasted = now - entry.last_transition_time
        if entry.step_status is RepairStepStatus.WAITING:
            if not queue.enabled:
                return RepairAction("", entry)
            if step.need_drain and entry.is_in_cluster:
                return RepairAction(DRAIN_START, entry)
            return RepairAction(EXECUTE, entry)
        if entry.step_status is RepairStepStatus.DRAINING:
            if not queue.enabled:
                return RepairAction(DRAIN_TIMEOUT, entry)
            if queue.drain_completed.get(entry.address, False):
                return RepairAction(EXECUTE, entry)
            timeout = datetime.timedelta(seconds=cluster.repair.eviction_timeout_seconds)
            if lasted > timeout:
                return RepairAction(DRAIN_TIMEOUT, entry)
            return RepairAction("", entry)
        # watching
        if step.watch_seconds is not None and lasted <= datetime.timedelta(
            seconds=step.watch_seconds
        ):
            return RepairAction("", entry)
        entry = attrs.evolve(entry, step=entry.step + 1, step_status=RepairStepStatus.WAITING)
    return RepairAction(FINISH_FAILED, entry)
