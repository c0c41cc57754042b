"""Reboot-queue decisions (§B.2.7, §F.1): which entries move, and how.

Rules, in CKE's order:

1. Cancelled entries are deleted and dequeued ones (booted, or for nodes that
   left the cluster) removed; if there are any, nothing else happens this
   round. Both run even while the queue is disabled.
2. A disabled or empty queue, or one without ``reboot_command`` and
   ``boot_check_command``, does nothing more.
3. Drained entries get their OnDelete DaemonSet pods deleted and are rebooted.
4. At most one new entry starts draining per round (``next_candidates``):
   control planes one at a time and only when no worker is in progress or
   drainable; workers while fewer than ``max_concurrent_reboots`` are in
   progress. Draining is blocked while more nodes than
   ``maximum-unreachable-nodes-for-reboot`` (not being rebooted) are
   unreachable over SSH; the candidate stays in ``next_candidates`` all the
   same, so a control plane candidate is still NotReady in the endpoints.
5. Entries draining for longer than ``eviction_timeout_seconds`` time out
   and back off.

CKE computes candidates and timeouts while observing, reading the clock;
here they are computed from ``now``, an input of the decision.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence

import attrs

from cke_core.cluster import Cluster, Node
from cke_core.queues import RebootQueueEntry, RebootStatus
from cke_core.status import KubernetesNode, RebootQueueStatus


@attrs.frozen
class RebootDecision:
    """Entries grouped by what happens to them this round."""

    cancelled: tuple[RebootQueueEntry, ...] = ()
    dequeued: tuple[RebootQueueEntry, ...] = ()
    drain_completed: tuple[RebootQueueEntry, ...] = ()
    new_drains: tuple[RebootQueueEntry, ...] = ()
    #: CKE's ``NextCandidates``: the entry chosen to drain next, whether or not the
    #: unreachable gate lets it start now. A control plane among them is made
    #: NotReady in both endpoint sets before its drain (§B.2.2 step 4, §B.2.4).
    next_candidates: tuple[RebootQueueEntry, ...] = ()
    drain_timed_out: tuple[RebootQueueEntry, ...] = ()
    #: Candidates exist but too many nodes are unreachable to start a drain.
    blocked_by_unreachable: bool = False

    @property
    def active(self) -> bool:
        """CKE's ``phaseReboot``: there is reboot work, even if gated."""
        return bool(
            self.cancelled
            or self.dequeued
            or self.drain_completed
            or self.new_drains
            or self.drain_timed_out
            or self.blocked_by_unreachable
        )


def first_entry_per_node(entries: Iterable[RebootQueueEntry]) -> tuple[RebootQueueEntry, ...]:
    """CKE keeps only the first entry of each node."""
    seen: set[str] = set()
    kept: list[RebootQueueEntry] = []
    for entry in entries:
        if entry.node not in seen:
            seen.add(entry.node)
            kept.append(entry)
    return tuple(kept)


def reboot_processing(queue: RebootQueueStatus, address: str) -> bool:
    """The node's first entry is draining or rebooting, and the queue is enabled."""
    if not queue.enabled:
        return False
    for entry in queue.entries:
        if entry.node == address:
            return entry.is_processing
    return False


def processing_addresses(queue: RebootQueueStatus) -> frozenset[str]:
    """Addresses whose node is rebootProcessing (one pass over the queue)."""
    if not queue.enabled:
        return frozenset()
    return frozenset(e.node for e in first_entry_per_node(queue.entries) if e.is_processing)


def choose_reboot_candidates(
    entries: Sequence[RebootQueueEntry],
    control_planes: frozenset[str],
    max_concurrent_reboots: int,
    now: datetime.datetime,
) -> tuple[RebootQueueEntry, ...]:
    """At most one entry to start draining now (CKE's ``ChooseRebootCandidates``)."""
    workers_in_progress = 0
    first_drainable_worker: RebootQueueEntry | None = None
    first_drainable_cp: RebootQueueEntry | None = None
    for entry in entries:
        is_cp = entry.node in control_planes
        if entry.is_processing:
            if is_cp:
                return ()
            workers_in_progress += 1
        elif entry.is_drainable(now):
            if is_cp and first_drainable_cp is None:
                first_drainable_cp = entry
            elif not is_cp and first_drainable_worker is None:
                first_drainable_worker = entry
    if workers_in_progress == 0 and first_drainable_worker is None:
        return (first_drainable_cp,) if first_drainable_cp else ()
    if workers_in_progress < max_concurrent_reboots and first_drainable_worker is not None:
        return (first_drainable_worker,)
    return ()


def drain_timed_out(entry: RebootQueueEntry, timeout_seconds: int, now: datetime.datetime) -> bool:
    return entry.status is RebootStatus.DRAINING and (
        entry.last_transition_time + datetime.timedelta(seconds=timeout_seconds) < now
    )


def decide_reboots(
    cluster: Cluster,
    queue: RebootQueueStatus,
    unreachable: Sequence[Node],
    max_unreachable: int,
    now: datetime.datetime,
) -> RebootDecision:
    """Group the queue's entries by this round's action (rules 1-5 above).

    ``unreachable`` are the cluster's SSH-unreachable nodes.
    """
    entries = first_entry_per_node(queue.entries)
    members = cluster.node_by_address()
    booted = frozenset(queue.reboot_dequeued)
    cancelled = tuple(e for e in entries if e.status is RebootStatus.CANCELLED)
    dequeued = tuple(
        e
        for e in entries
        if e.status is not RebootStatus.CANCELLED and (e.node not in members or e.index in booted)
    )
    if cancelled or dequeued:
        return RebootDecision(cancelled=cancelled, dequeued=dequeued)
    reboot = cluster.reboot
    if not queue.enabled or not entries or not reboot.reboot_command:
        return RebootDecision()
    if not reboot.boot_check_command:
        return RebootDecision()

    completed = frozenset(queue.drain_completed)
    drain_completed = tuple(
        e for e in entries if e.status is RebootStatus.DRAINING and e.index in completed
    )
    control_planes = frozenset(n.address for n in cluster.control_planes)
    candidates = choose_reboot_candidates(
        entries, control_planes, reboot.max_concurrent_reboots, now
    )
    new_drains, blocked = candidates, False
    if candidates:
        processing = processing_addresses(queue)
        counted = [n for n in unreachable if n.address not in processing]
        if len(counted) > max_unreachable:
            new_drains, blocked = (), True
    timed_out = tuple(
        e
        for e in entries
        if e.index not in completed and drain_timed_out(e, reboot.eviction_timeout_seconds, now)
    )
    return RebootDecision(
        drain_completed=drain_completed,
        new_drains=new_drains,
        next_candidates=candidates,
        drain_timed_out=timed_out,
        blocked_by_unreachable=blocked,
    )


REBOOT_ANNOTATION = "cke.cybozu.com/reboot"


def uncordon_candidates(
    cluster: Cluster,
    kubernetes_nodes: Iterable[KubernetesNode],
    processing: frozenset[str],
) -> tuple[str, ...]:
    """Names of Nodes CKE cordoned for a reboot or repair that nothing processes now.

    A Node qualifies when it is unschedulable, carries the annotation
    ``cke.cybozu.com/reboot=true``, and its address is not in ``processing``
    (rebootProcessing or repairProcessing).
    """
    address_of = {n.nodename: n.address for n in cluster.nodes}
    return tuple(
        node.name
        for node in kubernetes_nodes
        if node.unschedulable
        and node.annotations.get(REBOOT_ANNOTATION) == "true"
        and address_of.get(node.name, node.name) not in processing
    )
