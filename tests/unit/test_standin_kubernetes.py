"""``StandInKubernetes``: the in-memory Kubernetes API of labs and tests.

The harness ``Lab`` plays the engine's loop as the service layer will: observe
(component health, the API through the first running apiserver, the queues),
``decide``, then run each operation's plan command by command, every
Kubernetes command through the stand-in and every node, etcd and queue
command through the core's model (``simulation.apply_command``). The
decisions must converge to ``completed``, and they must be the decisions the
pure simulator takes, so the stand-in answers as the model does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import attrs
import pytest
from cke_adapters.kubernetes import (
    KubernetesAPIError,
    StandInKubernetes,
    StandInStateError,
    standin,
)
from cke_adapters.ports import KubernetesPort

from cke_core.cluster import Cluster
from cke_core.commands import kube as kc
from cke_core.commands import queue as qc
from cke_core.commands.node import RetaintBeforeKubeletBoot, StopContainer
from cke_core.frozen import FrozenDict
from cke_core.ops.base import Command, CommandResult, Operation
from cke_core.phases import Phase
from cke_core.queues import (
    RebootQueueEntry,
    RebootStatus,
    RepairQueueEntry,
    RepairStatus,
    RepairStepStatus,
)
from cke_core.render import components as rc
from cke_core.simulation import apply_command, health, run, stop_container
from cke_core.status import (
    ClusterStatus,
    ConfigMap,
    KubernetesNode,
    KubernetesStatus,
    NodeStatus,
    RebootQueueStatus,
    RepairQueueStatus,
)
from cke_core.strategy import Decision, DecisionInputs, decide
from cke_core.testing import FIXTURE_NOW, FIXTURE_REBOOT, StatusBuilder, fixture_cluster

CLUSTER = fixture_cluster()
MAX_ROUNDS = 30


def bootstrapped_etcd() -> ClusterStatus:
    """rivers everywhere, etcd running and healthy on the control planes, nothing else."""
    return StatusBuilder().with_rivers().with_etcd_rivers().with_healthy_etcd().status


class Lab:
    """The engine's loop with the stand-in as its Kubernetes API.

    ``world`` is the cluster outside Kubernetes (nodes, etcd members, queues) in
    the core's model; its ``kubernetes`` part is never read: the API objects
    live in ``k8s`` only.
    """

    def __init__(self, cluster: Cluster, world: ClusterStatus, k8s: StandInKubernetes) -> None:
        self.cluster = cluster
        self.world = world
        self.k8s = k8s
        self.commands: list[Command] = []

    async def observe(self) -> ClusterStatus:
        derived = health(attrs.evolve(self.world, kubernetes=KubernetesStatus()), self.cluster)
        nodes = {
            address: await self.k8s.component_health(
                self.cluster, address, node, nodes=self.world.nodes
            )
            for address, node in self.world.nodes.items()
        }
        master = next(
            (n.address for n in self.cluster.control_planes if nodes[n.address].api_server.running),
            "",
        )
        kubernetes = (
            await self.k8s.observe(self.cluster, master, nodes) if master else KubernetesStatus()
        )
        # What does not come from Kubernetes (boot checks, dequeues) is the model's;
        # the drain fields are the stand-in's.
        reboot, repair = await self.k8s.queue_status(
            self.cluster,
            attrs.evolve(derived.reboot_queue, drain_completed=(), drain_timedout=()),
            attrs.evolve(derived.repair_queue, drain_completed=FrozenDict()),
            nodes,
        )
        return ClusterStatus(
            config_version=self.world.config_version,
            nodes=FrozenDict(nodes),
            etcd=derived.etcd,
            kubernetes=kubernetes,
            reboot_queue=reboot,
            repair_queue=repair,
        )

    async def execute(self, op: Operation) -> list[CommandResult]:
        results: list[CommandResult] = []
        while (command := op.next_command(results)) is not None:
            assert len(results) < 100, f"{op.name}: a runaway plan"
            self.commands.append(command)
            if self.k8s.handles(command):
                result = await self.k8s.run(self.cluster, command, self.world.nodes)
            else:
                self.world, result = apply_command(self.world, self.cluster, command)
            results.append(result)
            if not result.ok and not op.tolerates_failures:
                break
        return results

    async def converge(self) -> list[Decision]:
        decisions: list[Decision] = []
        for _ in range(MAX_ROUNDS):
            status = await self.observe()
            decision = decide(DecisionInputs(cluster=self.cluster, status=status, now=FIXTURE_NOW))
            decisions.append(decision)
            if not decision.operations:
                break
            for op in decision.operations:
                results = await self.execute(op)
                assert all(r.ok for r in results), (op.name, results)
        return decisions


def converge(
    cluster: Cluster, world: ClusterStatus, k8s: StandInKubernetes
) -> tuple[Lab, list[Decision]]:
    lab = Lab(cluster, world, k8s)
    return lab, asyncio.run(lab.converge())


def summary(decisions: list[Decision]) -> list[tuple[Phase, tuple[str, ...]]]:
    return [(d.phase, tuple(op.name for op in d.operations)) for d in decisions]


def simulated(cluster: Cluster, status: ClusterStatus) -> tuple[list[Decision], ClusterStatus]:
    done = run(DecisionInputs(cluster=cluster, status=status, now=FIXTURE_NOW), MAX_ROUNDS)
    return list(done.decisions), done.status


def same_objects(mine: KubernetesStatus, model: KubernetesStatus) -> None:
    """The same API objects (Node order aside: the model registers a Node when it
    runs the kubelet, the stand-in when it observes the kubelet run)."""
    assert mine.node_by_name() == model.node_by_name()
    assert attrs.evolve(mine, nodes=()) == attrs.evolve(model, nodes=())


# ---------------------------------------------------------------------------
# Convergence
# ---------------------------------------------------------------------------


def test_it_is_a_kubernetes_port() -> None:
    assert isinstance(StandInKubernetes(), KubernetesPort)


def test_from_a_bootstrapped_etcd_the_engine_completes_as_the_model_does() -> None:
    k8s = StandInKubernetes()
    lab, decisions = converge(CLUSTER, bootstrapped_etcd(), k8s)
    assert summary(decisions)[0] == (Phase.K8S_START, ("kube-apiserver-restart",))
    assert decisions[-1].phase is Phase.COMPLETED
    assert [d.phase for d in decisions].count(Phase.K8S_MAINTAIN) >= 2

    model_decisions, model_status = simulated(CLUSTER, bootstrapped_etcd())
    assert summary(decisions) == summary(model_decisions)
    same_objects(k8s.state, model_status.kubernetes)
    ks = k8s.state
    assert ks.is_control_plane_ready
    assert sorted(n.name for n in ks.nodes if n.ready) == sorted(n.address for n in CLUSTER.nodes)
    assert ks.cluster_dns.config_map is not None
    assert ks.node_dns.config_map is not None
    assert ks.master_endpoints is not None
    assert ks.etcd_endpoint_slice is not None
    assert {"Deployment/kube-system/cluster-dns", "DaemonSet/kube-system/node-dns"} <= set(
        ks.resource_statuses
    )
    # Every Kubernetes command went through the stand-in, nothing else did.
    api = [c for c in lab.commands if k8s.handles(c)]
    assert {c.name for c in api} >= {"wait-kubernetes", "apply-resource", "update-node"}
    assert all(c.__module__ != kc.__name__ for c in lab.commands if not k8s.handles(c))


def test_a_new_control_plane_goes_through_etcd_maintain_to_completed() -> None:
    k8s = StandInKubernetes()
    lab, _ = converge(CLUSTER, bootstrapped_etcd(), k8s)
    nodes = tuple(
        attrs.evolve(n, control_plane=True) if n.address == "10.0.0.16" else n
        for n in CLUSTER.nodes
    )
    promoted = attrs.evolve(CLUSTER, nodes=nodes)
    lab.cluster = promoted
    decisions = asyncio.run(lab.converge())
    phases = [d.phase for d in decisions]
    assert Phase.ETCD_MAINTAIN in phases
    assert phases[-1] is Phase.COMPLETED
    assert "10.0.0.16" in lab.world.etcd.members
    (node,) = [n for n in k8s.state.nodes if n.name == "10.0.0.16"]
    assert node.labels.get("cke.cybozu.com/master") == "true"


def test_a_reboot_is_drained_by_the_stand_in_and_completes() -> None:
    cluster = attrs.evolve(CLUSTER, reboot=FIXTURE_REBOOT)
    k8s = StandInKubernetes()
    lab, _ = converge(cluster, bootstrapped_etcd(), k8s)
    lab.world = attrs.evolve(
        lab.world,
        reboot_queue=RebootQueueStatus(
            enabled=True, entries=(RebootQueueEntry(index=1, node="10.0.0.15"),)
        ),
    )
    decisions = asyncio.run(lab.converge())
    assert [op.name for d in decisions for op in d.operations] == [
        "reboot-drain-start",
        "reboot-delete-daemonset-pod",
        "reboot-reboot",
        "reboot-dequeue",
        "reboot-uncordon",
    ]
    assert decisions[-1].phase is Phase.COMPLETED
    assert {"cordon-node", "evict-pods", "uncordon-node"} <= {c.name for c in lab.commands}
    (node,) = [n for n in k8s.state.nodes if n.name == "10.0.0.15"]
    assert not node.unschedulable
    assert kc.ANNOTATION_REBOOT not in node.annotations


# ---------------------------------------------------------------------------
# Persistence
# ---------------------------------------------------------------------------


def test_a_second_instance_on_the_same_file_observes_the_same(tmp_path: Path) -> None:
    path = tmp_path / "k8s" / "state.json"
    first = StandInKubernetes(path)
    lab, _ = converge(CLUSTER, bootstrapped_etcd(), first)
    assert path.exists()
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left
    doc = json.loads(path.read_text())
    assert (doc["format"], doc["version"]) == (standin.STATE_FORMAT, standin.STATE_VERSION)

    second = StandInKubernetes(path)
    assert second.state == first.state
    nodes = lab.world.nodes
    seen_by_first = asyncio.run(first.observe(CLUSTER, "10.0.0.11", nodes))
    seen_by_second = asyncio.run(second.observe(CLUSTER, "10.0.0.12", nodes))
    assert seen_by_second == seen_by_first
    # The restarted engine carries on from there: nothing left to do.
    again = Lab(CLUSTER, lab.world, second)
    assert summary(asyncio.run(again.converge())) == [(Phase.COMPLETED, ())]


def test_an_instance_sees_what_another_process_saved(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    lab, _ = converge(CLUSTER, bootstrapped_etcd(), StandInKubernetes(path))
    reader = StandInKubernetes(path)
    writer = StandInKubernetes(path)
    command = kc.CordonNode("10.0.0.11", ("10.0.0.14",))
    assert asyncio.run(writer.run(CLUSTER, command, lab.world.nodes)).ok
    (node,) = [n for n in reader.state.nodes if n.name == "10.0.0.14"]
    assert node.unschedulable


def test_without_a_file_the_state_is_the_instance_s_own() -> None:
    first = StandInKubernetes()
    converge(CLUSTER, bootstrapped_etcd(), first)
    assert first.path is None
    assert StandInKubernetes().state == KubernetesStatus()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not JSON"),
        ("[]", "expected a cke-py/standin-kubernetes document, got a list"),
        ('{"format": "cke-status", "version": 1, "kubernetes": {}}', "format string 'cke-status'"),
        (
            '{"format": "cke-py/standin-kubernetes", "version": 1, "kubernetes": {"nodes": 3}}',
            "kubernetes.nodes",
        ),
        ('{"format": "cke-py/standin-kubernetes", "version": 1}', "kubernetes: missing"),
    ],
)
def test_an_unreadable_state_file_is_one_clear_line(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(StandInStateError, match=message) as caught:
        StandInKubernetes(path)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_state_that_cannot_be_saved_fails_the_command_and_keeps_the_state(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "d"
    k8s = StandInKubernetes(directory / "state.json")
    lab, _ = converge(CLUSTER, bootstrapped_etcd(), k8s)
    before = k8s.state
    for p in directory.iterdir():
        p.unlink()
    directory.rmdir()
    directory.write_text("not a directory")
    result = asyncio.run(
        k8s.run(CLUSTER, kc.CordonNode("10.0.0.11", ("10.0.0.14",)), lab.world.nodes)
    )
    assert not result.ok
    assert result.error.startswith("cordon-node: cannot ")
    assert str(directory) in result.error
    directory.unlink()
    assert k8s.state == before


def test_a_failed_save_leaves_the_state_as_it_was() -> None:
    k8s = StandInKubernetes("/proc/self/standin/state.json")  # nothing can be created there
    nodes = running_cluster()
    result = asyncio.run(k8s.run(CLUSTER, kc.WaitKubernetes("10.0.0.11"), nodes))
    assert result == CommandResult(
        ok=False,
        error="wait-kubernetes: cannot save /proc/self/standin/state.json: "
        "No such file or directory",
    )
    assert k8s.state == KubernetesStatus()
    with pytest.raises(StandInStateError, match="cannot save"):
        asyncio.run(k8s.observe(CLUSTER, "10.0.0.11", nodes))
    assert k8s.state == KubernetesStatus()


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


@attrs.frozen
class _Unknown(Command):
    NAME: ClassVar[str] = "frobnicate"


@attrs.frozen
class _UnmodelledKube(kc._OnNamedNodes):
    """A Kubernetes command (a Node command, as ``cordon-node`` is) that the core's
    model does not know, as a command added later would be."""

    NAME: ClassVar[str] = "new-kube-command"


def test_handles_exactly_the_api_commands() -> None:
    k8s = StandInKubernetes()
    kube_commands = [
        kc.WaitKubernetes("10.0.0.11"),
        kc.ApplyResource("10.0.0.11", "Namespace/x", {"metadata": {"name": "x"}}),
        kc.CreateConfigMap("10.0.0.11", ConfigMap(name="x")),
        kc.UpdateNode("10.0.0.11", (KubernetesNode(name="10.0.0.14"),)),
        kc.RemoveNode("10.0.0.11", ("x",)),
        kc.CordonNode("10.0.0.11", ("x",)),
        kc.UncordonNode("10.0.0.11", ("x",)),
        kc.EvictPods("10.0.0.11", "x", dry_run=True),
        kc.DeleteDaemonSetPods("10.0.0.11", "x"),
        RetaintBeforeKubeletBoot(("x",)),
    ]
    assert all(k8s.handles(c) for c in kube_commands)
    others = [
        StopContainer(("10.0.0.11",), rc.KUBELET),
        qc.DeleteRebootQueueEntry(1),
        _Unknown(),
    ]
    assert not any(k8s.handles(c) for c in others)


def test_an_unknown_command_is_a_clear_error_result() -> None:
    k8s = StandInKubernetes()
    nodes = converge(CLUSTER, bootstrapped_etcd(), k8s)[0].world.nodes
    before = k8s.state
    result = asyncio.run(k8s.run(CLUSTER, _Unknown(), nodes))
    assert not result.ok
    assert result.error == (
        "frobnicate: not a Kubernetes API command; the stand-in API does not run it"
    )
    node_command = StopContainer(("10.0.0.11",), rc.KUBELET)
    assert not asyncio.run(k8s.run(CLUSTER, node_command, nodes)).ok
    unmodelled = asyncio.run(k8s.run(CLUSTER, _UnmodelledKube("10.0.0.11", ("10.0.0.14",)), nodes))
    assert not unmodelled.ok
    assert unmodelled.error.startswith("new-kube-command: the simulator does not model")
    assert k8s.state == before


def test_a_command_through_an_apiserver_that_does_not_answer_fails() -> None:
    k8s = StandInKubernetes()
    lab, _ = converge(CLUSTER, bootstrapped_etcd(), k8s)
    stopped = stop_container(lab.world, CLUSTER, "10.0.0.11", rc.KUBE_APISERVER).nodes
    cordon = kc.CordonNode("10.0.0.11", ("10.0.0.14",))
    result = asyncio.run(k8s.run(CLUSTER, cordon, stopped))
    assert not result.ok
    assert result.error == (
        "cordon-node: the Kubernetes API on 10.0.0.11 does not answer: "
        "kube-apiserver is not running there"
    )
    assert asyncio.run(k8s.run(CLUSTER, attrs.evolve(cordon, apiserver="10.0.0.12"), stopped)).ok

    no_etcd = lab.world
    for cp in CLUSTER.control_planes:
        no_etcd = stop_container(no_etcd, CLUSTER, cp.address, rc.ETCD)
    result = asyncio.run(
        k8s.run(CLUSTER, attrs.evolve(cordon, apiserver="10.0.0.12"), no_etcd.nodes)
    )
    assert result.error.endswith("no etcd runs on any control plane")
    retaint = RetaintBeforeKubeletBoot(("10.0.0.14",), ())
    assert asyncio.run(k8s.run(CLUSTER, retaint, lab.world.nodes)).ok
    assert not asyncio.run(k8s.run(CLUSTER, retaint, no_etcd.nodes)).ok


def test_a_failed_node_update_names_the_missing_nodes() -> None:
    k8s = StandInKubernetes()
    nodes = converge(CLUSTER, bootstrapped_etcd(), k8s)[0].world.nodes
    update = kc.UpdateNode(
        "10.0.0.11", (KubernetesNode(name="ghost"), KubernetesNode(name="10.0.0.15"))
    )
    result = asyncio.run(k8s.run(CLUSTER, update, nodes))
    assert not result.ok
    assert result.value == {"ghost": "node ghost not found"}


# ---------------------------------------------------------------------------
# Health, observation, queues
# ---------------------------------------------------------------------------


def running_cluster() -> Mapping[str, NodeStatus]:
    return StatusBuilder().with_all_services().status.nodes


def test_components_are_healthy_iff_they_run_and_the_apiserver_needs_an_etcd() -> None:
    k8s = StandInKubernetes()
    nodes = running_cluster()

    def check(address: str, known: Mapping[str, NodeStatus] | None) -> NodeStatus:
        return asyncio.run(k8s.component_health(CLUSTER, address, nodes[address], nodes=known))

    cp = check("10.0.0.11", nodes)
    assert cp.api_server.is_healthy
    assert cp.controller_manager.is_healthy
    assert cp.scheduler.is_healthy
    assert cp.kubelet.is_healthy
    assert cp.proxy.is_healthy
    assert not check("10.0.0.14", nodes).api_server.is_healthy  # not running there

    # etcd stopped on 10.0.0.11 only: its apiserver still has the others'.
    status = stop_container(ClusterStatus(nodes=FrozenDict(nodes)), CLUSTER, "10.0.0.11", rc.ETCD)
    nodes = status.nodes
    assert check("10.0.0.11", nodes).api_server.is_healthy
    # Without the round's other nodes, only its own etcd is known.
    assert not check("10.0.0.11", None).api_server.is_healthy
    assert check("10.0.0.12", None).api_server.is_healthy
    for address in ("10.0.0.12", "10.0.0.13"):
        status = stop_container(status, CLUSTER, address, rc.ETCD)
    nodes = status.nodes
    cp = check("10.0.0.12", nodes)
    assert not cp.api_server.is_healthy
    assert cp.controller_manager.is_healthy

    status = stop_container(status, CLUSTER, "10.0.0.14", rc.KUBE_PROXY)
    nodes = status.nodes
    worker = check("10.0.0.14", nodes)
    assert not worker.proxy.is_healthy
    assert worker.kubelet.is_healthy

    unreachable = NodeStatus(ssh_connected=False)
    assert asyncio.run(k8s.component_health(CLUSTER, "10.0.0.15", unreachable)) == unreachable


def test_observe_registers_running_kubelets_and_follows_their_readiness() -> None:
    k8s = StandInKubernetes()
    nodes = running_cluster()
    seen = asyncio.run(k8s.observe(CLUSTER, "10.0.0.11", nodes))
    assert [n.name for n in seen.nodes] == [n.nodename for n in CLUSTER.nodes]
    assert all(n.ready for n in seen.nodes)
    assert not seen.is_control_plane_ready  # until wait-kubernetes
    assert k8s.state == seen

    down = stop_container(ClusterStatus(nodes=FrozenDict(nodes)), CLUSTER, "10.0.0.15", rc.KUBELET)
    seen = asyncio.run(k8s.observe(CLUSTER, "10.0.0.11", down.nodes))
    ready = {n.name: n.ready for n in seen.nodes}
    assert ready["10.0.0.15"] is False  # the Node stays, NotReady
    assert sum(ready.values()) == 5


def test_observe_through_an_apiserver_that_does_not_answer_raises() -> None:
    k8s = StandInKubernetes()
    nodes = running_cluster()
    with pytest.raises(KubernetesAPIError, match=r"10\.0\.0\.14 does not answer: kube-apiserver"):
        asyncio.run(k8s.observe(CLUSTER, "10.0.0.14", nodes))
    with pytest.raises(KubernetesAPIError, match="the node is not reachable"):
        asyncio.run(k8s.observe(CLUSTER, "10.0.0.77", nodes))
    status = ClusterStatus(nodes=FrozenDict(nodes))
    for cp in CLUSTER.control_planes:
        status = stop_container(status, CLUSTER, cp.address, rc.ETCD)
    with pytest.raises(KubernetesAPIError, match="no etcd runs on any control plane"):
        asyncio.run(k8s.observe(CLUSTER, "10.0.0.11", status.nodes))
    assert k8s.state == KubernetesStatus()


def test_queue_drains_complete_at_once_and_never_time_out() -> None:
    k8s = StandInKubernetes()
    reboot = RebootQueueStatus(
        enabled=True,
        entries=(
            RebootQueueEntry(index=1, node="10.0.0.14", status=RebootStatus.DRAINING),
            RebootQueueEntry(index=2, node="10.0.0.15"),
            RebootQueueEntry(index=3, node="10.0.0.16", status=RebootStatus.REBOOTING),
            RebootQueueEntry(index=4, node="10.0.0.14", status=RebootStatus.DRAINING),
        ),
        next_candidates=(2,),
        drain_timedout=(1,),
        reboot_dequeued=(3,),
    )
    repair = RepairQueueStatus(
        enabled=True,
        entries=(
            RepairQueueEntry(
                index=1,
                address="10.0.0.14",
                status=RepairStatus.PROCESSING,
                step_status=RepairStepStatus.DRAINING,
            ),
            RepairQueueEntry(
                index=2,
                address="10.0.0.15",
                status=RepairStatus.PROCESSING,
                step_status=RepairStepStatus.WATCHING,
            ),
            RepairQueueEntry(index=3, address="10.0.0.16", status=RepairStatus.QUEUED),
        ),
        repair_completed=FrozenDict({"10.0.0.15": True}),
    )
    got_reboot, got_repair = asyncio.run(k8s.queue_status(CLUSTER, reboot, repair, {}))
    assert got_reboot == attrs.evolve(reboot, drain_completed=(1,), drain_timedout=())
    assert got_repair == attrs.evolve(repair, drain_completed=FrozenDict({"10.0.0.14": True}))
