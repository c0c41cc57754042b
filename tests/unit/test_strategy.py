"""decide() case by case, in the spirit of CKE's TestDecideOps (server/strategy_test.go).

Every case starts from CKE's ``newData()`` fixture (``cke_core.testing``:
control planes 10.0.0.11-13, workers 10.0.0.14-16), layers a status with the
chainable builders, and asserts the phase and the exact list of
``(operation name, number of targets)``. Every operation returned must also
finish its plan within 100 commands when every command succeeds.

The cases follow §B.1 in order (upgrade, rivers, etcd boot/start/wait,
k8s-start, etcd-maintain, k8s-maintain, stop-control-plane, uncordon-nodes,
repair-machines, reboot-nodes, completed), with the sub-decisions of §B.2.
``test_decide_targets`` then checks *which* nodes were chosen where that is
the point of the rule (first outdated apiserver, reboot and repair
candidates, resource order).
"""

from __future__ import annotations

import datetime
from typing import Any

import attrs
import pytest

from cke_core.cluster import (
    APIServerParams,
    EtcdParams,
    KubeletParams,
    Node,
    ProxyParams,
    SchedulerParams,
    ServiceParams,
)
from cke_core.frozen import FrozenDict
from cke_core.ops.base import Command, CommandResult, Operation
from cke_core.ops.kubernetes import ResourceApplyOp, UpdateEndpointsOp
from cke_core.phases import Phase
from cke_core.queues import (
    RebootQueueEntry,
    RebootStatus,
    RepairQueueEntry,
    RepairStatus,
    RepairStepStatus,
)
from cke_core.render import components as rc
from cke_core.render import kubernetes as rk
from cke_core.render.images import Images
from cke_core.status import ClusterDNSStatus, NodeDNSStatus, Service, ServicePort
from cke_core.strategy import decide
from cke_core.testing import (
    CONTROL_PLANE_ADDRESSES,
    FIXTURE_NOW,
    WORKER_ADDRESSES,
    StatusBuilder,
    UnfinishedPlanError,
    fixture_cluster,
    step_ops,
)

CP1, CP2, CP3 = CONTROL_PLANE_ADDRESSES
W1, W2, W3 = WORKER_ADDRESSES
OUTSIDER = "10.0.0.100"
NOW = FIXTURE_NOW


def ago(seconds: int) -> datetime.datetime:
    return NOW - datetime.timedelta(seconds=seconds)


def later(seconds: int) -> datetime.datetime:
    return NOW + datetime.timedelta(seconds=seconds)


# --- bases, in bootstrap order ---------------------------------------------------------

B = StatusBuilder()
RIVERS = B.with_rivers().with_etcd_rivers()
ETCD = RIVERS.with_healthy_etcd()
APISERVER = ETCD.with_api_server().with_master_endpoints()
SERVICES = B.with_all_services()
K8S = B.with_k8s_ready()
READY = B.with_k8s_resource_ready()
IN_PLACE = READY.with_options(kubelet=KubeletParams(in_place_update=True))
REBOOT = READY.with_reboot_config()
REPAIR = READY.with_repair_config()


def promoted(address: str) -> tuple[Node, ...]:
    """The fixture's nodes with ``address`` made a control plane."""
    return tuple(
        attrs.evolve(n, control_plane=True) if n.address == address else n
        for n in fixture_cluster().nodes
    )


def demoted(address: str) -> tuple[Node, ...]:
    return tuple(
        attrs.evolve(n, control_plane=False) if n.address == address else n
        for n in fixture_cluster().nodes
    )


def stopped(builder: StatusBuilder, component: str, *addresses: str) -> StatusBuilder:
    for address in addresses:
        builder = builder.with_component(address, component, running=False, is_healthy=False)
    return builder


def cordoned(builder: StatusBuilder, *names: str) -> StatusBuilder:
    """Nodes cordoned by a reboot or repair: unschedulable, ``cke.cybozu.com/reboot=true``."""
    by_name = builder.status.kubernetes.node_by_name()
    for name in names:
        annotations = by_name[name].annotations.set(rk.ANNOTATION_REBOOT, "true")
        builder = builder.with_node(name, unschedulable=True, annotations=annotations)
    return builder


def reboot(node: str, status: RebootStatus = RebootStatus.QUEUED, **kw: Any) -> RebootQueueEntry:
    return RebootQueueEntry(node=node, status=status, **kw)


def draining(node: str, since: int = 0) -> RebootQueueEntry:
    return reboot(node, RebootStatus.DRAINING, last_transition_time=ago(since))


def repair(
    address: str,
    status: RepairStatus = RepairStatus.PROCESSING,
    step_status: RepairStepStatus = RepairStepStatus.WAITING,
    *,
    step: int = 0,
    since: int = 0,
    operation: str = "op1",
    **kw: Any,
) -> RepairQueueEntry:
    return RepairQueueEntry(
        address=address,
        machine_type="type1",
        operation=operation,
        status=status,
        step=step,
        step_status=step_status,
        last_transition_time=ago(since),
        **kw,
    )


def user_resource(kind: str, name: str, namespace: str = "", revision: int = 1) -> rk.UserResource:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    document = {"apiVersion": "v1", "kind": kind, "metadata": metadata}
    key = rk.resource_key(document)
    return rk.UserResource(key=key, revision=revision, document=FrozenDict(document))


USER_RESOURCES = (
    user_resource("ConfigMap", "cm", "foo"),
    user_resource("Namespace", "foo"),
    user_resource("Role", "role", "foo"),
    user_resource("ClusterRole", "cr"),
)

EP = [("update-kubernetes-endpoints", 1), ("update-kubernetes-endpointslice", 1)]
ETCD_EP = [("update-cke-etcd-endpoints", 1), ("update-cke-etcd-endpointslice", 1)]
STATIC_APPLY = [("resource-apply", 1)] * 9
K8S_CREATES = [
    ("create-cluster-dns-configmap", 1),
    ("create-etcd-service", 1),
    ("create-cke-etcd-endpoints", 1),
    ("create-cke-etcd-endpointslice", 1),
]

Expected = list[tuple[str, int]]


def case(
    case_id: str,
    builder: StatusBuilder,
    phase: Phase,
    expected: Expected,
    *,
    xfail: str = "",
) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(builder, phase, expected, id=case_id, marks=marks)


# ---------------------------------------------------------------------------
# §B.1 step 0: upgrade
# ---------------------------------------------------------------------------

UPGRADE_CASES = [
    case("upgrade", READY.with_config_version("1"), Phase.UPGRADE, [("upgrade", 3)]),
    case("upgrade-from-nothing", B.with_config_version("1"), Phase.UPGRADE, [("upgrade", 3)]),
    case(
        "upgrade-aborted-cp-unreachable",
        READY.with_config_version("1").with_ssh_not_connected(CP2),
        Phase.UPGRADE_ABORTED,
        [],
    ),
    case(
        "upgrade-worker-unreachable",
        READY.with_config_version("1").with_ssh_not_connected(W3),
        Phase.UPGRADE,
        [("upgrade", 3)],
    ),
]

# ---------------------------------------------------------------------------
# step 1: rivers (§B.2.1)
# ---------------------------------------------------------------------------

RIVERS_CASES = [
    case(
        "rivers-boot",
        B,
        Phase.RIVERS,
        [("rivers-bootstrap", 6), ("etcd-rivers-bootstrap", 3)],
    ),
    case(
        "rivers-boot-reachable-only",
        B.with_ssh_not_connected(CP1, W1),
        Phase.RIVERS,
        [("rivers-bootstrap", 4), ("etcd-rivers-bootstrap", 2)],
    ),
    case(
        "rivers-boot-capped",
        B.with_settings(max_concurrent_updates=2),
        Phase.RIVERS,
        [("rivers-bootstrap", 2), ("etcd-rivers-bootstrap", 2)],
    ),
    case(
        "rivers-restart-image",
        READY.with_component(CP1, "rivers", image="old").with_component(W2, "rivers", image="old"),
        Phase.RIVERS,
        [("rivers-restart", 2)],
    ),
    case(
        "rivers-restart-builtin-params",
        READY.with_component(W1, "rivers", builtin_params=ServiceParams()),
        Phase.RIVERS,
        [("rivers-restart", 1)],
    ),
    case(
        "rivers-restart-extra-params",
        READY.with_options(rivers=ServiceParams(extra_args=("--dial-timeout=5s",))),
        Phase.RIVERS,
        [("rivers-restart", 6)],
    ),
    case(
        "rivers-restart-unreachable-skipped",
        READY.with_component(W1, "rivers", image="old")
        .with_component(W2, "rivers", image="old")
        .with_ssh_not_connected(W2),
        Phase.RIVERS,
        [("rivers-restart", 1)],
    ),
    case(
        "rivers-restart-capped",
        READY.with_options(rivers=ServiceParams(extra_args=("-v",))).with_settings(
            max_concurrent_updates=2
        ),
        Phase.RIVERS,
        [("rivers-restart", 2)],
    ),
    case(
        "etcd-rivers-restart",
        READY.with_component(CP2, "etcd_rivers", image="old"),
        Phase.RIVERS,
        [("etcd-rivers-restart", 1)],
    ),
    case(
        "etcd-rivers-restart-extra-params",
        READY.with_options(etcd_rivers=ServiceParams(extra_args=("-v",))),
        Phase.RIVERS,
        [("etcd-rivers-restart", 3)],
    ),
    case(
        "rivers-upstreams-cp-added",
        READY.with_cluster(nodes=promoted(W1)),
        Phase.RIVERS,
        [("rivers-restart", 6), ("etcd-rivers-bootstrap", 1), ("etcd-rivers-restart", 3)],
    ),
    case(
        "rivers-upstreams-cp-removed",
        READY.with_cluster(nodes=demoted(CP3)),
        Phase.RIVERS,
        [("rivers-restart", 6), ("etcd-rivers-restart", 2)],
    ),
    case(
        "rivers-all-four",
        READY.with_component(W1, "rivers", running=False)
        .with_component(W2, "rivers", image="old")
        .with_component(CP1, "etcd_rivers", running=False)
        .with_component(CP2, "etcd_rivers", image="old"),
        Phase.RIVERS,
        [
            ("rivers-bootstrap", 1),
            ("rivers-restart", 1),
            ("etcd-rivers-bootstrap", 1),
            ("etcd-rivers-restart", 1),
        ],
    ),
]

# ---------------------------------------------------------------------------
# steps 2-4: etcd boot, start, wait
# ---------------------------------------------------------------------------

ETCD_CASES = [
    case("etcd-boot", RIVERS, Phase.ETCD_BOOT, [("etcd-bootstrap", 3)]),
    case(
        "etcd-boot-aborted-cp-unreachable",
        RIVERS.with_ssh_not_connected(CP2),
        Phase.ETCD_BOOT_ABORTED,
        [],
    ),
    case(
        "etcd-boot-worker-unreachable",
        RIVERS.with_ssh_not_connected(W1),
        Phase.ETCD_BOOT,
        [("etcd-bootstrap", 3)],
    ),
    case(
        "etcd-start-all",
        RIVERS.with_unhealthy_etcd().with_stopped_etcd(),
        Phase.ETCD_START,
        [("etcd-start", 3)],
    ),
    case(
        "etcd-start-reachable-only",
        RIVERS.with_unhealthy_etcd().with_stopped_etcd().with_ssh_not_connected(CP3),
        Phase.ETCD_START,
        [("etcd-start", 2)],
    ),
    case(
        "etcd-start-one-member",
        READY.with_stopped_etcd(CP2),
        Phase.ETCD_START,
        [("etcd-start", 1)],
    ),
    case(
        "etcd-stopped-non-member-not-started",
        READY.without_etcd_members(CP3).with_stopped_etcd(CP3),
        Phase.ETCD_MAINTAIN,
        [("etcd-add-member", 1)],
    ),
    case(
        "etcd-stopped-unmarked-not-started",
        RIVERS.with_unhealthy_etcd().with_component(
            CP1, "etcd", running=False, is_added_member=False
        ),
        Phase.ETCD_WAIT,
        [("etcd-wait-cluster", 3)],
    ),
    case("etcd-wait", RIVERS.with_unhealthy_etcd(), Phase.ETCD_WAIT, [("etcd-wait-cluster", 3)]),
    case(
        "etcd-wait-init-failed",
        RIVERS.with_init_failed_etcd(),
        Phase.ETCD_WAIT,
        [("etcd-wait-cluster", 3)],
    ),
]

# ---------------------------------------------------------------------------
# step 5: k8s-start (§B.2.2)
# ---------------------------------------------------------------------------

APISERVER_CASES = [
    case("apiserver-boot", ETCD, Phase.K8S_START, [("kube-apiserver-restart", 3)]),
    case(
        "apiserver-boot-reachable-only",
        ETCD.with_ssh_not_connected(CP1),
        Phase.K8S_START,
        [("kube-apiserver-restart", 2)],
    ),
    case(
        "apiserver-stopped-marks-endpoints",
        stopped(READY, "api_server", CP2),
        Phase.K8S_START,
        [*EP, ("kube-apiserver-restart", 1)],
    ),
    case(
        "apiserver-stopped-endpoints-already-marked",
        stopped(READY, "api_server", CP2).with_master_endpoints(CP2),
        Phase.K8S_START,
        [("kube-apiserver-restart", 1)],
    ),
    case(
        "apiserver-unhealthy-outdated-restarted",
        READY.with_api_server_unhealthy(CP1).with_component(CP1, "api_server", image="old"),
        Phase.K8S_START,
        [*EP, ("kube-apiserver-restart", 1)],
    ),
    case(
        "apiserver-stopped-and-unhealthy-outdated",
        stopped(READY, "api_server", CP1)
        .with_api_server_unhealthy(CP2)
        .with_component(CP2, "api_server", image="old"),
        Phase.K8S_START,
        [*EP, ("kube-apiserver-restart", 2)],
    ),
    case(
        "apiserver-unhealthy-only-endpoints",
        READY.with_api_server_unhealthy(CP1),
        Phase.K8S_START,
        EP,
    ),
    case(
        "apiserver-unhealthy-falls-through",
        READY.with_api_server_unhealthy(CP1).with_master_endpoints(CP1),
        Phase.COMPLETED,
        [],
    ),
    case(
        "apiserver-unhealthy-skips-other-components",
        READY.with_api_server_unhealthy(CP1)
        .with_master_endpoints(CP1)
        .with_component(CP2, "controller_manager", image="old")
        .with_component(W1, "proxy", image="old"),
        Phase.COMPLETED,
        [],
    ),
    case(
        "apiserver-unhealthy-no-healthy-apiserver",
        READY.with_api_server_unhealthy(CP1, CP2, CP3),
        Phase.COMPLETED,
        [],
    ),
    case(
        "cp-unreachable-only-endpoints",
        READY.with_ssh_not_connected(CP3),
        Phase.K8S_START,
        EP,
    ),
    case(
        "cp-unreachable-skips-other-components",
        READY.with_ssh_not_connected(CP3)
        .with_master_endpoints(CP3)
        .with_component(W1, "kubelet", running=False),
        Phase.COMPLETED,
        [],
    ),
    case(
        "cp-unreachable-k8s-maintain-still-runs",
        READY.with_ssh_not_connected(CP3)
        .with_master_endpoints(CP3)
        .with_node(W1, labels=FrozenDict()),
        Phase.K8S_MAINTAIN,
        [("update-node", 1)],
    ),
    case(
        "apiserver-outdated-first-only",
        READY.with_options(kube_api=APIServerParams(extra_args=("--v=2",))),
        Phase.K8S_START,
        [*EP, ("kube-apiserver-restart", 1)],
    ),
    case(
        "apiserver-outdated-first-already-marked",
        READY.with_options(kube_api=APIServerParams(extra_args=("--v=2",))).with_master_endpoints(
            CP1
        ),
        Phase.K8S_START,
        [("kube-apiserver-restart", 1)],
    ),
    case(
        "apiserver-outdated-audit-log",
        READY.with_options(
            kube_api=APIServerParams(audit_log_enabled=True, audit_log_policy="rules: []")
        ),
        Phase.K8S_START,
        [*EP, ("kube-apiserver-restart", 1)],
    ),
    case(
        "apiserver-outdated-one",
        READY.with_component(CP2, "api_server", image="old"),
        Phase.K8S_START,
        [*EP, ("kube-apiserver-restart", 1)],
    ),
    case(
        "apiserver-outdated-service-subnet",
        READY.with_cluster(service_subnet="12.34.57.0/24"),
        Phase.K8S_START,
        [*EP, ("kube-apiserver-restart", 1)],
    ),
]

COMPONENT_CASES = [
    case(
        "components-boot-with-endpoints-create",
        ETCD.with_api_server(),
        Phase.K8S_START,
        [
            ("create-kubernetes-endpoints", 1),
            ("create-kubernetes-endpointslice", 1),
            ("kube-controller-manager-bootstrap", 3),
            ("kube-scheduler-bootstrap", 3),
            ("kubelet-bootstrap", 6),
            ("kube-proxy-bootstrap", 6),
        ],
    ),
    case(
        "components-boot",
        APISERVER,
        Phase.K8S_START,
        [
            ("kube-controller-manager-bootstrap", 3),
            ("kube-scheduler-bootstrap", 3),
            ("kubelet-bootstrap", 6),
            ("kube-proxy-bootstrap", 6),
        ],
    ),
    case(
        "components-boot-capped",
        APISERVER.with_settings(max_concurrent_updates=2),
        Phase.K8S_START,
        [
            ("kube-controller-manager-bootstrap", 3),
            ("kube-scheduler-bootstrap", 3),
            ("kubelet-bootstrap", 2),
            ("kube-proxy-bootstrap", 2),
        ],
    ),
    case(
        "components-boot-worker-unreachable",
        APISERVER.with_ssh_not_connected(W3),
        Phase.K8S_START,
        [
            ("kube-controller-manager-bootstrap", 3),
            ("kube-scheduler-bootstrap", 3),
            ("kubelet-bootstrap", 5),
            ("kube-proxy-bootstrap", 5),
        ],
    ),
    case(
        "controller-manager-boot-one",
        stopped(READY, "controller_manager", CP3),
        Phase.K8S_START,
        [("kube-controller-manager-bootstrap", 1)],
    ),
    case(
        "controller-manager-restart-image",
        READY.with_component(CP2, "controller_manager", image="old"),
        Phase.K8S_START,
        [("kube-controller-manager-restart", 1)],
    ),
    case(
        "controller-manager-restart-options",
        READY.with_options(kube_controller_manager=ServiceParams(extra_args=("--v=2",))),
        Phase.K8S_START,
        [("kube-controller-manager-restart", 3)],
    ),
    case(
        "controller-manager-restart-cluster-name",
        READY.with_cluster(name="other"),
        Phase.K8S_START,
        [("kube-controller-manager-restart", 3)],
    ),
    case(
        "controller-manager-boot-and-restart",
        stopped(READY, "controller_manager", CP1).with_component(
            CP2, "controller_manager", image="old"
        ),
        Phase.K8S_START,
        [("kube-controller-manager-bootstrap", 1), ("kube-controller-manager-restart", 1)],
    ),
    case(
        "scheduler-boot-one",
        stopped(READY, "scheduler", CP1),
        Phase.K8S_START,
        [("kube-scheduler-bootstrap", 1)],
    ),
    case(
        "scheduler-restart-image",
        READY.with_component(CP3, "scheduler", image="old"),
        Phase.K8S_START,
        [("kube-scheduler-restart", 1)],
    ),
    case(
        "scheduler-restart-config-changed",
        READY.with_options(kube_scheduler=SchedulerParams(config=FrozenDict({"parallelism": 1}))),
        Phase.K8S_START,
        [("kube-scheduler-restart", 3)],
    ),
    case(
        "scheduler-restart-node-config-differs",
        READY.with_component(CP3, "scheduler", config=None),
        Phase.K8S_START,
        [("kube-scheduler-restart", 1)],
    ),
    case(
        "scheduler-boot-and-restart",
        stopped(READY, "scheduler", CP1).with_component(CP2, "scheduler", image="old"),
        Phase.K8S_START,
        [("kube-scheduler-bootstrap", 1), ("kube-scheduler-restart", 1)],
    ),
    case(
        "kubelet-unrecognized-restart",
        READY.without_nodes(W2),
        Phase.K8S_START,
        [("kubelet-restart", 1)],
    ),
    case(
        "kubelet-boot-one",
        stopped(READY, "kubelet", W1),
        Phase.K8S_START,
        [("kubelet-bootstrap", 1)],
    ),
    case(
        "kubelet-outdated-not-in-place",
        READY.with_component(W1, "kubelet", image="old"),
        Phase.COMPLETED,
        [],
    ),
    case(
        "kubelet-config-changed-not-in-place",
        READY.with_options(kubelet=KubeletParams(config=FrozenDict({"containerLogMaxSize": "1"}))),
        Phase.COMPLETED,
        [],
    ),
    case(
        "kubelet-outdated-in-place",
        IN_PLACE.with_component(W1, "kubelet", image="old").with_component(
            W2, "kubelet", image="old"
        ),
        Phase.K8S_START,
        [("kubelet-restart", 2)],
    ),
    case(
        "kubelet-config-changed-in-place",
        READY.with_options(
            kubelet=KubeletParams(
                in_place_update=True, config=FrozenDict({"containerLogMaxSize": "1"})
            )
        ),
        Phase.K8S_START,
        [("kubelet-restart", 6)],
    ),
    case(
        "kubelet-in-place-capped",
        READY.with_options(
            kubelet=KubeletParams(
                in_place_update=True, config=FrozenDict({"containerLogMaxSize": "1"})
            )
        ).with_settings(max_concurrent_updates=4),
        Phase.K8S_START,
        [("kubelet-restart", 4)],
    ),
    case(
        "kubelet-cri-change-not-restarted",
        READY.with_options(
            kubelet=KubeletParams(in_place_update=True, cri_endpoint="/run/other.sock")
        ),
        Phase.COMPLETED,
        [],
    ),
    case(
        "kubelet-unrecognized-boot-outdated-in-order",
        stopped(IN_PLACE.without_nodes(W1), "kubelet", W2).with_component(
            W3, "kubelet", image="old"
        ),
        Phase.K8S_START,
        [("kubelet-restart", 1), ("kubelet-bootstrap", 1), ("kubelet-restart", 1)],
    ),
    case(
        "kubelet-unrecognized-and-outdated-restarted-once",
        IN_PLACE.without_nodes(W1).with_component(W1, "kubelet", image="old"),
        Phase.K8S_START,
        [("kubelet-restart", 1)],
    ),
    case(
        "proxy-boot-one",
        stopped(READY, "proxy", W1),
        Phase.K8S_START,
        [("kube-proxy-bootstrap", 1)],
    ),
    case(
        "proxy-boot-capped",
        stopped(READY, "proxy", *CONTROL_PLANE_ADDRESSES, *WORKER_ADDRESSES).with_settings(
            max_concurrent_updates=2
        ),
        Phase.K8S_START,
        [("kube-proxy-bootstrap", 2)],
    ),
    case(
        "proxy-restart-image",
        READY.with_component(W1, "proxy", image="old"),
        Phase.K8S_START,
        [("kube-proxy-restart", 1)],
    ),
    case(
        "proxy-restart-config",
        READY.with_options(kube_proxy=ProxyParams(config=FrozenDict({"mode": "ipvs"}))),
        Phase.K8S_START,
        [("kube-proxy-restart", 6)],
    ),
    case(
        "proxy-disabled-stop",
        READY.with_options(kube_proxy=ProxyParams(disable=True)),
        Phase.K8S_START,
        [("stop-kube-proxy", 6)],
    ),
    case(
        "proxy-disabled-stop-reachable-only",
        READY.with_options(kube_proxy=ProxyParams(disable=True)).with_ssh_not_connected(W1),
        Phase.K8S_START,
        [("stop-kube-proxy", 5)],
    ),
    case(
        "proxy-disabled-not-running",
        stopped(
            READY.with_options(kube_proxy=ProxyParams(disable=True)),
            "proxy",
            *CONTROL_PLANE_ADDRESSES,
            *WORKER_ADDRESSES,
        ),
        Phase.COMPLETED,
        [],
    ),
    case(
        "every-component-at-once",
        stopped(READY, "controller_manager", CP1)
        .with_component(CP2, "scheduler", image="old")
        .with_component(W1, "kubelet", running=False)
        .with_component(W2, "proxy", image="old"),
        Phase.K8S_START,
        [
            ("kube-controller-manager-bootstrap", 1),
            ("kube-scheduler-restart", 1),
            ("kubelet-bootstrap", 1),
            ("kube-proxy-restart", 1),
        ],
    ),
    case(
        "reboot-cp-candidate-marked-not-ready",
        REBOOT.with_reboot_entries(CP1),
        Phase.K8S_START,
        EP,
    ),
    case(
        "reboot-cp-processing-marked-not-ready",
        REBOOT.with_reboot_entries(draining(CP2)),
        Phase.K8S_START,
        EP,
    ),
    case(
        "reboot-worker-candidate-endpoints-unchanged",
        REBOOT.with_reboot_entries(W1),
        Phase.REBOOT_NODES,
        [("reboot-drain-start", 1)],
    ),
    case(
        "reboot-disabled-cp-not-marked",
        REBOOT.with_reboot_entries(CP1, enabled=False),
        Phase.COMPLETED,
        [],
    ),
    case(
        "reboot-cp-candidate-marked-even-if-drain-blocked",
        REBOOT.with_ssh_not_connected(W3).with_reboot_entries(CP1),
        Phase.K8S_START,
        EP,
    ),
    case(
        "reboot-disabled-endpoints-restored",
        REBOOT.with_reboot_entries(draining(CP2), enabled=False).with_master_endpoints(CP2),
        Phase.K8S_START,
        EP,
    ),
]

# ---------------------------------------------------------------------------
# step 6: etcd-maintain (§B.2.3)
# ---------------------------------------------------------------------------

NEW_CP = (
    B.with_cluster(nodes=promoted(W1))
    .with_k8s_resource_ready()
    .without_etcd_members(W1)
    .with_component(W1, "etcd", running=False, image="", has_data=False, is_added_member=False)
)

ETCD_MAINT_CASES = [
    case(
        "etcd-remove-out-of-sync-non-cluster-member",
        READY.with_etcd_members(OUTSIDER, in_sync=False),
        Phase.ETCD_MAINTAIN,
        [("etcd-remove-member", 1)],
    ),
    case(
        "etcd-destroy-out-of-sync-non-cp-member",
        READY.with_etcd_members(W1, in_sync=False),
        Phase.ETCD_MAINTAIN,
        [("etcd-destroy-member", 1)],
    ),
    case(
        "etcd-no-destroy-on-unreachable-non-cp-member",
        READY.with_etcd_members(W1, in_sync=False).with_ssh_not_connected(W1),
        Phase.COMPLETED,
        [],
    ),
    case(
        "etcd-add-unstarted-member",
        READY.with_etcd_members(CP3, started=False),
        Phase.ETCD_MAINTAIN,
        [("etcd-add-member", 1)],
    ),
    case(
        "etcd-mark-member",
        READY.with_component(CP3, "etcd", is_added_member=False),
        Phase.ETCD_MAINTAIN,
        [("etcd-mark-member", 1)],
    ),
    case(
        "etcd-mark-members-in-one-op",
        READY.with_component(CP2, "etcd", is_added_member=False).with_component(
            CP3, "etcd", is_added_member=False
        ),
        Phase.ETCD_MAINTAIN,
        [("etcd-mark-member", 2)],
    ),
    case(
        "etcd-mark-member-only-in-sync",
        READY.with_component(CP3, "etcd", is_added_member=False).with_out_of_sync(CP3),
        Phase.COMPLETED,
        [],
    ),
    case(
        "etcd-not-good-nothing",
        READY.with_out_of_sync(CP2),
        Phase.COMPLETED,
        [],
    ),
    case("etcd-add-new-cp", NEW_CP, Phase.ETCD_MAINTAIN, [("etcd-add-member", 1)]),
    case(
        "etcd-add-new-cp-waits-until-good",
        NEW_CP.with_out_of_sync(CP2),
        Phase.COMPLETED,
        [],
    ),
    case(
        "etcd-remove-in-sync-non-cluster-member",
        READY.with_etcd_members(OUTSIDER),
        Phase.ETCD_MAINTAIN,
        [("etcd-remove-member", 1)],
    ),
    case(
        "etcd-destroy-in-sync-non-cp-member",
        READY.with_etcd_members(W1),
        Phase.ETCD_MAINTAIN,
        [("etcd-destroy-member", 1)],
    ),
    case(
        "etcd-restart-outdated-image",
        READY.with_component(CP2, "etcd", image="old"),
        Phase.ETCD_MAINTAIN,
        [("etcd-restart", 1)],
    ),
    case(
        "etcd-restart-first-outdated-only",
        READY.with_options(etcd=EtcdParams(extra_args=("--quota-backend-bytes=1",))),
        Phase.ETCD_MAINTAIN,
        [("etcd-restart", 1)],
    ),
    case(
        "etcd-initial-args-not-outdated",
        READY.with_component(
            CP1,
            "etcd",
            builtin_params=rc.etcd_params(
                fixture_cluster(), fixture_cluster().nodes[0], initial_cluster=[CP1, CP2, CP3]
            ),
        ),
        Phase.COMPLETED,
        [],
    ),
    case(
        "etcd-maintain-skipped-cp-unreachable",
        READY.with_etcd_members(OUTSIDER, in_sync=False)
        .with_ssh_not_connected(CP3)
        .with_master_endpoints(CP3),
        Phase.COMPLETED,
        [],
    ),
    case(
        "etcd-maintain-skipped-cp-unreachable-add",
        NEW_CP.with_ssh_not_connected(CP3).with_master_endpoints(CP3),
        Phase.COMPLETED,
        [],
    ),
    case(
        "etcd-remove-before-restart",
        READY.with_etcd_members(OUTSIDER, in_sync=False).with_component(CP1, "etcd", image="old"),
        Phase.ETCD_MAINTAIN,
        [("etcd-remove-member", 1)],
    ),
    case(
        "etcd-destroy-before-add-unstarted",
        READY.with_etcd_members(W2, in_sync=False).with_etcd_members(CP3, started=False),
        Phase.ETCD_MAINTAIN,
        [("etcd-destroy-member", 1)],
    ),
    case(
        "etcd-add-unstarted-even-if-not-good",
        READY.with_out_of_sync(CP2).with_etcd_members(CP3, started=False),
        Phase.ETCD_MAINTAIN,
        [("etcd-add-member", 1)],
    ),
    case(
        "etcd-mark-even-if-not-good",
        READY.with_out_of_sync(CP2).with_component(CP3, "etcd", is_added_member=False),
        Phase.ETCD_MAINTAIN,
        [("etcd-mark-member", 1)],
    ),
    case(
        "etcd-restart-waits-until-good",
        READY.with_component(CP2, "etcd", image="old").with_out_of_sync(CP3),
        Phase.COMPLETED,
        [],
    ),
]

# ---------------------------------------------------------------------------
# step 7: k8s-maintain (§B.2.4)
# ---------------------------------------------------------------------------

K8S_MAINT_CASES = [
    case("wait-kubernetes", SERVICES, Phase.K8S_MAINTAIN, [("wait-kubernetes", 1)]),
    case(
        "k8s-maintain-everything-missing",
        K8S,
        Phase.K8S_MAINTAIN,
        [*STATIC_APPLY, *K8S_CREATES],
    ),
    case(
        "k8s-maintain-deployment-waits-for-ready-nodes",
        K8S.with_node(W1, ready=False).with_node(W2, ready=False).with_node(W3, ready=False),
        Phase.K8S_MAINTAIN,
        [*STATIC_APPLY[:8], *K8S_CREATES],
    ),
    case(
        "k8s-maintain-with-user-resources",
        K8S.with_resources(*USER_RESOURCES),
        Phase.K8S_MAINTAIN,
        [*STATIC_APPLY, *[("resource-apply", 1)] * 4, *K8S_CREATES],
    ),
    case(
        "resource-apply-user",
        READY.with_resources(*USER_RESOURCES),
        Phase.K8S_MAINTAIN,
        [("resource-apply", 1)] * 4,
    ),
    case(
        "resource-apply-user-new-revision",
        READY.with_resources(*USER_RESOURCES)
        .with_resources_applied()
        .with_(
            lambda b: attrs.evolve(
                b, resources=(*USER_RESOURCES[:3], attrs.evolve(USER_RESOURCES[3], revision=2))
            )
        ),
        Phase.K8S_MAINTAIN,
        [("resource-apply", 1)],
    ),
    case(
        "resource-apply-user-up-to-date",
        READY.with_resources(*USER_RESOURCES).with_resources_applied(),
        Phase.COMPLETED,
        [],
    ),
    case(
        "resource-apply-user-deployment-waits",
        READY.with_resources(user_resource("Deployment", "app", "foo"))
        .with_node(W1, ready=False)
        .with_node(W2, ready=False)
        .with_node(W3, ready=False),
        Phase.COMPLETED,
        [],
    ),
    case(
        "resource-apply-user-deployment",
        READY.with_resources(user_resource("Deployment", "app", "foo")),
        Phase.K8S_MAINTAIN,
        [("resource-apply", 1)],
    ),
    case(
        "resource-apply-static-image-changed",
        READY.with_settings(images=Images(coredns="coredns:new")),
        Phase.K8S_MAINTAIN,
        [("resource-apply", 1)],
    ),
    case(
        "resource-apply-static-missing",
        READY.with_kubernetes(
            resource_statuses=FrozenDict(
                {
                    k: v
                    for k, v in READY.status.kubernetes.resource_statuses.items()
                    if k != "ServiceAccount/kube-system/cke-cluster-dns"
                }
            )
        ),
        Phase.K8S_MAINTAIN,
        [("resource-apply", 1)],
    ),
    case(
        "dns-configmaps-update",
        READY.with_cluster(dns_servers=("1.1.1.1",)),
        Phase.K8S_MAINTAIN,
        [("update-cluster-dns-configmap", 1), ("update-node-dns-configmap", 1)],
    ),
    case(
        "dns-service-overrides-dns-servers",
        READY.with_cluster(dns_service="kube-system/dns").with_kubernetes(
            dns_service=Service(name="dns", namespace="kube-system", cluster_ip="10.0.0.50")
        ),
        Phase.K8S_MAINTAIN,
        [("update-cluster-dns-configmap", 1), ("update-node-dns-configmap", 1)],
    ),
    case(
        "dns-service-headless-ignored",
        READY.with_cluster(dns_service="kube-system/dns").with_kubernetes(
            dns_service=Service(name="dns", namespace="kube-system", cluster_ip="None")
        ),
        Phase.COMPLETED,
        [],
    ),
    case(
        "node-dns-create-after-cluster-ip",
        READY.with_kubernetes(node_dns=NodeDNSStatus()),
        Phase.K8S_MAINTAIN,
        [("create-node-dns-configmap", 1)],
    ),
    case(
        "node-dns-waits-for-cluster-ip",
        READY.with_kubernetes(cluster_dns=ClusterDNSStatus(), node_dns=NodeDNSStatus()),
        Phase.K8S_MAINTAIN,
        [("create-cluster-dns-configmap", 1)],
    ),
    case(
        "etcd-service-create",
        READY.with_kubernetes(etcd_service=None),
        Phase.K8S_MAINTAIN,
        [("create-etcd-service", 1)],
    ),
    case(
        "etcd-service-update",
        READY.with_kubernetes(
            etcd_service=Service(
                name="cke-etcd",
                namespace="kube-system",
                type="ClusterIP",
                cluster_ip="12.34.56.7",
                ports=(ServicePort(port=2379),),
            )
        ),
        Phase.K8S_MAINTAIN,
        [("update-etcd-service", 1)],
    ),
    case(
        "etcd-endpoints-create",
        READY.with_kubernetes(etcd_endpoints=None, etcd_endpoint_slice=None),
        Phase.K8S_MAINTAIN,
        [("create-cke-etcd-endpoints", 1), ("create-cke-etcd-endpointslice", 1)],
    ),
    case(
        "etcd-endpoints-reboot-candidate-not-ready",
        REBOOT.with_reboot_entries(CP1).with_master_endpoints(CP1),
        Phase.K8S_MAINTAIN,
        ETCD_EP,
    ),
    case(
        "etcd-endpoints-reboot-processing-not-ready",
        REBOOT.with_reboot_entries(draining(CP2)).with_master_endpoints(CP2),
        Phase.K8S_MAINTAIN,
        ETCD_EP,
    ),
    case(
        "etcd-endpoints-update",
        READY.with_etcd_endpoints(CP1),
        Phase.K8S_MAINTAIN,
        ETCD_EP,
    ),
    case(
        "update-node-worker-labels",
        READY.with_node(W1, labels=FrozenDict()),
        Phase.K8S_MAINTAIN,
        [("update-node", 1)],
    ),
    case(
        "update-node-master-label",
        READY.with_node(CP2, labels=FrozenDict()),
        Phase.K8S_MAINTAIN,
        [("update-node", 1)],
    ),
    case(
        "update-node-taint-control-plane",
        READY.with_cluster(taint_control_plane=True),
        Phase.K8S_MAINTAIN,
        [("update-node", 3)],
    ),
    case(
        "update-node-internal-label-removed",
        READY.with_node(W2, labels=FrozenDict({"cke.cybozu.com/role": "x"})),
        Phase.K8S_MAINTAIN,
        [("update-node", 1)],
    ),
    case(
        "update-node-foreign-label-kept",
        READY.with_node(W2, labels=FrozenDict({"example.com/role": "x"})),
        Phase.COMPLETED,
        [],
    ),
    case(
        "remove-node",
        READY.with_node(OUTSIDER),
        Phase.K8S_MAINTAIN,
        [("remove-node", 1)],
    ),
    case(
        "node-named-by-hostname-kept",
        B.with_cluster(
            nodes=tuple(
                attrs.evolve(n, hostname="node16") if n.address == W3 else n
                for n in fixture_cluster().nodes
            )
        )
        .with_k8s_resource_ready()
        .with_node(W3),
        Phase.COMPLETED,
        [],
    ),
    case(
        "k8s-maintain-all-in-order",
        K8S.with_node(W1, labels=FrozenDict()).with_node(OUTSIDER),
        Phase.K8S_MAINTAIN,
        [*STATIC_APPLY, *K8S_CREATES, ("update-node", 1), ("remove-node", 1)],
    ),
]

# ---------------------------------------------------------------------------
# steps 8 and 9: stop-control-plane, uncordon-nodes
# ---------------------------------------------------------------------------


def running(builder: StatusBuilder, address: str, *components: str) -> StatusBuilder:
    for component in components:
        builder = builder.with_component(address, component, running=True)
    return builder


CLEAN_CASES = [
    case(
        "stop-control-plane",
        running(READY, W1, "api_server", "controller_manager", "scheduler", "etcd_rivers"),
        Phase.STOP_CP,
        [
            ("stop-kube-apiserver", 1),
            ("stop-kube-controller-manager", 1),
            ("stop-kube-scheduler", 1),
            ("stop-etcd-rivers", 1),
        ],
    ),
    case(
        "stop-control-plane-two-nodes",
        running(running(READY, W1, "api_server"), W2, "api_server"),
        Phase.STOP_CP,
        [("stop-kube-apiserver", 2)],
    ),
    case("stop-etcd", running(READY, W1, "etcd"), Phase.STOP_CP, [("stop-etcd", 1)]),
    case(
        "stop-etcd-order",
        running(READY, W1, "etcd", "etcd_rivers", "api_server"),
        Phase.STOP_CP,
        [("stop-kube-apiserver", 1), ("stop-etcd", 1), ("stop-etcd-rivers", 1)],
    ),
    case(
        "stop-etcd-only-when-etcd-good",
        running(READY, W1, "etcd").with_out_of_sync(CP2),
        Phase.COMPLETED,
        [],
    ),
    case(
        "stop-etcd-not-good-others-stopped",
        running(READY, W1, "etcd", "scheduler").with_out_of_sync(CP2),
        Phase.STOP_CP,
        [("stop-kube-scheduler", 1)],
    ),
]

UNCORDON_CASES = [
    case("uncordon", cordoned(READY, W1), Phase.UNCORDON_NODES, [("reboot-uncordon", 1)]),
    case(
        "uncordon-two",
        cordoned(READY, W1, CP2),
        Phase.UNCORDON_NODES,
        [("reboot-uncordon", 2)],
    ),
    case(
        "uncordon-not-without-annotation",
        READY.with_node(W1, unschedulable=True),
        Phase.COMPLETED,
        [],
    ),
    case(
        "uncordon-not-while-reboot-processing",
        cordoned(REBOOT.with_reboot_entries(draining(W1)), W1),
        Phase.COMPLETED,
        [],
    ),
    case(
        "uncordon-reboot-queue-disabled",
        cordoned(REBOOT.with_reboot_entries(draining(W1), enabled=False), W1),
        Phase.UNCORDON_NODES,
        [("reboot-uncordon", 1)],
    ),
    case(
        "uncordon-not-while-repair-processing",
        cordoned(REPAIR.with_repair_entries(repair(W1, step_status=RepairStepStatus.DRAINING)), W1),
        Phase.REPAIR_MACHINES,
        [],
    ),
    case(
        "uncordon-repair-waiting-not-processing",
        cordoned(REPAIR.with_repair_entries(repair(W1, drain_backoff_expire=later(60))), W1),
        Phase.UNCORDON_NODES,
        [("reboot-uncordon", 1)],
    ),
    case(
        "uncordon-before-repair",
        cordoned(REPAIR.with_repair_entries(W2), W1),
        Phase.UNCORDON_NODES,
        [("reboot-uncordon", 1)],
    ),
]

# ---------------------------------------------------------------------------
# step 10: repair-machines (§B.2.6, §F.2)
# ---------------------------------------------------------------------------

DRAINING = RepairStepStatus.DRAINING
WATCHING = RepairStepStatus.WATCHING
REPAIR_CP_REBOOTING = (
    REPAIR.with_reboot_config()
    .with_master_endpoints(CP2)
    .with_etcd_endpoints(CP2)
    .with_reboot_entries(draining(CP2))
)

REPAIR_CASES = [
    case(
        "repair-drain-start",
        REPAIR.with_repair_entries(W1),
        Phase.REPAIR_MACHINES,
        [("repair-drain-start", 1)],
    ),
    case(
        "repair-execute-without-drain",
        REPAIR.with_repair_entries(repair(W1, RepairStatus.QUEUED, operation="op2")),
        Phase.REPAIR_MACHINES,
        [("repair-execute", 1)],
    ),
    case(
        "repair-execute-outside-cluster-no-drain",
        REPAIR.with_repair_entries(OUTSIDER),
        Phase.REPAIR_MACHINES,
        [("repair-execute", 1)],
    ),
    case(
        "repair-dequeue",
        REPAIR.with_repair_entries(repair(W1, deleted=True)),
        Phase.REPAIR_MACHINES,
        [("repair-dequeue", 1)],
    ),
    case(
        "repair-dequeue-disabled",
        REPAIR.with_repair_entries(repair(W1, RepairStatus.FAILED, deleted=True), enabled=False),
        Phase.REPAIR_MACHINES,
        [("repair-dequeue", 1)],
    ),
    case(
        "repair-finished-skipped",
        REPAIR.with_repair_entries(
            repair(W1, RepairStatus.SUCCEEDED), repair(W2, RepairStatus.FAILED)
        ),
        Phase.COMPLETED,
        [],
    ),
    case(
        "repair-finish-health-check-passed",
        REPAIR.with_repair_entries(W1).with_repair_completed(W1),
        Phase.REPAIR_MACHINES,
        [("repair-finish", 1)],
    ),
    case(
        "repair-finish-health-check-passed-disabled",
        REPAIR.with_repair_entries(
            repair(W1, step_status=WATCHING), enabled=False
        ).with_repair_completed(W1),
        Phase.REPAIR_MACHINES,
        [("repair-finish", 1)],
    ),
    case(
        "repair-draining-completed-execute",
        REPAIR.with_repair_entries(repair(W1, step_status=DRAINING)).with_drain_completed(W1),
        Phase.REPAIR_MACHINES,
        [("repair-execute", 1)],
    ),
    case(
        "repair-draining-in-progress",
        REPAIR.with_repair_entries(repair(W1, step_status=DRAINING, since=600)),
        Phase.REPAIR_MACHINES,
        [],
    ),
    case(
        "repair-drain-timeout",
        REPAIR.with_repair_entries(repair(W1, step_status=DRAINING, since=601)),
        Phase.REPAIR_MACHINES,
        [("repair-drain-timeout", 1)],
    ),
    case(
        "repair-drain-timeout-configured",
        REPAIR.with_repair_config(eviction_timeout_seconds=60).with_repair_entries(
            repair(W1, step_status=DRAINING, since=61)
        ),
        Phase.REPAIR_MACHINES,
        [("repair-drain-timeout", 1)],
    ),
    case(
        "repair-disabled-draining-timeout",
        REPAIR.with_repair_entries(repair(W1, step_status=DRAINING), enabled=False),
        Phase.REPAIR_MACHINES,
        [("repair-drain-timeout", 1)],
    ),
    case(
        "repair-disabled-waiting-nothing",
        REPAIR.with_repair_entries(W1, enabled=False),
        Phase.REPAIR_MACHINES,
        [],
    ),
    case(
        "repair-watching",
        REPAIR.with_repair_entries(repair(W1, step_status=WATCHING, since=30)),
        Phase.REPAIR_MACHINES,
        [],
    ),
    case(
        "repair-watching-elapsed-next-step",
        REPAIR.with_repair_entries(repair(W1, step_status=WATCHING, since=31)),
        Phase.REPAIR_MACHINES,
        [("repair-execute", 1)],
    ),
    case(
        "repair-watching-elapsed-disabled",
        REPAIR.with_repair_entries(repair(W1, step_status=WATCHING, since=31), enabled=False),
        Phase.REPAIR_MACHINES,
        [],
    ),
    case(
        "repair-last-step-finish-failed",
        REPAIR.with_repair_entries(repair(W1, step_status=WATCHING, step=1)),
        Phase.REPAIR_MACHINES,
        [("repair-finish", 1)],
    ),
    case(
        "repair-step-out-of-range-finish-failed",
        REPAIR.with_repair_entries(repair(W1, step=5)),
        Phase.REPAIR_MACHINES,
        [("repair-finish", 1)],
    ),
    case(
        "repair-unknown-operation-skipped",
        REPAIR.with_repair_entries(repair(W1, RepairStatus.QUEUED, operation="nope")),
        Phase.COMPLETED,
        [],
    ),
    case(
        "repair-max-concurrent-1",
        REPAIR.with_repair_entries(W1, W2),
        Phase.REPAIR_MACHINES,
        [("repair-drain-start", 1)],
    ),
    case(
        "repair-max-concurrent-2",
        REPAIR.with_repair_config(max_concurrent_repairs=2).with_repair_entries(W1, W2, W3),
        Phase.REPAIR_MACHINES,
        [("repair-drain-start", 1), ("repair-drain-start", 1)],
    ),
    case(
        "repair-processing-before-queued",
        REPAIR.with_repair_entries(W1, repair(W2, step_status=WATCHING)),
        Phase.REPAIR_MACHINES,
        [],
    ),
    case(
        "repair-one-cp-at-a-time",
        REPAIR.with_repair_config(max_concurrent_repairs=3).with_repair_entries(CP1, CP2, W1),
        Phase.REPAIR_MACHINES,
        [("repair-drain-start", 1), ("repair-drain-start", 1)],
    ),
    case(
        "repair-cp-not-while-other-cp-reboots",
        REPAIR_CP_REBOOTING.with_repair_entries(CP1),
        Phase.COMPLETED,
        [],
    ),
    case(
        "repair-cp-that-is-rebooting",
        REPAIR_CP_REBOOTING.with_repair_entries(CP2),
        Phase.REPAIR_MACHINES,
        [("repair-drain-start", 1)],
    ),
    case(
        "repair-worker-while-cp-reboots",
        REPAIR_CP_REBOOTING.with_repair_entries(CP1, W1),
        Phase.REPAIR_MACHINES,
        [("repair-drain-start", 1)],
    ),
    case(
        "repair-no-cp-while-two-cps-reboot",
        REPAIR_CP_REBOOTING.with_reboot_entries(draining(CP3))
        .with_master_endpoints(CP2, CP3)
        .with_etcd_endpoints(CP2, CP3)
        .with_repair_entries(CP3, W1),
        Phase.REPAIR_MACHINES,
        [("repair-drain-start", 1)],
    ),
    case(
        "repair-backoff-skipped",
        REPAIR.with_repair_entries(repair(W1, drain_backoff_expire=later(1))),
        Phase.COMPLETED,
        [],
    ),
    case(
        "repair-backoff-expired",
        REPAIR.with_repair_entries(repair(W1, drain_backoff_expire=NOW)),
        Phase.REPAIR_MACHINES,
        [("repair-drain-start", 1)],
    ),
    case(
        "repair-backoff-only-gates-waiting",
        REPAIR.with_repair_entries(
            repair(W1, step_status=WATCHING, since=31, drain_backoff_expire=later(60))
        ),
        Phase.REPAIR_MACHINES,
        [("repair-execute", 1)],
    ),
    case(
        "repair-backoff-does-not-count",
        REPAIR.with_repair_entries(repair(W1, drain_backoff_expire=later(60)), W2),
        Phase.REPAIR_MACHINES,
        [("repair-drain-start", 1)],
    ),
    case(
        "repair-etcd-not-good-for-repair",
        REPAIR.with_out_of_sync(CP2).with_repair_entries(W1),
        Phase.REPAIR_MACHINES,
        [],
    ),
    case(
        "repair-etcd-not-good-dequeue-blocked-too",
        REPAIR.with_out_of_sync(CP2).with_repair_entries(repair(W1, deleted=True)),
        Phase.REPAIR_MACHINES,
        [],
    ),
    case(
        "repair-unreachable-out-of-sync-cp",
        REPAIR.with_ssh_not_connected(CP3)
        .with_out_of_sync(CP3)
        .with_master_endpoints(CP3)
        .with_repair_entries(CP3),
        Phase.REPAIR_MACHINES,
        [("repair-drain-start", 1)],
    ),
    case(
        "repair-two-cps-out-of-sync-refused",
        REPAIR.with_ssh_not_connected(CP2, CP3)
        .with_out_of_sync(CP2, CP3)
        .with_master_endpoints(CP2, CP3)
        .with_repair_entries(CP3),
        Phase.REPAIR_MACHINES,
        [],
    ),
    case(
        "repair-blocks-reboots",
        REPAIR.with_reboot_config()
        .with_repair_entries(repair(W1, step_status=DRAINING))
        .with_reboot_entries(W2),
        Phase.REPAIR_MACHINES,
        [],
    ),
    case(
        "repair-finished-lets-reboots-run",
        REPAIR.with_reboot_config()
        .with_repair_entries(repair(W1, RepairStatus.SUCCEEDED))
        .with_reboot_entries(W2),
        Phase.REBOOT_NODES,
        [("reboot-drain-start", 1)],
    ),
    case(
        "repair-several-actions",
        REPAIR.with_repair_entries(repair(W1, deleted=True), W2, W3).with_repair_completed(W2),
        Phase.REPAIR_MACHINES,
        [("repair-dequeue", 1), ("repair-finish", 1), ("repair-drain-start", 1)],
    ),
]

# ---------------------------------------------------------------------------
# step 11: reboot-nodes (§B.2.7, §F.1)
# ---------------------------------------------------------------------------

REBOOT_CP1 = REBOOT.with_master_endpoints(CP1).with_etcd_endpoints(CP1)

REBOOT_CASES = [
    case(
        "reboot-cancel",
        REBOOT.with_reboot_entries(reboot(W1, RebootStatus.CANCELLED)),
        Phase.REBOOT_NODES,
        [("reboot-cancel", 1)],
    ),
    case(
        "reboot-cancel-disabled",
        REBOOT.with_reboot_entries(reboot(W1, RebootStatus.CANCELLED), enabled=False),
        Phase.REBOOT_NODES,
        [("reboot-cancel", 1)],
    ),
    case(
        "reboot-cancel-without-commands",
        READY.with_reboot_entries(reboot(W1, RebootStatus.CANCELLED)),
        Phase.REBOOT_NODES,
        [("reboot-cancel", 1)],
    ),
    case(
        "reboot-dequeue-booted",
        REBOOT.with_reboot_entries(reboot(W1, RebootStatus.REBOOTING)).with_reboot_dequeued(W1),
        Phase.REBOOT_NODES,
        [("reboot-dequeue", 1)],
    ),
    case(
        "reboot-dequeue-non-member",
        REBOOT.with_reboot_entries(OUTSIDER),
        Phase.REBOOT_NODES,
        [("reboot-dequeue", 1)],
    ),
    case(
        "reboot-cancel-and-dequeue-only",
        REBOOT.with_reboot_entries(
            reboot(W1, RebootStatus.CANCELLED), OUTSIDER, draining(W2), W3
        ).with_drain_completed(W2),
        Phase.REBOOT_NODES,
        [("reboot-cancel", 1), ("reboot-dequeue", 1)],
    ),
    case(
        "reboot-drain-start",
        REBOOT.with_reboot_entries(W1),
        Phase.REBOOT_NODES,
        [("reboot-drain-start", 1)],
    ),
    case(
        "reboot-drain-start-one-per-round",
        REBOOT.with_reboot_config(max_concurrent_reboots=3).with_reboot_entries(W1, W2, W3),
        Phase.REBOOT_NODES,
        [("reboot-drain-start", 1)],
    ),
    case(
        "reboot-workers-before-cps",
        REBOOT.with_reboot_entries(CP1, W1),
        Phase.REBOOT_NODES,
        [("reboot-drain-start", 1)],
    ),
    case(
        "reboot-max-concurrent-reached",
        REBOOT.with_reboot_entries(draining(W1), W2),
        Phase.COMPLETED,
        [],
    ),
    case(
        "reboot-max-concurrent-2",
        REBOOT.with_reboot_config(max_concurrent_reboots=2).with_reboot_entries(draining(W1), W2),
        Phase.REBOOT_NODES,
        [("reboot-drain-start", 1)],
    ),
    case(
        "reboot-cp-when-no-worker",
        REBOOT_CP1.with_reboot_entries(CP1),
        Phase.REBOOT_NODES,
        [("reboot-drain-start", 1)],
    ),
    case(
        "reboot-cps-one-at-a-time",
        REBOOT_CP1.with_reboot_entries(draining(CP1), CP2),
        Phase.COMPLETED,
        [],
    ),
    case(
        "reboot-no-worker-while-cp-reboots",
        REBOOT_CP1.with_reboot_entries(reboot(CP1, RebootStatus.REBOOTING), W1),
        Phase.COMPLETED,
        [],
    ),
    case(
        "reboot-unreachable-gate",
        REBOOT.with_ssh_not_connected(W3).with_reboot_entries(W1),
        Phase.REBOOT_NODES,
        [],
    ),
    case(
        "reboot-unreachable-gate-cp-candidate-marked",
        REBOOT_CP1.with_ssh_not_connected(W3).with_reboot_entries(CP1),
        Phase.REBOOT_NODES,
        [],
    ),
    case(
        "reboot-unreachable-within-constraint",
        REBOOT.with_ssh_not_connected(W3)
        .with_constraints(maximum_unreachable_nodes_for_reboot=1)
        .with_reboot_entries(W1),
        Phase.REBOOT_NODES,
        [("reboot-drain-start", 1)],
    ),
    case(
        "reboot-unreachable-rebooting-node-not-counted",
        REBOOT.with_reboot_config(max_concurrent_reboots=2)
        .with_ssh_not_connected(W3)
        .with_reboot_entries(reboot(W3, RebootStatus.REBOOTING), W1),
        Phase.REBOOT_NODES,
        [("reboot-drain-start", 1)],
    ),
    case(
        "reboot-unreachable-gate-keeps-other-work",
        REBOOT.with_reboot_config(max_concurrent_reboots=2)
        .with_ssh_not_connected(W3)
        .with_reboot_entries(draining(W2), W1)
        .with_drain_completed(W2),
        Phase.REBOOT_NODES,
        [("reboot-delete-daemonset-pod", 1), ("reboot-reboot", 1)],
    ),
    case(
        "reboot-drain-completed",
        REBOOT.with_reboot_entries(draining(W1)).with_drain_completed(W1),
        Phase.REBOOT_NODES,
        [("reboot-delete-daemonset-pod", 1), ("reboot-reboot", 1)],
    ),
    case(
        "reboot-drain-completed-only-draining",
        REBOOT.with_reboot_entries(W1).with_drain_completed(W1),
        Phase.REBOOT_NODES,
        [("reboot-drain-start", 1)],
    ),
    case(
        "reboot-drain-timeout",
        REBOOT.with_reboot_entries(draining(W1, since=601)),
        Phase.REBOOT_NODES,
        [("reboot-drain-timeout", 1)],
    ),
    case(
        "reboot-drain-not-yet-timed-out",
        REBOOT.with_reboot_entries(draining(W1, since=600)),
        Phase.COMPLETED,
        [],
    ),
    case(
        "reboot-drain-timeout-configured",
        REBOOT.with_reboot_config(eviction_timeout_seconds=10).with_reboot_entries(
            draining(W1, since=11)
        ),
        Phase.REBOOT_NODES,
        [("reboot-drain-timeout", 1)],
    ),
    case(
        "reboot-everything-at-once",
        REBOOT.with_reboot_config(max_concurrent_reboots=3)
        .with_reboot_entries(draining(W1), draining(W2, since=601), W3)
        .with_drain_completed(W1),
        Phase.REBOOT_NODES,
        [
            ("reboot-delete-daemonset-pod", 1),
            ("reboot-reboot", 1),
            ("reboot-drain-start", 1),
            ("reboot-drain-timeout", 1),
        ],
    ),
    case(
        "reboot-disabled",
        REBOOT.with_reboot_entries(W1, enabled=False),
        Phase.COMPLETED,
        [],
    ),
    case(
        "reboot-etcd-not-good",
        REBOOT.with_out_of_sync(CP2).with_reboot_entries(W1),
        Phase.REBOOT_NODES,
        [],
    ),
    case(
        "reboot-no-reboot-command",
        READY.with_reboot_entries(W1),
        Phase.COMPLETED,
        [],
    ),
    case(
        "reboot-no-boot-check-command",
        REBOOT.with_reboot_config(boot_check_command=()).with_reboot_entries(W1),
        Phase.COMPLETED,
        [],
    ),
    case(
        "reboot-backoff-not-expired",
        REBOOT.with_reboot_entries(reboot(W1, drain_backoff_expire=later(1))),
        Phase.COMPLETED,
        [],
    ),
    case(
        "reboot-backoff-expired",
        REBOOT.with_reboot_entries(reboot(W1, drain_backoff_expire=NOW)),
        Phase.REBOOT_NODES,
        [("reboot-drain-start", 1)],
    ),
    case(
        "reboot-first-entry-per-node",
        REBOOT.with_reboot_entries(draining(W1), W1),
        Phase.COMPLETED,
        [],
    ),
]

COMPLETED_CASES = [
    case("completed", READY, Phase.COMPLETED, []),
    case(
        "completed-with-queues-configured",
        READY.with_reboot_config().with_repair_config().with_reboot_entries().with_repair_entries(),
        Phase.COMPLETED,
        [],
    ),
    case(
        "completed-worker-unreachable",
        READY.with_ssh_not_connected(W2),
        Phase.COMPLETED,
        [],
    ),
]

ALL_CASES = [
    *UPGRADE_CASES,
    *RIVERS_CASES,
    *ETCD_CASES,
    *APISERVER_CASES,
    *COMPONENT_CASES,
    *ETCD_MAINT_CASES,
    *K8S_MAINT_CASES,
    *CLEAN_CASES,
    *UNCORDON_CASES,
    *REPAIR_CASES,
    *REBOOT_CASES,
    *COMPLETED_CASES,
]


def summary(ops: tuple[Operation, ...]) -> Expected:
    return [(op.name, len(op.targets)) for op in ops]


@pytest.mark.parametrize(("builder", "phase", "expected"), ALL_CASES)
def test_decide(builder: StatusBuilder, phase: Phase, expected: Expected) -> None:
    decision = decide(builder.inputs())
    assert (decision.phase, summary(decision.operations)) == (phase, expected)
    for op in decision.operations:
        assert step_ops(op), f"{op.name} has no commands"


def test_case_ids_are_unique() -> None:
    ids = [p.id for p in ALL_CASES]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------------------
# Which nodes were chosen
# ---------------------------------------------------------------------------

Targets = list[tuple[str, tuple[str, ...]]]

TARGET_CASES = [
    pytest.param(
        READY.with_options(kube_api=APIServerParams(extra_args=("--v=2",))).with_master_endpoints(
            CP1
        ),
        [("kube-apiserver-restart", (CP1,))],
        id="apiserver-restart-first-in-cluster-order",
    ),
    pytest.param(
        READY.with_component(CP3, "api_server", image="old").with_master_endpoints(CP3),
        [("kube-apiserver-restart", (CP3,))],
        id="apiserver-restart-the-outdated-one",
    ),
    pytest.param(
        SERVICES.with_api_server_unhealthy(CP1).with_master_endpoints(CP1),
        [("wait-kubernetes", (CP2,))],
        id="k8s-maintain-uses-first-healthy-apiserver",
    ),
    pytest.param(
        READY.with_options(etcd=EtcdParams(extra_args=("-v",))),
        [("etcd-restart", (CP1,))],
        id="etcd-restart-first",
    ),
    pytest.param(
        READY.with_etcd_members(OUTSIDER, in_sync=False),
        [("etcd-remove-member", (OUTSIDER,))],
        id="etcd-remove-member-target",
    ),
    pytest.param(
        NEW_CP,
        [("etcd-add-member", (W1,))],
        id="etcd-add-new-cp-target",
    ),
    pytest.param(
        REBOOT.with_reboot_entries(CP1, W1, W2),
        [("reboot-drain-start", (W1,))],
        id="reboot-first-drainable-worker",
    ),
    pytest.param(
        REBOOT.with_reboot_entries(reboot(W1, drain_backoff_expire=later(1)), W2),
        [("reboot-drain-start", (W2,))],
        id="reboot-skips-backoff",
    ),
    pytest.param(
        REBOOT_CP1.with_reboot_entries(CP1, CP2),
        [("reboot-drain-start", (CP1,))],
        id="reboot-first-cp",
    ),
    pytest.param(
        REPAIR.with_repair_entries(W1, CP1),
        [("repair-drain-start", (CP1,))],
        id="repair-cp-first",
    ),
    pytest.param(
        REPAIR.with_repair_config(max_concurrent_repairs=3).with_repair_entries(CP1, CP2, W1),
        [("repair-drain-start", (CP1,)), ("repair-drain-start", (W1,))],
        id="repair-one-cp-then-workers",
    ),
    pytest.param(
        REPAIR.with_repair_entries(W1, repair(W2, step_status=WATCHING, since=31)),
        [("repair-execute", (W2,))],
        id="repair-processing-first",
    ),
    pytest.param(
        REPAIR_CP_REBOOTING.with_repair_entries(CP1, W1),
        [("repair-drain-start", (W1,))],
        id="repair-worker-when-cp-blocked",
    ),
    pytest.param(
        REPAIR_CP_REBOOTING.with_repair_entries(CP1, CP2),
        [("repair-drain-start", (CP2,))],
        id="repair-the-rebooting-cp",
    ),
    pytest.param(
        cordoned(READY, W1, W3),
        [("reboot-uncordon", (W1, W3))],
        id="uncordon-names",
    ),
    pytest.param(
        READY.with_node(OUTSIDER),
        [("remove-node", (CP1,))],
        id="remove-node-through-apiserver",
    ),
]


@pytest.mark.parametrize(("builder", "expected"), TARGET_CASES)
def test_decide_targets(builder: StatusBuilder, expected: Targets) -> None:
    decision = decide(builder.inputs())
    assert [(op.name, op.targets) for op in decision.operations] == expected


def test_resource_apply_order() -> None:
    """Static resources first, then user resources by rank then key (§B.2.4, §I.5)."""
    decision = decide(K8S.with_resources(*USER_RESOURCES).inputs())
    keys = [op.key for op in decision.operations if isinstance(op, ResourceApplyOp)]
    static = [r.key for r in rk.static_resources(K8S.settings.images)]
    assert keys == [
        *static,
        "Namespace/foo",
        "ClusterRole/cr",
        "Role/foo/role",
        "ConfigMap/foo/cm",
    ]


def test_reboot_candidate_marked_in_master_endpoints() -> None:
    """A CP about to drain is NotReady in ``default/kubernetes`` first (§B.2.2 step 4)."""
    decision = decide(REBOOT.with_reboot_entries(CP2).inputs())
    op = decision.operations[0]
    assert isinstance(op, UpdateEndpointsOp)
    subset = op.endpoints.subsets[0]
    assert (subset.addresses, subset.not_ready_addresses) == ((CP1, CP3), (CP2,))


def test_decision_is_deterministic() -> None:
    inputs = REBOOT.with_reboot_entries(draining(W1, since=601), W2).inputs()
    assert decide(inputs) == decide(inputs)


# ---------------------------------------------------------------------------
# The testing module itself
# ---------------------------------------------------------------------------


def test_fixture_matches_cke_new_data() -> None:
    cluster = fixture_cluster()
    assert [n.address for n in cluster.control_planes] == [CP1, CP2, CP3]
    assert [n.address for n in cluster.workers] == [W1, W2, W3]
    assert cluster.workers[0].labels
    assert cluster.workers[0].taints
    assert cluster.service_subnet == "12.34.56.0/24"
    assert cluster.dns_servers == ("8.8.8.8",)
    assert rc.scheduler_config(cluster)["parallelism"] == 999
    assert all(s.ssh_connected for s in B.status.nodes.values())


def test_builders_are_immutable() -> None:
    before = READY.status
    READY.with_ssh_not_connected(CP1).with_reboot_entries(W1)
    assert READY.status == before


def test_builders_skip_unreachable_nodes() -> None:
    built = B.with_ssh_not_connected(W1).with_all_services()
    assert built.status.nodes[W1].kubelet.running is False
    assert built.status.nodes[W2].kubelet.running is True


@attrs.frozen
class _Forever(Operation):
    """A plan that never ends (no ``NAME``: it is not one of CKE's operations)."""

    @property
    def name(self) -> str:
        return "forever"

    def next_command(self, results: Any) -> Command | None:
        return Command()


def test_step_ops_raises_when_a_plan_does_not_finish() -> None:
    with pytest.raises(UnfinishedPlanError, match="forever"):
        step_ops(_Forever())


def test_step_ops_stops_at_a_failure() -> None:
    decision = decide(ETCD.inputs())
    commands = step_ops(decision.operations[0], CommandResult(ok=False, error="x"))
    assert len(commands) == 1


#: Every operation name of §C.2 that decide() can return.
CKE_OPERATION_NAMES = frozenset(
    {
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
        "wait-kubernetes",
        "resource-apply",
        "create-cluster-dns-configmap",
        "update-cluster-dns-configmap",
        "create-node-dns-configmap",
        "update-node-dns-configmap",
        "create-etcd-service",
        "update-etcd-service",
        "create-kubernetes-endpoints",
        "update-kubernetes-endpoints",
        "create-kubernetes-endpointslice",
        "update-kubernetes-endpointslice",
        "create-cke-etcd-endpoints",
        "update-cke-etcd-endpoints",
        "create-cke-etcd-endpointslice",
        "update-cke-etcd-endpointslice",
        "update-node",
        "remove-node",
        "reboot-drain-start",
        "reboot-delete-daemonset-pod",
        "reboot-reboot",
        "reboot-drain-timeout",
        "reboot-uncordon",
        "reboot-dequeue",
        "reboot-cancel",
        "repair-drain-start",
        "repair-drain-timeout",
        "repair-execute",
        "repair-finish",
        "repair-dequeue",
    }
)


def test_cases_cover_every_operation() -> None:
    """The table returns every operation of §C.2 somewhere, and nothing else."""
    names = {name for param in ALL_CASES for name, _ in param.values[2]}
    assert names == CKE_OPERATION_NAMES
