"""The simulator (``cke_core.simulation``): command effects, health, convergence.

The property suite (tests/property/test_decide_properties.py) drives the
simulator through thousands of decisions; these tests pin the model itself,
so that a property failure can be trusted to be about ``decide``.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import pytest

from cke_core.cluster import Node
from cke_core.commands.etcd import ADDED_MEMBER_VOLUME, AddEtcdMember, RemoveEtcdMember
from cke_core.commands.kube import UpdateNode
from cke_core.commands.node import MakeFiles, RunContainer, VolumeCreate, VolumeRemove
from cke_core.frozen import FrozenDict
from cke_core.ops.base import Command, failed_nodes
from cke_core.ops.etcd import EtcdDestroyMemberOp
from cke_core.ops.kubernetes import UpdateNodeOp
from cke_core.ops.reboot import RebootDrainStartOp, RebootUncordonOp
from cke_core.phases import Phase
from cke_core.queues import RebootQueueEntry, RebootStatus
from cke_core.render import components as rc
from cke_core.render import files as rf
from cke_core.render.images import EngineSettings
from cke_core.simulation import (
    SimulationError,
    _World,
    cluster_dns_ip,
    execute,
    health,
    run,
    ssh_targets,
    stop_container,
)
from cke_core.status import (
    ClusterStatus,
    KubernetesNode,
    KubernetesStatus,
    NodeStatus,
    RebootQueueStatus,
)
from cke_core.strategy import DecisionInputs, decide
from cke_core.testing import FIXTURE_NOW, FIXTURE_REBOOT, StatusBuilder, fixture_cluster

CLUSTER = fixture_cluster()
SETTINGS = EngineSettings()


def empty() -> ClusterStatus:
    return ClusterStatus(
        config_version="2",
        nodes=FrozenDict({n.address: NodeStatus(ssh_connected=True) for n in CLUSTER.nodes}),
    )


def converged() -> ClusterStatus:
    return run(DecisionInputs(cluster=CLUSTER, status=empty(), now=FIXTURE_NOW), 60).status


def test_the_fixture_bootstraps_in_cke_order_and_converges() -> None:
    result = run(DecisionInputs(cluster=CLUSTER, status=empty(), now=FIXTURE_NOW), 60)
    phases = [d.phase for d in result.decisions]
    assert phases == [
        Phase.RIVERS,
        Phase.ETCD_BOOT,
        Phase.K8S_START,  # the apiservers first
        Phase.K8S_START,  # then the other components
        Phase.K8S_MAINTAIN,  # wait-kubernetes
        Phase.K8S_MAINTAIN,  # resources, DNS, cke-etcd, Node attributes
        Phase.K8S_MAINTAIN,  # node-dns, once cluster-dns has its ClusterIP
        Phase.COMPLETED,
    ]


def test_a_fresh_cluster_upgrades_its_config_version_first() -> None:
    status = attrs.evolve(empty(), config_version="1")
    result = run(DecisionInputs(cluster=CLUSTER, status=status, now=FIXTURE_NOW), 60)
    assert result.decisions[0].phase is Phase.UPGRADE
    assert result.status.config_version == "2"
    assert result.decisions[-1].phase is Phase.COMPLETED


def test_the_converged_nodes_are_what_the_builders_call_up_to_date() -> None:
    """The simulator's converged nodes and ``StatusBuilder``'s agree, except that a
    bootstrapped etcd keeps its ``--initial-*`` flags (ignored by the comparison)."""
    simulated = converged()
    built = StatusBuilder().with_k8s_resource_ready().inputs().status
    for address, node in built.nodes.items():
        mine = simulated.nodes[address]
        assert attrs.evolve(mine, etcd=node.etcd) == node, address
        assert rc.etcd_params_equal(mine.etcd.builtin_params, node.etcd.builtin_params)
        assert attrs.evolve(mine.etcd, builtin_params=node.etcd.builtin_params) == node.etcd


def test_health_follows_what_runs() -> None:
    status = converged()
    assert status.etcd.is_healthy
    assert all(status.etcd.in_sync_members.values())
    assert status.kubernetes.cluster_dns.cluster_ip == cluster_dns_ip(CLUSTER) == "12.34.56.10"
    assert all(n.ready for n in status.kubernetes.nodes)

    # One etcd down: still a majority, that member out of sync.
    one = health(stop_container(status, CLUSTER, "10.0.0.11", rc.ETCD), CLUSTER)
    assert one.etcd.is_healthy
    assert not one.etcd.in_sync_members["10.0.0.11"]
    assert one.etcd.in_sync_members["10.0.0.12"]
    # Two down: no quorum, so no apiserver is healthy either.
    two = health(stop_container(one, CLUSTER, "10.0.0.12", rc.ETCD), CLUSTER)
    assert not two.etcd.is_healthy
    assert not any(two.etcd.in_sync_members.values())
    assert not any(n.api_server.is_healthy for n in two.nodes.values())
    # A stopped kubelet makes its Node NotReady.
    down = health(stop_container(status, CLUSTER, "10.0.0.14", rc.KUBELET), CLUSTER)
    ready = {n.name: n.ready for n in down.kubernetes.nodes}
    assert ready["10.0.0.14"] is False
    assert ready["10.0.0.15"] is True


def test_stopping_a_container_keeps_its_configuration_file() -> None:
    status = stop_container(converged(), CLUSTER, "10.0.0.11", rc.KUBE_SCHEDULER)
    scheduler = status.nodes["10.0.0.11"].scheduler
    assert not scheduler.running
    assert scheduler.image == ""
    assert scheduler.config == rc.scheduler_config(CLUSTER)


def test_volumes_set_has_data_and_is_added_member() -> None:
    world = _World(empty(), CLUSTER)
    node = "10.0.0.11"
    on = (node,)
    world.apply(VolumeCreate(on, ADDED_MEMBER_VOLUME))  # a marker without data is forgotten
    assert not world.freeze().nodes[node].etcd.is_added_member
    world.apply(VolumeCreate(on, CLUSTER.options.etcd.volume_name))
    world.apply(VolumeCreate(on, ADDED_MEMBER_VOLUME))
    etcd = world.freeze().nodes[node].etcd
    assert (etcd.has_data, etcd.is_added_member) == (True, True)
    world.apply(VolumeRemove(on, CLUSTER.options.etcd.volume_name))
    etcd = world.freeze().nodes[node].etcd
    assert (etcd.has_data, etcd.is_added_member) == (False, False)


def test_make_files_records_the_configuration_as_the_node_reports_it() -> None:
    world = _World(empty(), CLUSTER)
    node, other = CLUSTER.nodes[3], CLUSTER.nodes[4]
    world.apply(
        MakeFiles(
            (node.address, other.address),
            files={node.address: (rf.kubelet_config_file(CLUSTER, node),)},
        )
    )
    nodes = world.freeze().nodes
    assert nodes[node.address].kubelet.config == rc.kubelet_config(CLUSTER, node)
    assert nodes[other.address].kubelet.config is None  # no files of its own


def test_etcd_members_are_added_started_and_removed() -> None:
    status = converged()
    world = _World(status, CLUSTER)
    added = world.apply(AddEtcdMember(node="10.0.0.14"))
    assert any(not m.name and m.peer_urls == ("https://10.0.0.14:2380",) for m in added.value)
    assert world.apply(AddEtcdMember(node="10.0.0.14")).value == added.value  # re-entrant
    members = world.freeze().etcd.members
    assert members["10.0.0.14"].name == ""

    new_cp = Node(address="10.0.0.14", control_plane=True)
    world.apply(
        RunContainer(
            ("10.0.0.14",),
            rc.ETCD,
            SETTINGS.images.etcd,
            params={
                "10.0.0.14": rc.etcd_params(
                    CLUSTER,
                    new_cp,
                    initial_cluster=("10.0.0.14=https://10.0.0.14:2380",),
                    state="existing",
                )
            },
        )
    )
    started = world.freeze().etcd.members["10.0.0.14"]
    assert started.name == "10.0.0.14"
    assert started.client_urls == ("https://10.0.0.14:2379",)

    world.apply(RemoveEtcdMember(ids=(started.id,)))
    assert "10.0.0.14" not in world.freeze().etcd.members


def test_a_failed_command_stops_an_operation_that_does_not_tolerate_failures() -> None:
    status = converged()
    down = attrs.evolve(
        status, nodes=status.nodes.set("10.0.0.14", NodeStatus(ssh_connected=False))
    )
    op = EtcdDestroyMemberOp(CLUSTER, CLUSTER.control_planes, CLUSTER.workers[:1], (9,))
    result = execute(down, CLUSTER, SETTINGS, op, FIXTURE_NOW)
    assert [(c.name, c.target) for c in result.commands] == [("volume-remove", "10.0.0.14")]
    assert not result.results[0].ok

    no_nodes = attrs.evolve(status, kubernetes=KubernetesStatus())
    uncordon = RebootUncordonOp("10.0.0.11", ("10.0.0.14",))
    result = execute(no_nodes, CLUSTER, SETTINGS, uncordon, FIXTURE_NOW)
    assert [(c.name, c.target) for c in result.commands] == [("uncordon-node", "10.0.0.14")]
    assert not result.results[0].ok


def test_a_node_command_runs_on_every_reachable_node_and_names_the_others() -> None:
    """A multi-node command takes effect on each reachable node (the shell's parts are
    independent) and fails with the unreachable ones as its value."""
    status = empty()
    status = attrs.evolve(
        status, nodes=status.nodes.set("10.0.0.12", NodeStatus(ssh_connected=False))
    )
    world = _World(status, CLUSTER)
    volume = CLUSTER.options.etcd.volume_name
    command = VolumeCreate(("10.0.0.11", "10.0.0.12", "10.0.0.13"), volume)
    assert ssh_targets(command) == ("10.0.0.11", "10.0.0.12", "10.0.0.13")
    result = world.apply(command)
    assert not result.ok
    assert "10.0.0.12" in result.error
    assert failed_nodes(command.nodes, result) == ("10.0.0.12",)
    nodes = world.freeze().nodes
    assert [nodes[a].etcd.has_data for a in command.nodes] == [True, False, True]


def test_update_node_updates_every_node_it_can() -> None:
    status = converged()
    desired = (
        KubernetesNode(name="10.0.0.14", labels=FrozenDict({"a": "b"})),
        KubernetesNode(name="x"),
        KubernetesNode(name="10.0.0.15", labels=FrozenDict({"c": "d"})),
    )
    op = UpdateNodeOp("10.0.0.11", desired)
    result = execute(status, CLUSTER, SETTINGS, op, FIXTURE_NOW)
    (command,) = result.commands
    assert isinstance(command, UpdateNode)
    assert command.target == "10.0.0.14,x,10.0.0.15"
    assert not result.results[0].ok
    assert failed_nodes(("10.0.0.14", "x", "10.0.0.15"), result.results[0]) == ("x",)
    labels = {n.name: n.labels for n in result.status.kubernetes.nodes}
    assert labels["10.0.0.14"] == {"a": "b"}
    assert labels["10.0.0.15"] == {"c": "d"}


def test_a_failed_drain_backs_the_entry_off() -> None:
    status = attrs.evolve(
        converged(),
        reboot_queue=RebootQueueStatus(
            enabled=True, entries=(RebootQueueEntry(index=1, node="10.9.9.9"),)
        ),
    )
    op = RebootDrainStartOp(
        "10.0.0.11", status.reboot_queue.entries, FIXTURE_REBOOT, FIXTURE_NOW, 0
    )
    result = execute(status, CLUSTER, SETTINGS, op, FIXTURE_NOW)
    assert [c.name for c in result.commands] == [
        "update-reboot-queue-entry",
        "cordon-node",  # no such Node: fails
        "get-reboot-queue-entry",
        "update-reboot-queue-entry",
    ]
    (entry,) = result.status.reboot_queue.entries
    assert entry.status is RebootStatus.QUEUED
    assert entry.drain_backoff_count == 1


def test_a_reboot_goes_through_the_whole_queue() -> None:
    cluster = attrs.evolve(CLUSTER, reboot=FIXTURE_REBOOT)
    status = attrs.evolve(
        converged(),
        reboot_queue=RebootQueueStatus(
            enabled=True, entries=(RebootQueueEntry(index=1, node="10.0.0.15"),)
        ),
    )
    result = run(DecisionInputs(cluster=cluster, status=status, now=FIXTURE_NOW), 20)
    names = [op.name for d in result.decisions for op in d.operations]
    assert names == [
        "reboot-drain-start",
        "reboot-delete-daemonset-pod",
        "reboot-reboot",
        "reboot-dequeue",
        "reboot-uncordon",
    ]
    assert result.decisions[-1].phase is Phase.COMPLETED
    assert result.status.reboot_queue.entries == ()


@attrs.frozen
class _Unknown(Command):
    NAME: ClassVar[str] = "unknown"


def test_unknown_commands_are_refused() -> None:
    with pytest.raises(SimulationError, match="unknown"):
        _World(empty(), CLUSTER).apply(_Unknown())


def test_decide_after_convergence_is_completed() -> None:
    inputs = DecisionInputs(cluster=CLUSTER, status=converged(), now=FIXTURE_NOW)
    assert decide(inputs).phase is Phase.COMPLETED
