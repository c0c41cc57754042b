"""Replay: rebuild a recorded decision's inputs from the events, re-run
``decide()``, and say what differs; ``explain`` a decision in words.

Everything here is pure: the caller reads the events (the configuration's and
the decision log's) and passes them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import attrs

from cke_core.cluster import Node
from cke_core.constraints import Constraints
from cke_core.history.base import HistoryError
from cke_core.history.configuration import ClusterConfiguration
from cke_core.history.provenance import DecisionRecorded, observations, operations_summary
from cke_core.nodefilter import NodeFilter
from cke_core.status import status_from_json
from cke_core.strategy import Decision, DecisionInputs, decide
from cke_core.timefmt import format_rfc3339

__all__ = [
    "Replay",
    "compare",
    "explain",
    "rebuild_inputs",
    "replay_log",
]


@attrs.frozen(eq=False)
class Replay:
    """One recorded decision, re-derived."""

    event: DecisionRecorded
    inputs: DecisionInputs
    decision: Decision
    differences: tuple[str, ...]
    #: The engine that replayed (None: not given, not compared).
    engine_version: str | None = None

    @property
    def identical(self) -> bool:
        return not self.differences

    @property
    def same_engine(self) -> bool:
        return self.engine_version is None or self.engine_version == self.event.engine_version


def rebuild_inputs(
    event: DecisionRecorded,
    configuration: ClusterConfiguration,
    status_doc: Mapping[str, Any],
) -> DecisionInputs:
    """The inputs of ``event``: ``configuration`` must be at the event's
    configuration version, ``status_doc`` the document it observed
    (``provenance.observations`` gives it). Missing constraints mean the
    defaults, as the engine uses them."""
    if configuration.version != event.configuration_version:
        raise HistoryError(
            f"decision {event.position} saw configuration version "
            f"{event.configuration_version}, not {configuration.version}"
        )
    cluster = configuration.cluster()
    if cluster is None:
        raise HistoryError(
            f"decision {event.position}: no cluster spec at configuration version "
            f"{event.configuration_version}"
        )
    return DecisionInputs(
        cluster=cluster,
        status=status_from_json(dict(status_doc)),
        constraints=configuration.constraints() or Constraints(),
        resources=configuration.resources(),
        settings=configuration.settings(),
        now=event.now,
        seed=event.seed,
    )


def compare(recorded: DecisionRecorded, rederived: Decision) -> list[str]:
    """What differs between a recorded decision and a re-derived one, in words
    (empty when they agree: the same phase, and the same operations with the
    same targets in the same order)."""
    differences: list[str] = []
    if recorded.phase != rederived.phase.value:
        differences.append(f"phase: recorded {recorded.phase}, re-derived {rederived.phase.value}")
    again = operations_summary(rederived)
    if len(recorded.operations) != len(again):
        differences.append(
            f"operations: recorded {len(recorded.operations)}, re-derived {len(again)}"
        )
    for number, (before, after) in enumerate(
        zip(recorded.operations, again, strict=False), start=1
    ):
        if list(before) != after:
            differences.append(
                f"operation {number}: recorded {_describe(before)}, re-derived {_describe(after)}"
            )
    for number, extra in enumerate(recorded.operations[len(again) :], start=len(again) + 1):
        differences.append(f"operation {number}: recorded {_describe(extra)}, not re-derived")
    for number, extra in enumerate(
        again[len(recorded.operations) :], start=len(recorded.operations) + 1
    ):
        differences.append(f"operation {number}: re-derived {_describe(extra)}, not recorded")
    return differences


def _describe(summary: Sequence[Any]) -> str:
    name, targets = summary[0], summary[1]
    return f"{name} [{', '.join(targets)}]" if targets else f"{name} (no targets)"


def replay_log(
    decision_events: Iterable[DecisionRecorded],
    configuration_events: Sequence[Any],
    *,
    engine_version: str | None = None,
) -> Iterator[Replay]:
    """Replay every decision of ``decision_events`` (consecutive, from an event
    that carries an observation snapshot), with the configuration folded from
    ``configuration_events`` (all of them, from its creation)."""
    folder = _ConfigurationFolder(configuration_events)
    for event, doc in observations(decision_events):
        inputs = rebuild_inputs(event, folder.at(event.configuration_version), doc)
        decision = decide(inputs)
        yield Replay(event, inputs, decision, tuple(compare(event, decision)), engine_version)


class _ConfigurationFolder:
    """Folds the configuration forward as the versions asked for increase."""

    def __init__(self, events: Sequence[Any]) -> None:
        self._events = list(events)
        self._next = 0
        self._aggregate: Any = None

    def at(self, version: int) -> ClusterConfiguration:
        if self._aggregate is not None and self._aggregate.version > version:
            self._next, self._aggregate = 0, None
        while self._next < len(self._events) and (
            self._events[self._next].originator_version <= version
        ):
            self._aggregate = self._events[self._next].mutate(self._aggregate)
            self._next += 1
        if not isinstance(self._aggregate, ClusterConfiguration) or (
            self._aggregate.version != version
        ):
            raise HistoryError(f"configuration version {version} is not in the events")
        return self._aggregate


# ---------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------

#: (fact, NodeFilter predicate, control planes only, (status field, image name) if outdated)
_FACTS: Final[tuple[tuple[str, str, bool, tuple[str, str] | None], ...]] = (
    ("rivers stopped", "rivers_stopped", False, None),
    ("rivers outdated", "rivers_outdated", False, ("rivers", "tools")),
    ("etcd-rivers stopped", "etcd_rivers_stopped", True, None),
    ("etcd-rivers outdated", "etcd_rivers_outdated", True, ("etcd_rivers", "tools")),
    ("etcd stopped", "etcd_stopped", True, None),
    ("etcd outdated", "etcd_outdated", True, ("etcd", "etcd")),
    ("kube-apiserver stopped", "api_server_stopped", True, None),
    ("kube-apiserver unhealthy", "api_server_unhealthy", True, None),
    ("kube-apiserver outdated", "api_server_outdated", True, ("api_server", "kubernetes")),
    ("kube-controller-manager stopped", "controller_manager_stopped", True, None),
    (
        "kube-controller-manager outdated",
        "controller_manager_outdated",
        True,
        ("controller_manager", "kubernetes"),
    ),
    ("kube-scheduler stopped", "scheduler_stopped", True, None),
    ("kube-scheduler outdated", "scheduler_outdated", True, ("scheduler", "kubernetes")),
    ("kubelet stopped", "kubelet_stopped", False, None),
    ("kubelet unrecognized", "kubelet_unrecognized", False, None),
    ("kubelet outdated", "kubelet_outdated", False, ("kubelet", "kubernetes")),
    ("kubelet runtime changed", "kubelet_runtime_changed", False, None),
    ("kube-proxy stopped", "proxy_stopped", False, None),
    ("kube-proxy outdated", "proxy_outdated", False, ("proxy", "kubernetes")),
    ("kube-proxy running unexpectedly", "proxy_running_unexpectedly", False, None),
)

#: Targets listed per operation before "... and N more".
MAX_TARGETS: Final = 20


def explain(inputs: DecisionInputs, decision: Decision) -> str:
    """A readable account of a decision: the phase, each operation and its
    targets, and for each target node the status facts (CKE's predicates)
    that hold for it."""
    status = inputs.status
    nf = NodeFilter(inputs.cluster, status, inputs.settings)
    by_address = inputs.cluster.node_by_address()
    count = len(decision.operations)
    lines = [
        f"Decision at {format_rfc3339(inputs.now)} (seed {inputs.seed}): phase "
        f"{decision.phase.value}, {count} operation{'' if count == 1 else 's'}.",
        _cluster_facts(inputs, nf),
    ]
    for number, op in enumerate(decision.operations, start=1):
        targets = op.targets
        lines.append(f"{number}. {op.name}: {', '.join(targets) if targets else 'no targets'}")
        for target in targets[:MAX_TARGETS]:
            node = by_address.get(target)
            if node is not None:
                lines.append(f"   {target}: {'; '.join(_node_facts(inputs, nf, node))}")
            elif target in status.nodes:
                lines.append(f"   {target}: observed, not in cluster.yml")
        if len(targets) > MAX_TARGETS:
            lines.append(f"   ... and {len(targets) - MAX_TARGETS} more")
    return "\n".join(lines)


def _cluster_facts(inputs: DecisionInputs, nf: NodeFilter) -> str:
    status = inputs.status
    cps = len(nf.control_planes)
    unreachable = len(nf.select(nf.ssh_not_connected, nf.nodes))
    etcd = "healthy" if status.etcd.is_healthy else "unhealthy"
    reboot = status.reboot_queue
    repair = status.repair_queue
    return (
        f"Cluster: {cps} control plane{'' if cps == 1 else 's'}, "
        f"{len(nf.nodes) - cps} workers, {unreachable} unreachable; "
        f"config version {status.config_version}; etcd {etcd} "
        f"({len(status.etcd.members)} members); Kubernetes control plane "
        f"{'ready' if status.kubernetes.is_control_plane_ready else 'not ready'}; "
        f"reboot queue {'enabled' if reboot.enabled else 'disabled'} "
        f"({len(reboot.entries)} entries); repair queue "
        f"{'enabled' if repair.enabled else 'disabled'} ({len(repair.entries)} entries)."
    )


def _node_facts(inputs: DecisionInputs, nf: NodeFilter, node: Node) -> list[str]:
    role = "control plane" if node.control_plane else "worker"
    if not nf.ssh_connected(node):
        return [role, "SSH unreachable"]
    facts = [role]
    node_status = nf.node_status(node)
    images = inputs.settings.images
    stopped: set[str] = set()
    for fact, predicate, cp_only, outdated in _FACTS:
        component = fact.split(" ", 1)[0]
        if (cp_only and not node.control_plane) or component in stopped:
            continue
        if not getattr(nf, predicate)(node):
            continue
        if fact.endswith(" stopped"):
            stopped.add(component)
        if outdated is None:
            facts.append(fact)
            continue
        field, image_name = outdated
        running = getattr(node_status, field).image
        expected = getattr(images, image_name)
        why = (
            f"running {running}, expected {expected}"
            if running != expected
            else "parameters or configuration differ"
        )
        facts.append(f"{fact} ({why})")
    k8s_node = nf.kubernetes_node(node)
    if k8s_node is not None:
        facts.append(
            f"Node {k8s_node.name} {'Ready' if k8s_node.ready else 'NotReady'}"
            + (", unschedulable" if k8s_node.unschedulable else "")
        )
    for entry in inputs.status.reboot_queue.entries:
        if entry.node == node.address:
            facts.append(f"reboot queue entry {entry.index} {entry.status.value}")
    for repair in inputs.status.repair_queue.entries:
        if repair.address == node.address:
            state = repair.status.value
            if repair.is_processing:
                state += f"/{repair.step_status.value} step {repair.step}"
            facts.append(f"repair queue entry {repair.index} {state}")
    if len(facts) == 1:
        facts.append("no component facts")
    return facts
