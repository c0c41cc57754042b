"""Properties of ``decide()`` (§B) over generated specs and reachable, faulty statuses.

Statuses come from ``strategies_decide``: what the simulator reaches from an
empty cluster, then operator changes and faults. Each property is one of
CKE's safety rules (§B, §F, §L) or a liveness rule (convergence), checked on
the decision and, where the rule is about the result, on the status after
the simulator ran the decision.
"""

from __future__ import annotations

import datetime
import json

import attrs
from hypothesis import given, note, settings
from hypothesis import strategies as st
from strategies_decide import (
    BASE_TIME,
    MAX_TRAJECTORY,
    Faults,
    Scenario,
    SpecChange,
    base_cluster,
    clear_faults,
    empty_status,
    fresh_clusters,
    make_scenario,
    scenarios,
)

from cke_core.cluster import Cluster
from cke_core.nodefilter import NodeFilter
from cke_core.ops.base import Operation
from cke_core.phases import Phase
from cke_core.reboot import first_entry_per_node, processing_addresses
from cke_core.render.images import EngineSettings
from cke_core.repair import decide_repairs
from cke_core.simulation import apply_decision, execute, health, run, ssh_targets
from cke_core.status import ClusterStatus, status_from_json, status_to_json
from cke_core.strategy import Decision, DecisionInputs, decide

QUORUM_OPS = frozenset(
    {
        "upgrade",
        "etcd-bootstrap",
        "etcd-add-member",
        "etcd-remove-member",
        "etcd-destroy-member",
        "etcd-restart",
    }
)
MEMBER_CHANGE_OPS = frozenset(
    {"etcd-add-member", "etcd-remove-member", "etcd-destroy-member", "etcd-restart"}
)
#: Operations that change a Kubernetes component (§B.2.2 step 4). The clean-up of
#: control-plane containers on demoted nodes (stop-kube-controller-manager ...,
#: §B.2.5) is not among them: CKE reaches step 8 with a CP down, by design.
COMPONENT_OPS = frozenset(
    {
        "kube-controller-manager-bootstrap",
        "kube-controller-manager-restart",
        "kube-scheduler-bootstrap",
        "kube-scheduler-restart",
        "kubelet-bootstrap",
        "kubelet-restart",
        "kube-proxy-bootstrap",
        "kube-proxy-restart",
        "stop-kube-proxy",
    }
)
CAPPED_OPS = frozenset(
    {
        "rivers-bootstrap",
        "rivers-restart",
        "etcd-rivers-bootstrap",
        "etcd-rivers-restart",
        "kubelet-bootstrap",
        "kubelet-restart",
        "kube-proxy-bootstrap",
        "kube-proxy-restart",
        "stop-kube-proxy",
    }
)
MAX_PLAN = 100
#: Decisions of the loop the reboot property follows from each scenario.
REBOOT_STEPS = 4
CONVERGE_STEPS = 60
#: Rolling every component one node at a time (max_concurrent_updates=1) after a
#: spec change takes longer than a bootstrap.
RECOVER_STEPS = 150


def named(decision: Decision, names: frozenset[str]) -> list[Operation]:
    return [op for op in decision.operations if op.name in names]


def summary(decision: Decision) -> str:
    return f"{decision.phase}: " + ", ".join(
        f"{op.name}{list(op.targets)}" for op in decision.operations
    )


def node_filter(inputs: DecisionInputs) -> NodeFilter:
    return NodeFilter(inputs.cluster, inputs.status, inputs.settings)


def decided(scenario: Scenario) -> tuple[DecisionInputs, Decision]:
    decision = decide(scenario.inputs)
    note(summary(decision))
    return scenario.inputs, decision


# ---------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------


def json_round_trip(status: ClusterStatus) -> ClusterStatus:
    return status_from_json(json.loads(json.dumps(status_to_json(status))))


@given(scenarios())
def test_decide_is_deterministic(scenario: Scenario) -> None:
    inputs, decision = decided(scenario)
    assert decide(inputs) == decision
    again = attrs.evolve(inputs, status=json_round_trip(inputs.status))
    assert decide(again) == decision


# ---------------------------------------------------------------------------
# etcd quorum (§B.1 steps 0, 2 and 6; §B.2.3; §L.3)
# ---------------------------------------------------------------------------


@given(scenarios())
def test_quorum_changes_need_every_control_plane_reachable(scenario: Scenario) -> None:
    inputs, decision = decided(scenario)
    if named(decision, QUORUM_OPS):
        assert node_filter(inputs).all_control_planes_connected


@given(scenarios())
def test_at_most_one_etcd_member_changes_per_decision(scenario: Scenario) -> None:
    _, decision = decided(scenario)
    changes = named(decision, MEMBER_CHANGE_OPS)
    assert len(changes) <= 1
    for op in changes:
        assert len(op.targets) == 1


# ---------------------------------------------------------------------------
# Kubernetes components (§B.2.2; §L.4)
# ---------------------------------------------------------------------------


@given(scenarios())
def test_no_component_changes_while_apiserver_unhealthy_or_cp_unreachable(
    scenario: Scenario,
) -> None:
    inputs, decision = decided(scenario)
    nf = node_filter(inputs)
    degraded = not nf.all_control_planes_connected or any(
        nf.api_server_unhealthy(n) for n in nf.control_planes
    )
    if degraded:
        assert named(decision, COMPONENT_OPS) == []


@given(scenarios())
def test_healthy_apiservers_restart_one_at_a_time(scenario: Scenario) -> None:
    inputs, decision = decided(scenario)
    nf = node_filter(inputs)
    healthy = {n.address for n in nf.control_planes if nf.api_server_healthy(n)}
    all_fine = nf.all_control_planes_connected and len(healthy) == len(nf.control_planes)
    for op in named(decision, frozenset({"kube-apiserver-restart"})):
        assert len(healthy & set(op.targets)) <= 1
        if all_fine:
            assert len(op.targets) == 1


@given(scenarios())
def test_node_component_operations_are_capped(scenario: Scenario) -> None:
    inputs, decision = decided(scenario)
    for op in named(decision, CAPPED_OPS):
        assert len(op.targets) <= inputs.settings.max_concurrent_updates


# ---------------------------------------------------------------------------
# Reboots (§B.2.7, §F.1; §L.5)
# ---------------------------------------------------------------------------


def _processing(status: ClusterStatus, addresses: frozenset[str]) -> int:
    queue = status.reboot_queue
    if not queue.enabled:
        return 0
    return sum(
        1 for e in first_entry_per_node(queue.entries) if e.is_processing and e.node in addresses
    )


def check_reboot_decision(inputs: DecisionInputs, decision: Decision) -> None:
    cluster, status = inputs.cluster, inputs.status
    cps = frozenset(n.address for n in cluster.control_planes)
    workers = frozenset(n.address for n in cluster.workers)
    drains = named(decision, frozenset({"reboot-drain-start"}))
    started = [t for op in drains for t in op.targets]
    assert len(started) <= 1, "at most one new reboot candidate per decision"
    if not started:
        return

    nf = node_filter(inputs)
    assert nf.etcd_is_good, "no drain while etcd is not good"
    repairs = decide_repairs(
        cluster, status.repair_queue, processing_addresses(status.reboot_queue), inputs.now
    )
    assert not repairs.active, "no drain while a repair is active"
    processing = processing_addresses(status.reboot_queue)
    unreachable = [n for n in cluster.nodes if not nf.ssh_connected(n)]
    counted = [n for n in unreachable if n.address not in processing]
    assert len(counted) <= inputs.constraints.maximum_unreachable_nodes_for_reboot

    (node,) = started
    cps_before, workers_before = _processing(status, cps), _processing(status, workers)
    if node in cps:
        assert cps_before == 0, "CPs drain one at a time"
        assert workers_before == 0, "CPs drain only after the workers"
    else:
        assert cps_before == 0, "workers never drain together with a CP"
        assert workers_before < cluster.reboot.max_concurrent_reboots

    after = apply_decision(inputs, decision)
    limit = max(workers_before, cluster.reboot.max_concurrent_reboots)
    assert _processing(after, workers) <= limit
    if not (cps_before and workers_before):
        assert not (_processing(after, cps) and _processing(after, workers))


@settings(deadline=None)
@given(scenarios(reboots=True))
def test_reboot_drains_respect_order_concurrency_and_gates(scenario: Scenario) -> None:
    """Checked over a few decisions of the engine's loop, as the queue moves on."""
    inputs = scenario.inputs
    for _ in range(REBOOT_STEPS):
        decision = decide(inputs)
        note(summary(decision))
        check_reboot_decision(inputs, decision)
        if not decision.operations:
            break
        status = apply_decision(inputs, decision)
        inputs = attrs.evolve(inputs, status=status, now=inputs.now + datetime.timedelta(minutes=5))


# ---------------------------------------------------------------------------
# Plans (§C; ops.base contract)
# ---------------------------------------------------------------------------


@settings(deadline=None)
@given(scenarios())
def test_plans_finish_and_reach_only_reachable_nodes(scenario: Scenario) -> None:
    inputs, decision = decided(scenario)
    status = inputs.status
    reachable = {a for a, st_ in status.nodes.items() if st_.ssh_connected}
    for op in decision.operations:
        run_ = execute(status, inputs.cluster, inputs.settings, op, inputs.now)
        assert len(run_.commands) <= MAX_PLAN, f"{op.name} ran {len(run_.commands)} commands"
        for command in run_.commands:
            for target in ssh_targets(command):
                assert target in reachable, f"{op.name}: {command.name} on unreachable {target}"
        status = run_.status


def demoted_cp_down() -> Scenario:
    """A control plane demoted to a worker goes down just before etcd maintenance
    removes its member (CKE's mtest "demote a CP", with the machine failing)."""
    return make_scenario(
        base_cluster(3, 1, interleaved=False, variant=False),
        change=SpecChange(membership="demote", member_index=1),
        after=MAX_TRAJECTORY,
        until=Phase.ETCD_MAINTAIN,
        faults=Faults(unreachable=(1,)),
    )


def test_destroy_member_never_goes_to_an_unreachable_node() -> None:
    """CKE would destroy the member over SSH here and fail every cycle (ADR 0008)."""
    inputs = demoted_cp_down().inputs
    decision = decide(inputs)
    reachable = {a for a, st_ in inputs.status.nodes.items() if st_.ssh_connected}
    assert "etcd-destroy-member" not in [op.name for op in decision.operations]
    targets = {
        t
        for op in decision.operations
        for c in execute(inputs.status, inputs.cluster, inputs.settings, op, inputs.now).commands
        for t in ssh_targets(c)
    }
    assert targets <= reachable, f"SSH commands to unreachable {sorted(targets - reachable)}"


# ---------------------------------------------------------------------------
# Convergence
# ---------------------------------------------------------------------------


def assert_stays_completed(inputs: DecisionInputs, times: int = 3) -> None:
    """Observed again (health re-derived), a completed cluster stays completed. The
    clock stands still: time alone may legitimately start work (a reboot entry's
    backoff expires)."""
    for _ in range(times):
        decision = decide(inputs)
        assert decision == Decision(Phase.COMPLETED), summary(decision)
        inputs = attrs.evolve(inputs, status=health(inputs.status, inputs.cluster))


@settings(deadline=None)
@given(fresh_clusters())
def test_converges_from_an_empty_cluster(fresh: tuple[Cluster, EngineSettings, str]) -> None:
    cluster, engine, version = fresh
    inputs = DecisionInputs(
        cluster=cluster, status=empty_status(cluster, version), settings=engine, now=BASE_TIME
    )
    result = run(inputs, CONVERGE_STEPS + 1)
    for decision in result.decisions:
        note(summary(decision))
    assert len(result.decisions) <= CONVERGE_STEPS
    assert result.decisions[-1].phase is Phase.COMPLETED
    assert_stays_completed(attrs.evolve(inputs, status=result.status))


@settings(deadline=None)
@given(scenarios(converged=True, queues_enabled=True), st.booleans())
def test_converges_after_faults_are_cleared(scenario: Scenario, early: bool) -> None:
    inputs = scenario.inputs
    if early:
        # The engine acts once on the faulty status before the faults clear.
        inputs = attrs.evolve(inputs, status=apply_decision(inputs, decide(inputs)))
    status = clear_faults(inputs.status, scenario.base, inputs.cluster)
    inputs = attrs.evolve(inputs, status=status)
    result = run(inputs, RECOVER_STEPS + 1, tick=datetime.timedelta(minutes=1))
    for decision in result.decisions:
        note(summary(decision))
    assert len(result.decisions) <= RECOVER_STEPS
    assert result.decisions[-1].phase is Phase.COMPLETED
    assert_stays_completed(attrs.evolve(inputs, status=result.status))


assert MAX_TRAJECTORY >= CONVERGE_STEPS
