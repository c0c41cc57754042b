"""Kubernetes, reboot-queue and repair-queue operations, and the drain backoffs."""

from __future__ import annotations

import datetime
from collections.abc import Callable

import pytest

from cke_core import backoff
from cke_core.cluster import (
    LabelSelector,
    Reboot,
    Repair,
    RepairOperation,
    RepairStep,
    Taint,
    TrustedRestMapping,
)
from cke_core.commands.kube import (
    ApplyResource,
    CordonNode,
    EvictPods,
    RemoveNode,
    UncordonNode,
    UpdateNode,
)
from cke_core.commands.queue import (
    GetRebootQueueEntry,
    RunLocalCommand,
    UpdateRebootQueueEntry,
    UpdateRepairQueueEntry,
)
from cke_core.frozen import FrozenDict
from cke_core.ops.base import (
    SUCCESS,
    Command,
    CommandResult,
    Operation,
    ScriptedOperation,
    failed_nodes,
)
from cke_core.ops.kubernetes import (
    CreateConfigMapOp,
    CreateEndpointSliceOp,
    CreateEndpointsOp,
    CreateEtcdServiceOp,
    RemoveNodeOp,
    ResourceApplyOp,
    UpdateConfigMapOp,
    UpdateEndpointSliceOp,
    UpdateEndpointsOp,
    UpdateEtcdServiceOp,
    UpdateNodeOp,
    WaitKubernetesOp,
)
from cke_core.ops.reboot import (
    DELETE_BATCH,
    DRAIN_BATCH,
    REBOOT_BATCH,
    TIMEOUT_BATCH,
    RebootCancelOp,
    RebootDeleteDaemonSetPodOp,
    RebootDequeueOp,
    RebootDrainStartOp,
    RebootDrainTimeoutOp,
    RebootRebootOp,
    RebootUncordonOp,
)
from cke_core.ops.repair import (
    RepairDequeueOp,
    RepairDrainStartOp,
    RepairDrainTimeoutOp,
    RepairExecuteOp,
    RepairFinishOp,
)
from cke_core.queues import (
    RebootQueueEntry,
    RebootStatus,
    RepairQueueEntry,
    RepairStatus,
    RepairStepStatus,
)
from cke_core.status import (
    ConfigMap,
    EndpointPort,
    Endpoints,
    EndpointSlice,
    EndpointSliceEndpoint,
    EndpointSubset,
    KubernetesNode,
    Service,
    ServicePort,
)

UTC = datetime.UTC
NOW = datetime.datetime(2024, 5, 1, 10, 0, 0, 750_000, tzinfo=UTC)
#: ``NOW`` truncated to the second, as every write stamps it.
LTT = datetime.datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
SEED = 1234
API = "10.0.0.11"

Responder = Callable[[Command], CommandResult]
Steps = list[tuple[str, str]]


def run(op: Operation, respond: Responder = lambda _: SUCCESS) -> tuple[Steps, list[Command]]:
    """Drive ``op`` like the executor: at most 100 commands, stopping at a
    failure unless the operation tolerates failures."""
    results: list[CommandResult] = []
    commands: list[Command] = []
    for _ in range(100):
        command = op.next_command(results)
        if command is None:
            return [(c.name, c.target) for c in commands], commands
        commands.append(command)
        result = respond(command)
        results.append(result)
        if not result.ok and not op.tolerates_failures:
            return [(c.name, c.target) for c in commands], commands
    pytest.fail(f"{op.name} did not finish within 100 commands")


def results_of(op: Operation, respond: Responder) -> list[CommandResult]:
    results: list[CommandResult] = []
    while (command := op.next_command(results)) is not None:
        results.append(respond(command))
    return results


def fail_when(predicate: Callable[[Command], bool], error: str = "boom") -> Responder:
    def respond(command: Command) -> CommandResult:
        if isinstance(command, GetRebootQueueEntry):
            return CommandResult(value=RebootQueueEntry(index=command.index, node=command.node))
        if predicate(command):
            return CommandResult(ok=False, error=error)
        return SUCCESS

    return respond


def reboot_entry(index: int, node: str, **kwargs: object) -> RebootQueueEntry:
    return RebootQueueEntry(index=index, node=node, **kwargs)  # type: ignore[arg-type]


REBOOT = Reboot(
    reboot_command=("reboot-node", "--now"),
    boot_check_command=("check",),
    command_timeout_seconds=60,
    command_retries=2,
    command_interval=5,
    evict_retries=3,
    evict_interval=10,
    protected_namespaces=LabelSelector(match_labels=FrozenDict({"team": "a"})),
)
REPAIR = Repair(
    protected_namespaces=LabelSelector(match_labels=FrozenDict({"team": "b"})),
    evict_retries=1,
    evict_interval=2,
)
STEP = RepairStep(repair_command=("repair", "reset"), command_timeout_seconds=30, command_retries=1)
OPERATION = RepairOperation(
    operation="op1",
    repair_steps=(STEP,),
    success_command=("notify", "ok"),
    success_command_timeout=15,
)
REPAIR_ENTRY = RepairQueueEntry(
    index=7,
    address="10.0.0.15",
    nodename="node15",
    machine_type="type1",
    operation="op1",
    drain_backoff_count=1,
)


# ---------------------------------------------------------------------------
# Backoff formulas
# ---------------------------------------------------------------------------


def test_jitter_is_deterministic_and_in_range() -> None:
    values = [backoff.jitter(seed, "x", 3, upper=300) for seed in range(500)]
    assert all(0 <= v < 300 for v in values)
    assert values == [backoff.jitter(seed, "x", 3, upper=300) for seed in range(500)]
    # different seeds generally give different values
    wide = {backoff.jitter(seed, "x", 3, upper=10**9) for seed in range(500)}
    assert len(wide) == 500
    assert len(set(values)) > 200
    # the parts matter too, with their types
    assert backoff.jitter(1, 1, upper=10**9) != backoff.jitter(1, "1", upper=10**9)


def test_jitter_rejects_an_empty_range() -> None:
    with pytest.raises(ValueError, match="positive"):
        backoff.jitter(1, upper=0)


@pytest.mark.parametrize(
    ("count", "low"),
    [(1, 300), (2, 600), (3, 1200), (4, 1200), (30, 1200), (10_000, 1200)],
)
def test_reboot_backoff_is_exponential_and_capped(count: int, low: int) -> None:
    for seed in range(200):
        seconds = backoff.reboot_backoff_seconds(count, seed, 5)
        assert low <= seconds < low + 300
        expire = backoff.reboot_drain_backoff_expire(LTT, count, seed, 5)
        assert expire == LTT + datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_repair_backoff_is_linear(count: int) -> None:
    values = {backoff.repair_backoff_seconds(count, seed, 5) for seed in range(400)}
    assert all(300 <= v < 300 + 300 * count for v in values)
    if count > 1:
        # the range widens with the count
        assert max(values) >= 300 + 300 * (count - 1)
    expire = backoff.repair_drain_backoff_expire(LTT, count, 9, 5)
    assert expire == LTT + datetime.timedelta(seconds=backoff.repair_backoff_seconds(count, 9, 5))


def test_backoffs_are_deterministic_and_depend_on_seed_index_and_count() -> None:
    assert backoff.reboot_backoff_seconds(1, 7, 3) == backoff.reboot_backoff_seconds(1, 7, 3)
    assert backoff.repair_backoff_seconds(2, 7, 3) == backoff.repair_backoff_seconds(2, 7, 3)
    by_seed = {backoff.reboot_backoff_seconds(1, s, 3) for s in range(100)}
    by_index = {backoff.reboot_backoff_seconds(1, 7, i) for i in range(100)}
    assert len(by_seed) > 50
    assert len(by_index) > 50


@pytest.mark.parametrize("fn", [backoff.reboot_backoff_seconds, backoff.repair_backoff_seconds])
def test_backoff_count_must_be_incremented(fn: Callable[[int, int, int], int]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        fn(0, 1, 1)


# ---------------------------------------------------------------------------
# Kubernetes operations
# ---------------------------------------------------------------------------

CM = ConfigMap(name="cluster-dns", namespace="kube-system", data=FrozenDict({"Corefile": "x"}))
NODE_CM = ConfigMap(
    name="node-dns", namespace="kube-system", data=FrozenDict({"unbound.conf": "y"})
)
SVC = Service(
    name="cke-etcd",
    namespace="kube-system",
    type="ClusterIP",
    cluster_ip="None",
    ports=(ServicePort(port=2379),),
)
EP = Endpoints(
    name="kubernetes",
    namespace="default",
    labels=FrozenDict({"endpointslice.kubernetes.io/skip-mirror": "true"}),
    subsets=(EndpointSubset(addresses=(API,), ports=(EndpointPort(name="https", port=6443),)),),
)
ETCD_EP = Endpoints(name="cke-etcd", namespace="kube-system")
EPS = EndpointSlice(
    name="kubernetes",
    namespace="default",
    address_type="IPv4",
    endpoints=(EndpointSliceEndpoint(addresses=(API,), ready=True),),
)
ETCD_EPS = EndpointSlice(name="cke-etcd", namespace="kube-system", address_type="IPv4")

KUBE_CASES: list[tuple[Operation, str, tuple[str, ...], Steps]] = [
    (
        WaitKubernetesOp(API),
        "wait-kubernetes",
        (API,),
        [("wait-kubernetes", "kube-system sa/default")],
    ),
    (
        ResourceApplyOp(API, "Namespace/foo", {"apiVersion": "v1", "kind": "Namespace"}),
        "resource-apply",
        (API,),
        [("apply-resource", "Namespace/foo")],
    ),
    (
        CreateConfigMapOp(API, CM),
        "create-cluster-dns-configmap",
        (API,),
        [("create-configmap", "kube-system/cluster-dns")],
    ),
    (
        UpdateConfigMapOp(API, CM),
        "update-cluster-dns-configmap",
        (API,),
        [("update-configmap", "kube-system/cluster-dns")],
    ),
    (
        CreateConfigMapOp(API, NODE_CM),
        "create-node-dns-configmap",
        (API,),
        [("create-configmap", "kube-system/node-dns")],
    ),
    (
        UpdateConfigMapOp(API, NODE_CM),
        "update-node-dns-configmap",
        (API,),
        [("update-configmap", "kube-system/node-dns")],
    ),
    (
        CreateEtcdServiceOp(API, SVC),
        "create-etcd-service",
        (API,),
        [("create-service", "kube-system/cke-etcd")],
    ),
    (
        UpdateEtcdServiceOp(API, SVC),
        "update-etcd-service",
        (API,),
        [("update-service", "kube-system/cke-etcd")],
    ),
    (
        CreateEndpointsOp(API, EP),
        "create-kubernetes-endpoints",
        (API,),
        [("create-endpoints", "default/kubernetes")],
    ),
    (
        UpdateEndpointsOp(API, EP),
        "update-kubernetes-endpoints",
        (API,),
        [("update-endpoints", "default/kubernetes")],
    ),
    (
        CreateEndpointSliceOp(API, EPS),
        "create-kubernetes-endpointslice",
        (API,),
        [("create-endpointslice", "default/kubernetes")],
    ),
    (
        UpdateEndpointSliceOp(API, EPS),
        "update-kubernetes-endpointslice",
        (API,),
        [("update-endpointslice", "default/kubernetes")],
    ),
    (
        CreateEndpointsOp(API, ETCD_EP),
        "create-cke-etcd-endpoints",
        (API,),
        [("create-endpoints", "kube-system/cke-etcd")],
    ),
    (
        UpdateEndpointsOp(API, ETCD_EP),
        "update-cke-etcd-endpoints",
        (API,),
        [("update-endpoints", "kube-system/cke-etcd")],
    ),
    (
        CreateEndpointSliceOp(API, ETCD_EPS),
        "create-cke-etcd-endpointslice",
        (API,),
        [("create-endpointslice", "kube-system/cke-etcd")],
    ),
    (
        UpdateEndpointSliceOp(API, ETCD_EPS),
        "update-cke-etcd-endpointslice",
        (API,),
        [("update-endpointslice", "kube-system/cke-etcd")],
    ),
    (
        UpdateNodeOp(API, [KubernetesNode(name="10.0.0.14"), KubernetesNode(name="n15")]),
        "update-node",
        ("10.0.0.14", "n15"),
        [("update-node", "10.0.0.14,n15")],
    ),
    (
        RemoveNodeOp(API, ["10.0.0.20", "10.0.0.21"]),
        "remove-node",
        (API,),
        [("remove-node", "10.0.0.20,10.0.0.21")],
    ),
]


@pytest.mark.parametrize(
    ("op", "name", "targets", "steps"), KUBE_CASES, ids=[c[1] for c in KUBE_CASES]
)
def test_kubernetes_op_commands(
    op: Operation, name: str, targets: tuple[str, ...], steps: Steps
) -> None:
    assert op.name == name
    assert op.targets == targets
    assert not op.tolerates_failures
    assert run(op)[0] == steps
    # every command goes through the given apiserver
    assert all(getattr(c, "apiserver", None) == API for c in run(op)[1])


def test_kubernetes_ops_are_hashable_values() -> None:
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}}
    a = ResourceApplyOp(API, "Namespace/foo", doc)
    b = ResourceApplyOp(API, "Namespace/foo", dict(doc))
    assert a == b
    assert hash(a) == hash(b)
    assert {op for op, *_ in KUBE_CASES}


def test_resource_apply_passes_document_and_trusted_mappings() -> None:
    mapping = TrustedRestMapping(group="g", version="v1", kind="K", resource="ks")
    op = ResourceApplyOp(API, "K/x", {"kind": "K", "spec": {"a": [1, 2]}}, [mapping])
    (command,) = run(op)[1]
    assert isinstance(command, ApplyResource)
    assert command.document["spec"]["a"] == (1, 2)
    assert command.trusted_mappings == (mapping,)
    assert command.FIELD_MANAGER == "cke"
    assert command.FORCE


def test_update_node_carries_the_desired_node() -> None:
    desired = KubernetesNode(name="10.0.0.14", labels=FrozenDict({"a": "b"}))
    other = KubernetesNode(name="n15", taints=(Taint("k", "v", "NoSchedule"),))
    (command,) = run(UpdateNodeOp(API, [desired, other]))[1]
    assert isinstance(command, UpdateNode)
    assert command.nodes == (desired, other)


def test_node_commands_take_a_list_of_nodes() -> None:
    assert RemoveNode(API, ("a", "b")).target == "a,b"
    assert CordonNode(API, ["a"]).nodes == ("a",)
    with pytest.raises(TypeError, match="string"):
        UncordonNode(API, "a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="KubernetesNode"):
        UpdateNode(API, KubernetesNode(name="a"))  # type: ignore[arg-type]


def test_a_node_op_fails_as_one_command() -> None:
    """CKE updates, removes and uncordons the Nodes in one command; a failure on any
    fails it (and the operation), the result naming the failed Nodes when it can."""
    op = RemoveNodeOp(API, ["a", "b", "c"])
    failed = CommandResult(ok=False, error="b: forbidden", value=FrozenDict({"b": "forbidden"}))
    steps, _ = run(op, lambda _: failed)
    assert steps == [("remove-node", "a,b,c")]
    assert failed_nodes(op.names, failed) == ("b",)
    assert failed_nodes(op.names, CommandResult(ok=False, error="apiserver down")) == op.names
    assert failed_nodes(op.names, SUCCESS) == ()


# ---------------------------------------------------------------------------
# Reboot operations
# ---------------------------------------------------------------------------

E14 = reboot_entry(1, "10.0.0.14")
E15 = reboot_entry(2, "10.0.0.15", drain_backoff_count=2)


def test_reboot_drain_start_success() -> None:
    op = RebootDrainStartOp(API, [E14, E15], REBOOT, NOW, SEED)
    assert op.name == "reboot-drain-start"
    assert op.targets == ("10.0.0.14", "10.0.0.15")
    assert op.tolerates_failures
    steps, commands = run(op)
    assert steps == [
        ("update-reboot-queue-entry", "10.0.0.14"),
        ("cordon-node", "10.0.0.14"),
        ("evict-pods-dry-run", "10.0.0.14"),
        ("update-reboot-queue-entry", "10.0.0.15"),
        ("cordon-node", "10.0.0.15"),
        ("evict-pods-dry-run", "10.0.0.15"),
        ("evict-pods", "10.0.0.14"),
        ("evict-pods", "10.0.0.15"),
    ]
    update = commands[0]
    assert isinstance(update, UpdateRebootQueueEntry)
    assert update.entry.status is RebootStatus.DRAINING
    assert update.entry.last_transition_time == LTT
    evict = commands[6]
    assert isinstance(evict, EvictPods)
    assert not evict.dry_run
    assert evict.apiserver == API
    assert evict.protected_namespaces == REBOOT.protected_namespaces
    assert evict.protected_job_pods is None
    assert (evict.evict_retries, evict.evict_interval) == (3, 10)
    assert isinstance(commands[1], CordonNode)
    assert op.info(results_of(op, lambda _: SUCCESS)) == ""


def test_reboot_drain_start_eviction_failure_backs_off() -> None:
    op = RebootDrainStartOp(API, [E14, E15], REBOOT, NOW, SEED)
    respond = fail_when(
        lambda c: isinstance(c, EvictPods) and not c.dry_run and c.node == "10.0.0.15"
    )
    steps, commands = run(op, respond)
    assert steps[-3:] == [
        ("evict-pods", "10.0.0.15"),
        ("get-reboot-queue-entry", "10.0.0.15"),
        ("update-reboot-queue-entry", "10.0.0.15"),
    ]
    backed_off = commands[-1]
    assert isinstance(backed_off, UpdateRebootQueueEntry)
    entry = backed_off.entry
    assert entry.status is RebootStatus.QUEUED
    assert entry.last_transition_time == LTT
    assert entry.drain_backoff_count == 3
    expected = LTT + datetime.timedelta(seconds=backoff.reboot_backoff_seconds(3, SEED, 2))
    assert entry.drain_backoff_expire == expected
    assert LTT + datetime.timedelta(seconds=1200) <= expected
    assert expected < LTT + datetime.timedelta(seconds=1500)
    results = results_of(op, respond)
    assert op.info(results) == "failed to drain some nodes: [10.0.0.15]"
    assert op.fatal_error(results) == ""


def test_reboot_drain_start_dry_run_failure_skips_the_real_eviction() -> None:
    op = RebootDrainStartOp(API, [E14, E15], REBOOT, NOW, SEED)
    respond = fail_when(lambda c: isinstance(c, EvictPods) and c.dry_run and c.node == "10.0.0.14")
    steps, commands = run(op, respond)
    assert steps == [
        ("update-reboot-queue-entry", "10.0.0.14"),
        ("cordon-node", "10.0.0.14"),
        ("evict-pods-dry-run", "10.0.0.14"),
        ("get-reboot-queue-entry", "10.0.0.14"),
        ("update-reboot-queue-entry", "10.0.0.14"),
        ("update-reboot-queue-entry", "10.0.0.15"),
        ("cordon-node", "10.0.0.15"),
        ("evict-pods-dry-run", "10.0.0.15"),
        ("evict-pods", "10.0.0.15"),
    ]
    backed_off = commands[4]
    assert isinstance(backed_off, UpdateRebootQueueEntry)
    assert backed_off.entry.drain_backoff_count == 1
    assert backed_off.entry.drain_backoff_expire == backoff.reboot_drain_backoff_expire(
        LTT, 1, SEED, 1
    )
    assert op.info(results_of(op, respond)) == "failed to drain some nodes: [10.0.0.14]"


def test_reboot_drain_start_first_write_failure_is_a_node_failure() -> None:
    op = RebootDrainStartOp(API, [E14], REBOOT, NOW, SEED)
    failed_once: list[Command] = []

    def respond(command: Command) -> CommandResult:
        if isinstance(command, UpdateRebootQueueEntry) and not failed_once:
            failed_once.append(command)
            return CommandResult(ok=False, error="etcd")
        return fail_when(lambda _: False)(command)

    steps, _ = run(op, respond)
    assert steps == [
        ("update-reboot-queue-entry", "10.0.0.14"),
        ("get-reboot-queue-entry", "10.0.0.14"),
        ("update-reboot-queue-entry", "10.0.0.14"),
    ]


def test_reboot_drain_start_leaves_a_cancelled_entry_alone() -> None:
    op = RebootDrainStartOp(API, [E14], REBOOT, NOW, SEED)

    def respond(command: Command) -> CommandResult:
        if isinstance(command, GetRebootQueueEntry):
            return CommandResult(value=reboot_entry(1, "10.0.0.14", status=RebootStatus.CANCELLED))
        if isinstance(command, CordonNode):
            return CommandResult(ok=False, error="forbidden")
        return SUCCESS

    steps, _ = run(op, respond)
    assert steps == [
        ("update-reboot-queue-entry", "10.0.0.14"),
        ("cordon-node", "10.0.0.14"),
        ("get-reboot-queue-entry", "10.0.0.14"),
    ]
    assert op.info(results_of(op, respond)) == "failed to drain some nodes: [10.0.0.14]"


def test_reboot_drain_start_stops_when_the_backoff_cannot_be_written() -> None:
    op = RebootDrainStartOp(API, [E14, E15], REBOOT, NOW, SEED)

    def respond(command: Command) -> CommandResult:
        if isinstance(command, GetRebootQueueEntry):
            return CommandResult(value=E14)
        if isinstance(command, CordonNode):
            return CommandResult(ok=False, error="forbidden")
        if isinstance(command, UpdateRebootQueueEntry) and command.entry.drain_backoff_count:
            return CommandResult(ok=False, error="etcd down")
        return SUCCESS

    steps, _ = run(op, respond)
    assert steps[-1] == ("update-reboot-queue-entry", "10.0.0.14")
    assert len(steps) == 4
    results = results_of(op, respond)
    assert "etcd down" in op.fatal_error(results)


def test_reboot_delete_daemonset_pod() -> None:
    op = RebootDeleteDaemonSetPodOp(API, [E14, E15])
    assert op.tolerates_failures
    assert op.targets == ("10.0.0.14", "10.0.0.15")
    assert run(op)[0] == [
        ("delete-daemonset-pods", "10.0.0.14"),
        ("delete-daemonset-pods", "10.0.0.15"),
    ]
    respond = fail_when(lambda c: c.target == "10.0.0.14")
    assert len(run(op, respond)[0]) == 2
    assert op.info(results_of(op, respond)) == (
        "failed to delete DaemonSet pods on some nodes: [10.0.0.14]"
    )


def test_reboot_reboot() -> None:
    op = RebootRebootOp([E14, E15], REBOOT, NOW)
    assert op.name == "reboot-reboot"
    assert op.tolerates_failures
    steps, commands = run(op)
    assert steps == [
        ("update-reboot-queue-entry", "10.0.0.14"),
        ("run-local-command", "10.0.0.14"),
        ("update-reboot-queue-entry", "10.0.0.15"),
        ("run-local-command", "10.0.0.15"),
    ]
    update, command = commands[0], commands[1]
    assert isinstance(update, UpdateRebootQueueEntry)
    assert update.entry.status is RebootStatus.REBOOTING
    assert update.entry.last_transition_time == LTT
    assert isinstance(command, RunLocalCommand)
    assert command.argv == ("reboot-node", "--now", "10.0.0.14")
    assert (command.timeout_seconds, command.retries, command.interval) == (60, 2, 5)


def test_reboot_reboot_failure_leaves_the_entry_rebooting() -> None:
    op = RebootRebootOp([E14, E15], REBOOT, NOW)
    respond = fail_when(lambda c: isinstance(c, RunLocalCommand) and c.address == "10.0.0.14")
    steps, _ = run(op, respond)
    # no write after the failed command: the entry stays rebooting
    assert [s[0] for s in steps] == [
        "update-reboot-queue-entry",
        "run-local-command",
        "update-reboot-queue-entry",
        "run-local-command",
    ]
    results = results_of(op, respond)
    assert op.info(results) == "failed to reboot some nodes: [10.0.0.14]"
    assert op.fatal_error(results) == ""


def test_reboot_reboot_stops_when_the_entry_cannot_be_written() -> None:
    op = RebootRebootOp([E14, E15], REBOOT, NOW)
    respond = fail_when(lambda c: isinstance(c, UpdateRebootQueueEntry))
    assert run(op, respond)[0] == [("update-reboot-queue-entry", "10.0.0.14")]
    assert op.fatal_error(results_of(op, respond)) != ""


def test_reboot_drain_timeout() -> None:
    op = RebootDrainTimeoutOp([E14, E15], NOW, SEED)
    assert not op.tolerates_failures
    # the responder answers each read with the stored (queued) entry
    steps, commands = run(op, fail_when(lambda _: False))
    assert steps == [
        ("get-reboot-queue-entry", "10.0.0.14"),
        ("update-reboot-queue-entry", "10.0.0.14"),
        ("get-reboot-queue-entry", "10.0.0.15"),
        ("update-reboot-queue-entry", "10.0.0.15"),
    ]
    second = commands[3]
    assert isinstance(second, UpdateRebootQueueEntry)
    assert second.entry.status is RebootStatus.QUEUED
    assert second.entry.drain_backoff_count == 3
    assert second.entry.drain_backoff_expire == backoff.reboot_drain_backoff_expire(LTT, 3, SEED, 2)


def test_reboot_backoff_skips_a_vanished_entry() -> None:
    op = RebootDrainTimeoutOp([E14], NOW, SEED)
    assert run(op, lambda _: CommandResult(value=None))[0] == [
        ("get-reboot-queue-entry", "10.0.0.14")
    ]


def test_reboot_uncordon_dequeue_cancel() -> None:
    uncordon = RebootUncordonOp(API, ["10.0.0.14", "10.0.0.15"])
    assert uncordon.name == "reboot-uncordon"
    assert uncordon.targets == ("10.0.0.14", "10.0.0.15")
    assert run(uncordon)[0] == [("uncordon-node", "10.0.0.14,10.0.0.15")]
    dequeue = RebootDequeueOp([E14, E15])
    assert dequeue.name == "reboot-dequeue"
    assert dequeue.targets == ("10.0.0.14", "10.0.0.15")
    assert run(dequeue)[0] == [
        ("delete-reboot-queue-entry", "10.0.0.14"),
        ("delete-reboot-queue-entry", "10.0.0.15"),
    ]
    cancel = RebootCancelOp([E14])
    assert cancel.name == "reboot-cancel"
    assert run(cancel)[0] == [("delete-reboot-queue-entry", "10.0.0.14")]


# ---------------------------------------------------------------------------
# Repair operations
# ---------------------------------------------------------------------------


def test_repair_drain_start_success() -> None:
    op = RepairDrainStartOp(API, REPAIR_ENTRY, REPAIR, NOW, SEED)
    assert op.name == "repair-drain-start"
    assert op.targets == ("10.0.0.15",)
    steps, commands = run(op)
    # the dry run comes before the cordon; Kubernetes calls use the Node name
    assert steps == [
        ("update-repair-queue-entry", "10.0.0.15"),
        ("evict-pods-dry-run", "node15"),
        ("cordon-node", "node15"),
        ("evict-pods", "node15"),
    ]
    update = commands[0]
    assert isinstance(update, UpdateRepairQueueEntry)
    assert update.entry.status is RepairStatus.PROCESSING
    assert update.entry.step_status is RepairStepStatus.DRAINING
    assert update.entry.last_transition_time == LTT
    evict = commands[3]
    assert isinstance(evict, EvictPods)
    assert evict.protected_namespaces == REPAIR.protected_namespaces
    assert (evict.evict_retries, evict.evict_interval) == (1, 2)


@pytest.mark.parametrize("failing", ["evict-pods-dry-run", "cordon-node", "evict-pods"])
def test_repair_drain_start_failure_backs_off_linearly(failing: str) -> None:
    op = RepairDrainStartOp(API, REPAIR_ENTRY, REPAIR, NOW, SEED)
    steps, commands = run(op, fail_when(lambda c: c.name == failing))
    assert steps[-2:] == [(failing, "node15"), ("update-repair-queue-entry", "10.0.0.15")]
    backed_off = commands[-1]
    assert isinstance(backed_off, UpdateRepairQueueEntry)
    entry = backed_off.entry
    assert entry.status is RepairStatus.PROCESSING
    assert entry.step_status is RepairStepStatus.WAITING
    assert entry.last_transition_time == LTT
    assert entry.drain_backoff_count == 2
    seconds = backoff.repair_backoff_seconds(2, SEED, 7)
    assert 300 <= seconds < 900
    assert entry.drain_backoff_expire == LTT + datetime.timedelta(seconds=seconds)


def test_repair_drain_start_without_nodename_uses_the_address() -> None:
    entry = RepairQueueEntry(index=3, address="10.0.0.16")
    steps, _ = run(RepairDrainStartOp(API, entry, REPAIR, NOW, SEED))
    assert steps[1] == ("evict-pods-dry-run", "10.0.0.16")


def test_repair_drain_timeout() -> None:
    draining = RepairQueueEntry(
        index=7,
        address="10.0.0.15",
        status=RepairStatus.PROCESSING,
        step_status=RepairStepStatus.DRAINING,
    )
    op = RepairDrainTimeoutOp(draining, NOW, SEED)
    assert op.name == "repair-drain-timeout"
    assert op.targets == ("10.0.0.15",)
    steps, commands = run(op)
    assert steps == [("update-repair-queue-entry", "10.0.0.15")]
    update = commands[0]
    assert isinstance(update, UpdateRepairQueueEntry)
    assert update.entry.step_status is RepairStepStatus.WAITING
    assert update.entry.drain_backoff_count == 1
    assert update.entry.drain_backoff_expire == backoff.repair_drain_backoff_expire(LTT, 1, SEED, 7)


def test_repair_execute_success() -> None:
    op = RepairExecuteOp(REPAIR_ENTRY, STEP, NOW)
    assert op.name == "repair-execute"
    assert op.tolerates_failures
    steps, commands = run(op)
    assert steps == [
        ("update-repair-queue-entry", "10.0.0.15"),
        ("run-local-command", "10.0.0.15"),
    ]
    update, command = commands
    assert isinstance(update, UpdateRepairQueueEntry)
    assert update.entry.status is RepairStatus.PROCESSING
    assert update.entry.step_status is RepairStepStatus.WATCHING
    assert update.entry.last_transition_time == LTT
    assert isinstance(command, RunLocalCommand)
    assert command.argv == ("repair", "reset", "10.0.0.15")
    assert (command.timeout_seconds, command.retries, command.interval) == (30, 1, 0)


def test_repair_execute_all_tries_failing_marks_the_entry_failed() -> None:
    op = RepairExecuteOp(REPAIR_ENTRY, STEP, NOW)
    respond = fail_when(lambda c: isinstance(c, RunLocalCommand))
    steps, commands = run(op, respond)
    assert steps == [
        ("update-repair-queue-entry", "10.0.0.15"),
        ("run-local-command", "10.0.0.15"),
        ("update-repair-queue-entry", "10.0.0.15"),
    ]
    failed = commands[-1]
    assert isinstance(failed, UpdateRepairQueueEntry)
    assert failed.entry.status is RepairStatus.FAILED
    assert failed.entry.last_transition_time == LTT
    results = results_of(op, respond)
    assert op.fatal_error(results) == ""
    assert op.info(results) == ""


def test_repair_execute_stops_when_the_entry_cannot_be_written() -> None:
    op = RepairExecuteOp(REPAIR_ENTRY, STEP, NOW)
    respond = fail_when(lambda c: isinstance(c, UpdateRepairQueueEntry))
    assert run(op, respond)[0] == [("update-repair-queue-entry", "10.0.0.15")]
    assert "failed to update repair queue entry 7" in op.fatal_error(results_of(op, respond))


def test_repair_finish_succeeded_runs_the_success_command() -> None:
    op = RepairFinishOp(REPAIR_ENTRY, True, OPERATION, NOW)
    assert op.name == "repair-finish"
    steps, commands = run(op)
    assert steps == [
        ("run-local-command", "10.0.0.15"),
        ("update-repair-queue-entry", "10.0.0.15"),
    ]
    command, update = commands
    assert isinstance(command, RunLocalCommand)
    assert command.argv == ("notify", "ok", "10.0.0.15")
    assert command.timeout_seconds == 15
    assert isinstance(update, UpdateRepairQueueEntry)
    assert update.entry.status is RepairStatus.SUCCEEDED
    assert update.entry.last_transition_time == LTT


def test_repair_finish_failing_success_command_means_failed() -> None:
    op = RepairFinishOp(REPAIR_ENTRY, True, OPERATION, NOW)
    _, commands = run(op, fail_when(lambda c: isinstance(c, RunLocalCommand)))
    update = commands[-1]
    assert isinstance(update, UpdateRepairQueueEntry)
    assert update.entry.status is RepairStatus.FAILED


@pytest.mark.parametrize(
    ("succeeded", "operation", "status"),
    [
        (True, RepairOperation(operation="op1"), RepairStatus.SUCCEEDED),
        (True, None, RepairStatus.FAILED),
        (False, OPERATION, RepairStatus.FAILED),
    ],
)
def test_repair_finish_without_success_command(
    succeeded: bool, operation: RepairOperation | None, status: RepairStatus
) -> None:
    steps, commands = run(RepairFinishOp(REPAIR_ENTRY, succeeded, operation, NOW))
    assert steps == [("update-repair-queue-entry", "10.0.0.15")]
    update = commands[0]
    assert isinstance(update, UpdateRepairQueueEntry)
    assert update.entry.status is status


def test_repair_dequeue() -> None:
    op = RepairDequeueOp(REPAIR_ENTRY)
    assert op.name == "repair-dequeue"
    assert op.targets == ("10.0.0.15",)
    assert run(op)[0] == [("delete-repair-queue-entry", "10.0.0.15")]


# ---------------------------------------------------------------------------
# Every operation finishes, whatever its commands answer
# ---------------------------------------------------------------------------

ALL_OPS: list[Operation] = [
    *(case[0] for case in KUBE_CASES),
    RebootDrainStartOp(API, [E14, E15], REBOOT, NOW, SEED),
    RebootDeleteDaemonSetPodOp(API, [E14, E15]),
    RebootRebootOp([E14, E15], REBOOT, NOW),
    RebootDrainTimeoutOp([E14, E15], NOW, SEED),
    RebootUncordonOp(API, ["a", "b"]),
    RebootDequeueOp([E14, E15]),
    RebootCancelOp([E14, E15]),
    RepairDrainStartOp(API, REPAIR_ENTRY, REPAIR, NOW, SEED),
    RepairDrainTimeoutOp(REPAIR_ENTRY, NOW, SEED),
    RepairExecuteOp(REPAIR_ENTRY, STEP, NOW),
    RepairFinishOp(REPAIR_ENTRY, True, OPERATION, NOW),
    RepairDequeueOp(REPAIR_ENTRY),
]

RESPONDERS: dict[str, Responder] = {
    "success": lambda _: SUCCESS,
    "stored": fail_when(lambda _: False),
    "all-fail": lambda _: CommandResult(ok=False, error="x"),
    "kube-fails": fail_when(lambda c: hasattr(c, "apiserver")),
    "local-fails": fail_when(lambda c: isinstance(c, RunLocalCommand)),
}


@pytest.mark.parametrize("respond", RESPONDERS.values(), ids=RESPONDERS.keys())
@pytest.mark.parametrize("op", ALL_OPS, ids=[op.name for op in ALL_OPS])
def test_every_op_finishes_within_100_commands(op: Operation, respond: Responder) -> None:
    results: list[CommandResult] = []
    for _ in range(100):
        command = op.next_command(results)
        if command is None:
            break
        results.append(respond(command))
    else:
        pytest.fail(f"{op.name} did not finish within 100 commands")
    # the plan is a pure function of the results
    assert op.next_command(results[:1]) == op.next_command(list(results[:1]))
    if isinstance(op, ScriptedOperation):
        assert op.next_command(results) is None
        assert op.info(results) == op.info(tuple(results))


# ---------------------------------------------------------------------------
# 5,000 targets
# ---------------------------------------------------------------------------

BIG = 5_000
#: Node names of a generated cluster, and its reboot queue: an entry per node.
BIG_NAMES = tuple(f"node{i}" for i in range(BIG))
BIG_ENTRIES = tuple(reboot_entry(i + 1, f"10.1.{i // 256}.{i % 256}") for i in range(BIG))

#: The ops over Nodes, with the command each issues.
BIG_NODE_OPS: list[tuple[Operation, str]] = [
    (UpdateNodeOp(API, [KubernetesNode(name=n) for n in BIG_NAMES]), "update-node"),
    (RemoveNodeOp(API, BIG_NAMES), "remove-node"),
    (RebootUncordonOp(API, BIG_NAMES), "uncordon-node"),
]

BIG_QUEUE_OPS: list[tuple[Operation, int]] = [
    (RebootDrainStartOp(API, BIG_ENTRIES, REBOOT, NOW, SEED), DRAIN_BATCH),
    (RebootDeleteDaemonSetPodOp(API, BIG_ENTRIES), REBOOT_BATCH),
    (RebootRebootOp(BIG_ENTRIES, REBOOT, NOW), REBOOT_BATCH),
    (RebootDrainTimeoutOp(BIG_ENTRIES, NOW, SEED), TIMEOUT_BATCH),
    (RebootDequeueOp(BIG_ENTRIES), DELETE_BATCH),
    (RebootCancelOp(BIG_ENTRIES), DELETE_BATCH),
]


@pytest.mark.parametrize(("op", "command"), BIG_NODE_OPS, ids=[c for _, c in BIG_NODE_OPS])
def test_5000_nodes_are_one_command(op: Operation, command: str) -> None:
    assert run(op)[0] == [(command, ",".join(BIG_NAMES))]


@pytest.mark.parametrize("respond", RESPONDERS.values(), ids=RESPONDERS.keys())
@pytest.mark.parametrize(("op", "batch"), BIG_QUEUE_OPS, ids=[op.name for op, _ in BIG_QUEUE_OPS])
def test_5000_entries_finish_within_100_commands(
    op: Operation, batch: int, respond: Responder
) -> None:
    """An op over queue entries takes the first ``batch`` of them (its targets) and
    leaves the rest, still selected, to the next decision."""
    assert op.targets == tuple(e.node for e in BIG_ENTRIES[:batch])
    assert count_commands(op, respond) <= 100


def count_commands(op: Operation, respond: Responder) -> int:
    """How many commands ``op`` runs with ``respond``'s answers (fails past 100)."""
    results: list[CommandResult] = []
    while (command := op.next_command(results)) is not None:
        assert len(results) < 100, f"{op.name} did not finish within 100 commands"
        results.append(respond(command))
    return len(results)


def test_the_reboot_batches_fit_their_worst_case() -> None:
    """A drain start that fails every entry's eviction after a passing dry run is its
    worst case (6 commands an entry); a full batch of it fits."""
    op = RebootDrainStartOp(API, BIG_ENTRIES, REBOOT, NOW, SEED)
    respond = fail_when(lambda c: isinstance(c, EvictPods) and not c.dry_run)
    assert count_commands(op, respond) == 6 * DRAIN_BATCH <= 100
    reboot = RebootRebootOp(BIG_ENTRIES, REBOOT, NOW)
    assert count_commands(reboot, lambda _: SUCCESS) == 2 * REBOOT_BATCH
