"""The simulator's public building blocks: ``apply_command`` and the parts of ``health``.

Adapters that stand in for part of the cluster (``cke_adapters.kubernetes.standin``)
use them to answer as the simulator does, so each must agree with the whole it
was taken from: ``execute`` for ``apply_command``, ``health`` for the others.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import pytest

from cke_core.cluster import KubeletParams, Taint
from cke_core.commands.node import StopContainer
from cke_core.frozen import FrozenDict
from cke_core.ops.base import Command
from cke_core.queues import (
    RebootQueueEntry,
    RebootStatus,
    RepairQueueEntry,
    RepairStatus,
    RepairStepStatus,
)
from cke_core.render import components as rc
from cke_core.render.images import EngineSettings
from cke_core.simulation import (
    SimulationError,
    apply_command,
    execute,
    health,
    kubernetes_health,
    node_health,
    reboot_drain_completed,
    register_nodes,
    repair_drain_completed,
    run,
    stop_container,
)
from cke_core.status import (
    ClusterStatus,
    KubernetesNode,
    KubernetesStatus,
    NodeStatus,
    RebootQueueStatus,
    RepairQueueStatus,
)
from cke_core.strategy import DecisionInputs, decide
from cke_core.testing import FIXTURE_NOW, fixture_cluster

CLUSTER = fixture_cluster()
SETTINGS = EngineSettings()


def empty() -> ClusterStatus:
    return ClusterStatus(
        config_version="2",
        nodes=FrozenDict({n.address: NodeStatus(ssh_connected=True) for n in CLUSTER.nodes}),
    )


def converged() -> ClusterStatus:
    return run(DecisionInputs(cluster=CLUSTER, status=empty(), now=FIXTURE_NOW), 60).status


def test_apply_command_folds_to_what_execute_does() -> None:
    """Every operation of a bootstrap, replayed one command at a time through
    ``apply_command``, gives the statuses and results ``execute`` gives."""
    status = empty()
    for _ in range(10):
        decision = decide(DecisionInputs(cluster=CLUSTER, status=status, now=FIXTURE_NOW))
        if not decision.operations:
            break
        for op in decision.operations:
            executed = execute(status, CLUSTER, SETTINGS, op, FIXTURE_NOW)
            folded = status
            for command, expected in zip(executed.commands, executed.results, strict=True):
                folded, result = apply_command(folded, CLUSTER, command)
                assert result == expected, command.name
            assert folded == executed.status, op.name
            status = folded
        status = health(status, CLUSTER)
    assert decide(DecisionInputs(cluster=CLUSTER, status=status, now=FIXTURE_NOW)).operations == ()


def test_apply_command_leaves_its_input_alone() -> None:
    before = converged()
    after, result = apply_command(before, CLUSTER, StopContainer(("10.0.0.14",), rc.KUBELET))
    assert result.ok
    assert before.nodes["10.0.0.14"].kubelet.running
    assert not after.nodes["10.0.0.14"].kubelet.running


@attrs.frozen
class _Unknown(Command):
    NAME: ClassVar[str] = "no-such-command"


def test_apply_command_refuses_what_the_model_does_not_know() -> None:
    with pytest.raises(SimulationError, match="no-such-command"):
        apply_command(empty(), CLUSTER, _Unknown())


def test_register_nodes_registers_running_kubelets_with_the_boot_taints() -> None:
    boot = (Taint(key="boot", value="1", effect="NoExecute"),)
    cluster = attrs.evolve(
        CLUSTER, options=attrs.evolve(CLUSTER.options, kubelet=KubeletParams(boot_taints=boot))
    )
    nodes = converged().nodes
    nodes = nodes.set("10.0.0.15", NodeStatus(ssh_connected=False))  # unreachable: unknown
    nodes = stop_container(
        ClusterStatus(nodes=nodes), cluster, "10.0.0.16", rc.KUBELET
    ).nodes  # stopped
    existing = KubernetesNode(name="10.0.0.11", labels=FrozenDict({"kept": "yes"}))
    ks = KubernetesStatus(nodes=(existing,))

    registered = register_nodes(ks, cluster, nodes)
    assert [n.name for n in registered.nodes] == [
        "10.0.0.11",
        "10.0.0.12",
        "10.0.0.13",
        "10.0.0.14",
    ]
    assert registered.nodes[0] is existing
    assert all(n.taints == boot and not n.ready for n in registered.nodes[1:])
    assert register_nodes(registered, cluster, nodes) is registered  # nothing new


def test_the_parts_of_health_agree_with_health() -> None:
    status = stop_container(converged(), CLUSTER, "10.0.0.14", rc.KUBELET)
    status = stop_container(status, CLUSTER, "10.0.0.11", rc.KUBE_SCHEDULER)
    status = attrs.evolve(
        status,
        reboot_queue=RebootQueueStatus(
            enabled=True,
            entries=(
                RebootQueueEntry(index=1, node="10.0.0.15", status=RebootStatus.DRAINING),
                RebootQueueEntry(index=2, node="10.0.0.15", status=RebootStatus.DRAINING),
                RebootQueueEntry(index=3, node="10.9.9.9", status=RebootStatus.DRAINING),
                RebootQueueEntry(index=4, node="10.0.0.16"),
            ),
        ),
        repair_queue=RepairQueueStatus(
            enabled=True,
            entries=(
                RepairQueueEntry(
                    index=1,
                    address="10.0.0.14",
                    status=RepairStatus.PROCESSING,
                    step_status=RepairStepStatus.DRAINING,
                ),
                RepairQueueEntry(index=2, address="10.0.0.16", status=RepairStatus.PROCESSING),
            ),
        ),
    )
    healthy = health(status, CLUSTER)
    for address, node in status.nodes.items():
        assert node_health(node, healthy.etcd.is_healthy) == healthy.nodes[address]
    assert kubernetes_health(status.kubernetes, CLUSTER, status.nodes) == healthy.kubernetes
    assert reboot_drain_completed(status.reboot_queue, CLUSTER) == (1,)
    assert healthy.reboot_queue.drain_completed == (1,)
    assert repair_drain_completed(status.repair_queue) == {"10.0.0.14": True}
    assert healthy.repair_queue.drain_completed == {"10.0.0.14": True}
    ready = {n.name: n.ready for n in healthy.kubernetes.nodes}
    assert ready["10.0.0.14"] is False
    assert not healthy.nodes["10.0.0.11"].scheduler.is_healthy
