"""Infrastructure operations (§C.2): upgrade, rivers, etcd, Kubernetes components, stop.

Each plan is run with successful results against CKE's test fixture (CPs
10.0.0.11-13, workers 10.0.0.14-16) and compared, command by command, with
(name, target) in §C.2's order; the commands' data is checked where a later
command depends on an earlier result or on the spec.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs
import pytest

from cke_core.cluster import (
    APIServerParams,
    Cluster,
    CNIConfFile,
    EtcdParams,
    KubeletParams,
    Node,
    Options,
    ServiceParams,
    Taint,
)
from cke_core.commands.etcd import (
    AddEtcdMember,
    EtcdMemberList,
    RemoveEtcdMember,
    UpgradeVersionFrom1To2,
    WaitEtcdSync,
)
from cke_core.commands.node import (
    KillContainers,
    MakeDirs,
    MakeFiles,
    PrepareAPIServerFiles,
    PrepareControllerManagerFiles,
    PrepareEtcdCertificates,
    PrepareKubeletConfig,
    PrepareKubeletFiles,
    PrepareProxyFiles,
    PrepareSchedulerFiles,
    RetaintBeforeKubeletBoot,
    RunContainer,
)
from cke_core.frozen import FrozenDict
from cke_core.ops.base import SUCCESS, Command, CommandResult, Operation
from cke_core.ops.clean import STOPPABLE_CONTAINERS, StopOp
from cke_core.ops.etcd import (
    EtcdAddMemberOp,
    EtcdBootstrapOp,
    EtcdDestroyMemberOp,
    EtcdMarkMemberOp,
    EtcdRemoveMemberOp,
    EtcdRestartOp,
    EtcdStartOp,
    EtcdWaitClusterOp,
    guess_member_name,
    initial_cluster_from_members,
    url_host,
)
from cke_core.ops.k8s import (
    KubeAPIServerRestartOp,
    KubeControllerManagerBootstrapOp,
    KubeControllerManagerRestartOp,
    KubeletBootstrapOp,
    KubeletRestartOp,
    KubeProxyBootstrapOp,
    KubeProxyRestartOp,
    KubeSchedulerBootstrapOp,
    KubeSchedulerRestartOp,
)
from cke_core.ops.rivers import (
    EtcdRiversBootstrapOp,
    EtcdRiversRestartOp,
    RiversBootstrapOp,
    RiversRestartOp,
)
from cke_core.ops.upgrade import UpgradeOp
from cke_core.render import components, files
from cke_core.render.images import Images
from cke_core.simulation import ssh_targets
from cke_core.status import EtcdMember
from cke_core.testing import step_ops

CPS = ("10.0.0.11", "10.0.0.12", "10.0.0.13")
WORKERS = ("10.0.0.14", "10.0.0.15", "10.0.0.16")
ALL = CPS + WORKERS
EP = tuple(f"https://{a}:2379" for a in CPS)
EPS = ",".join(EP)
IMAGES = Images(etcd="etcd:t", kubernetes="k8s:t", tools="tools:t")
TOOLS = IMAGES.tools


def make_cluster(options: Options | None = None) -> Cluster:
    nodes = tuple(Node(address=a, user="cybozu", control_plane=True) for a in CPS) + tuple(
        Node(address=a, user="cybozu") for a in WORKERS
    )
    return Cluster(
        name="test",
        nodes=nodes,
        service_subnet="12.34.56.0/24",
        dns_servers=("8.8.8.8",),
        options=options or Options(),
    )


CLUSTER = make_cluster()
CP_NODES = CLUSTER.control_planes
WORKER_NODES = CLUSTER.workers
ALL_NODES = CLUSTER.nodes

#: What add-etcd-member answers by default: the three CPs, 10.0.0.13 just added.
MEMBERS = (
    EtcdMember(id=1, name="10.0.0.11", peer_urls=("https://10.0.0.11:2380",)),
    EtcdMember(id=2, name="10.0.0.12", peer_urls=("https://10.0.0.12:2380",)),
    EtcdMember(id=3, name="", peer_urls=("https://10.0.0.13:2380",)),
)

Answer = Callable[[Command], CommandResult]
T = TypeVar("T")


def answer(command: Command) -> CommandResult:
    """A successful result; the member list for the commands that answer one."""
    if isinstance(command, AddEtcdMember | EtcdMemberList):
        return CommandResult(value=MEMBERS)
    return SUCCESS


def run(op: Operation, respond: Answer = answer, limit: int = 100) -> list[Command]:
    """Drive ``op`` to completion; fail if it takes more than ``limit`` commands."""
    results: list[CommandResult] = []
    commands: list[Command] = []
    while (command := op.next_command(tuple(results))) is not None:
        commands.append(command)
        results.append(respond(command))
        assert len(commands) <= limit, f"{op.name} did not finish within {limit} commands"
    return commands


def steps(op: Operation, respond: Answer = answer) -> list[tuple[str, str]]:
    return [(c.name, c.target) for c in run(op, respond)]


def step(name: str, addresses: Sequence[str]) -> list[tuple[str, str]]:
    """A node step: one command for all ``addresses``, its target their joined list."""
    return [(name, ",".join(addresses))]


def of_type(commands: Sequence[Command], kind: type[T]) -> list[T]:
    return [c for c in commands if isinstance(c, kind)]


# ---------------------------------------------------------------------------
# upgrade
# ---------------------------------------------------------------------------


def test_upgrade_from_version_1() -> None:
    op = UpgradeOp("1", CP_NODES)
    assert op.name == "upgrade"
    assert op.targets == CPS
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [
        ("upgrade-version-from-1-to-2", "etcd-added-member")
    ]
    assert commands[0] == UpgradeVersionFrom1To2(CPS)


def test_upgrade_from_version_2_does_nothing() -> None:
    assert steps(UpgradeOp("2", CP_NODES)) == []


# ---------------------------------------------------------------------------
# rivers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op_class", "name", "container", "restart", "nodes"),
    [
        (RiversBootstrapOp, "rivers-bootstrap", "rivers", False, ALL_NODES),
        (RiversRestartOp, "rivers-restart", "rivers", True, ALL_NODES),
        (EtcdRiversBootstrapOp, "etcd-rivers-bootstrap", "etcd-rivers", False, CP_NODES),
        (EtcdRiversRestartOp, "etcd-rivers-restart", "etcd-rivers", True, CP_NODES),
    ],
)
def test_rivers(
    op_class: type[RiversBootstrapOp],
    name: str,
    container: str,
    restart: bool,
    nodes: tuple[Node, ...],
) -> None:
    cluster = make_cluster(Options(rivers=ServiceParams(extra_args=("--x",))))
    op = op_class(cluster, IMAGES, nodes)
    addresses = tuple(n.address for n in nodes)
    assert op.name == name
    assert op.targets == addresses
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == step("image-pull", addresses) + step(
        "run-container", addresses
    )
    assert all(getattr(c, "image", None) == TOOLS for c in commands)
    builtin = (
        components.rivers_params(cluster)
        if container == "rivers"
        else components.etcd_rivers_params(cluster)
    )
    (run_command,) = of_type(commands, RunContainer)
    assert run_command.nodes == addresses
    assert run_command.container == container
    assert run_command.restart is restart
    assert run_command.params == dict.fromkeys(addresses, builtin)
    assert run_command.extra == components.extra_params(cluster, container)
    assert of_type(commands, RunContainer)[0].extra.extra_args == (
        ("--x",) if container == "rivers" else ()
    )


def test_rivers_upstreams_are_the_control_planes() -> None:
    run_command = of_type(run(RiversBootstrapOp(CLUSTER, IMAGES, ALL_NODES)), RunContainer)[0]
    assert run_command.params_of("10.0.0.16").extra_args == (
        "rivers",
        "--upstreams=10.0.0.11:6443,10.0.0.12:6443,10.0.0.13:6443",
        "--listen=127.0.0.1:16443",
    )


# ---------------------------------------------------------------------------
# etcd
# ---------------------------------------------------------------------------


def test_etcd_bootstrap() -> None:
    op = EtcdBootstrapOp(CLUSTER, IMAGES, CP_NODES)
    assert op.name == "etcd-bootstrap"
    assert op.targets == CPS
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [
        *step("image-pull", CPS),
        *step("prepare-etcd-certificates", CPS),
        *step("make-files", CPS),
        *step("volume-create", CPS),
        *step("run-container", CPS),
        ("wait-etcd-sync", EPS),
        ("setup-etcd-auth", EPS),
        *step("volume-create", CPS),
    ]
    volumes = [getattr(c, "volume", None) for c in commands if c.name == "volume-create"]
    assert volumes == ["etcd-cke", "etcd-added-member"]
    (run_command,) = of_type(commands, RunContainer)
    initial = ",".join(f"{a}=https://{a}:2380" for a in CPS)
    assert run_command.image == IMAGES.etcd
    assert run_command.container == "etcd"
    assert run_command.restart is False
    assert run_command.options == ("--mount", "type=volume,src=etcd-cke,dst=/var/lib/etcd")
    for node in CP_NODES:
        params = run_command.params_of(node.address)
        assert params == components.etcd_params(
            CLUSTER, node, initial_cluster=CP_NODES, state="new"
        )
        assert f"--initial-cluster={initial}" in params.extra_args
        assert "--initial-cluster-state=new" in params.extra_args
    sync = of_type(commands, WaitEtcdSync)[0]
    assert sync.endpoints == EP
    assert sync.redundancy is False


def test_etcd_bootstrap_prepares_each_node_its_certificates() -> None:
    commands = run(EtcdBootstrapOp(CLUSTER, IMAGES, CP_NODES))
    (prepare,) = of_type(commands, PrepareEtcdCertificates)
    for node in CP_NODES:
        assert prepare.pki_of(node.address) == files.etcd_certificate_requests(CLUSTER, node)
    (make,) = of_type(commands, MakeFiles)
    assert make.nodes == CPS
    assert make.image == TOOLS
    assert make.files == {}


def test_etcd_uses_the_configured_volume() -> None:
    cluster = make_cluster(Options(etcd=EtcdParams(volume_name="my-etcd")))
    commands = run(EtcdBootstrapOp(cluster, IMAGES, cluster.control_planes))
    assert {getattr(c, "volume", None) for c in commands if c.name == "volume-create"} == {
        "my-etcd",
        "etcd-added-member",
    }
    assert of_type(commands, RunContainer)[0].options == (
        "--mount",
        "type=volume,src=my-etcd,dst=/var/lib/etcd",
    )


def test_etcd_start() -> None:
    nodes = CP_NODES[1:]
    addresses = CPS[1:]
    op = EtcdStartOp(CLUSTER, IMAGES, nodes)
    assert op.name == "etcd-start"
    assert op.targets == addresses
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [
        *step("prepare-etcd-certificates", addresses),
        *step("make-files", addresses),
        *step("run-container", addresses),
        ("wait-etcd-sync", ",".join(f"https://{a}:2379" for a in addresses)),
    ]
    (run_command,) = of_type(commands, RunContainer)
    assert run_command.restart is False
    for params in run_command.params.values():
        assert not any(a.startswith("--initial-") for a in params.extra_args)


def test_etcd_wait_cluster() -> None:
    op = EtcdWaitClusterOp(CP_NODES)
    assert op.name == "etcd-wait-cluster"
    assert op.targets == EP
    assert steps(op) == [("wait-etcd-sync", EPS)]


def test_etcd_add_member() -> None:
    node = CP_NODES[2]
    op = EtcdAddMemberOp(CLUSTER, IMAGES, CP_NODES, node)
    assert op.name == "etcd-add-member"
    assert op.targets == ("10.0.0.13",)
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [
        ("image-pull", "10.0.0.13"),
        ("stop-container", "10.0.0.13"),
        ("volume-remove", "10.0.0.13"),
        ("volume-remove", "10.0.0.13"),
        ("volume-create", "10.0.0.13"),
        ("prepare-etcd-certificates", "10.0.0.13"),
        ("make-files", "10.0.0.13"),
        ("add-etcd-member", "10.0.0.13"),
        ("run-container", "10.0.0.13"),
        ("wait-etcd-sync", "https://10.0.0.13:2379"),
        ("volume-create", "10.0.0.13"),
    ]
    assert [getattr(c, "volume", None) for c in commands if c.name.startswith("volume-")] == [
        "etcd-added-member",
        "etcd-cke",
        "etcd-cke",
        "etcd-added-member",
    ]
    add = of_type(commands, AddEtcdMember)[0]
    assert add.endpoints == EP
    assert add.node == "10.0.0.13"
    run_command = of_type(commands, RunContainer)[0]
    assert run_command.params_of("10.0.0.13") == components.etcd_params(
        CLUSTER,
        node,
        initial_cluster=(
            "10.0.0.11=https://10.0.0.11:2380",
            "10.0.0.12=https://10.0.0.12:2380",
            "10.0.0.13=https://10.0.0.13:2380",
        ),
        state="existing",
    )
    assert "--initial-cluster-state=existing" in run_command.params_of("10.0.0.13").extra_args


def test_etcd_add_member_builds_initial_cluster_from_the_answer() -> None:
    """The run follows the member list answered, not the spec: here two old members
    (one with two peer URLs) and the new, still unnamed one."""
    members = (
        EtcdMember(id=7, name="10.0.0.11", peer_urls=("https://10.0.0.11:2380",)),
        EtcdMember(
            id=8, name="old", peer_urls=("https://10.0.0.99:2380", "https://10.0.1.99:2380")
        ),
        EtcdMember(id=9, name="", peer_urls=("https://10.0.0.14:2380",)),
    )

    def respond(command: Command) -> CommandResult:
        return CommandResult(value=members) if isinstance(command, AddEtcdMember) else SUCCESS

    node = WORKER_NODES[0]
    run_command = of_type(
        run(EtcdAddMemberOp(CLUSTER, IMAGES, CP_NODES, node), respond), RunContainer
    )[0]
    assert (
        "--initial-cluster=10.0.0.11=https://10.0.0.11:2380,old=https://10.0.0.99:2380,"
        "old=https://10.0.1.99:2380,10.0.0.14=https://10.0.0.14:2380"
    ) in run_command.params_of("10.0.0.14").extra_args
    assert run_command.target == "10.0.0.14"


def test_etcd_add_member_rejects_a_bad_answer() -> None:
    op = EtcdAddMemberOp(CLUSTER, IMAGES, CP_NODES, CP_NODES[2])
    results = [SUCCESS] * 7
    with pytest.raises(TypeError):
        op.next_command((*results, CommandResult(value=None)))
    with pytest.raises(ValueError, match="peer URLs"):
        op.next_command((*results, CommandResult(value=())))


def test_initial_cluster_from_members() -> None:
    assert initial_cluster_from_members(MEMBERS, "10.0.0.13") == (
        "10.0.0.11=https://10.0.0.11:2380",
        "10.0.0.12=https://10.0.0.12:2380",
        "10.0.0.13=https://10.0.0.13:2380",
    )


def test_etcd_remove_member() -> None:
    members = (
        EtcdMember(id=10, name="10.0.0.20", peer_urls=("https://10.0.0.20:2380",)),
        EtcdMember(id=11, name="", peer_urls=("https://10.0.0.21:2380",)),
        EtcdMember(id=12),
    )
    op = EtcdRemoveMemberOp(CP_NODES, members)
    assert op.name == "etcd-remove-member"
    assert op.targets == ("10.0.0.20", "10.0.0.21", "12")
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [("remove-etcd-member", "10,11,12")]
    assert commands[0] == RemoveEtcdMember(EP, (10, 11, 12))


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://10.0.0.1:2380", "10.0.0.1"),
        ("https://[fd00::1]:2380", "fd00::1"),
        ("https://host.example", "host.example"),
        ("https://host.example:2380/path", "host.example"),
    ],
)
def test_url_host(url: str, host: str) -> None:
    assert url_host(url) == host
    assert guess_member_name(EtcdMember(id=1, peer_urls=(url,))) == host


def test_etcd_destroy_member() -> None:
    nodes = WORKER_NODES[:2]
    op = EtcdDestroyMemberOp(CLUSTER, CP_NODES, nodes, (21, 22))
    assert op.name == "etcd-destroy-member"
    assert op.targets == ("10.0.0.14", "10.0.0.15")
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [
        *step("volume-remove", op.targets),
        ("remove-etcd-member", "21,22"),
        ("kill-containers", "10.0.0.14,10.0.0.15"),
        *step("volume-remove", op.targets),
        ("wait-etcd-sync", EPS),
    ]
    assert of_type(commands, KillContainers)[0].container == "etcd"
    assert [getattr(c, "volume", None) for c in commands if c.name == "volume-remove"] == [
        "etcd-added-member",
        "etcd-cke",
    ]


def test_etcd_destroy_member_removes_the_configured_volume() -> None:
    """Deliberately unlike CKE (§N.9), which always removes ``etcd-cke``."""
    cluster = make_cluster(Options(etcd=EtcdParams(volume_name="my-etcd")))
    commands = run(EtcdDestroyMemberOp(cluster, cluster.control_planes, WORKER_NODES[:1], (1,)))
    removed = [getattr(c, "volume", None) for c in commands if c.name == "volume-remove"]
    assert removed == ["etcd-added-member", "my-etcd"]


def test_etcd_mark_member() -> None:
    op = EtcdMarkMemberOp(CP_NODES[:2])
    assert op.name == "etcd-mark-member"
    assert op.targets == CPS[:2]
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == step("volume-create", CPS[:2])
    assert {getattr(c, "volume", None) for c in commands} == {"etcd-added-member"}


def test_etcd_restart() -> None:
    node = CP_NODES[1]
    op = EtcdRestartOp(CLUSTER, IMAGES, CP_NODES, node)
    assert op.name == "etcd-restart"
    assert op.targets == ("10.0.0.12",)
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [
        ("wait-etcd-sync", EPS),
        ("image-pull", "10.0.0.12"),
        ("stop-container", "10.0.0.12"),
        ("run-container", "10.0.0.12"),
    ]
    assert of_type(commands, WaitEtcdSync)[0].redundancy is True
    run_command = of_type(commands, RunContainer)[0]
    assert run_command.params == {"10.0.0.12": components.etcd_params(CLUSTER, node)}
    assert run_command.image == IMAGES.etcd


# ---------------------------------------------------------------------------
# Kubernetes control plane
# ---------------------------------------------------------------------------


def test_kube_apiserver_restart() -> None:
    nodes = CP_NODES[:1]
    op = KubeAPIServerRestartOp(CLUSTER, IMAGES, nodes)
    assert op.name == "kube-apiserver-restart"
    assert op.targets == ("10.0.0.11",)
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [
        ("image-pull", "10.0.0.11"),
        ("make-dirs", "10.0.0.11"),
        ("prepare-apiserver-files", "10.0.0.11"),
        ("make-files", "10.0.0.11"),
        ("stop-container", "10.0.0.11"),
        ("run-container", "10.0.0.11"),
    ]
    assert of_type(commands, MakeDirs)[0] == MakeDirs(
        ("10.0.0.11",), TOOLS, ("/etc/kubernetes/apiserver",), "700"
    )
    prepare = of_type(commands, PrepareAPIServerFiles)[0]
    assert prepare.pki == {"10.0.0.11": files.api_server_certificate_requests(CLUSTER, nodes[0])}
    assert prepare.encryption_config == "/etc/kubernetes/apiserver/encryption.yml"
    assert of_type(commands, MakeFiles)[0].files == {}
    run_command = of_type(commands, RunContainer)[0]
    assert run_command.options == ("--mount", "type=tmpfs,dst=/run/kubernetes")
    assert run_command.params_of("10.0.0.11") == components.api_server_params(CLUSTER, nodes[0])
    assert run_command.image == IMAGES.kubernetes
    assert run_command.restart is False


def test_kube_apiserver_restart_writes_the_audit_policy() -> None:
    policy = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"
    cluster = make_cluster(
        Options(kube_api=APIServerParams(audit_log_enabled=True, audit_log_policy=policy))
    )
    commands = run(KubeAPIServerRestartOp(cluster, IMAGES, cluster.control_planes))
    (make,) = of_type(commands, MakeFiles)
    assert make.files == dict.fromkeys(CPS, (files.File(files.audit_policy_path(policy), policy),))


def test_kube_controller_manager_bootstrap_and_restart() -> None:
    boot = KubeControllerManagerBootstrapOp(CLUSTER, IMAGES, CP_NODES)
    assert boot.name == "kube-controller-manager-bootstrap"
    assert boot.targets == CPS
    commands = run(boot)
    assert [(c.name, c.target) for c in commands] == [
        *step("image-pull", CPS),
        *step("prepare-controller-manager-files", CPS),
        *step("make-files", CPS),
        *step("run-container", CPS),
    ]
    prepare = of_type(commands, PrepareControllerManagerFiles)[0]
    assert prepare.kubeconfigs == dict.fromkeys(
        CPS, (files.controller_manager_kubeconfig(CLUSTER),)
    )
    assert prepare.pki_of(CPS[0]) == files.controller_manager_pki_requests(CLUSTER, CP_NODES[0])
    assert not any(r.restart for r in of_type(commands, RunContainer))

    restart = KubeControllerManagerRestartOp(CLUSTER, IMAGES, CP_NODES)
    assert restart.name == "kube-controller-manager-restart"
    commands = run(restart)
    assert [(c.name, c.target) for c in commands] == [
        *step("image-pull", CPS),
        *step("run-container", CPS),
    ]
    (run_command,) = of_type(commands, RunContainer)
    assert run_command.restart is True
    for node in CP_NODES:
        assert run_command.params_of(node.address) == components.controller_manager_params(
            CLUSTER, node
        )


@pytest.mark.parametrize(
    ("op_class", "name", "restart"),
    [
        (KubeSchedulerBootstrapOp, "kube-scheduler-bootstrap", False),
        (KubeSchedulerRestartOp, "kube-scheduler-restart", True),
    ],
)
def test_kube_scheduler(op_class: type[KubeSchedulerBootstrapOp], name: str, restart: bool) -> None:
    op = op_class(CLUSTER, IMAGES, CP_NODES)
    assert op.name == name
    assert op.targets == CPS
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [
        *step("image-pull", CPS),
        *step("prepare-scheduler-files", CPS),
        *step("make-files", CPS),
        *step("run-container", CPS),
    ]
    assert of_type(commands, PrepareSchedulerFiles)[0].kubeconfigs == dict.fromkeys(
        CPS, (files.scheduler_kubeconfig(CLUSTER),)
    )
    (make,) = of_type(commands, MakeFiles)
    assert make.files == dict.fromkeys(CPS, files.scheduler_files(CLUSTER))
    assert all(r.restart is restart for r in of_type(commands, RunContainer))


# ---------------------------------------------------------------------------
# kubelet and kube-proxy
# ---------------------------------------------------------------------------


def test_kubelet_bootstrap_minimal() -> None:
    op = KubeletBootstrapOp(CLUSTER, IMAGES, ALL_NODES)
    assert op.name == "kubelet-bootstrap"
    assert op.targets == ALL
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [
        *step("image-pull", ALL),
        *step("make-dirs", ALL),
        *step("prepare-kubelet-files", ALL),
        *step("make-files", ALL),
        *step("install-cni", ALL),
        *step("run-container", ALL),
        *step("wait-for-kubelet-ready", ALL),
    ]
    assert of_type(commands, MakeDirs)[0] == MakeDirs(
        ALL,
        TOOLS,
        (
            "/opt/cni/bin",
            "/etc/cni/net.d",
            "/var/lib/cni",
            "/var/log/pods",
            "/var/log/containers",
            "/opt/volume/bin",
        ),
        "755",
    )
    (make,) = of_type(commands, MakeFiles)
    (prepare,) = of_type(commands, PrepareKubeletFiles)
    (run_command,) = of_type(commands, RunContainer)
    assert run_command.options == ("--pid=host", "--privileged", "--tmpfs=/tmp")
    assert run_command.restart is False
    for node in ALL_NODES:
        address = node.address
        assert make.files_of(address) == (files.kubelet_config_file(CLUSTER, node),)
        assert prepare.pki_of(address) == files.kubelet_certificate_requests(CLUSTER, node)
        assert prepare.kubeconfigs_of(address) == (files.kubelet_kubeconfig(CLUSTER, node),)
        assert run_command.params_of(address) == components.kubelet_params(CLUSTER, node)


def test_kubelet_bootstrap_with_cni_conf_and_boot_taints() -> None:
    taint = Taint(key="coil.cybozu.com/bootstrap", value="true", effect="NoSchedule")
    cluster = make_cluster(
        Options(
            kubelet=KubeletParams(
                boot_taints=(taint,),
                cni_conf_file=CNIConfFile(name="10-net.conflist", content="{}"),
            )
        )
    )
    nodes = cluster.workers
    op = KubeletBootstrapOp(
        cluster, IMAGES, nodes, registered=("10.0.0.14", "10.0.0.16"), apiserver="10.0.0.11"
    )
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [
        *step("image-pull", WORKERS),
        *step("empty-dir", WORKERS),
        *step("make-dirs", WORKERS),
        *step("prepare-kubelet-files", WORKERS),
        *step("make-files", WORKERS),
        *step("install-cni", WORKERS),
        ("retaint-before-kubelet-boot", "10.0.0.14,10.0.0.16"),
        *step("run-container", WORKERS),
        *step("wait-for-kubelet-ready", WORKERS),
    ]
    assert {getattr(c, "directory", None) for c in commands if c.name == "empty-dir"} == {
        "/etc/cni/net.d"
    }
    assert of_type(commands, RetaintBeforeKubeletBoot)[0] == RetaintBeforeKubeletBoot(
        ("10.0.0.14", "10.0.0.16"), (taint,), "10.0.0.11"
    )
    make = of_type(commands, MakeFiles)[0]
    for address in WORKERS:
        cni, config = make.files_of(address)
        assert cni == files.File("/etc/cni/net.d/10-net.conflist", "{}")
        assert config.path == "/etc/kubernetes/kubelet/config.yml"


def test_kubelet_bootstrap_retaints_only_registered_nodes_with_boot_taints() -> None:
    without_registered = KubeletBootstrapOp(
        make_cluster(Options(kubelet=KubeletParams(boot_taints=(Taint("k", "v", "NoSchedule"),)))),
        IMAGES,
        WORKER_NODES,
    )
    without_taints = KubeletBootstrapOp(CLUSTER, IMAGES, WORKER_NODES, registered=("10.0.0.14",))
    for op in (without_registered, without_taints):
        assert "retaint-before-kubelet-boot" not in [c.name for c in run(op)]


def test_kubelet_bootstrap_retaints_by_kubernetes_node_name() -> None:
    """``registered`` holds addresses; the Node API is addressed by node name."""
    taint = Taint("k", "v", "NoSchedule")
    base = make_cluster(Options(kubelet=KubeletParams(boot_taints=(taint,))))
    nodes = (Node(address="10.0.0.15", user="cybozu", hostname="w2"),)
    cluster = attrs.evolve(base, nodes=base.nodes[:4] + nodes + base.nodes[5:])
    op = KubeletBootstrapOp(
        cluster, IMAGES, nodes, registered=("10.0.0.15", "10.9.9.9"), apiserver="10.0.0.12"
    )
    retaint = of_type(run(op), RetaintBeforeKubeletBoot)
    assert retaint == [RetaintBeforeKubeletBoot(("w2",), (taint,), "10.0.0.12")]
    assert retaint[0].target == "w2"


def test_kubelet_restart_keeps_fields_of_the_running_config() -> None:
    running = FrozenDict({"10.0.0.14": FrozenDict({"cgroupDriver": "systemd"})})
    op = KubeletRestartOp(CLUSTER, IMAGES, WORKER_NODES, running_configs=running)
    assert op.name == "kubelet-restart"
    assert op.targets == WORKERS
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [
        *step("image-pull", WORKERS),
        *step("prepare-kubelet-config", WORKERS),
        *step("make-files", WORKERS),
        *step("run-container", WORKERS),
        *step("wait-for-kubelet-ready", WORKERS),
    ]
    (make,) = of_type(commands, MakeFiles)
    assert make.files_of("10.0.0.14") == (
        files.kubelet_config_file(CLUSTER, WORKER_NODES[0], running["10.0.0.14"]),
    )
    assert "cgroupDriver: systemd" in make.files_of("10.0.0.14")[0].content
    assert "cgroupDriver" not in make.files_of("10.0.0.15")[0].content
    prepare = of_type(commands, PrepareKubeletConfig)[0]
    for node in WORKER_NODES:
        pki = prepare.pki_of(node.address)
        assert pki.ca_copies == ()
        assert pki.certificates == files.kubelet_certificate_requests(CLUSTER, node).certificates
        assert prepare.kubeconfigs_of(node.address) == (files.kubelet_kubeconfig(CLUSTER, node),)
    assert all(r.restart for r in of_type(commands, RunContainer))


@pytest.mark.parametrize(
    ("op_class", "name", "restart"),
    [
        (KubeProxyBootstrapOp, "kube-proxy-bootstrap", False),
        (KubeProxyRestartOp, "kube-proxy-restart", True),
    ],
)
def test_kube_proxy(op_class: type[KubeProxyBootstrapOp], name: str, restart: bool) -> None:
    op = op_class(CLUSTER, IMAGES, ALL_NODES)
    assert op.name == name
    assert op.targets == ALL
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [
        *step("image-pull", ALL),
        *step("prepare-proxy-files", ALL),
        *step("make-files", ALL),
        *step("run-container", ALL),
    ]
    assert of_type(commands, PrepareProxyFiles)[0].kubeconfigs == dict.fromkeys(
        ALL, (files.proxy_kubeconfig(CLUSTER),)
    )
    (make,) = of_type(commands, MakeFiles)
    for node in ALL_NODES:
        assert make.files_of(node.address) == files.proxy_files(CLUSTER, node)
    for run_command in of_type(commands, RunContainer):
        assert run_command.restart is restart
        assert run_command.options == ("--tmpfs=/run", "--privileged")


# ---------------------------------------------------------------------------
# stop-*
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("container", STOPPABLE_CONTAINERS)
def test_stop_container(container: str) -> None:
    op = StopOp(container, WORKER_NODES)
    assert op.name == f"stop-{container}"
    assert op.targets == WORKERS
    commands = run(op)
    assert [(c.name, c.target) for c in commands] == [("kill-containers", ",".join(WORKERS))]
    assert commands[0] == KillContainers(WORKERS, container)


def test_stop_names_are_cke_names() -> None:
    assert {StopOp(c, WORKER_NODES).name for c in STOPPABLE_CONTAINERS} == {
        "stop-kube-apiserver",
        "stop-kube-controller-manager",
        "stop-kube-scheduler",
        "stop-etcd",
        "stop-etcd-rivers",
        "stop-kube-proxy",
    }


def test_stop_rejects_other_containers() -> None:
    with pytest.raises(ValueError, match="kubelet"):
        StopOp("kubelet", WORKER_NODES)


# ---------------------------------------------------------------------------
# Every operation
# ---------------------------------------------------------------------------

#: A cluster with every optional step enabled (CNI conf, boot taints, audit).
FULL_CLUSTER = make_cluster(
    Options(
        kube_api=APIServerParams(audit_log_enabled=True, audit_log_policy="kind: Policy\n"),
        kubelet=KubeletParams(
            boot_taints=(Taint("k", "v", "NoSchedule"),),
            cni_conf_file=CNIConfFile(name="10-net.conf", content="{}"),
        ),
    )
)


def all_ops(cluster: Cluster) -> list[Operation]:
    cps, workers, nodes = cluster.control_planes, cluster.workers, cluster.nodes
    return [
        UpgradeOp("1", cps),
        RiversBootstrapOp(cluster, IMAGES, nodes),
        RiversRestartOp(cluster, IMAGES, nodes),
        EtcdRiversBootstrapOp(cluster, IMAGES, cps),
        EtcdRiversRestartOp(cluster, IMAGES, cps),
        EtcdBootstrapOp(cluster, IMAGES, cps),
        EtcdStartOp(cluster, IMAGES, cps),
        EtcdWaitClusterOp(cps),
        EtcdAddMemberOp(cluster, IMAGES, cps, cps[2]),
        EtcdRemoveMemberOp(cps, MEMBERS),
        EtcdDestroyMemberOp(cluster, cps, workers, (4, 5, 6)),
        EtcdMarkMemberOp(cps),
        EtcdRestartOp(cluster, IMAGES, cps, cps[0]),
        KubeAPIServerRestartOp(cluster, IMAGES, cps),
        KubeControllerManagerBootstrapOp(cluster, IMAGES, cps),
        KubeControllerManagerRestartOp(cluster, IMAGES, cps),
        KubeSchedulerBootstrapOp(cluster, IMAGES, cps),
        KubeSchedulerRestartOp(cluster, IMAGES, cps),
        KubeletBootstrapOp(
            cluster, IMAGES, nodes, registered=tuple(n.address for n in nodes), apiserver=CPS[0]
        ),
        KubeletRestartOp(cluster, IMAGES, nodes),
        KubeProxyBootstrapOp(cluster, IMAGES, nodes),
        KubeProxyRestartOp(cluster, IMAGES, nodes),
        *(StopOp(c, nodes) for c in STOPPABLE_CONTAINERS),
    ]


@pytest.mark.parametrize("op", all_ops(FULL_CLUSTER), ids=lambda op: op.name)
def test_every_op_finishes_within_100_commands(op: Operation) -> None:
    commands = run(op, limit=100)
    assert commands, f"{op.name} issued no command"
    assert op.targets
    for command in commands:
        assert command.name
        assert command.target


@pytest.mark.parametrize("op", all_ops(FULL_CLUSTER), ids=lambda op: op.name)
def test_every_op_is_a_pure_value(op: Operation) -> None:
    """Equal inputs, equal plans: a copy of the op answers the same commands, and
    asking again with the same results answers the same command."""
    twin = attrs.evolve(op)
    assert twin == op
    assert hash(twin) == hash(op)
    results: list[CommandResult] = []
    while (command := op.next_command(tuple(results))) is not None:
        assert twin.next_command(tuple(results)) == command
        assert op.next_command(tuple(results)) == command
        hash(command)
        results.append(answer(command))
    assert twin.next_command(tuple(results)) is None


def test_every_op_name_is_cke_s() -> None:
    names = {op.name for op in all_ops(CLUSTER)}
    assert names == {
        "upgrade",
        "rivers-bootstrap",
        "rivers-restart",
        "etcd-rivers-bootstrap",
        "etcd-rivers-restart",
        "etcd-bootstrap",
        "etcd-start",
        "etcd-wait-cluster",
        "etcd-add-member",
        "etcd-remove-member",
        "etcd-destroy-member",
        "etcd-mark-member",
        "etcd-restart",
        "kube-apiserver-restart",
        "kube-controller-manager-bootstrap",
        "kube-controller-manager-restart",
        "kube-scheduler-bootstrap",
        "kube-scheduler-restart",
        "kubelet-bootstrap",
        "kubelet-restart",
        "kube-proxy-bootstrap",
        "kube-proxy-restart",
        "stop-kube-apiserver",
        "stop-kube-controller-manager",
        "stop-kube-scheduler",
        "stop-etcd",
        "stop-etcd-rivers",
        "stop-kube-proxy",
    }


def test_a_node_step_is_one_command_whatever_the_number_of_nodes() -> None:
    """A full kubelet bootstrap (every optional step) is nine commands on ten nodes as
    on one; so is every other op (``test_5000_nodes_finish_within_100_commands``)."""
    nodes = tuple(Node(address=f"10.0.1.{i}", user="u") for i in range(10))
    cluster = attrs.evolve(FULL_CLUSTER, nodes=FULL_CLUSTER.nodes[:3] + nodes)

    def bootstrap(targets: tuple[Node, ...]) -> list[Command]:
        registered = tuple(n.address for n in targets)
        return run(
            KubeletBootstrapOp(cluster, IMAGES, targets, registered=registered, apiserver=CPS[0])
        )

    assert len(bootstrap(nodes)) == len(bootstrap(nodes[:1])) == 9
    for command in bootstrap(nodes):
        assert ssh_targets(command) in ((), tuple(n.address for n in nodes))


# ---------------------------------------------------------------------------
# 5,000 nodes
# ---------------------------------------------------------------------------

#: The generated cluster's size: 3 control planes and 4,997 workers.
BIG = 5_000
#: etcd-bootstrap's ``--initial-cluster`` lists every control plane in every node's
#: parameters (its size grows with the square of the targets), so it gets fewer.
BIG_ETCD_BOOTSTRAP = 500


@functools.cache
def generated_cluster() -> Cluster:
    """FULL_CLUSTER's options with ``BIG`` nodes: its 3 control planes, then workers
    10.1.0.0 onwards (every tenth with a hostname, so Node names differ from addresses)."""
    first = ipaddress.ip_address("10.1.0.0")
    workers = tuple(
        Node(address=str(first + i), user="u", hostname=f"w{i}" if i % 10 == 0 else "")
        for i in range(BIG - len(CPS))
    )
    return attrs.evolve(FULL_CLUSTER, nodes=FULL_CLUSTER.control_planes + workers)


NodeOpFactory = Callable[[Cluster, tuple[Node, ...]], Operation]

#: Every op that takes a list of nodes, built on the given cluster and nodes.
NODE_OPS: dict[str, NodeOpFactory] = {
    "upgrade": lambda c, n: UpgradeOp("1", n),
    "rivers-bootstrap": lambda c, n: RiversBootstrapOp(c, IMAGES, n),
    "rivers-restart": lambda c, n: RiversRestartOp(c, IMAGES, n),
    "etcd-rivers-bootstrap": lambda c, n: EtcdRiversBootstrapOp(c, IMAGES, n),
    "etcd-rivers-restart": lambda c, n: EtcdRiversRestartOp(c, IMAGES, n),
    "etcd-bootstrap": lambda c, n: EtcdBootstrapOp(c, IMAGES, n[:BIG_ETCD_BOOTSTRAP]),
    "etcd-start": lambda c, n: EtcdStartOp(c, IMAGES, n),
    "etcd-wait-cluster": lambda c, n: EtcdWaitClusterOp(n),
    "etcd-destroy-member": lambda c, n: EtcdDestroyMemberOp(
        c, c.control_planes, n, tuple(range(len(n)))
    ),
    "etcd-mark-member": lambda c, n: EtcdMarkMemberOp(n),
    "kube-apiserver-restart": lambda c, n: KubeAPIServerRestartOp(c, IMAGES, n),
    "kube-controller-manager-bootstrap": lambda c, n: KubeControllerManagerBootstrapOp(
        c, IMAGES, n
    ),
    "kube-controller-manager-restart": lambda c, n: KubeControllerManagerRestartOp(c, IMAGES, n),
    "kube-scheduler-bootstrap": lambda c, n: KubeSchedulerBootstrapOp(c, IMAGES, n),
    "kube-scheduler-restart": lambda c, n: KubeSchedulerRestartOp(c, IMAGES, n),
    "kubelet-bootstrap": lambda c, n: KubeletBootstrapOp(
        c, IMAGES, n, registered=tuple(x.address for x in n[::2]), apiserver=CPS[0]
    ),
    "kubelet-restart": lambda c, n: KubeletRestartOp(c, IMAGES, n),
    "kube-proxy-bootstrap": lambda c, n: KubeProxyBootstrapOp(c, IMAGES, n),
    "kube-proxy-restart": lambda c, n: KubeProxyRestartOp(c, IMAGES, n),
    **{
        f"stop-{name}": functools.partial(lambda name, c, n: StopOp(name, n), name)
        for name in STOPPABLE_CONTAINERS
    },
}


def test_node_ops_cover_every_op_with_node_targets() -> None:
    names = {op.name for op in all_ops(CLUSTER)}
    single = {"etcd-add-member", "etcd-restart", "etcd-remove-member"}  # one node or member
    assert set(NODE_OPS) == names - single


@pytest.mark.parametrize("name", NODE_OPS)
def test_5000_nodes_finish_within_100_commands(name: str) -> None:
    """Every op with node targets issues one command per step for all its nodes, so
    5,000 targets take as many commands as three; each SSH command reaches all of them."""
    cluster = generated_cluster()
    op = NODE_OPS[name](cluster, cluster.nodes)
    assert op.name == name
    commands = step_ops(op, limit=100)
    assert len(commands) == len(run(NODE_OPS[name](FULL_CLUSTER, FULL_CLUSTER.nodes)))
    addresses = tuple(n.address for n in cluster.nodes)
    size = BIG_ETCD_BOOTSTRAP if name == "etcd-bootstrap" else BIG
    for command in commands:
        assert ssh_targets(command) in ((), addresses[:size]), command.name
