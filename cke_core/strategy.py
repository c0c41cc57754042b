"""``decide()``: CKE's strategy (server/strategy.go ``DecideOps``), step by step.

Theory of operation. The engine converges a cluster by running *one safe
step at a time*. ``decide`` looks at the spec and what was observed and
returns the first non-empty step of the list below, with its phase. Each step
assumes the ones before it are satisfied: etcd is not touched before rivers
runs everywhere, Kubernetes not before etcd is healthy, maintenance not
before every component runs, reboots and repairs last.

    0  config version not "2"         -> upgrade            (all CPs reachable)
    1  rivers / etcd-rivers           -> rivers
    2  no CP has etcd data            -> etcd-boot          (all CPs reachable)
    3  reachable CPs whose etcd stopped -> etcd-start
    4  etcd unhealthy                 -> etcd-wait
    5  Kubernetes components          -> k8s-start
    6  etcd membership and upgrades   -> etcd-maintain      (all CPs reachable)
    7  Kubernetes objects             -> k8s-maintain
    8  control-plane containers on workers -> stop-control-plane
    9  nodes left cordoned by a reboot -> uncordon-nodes
    10 the repair queue               -> repair-machines    (etcd good for repair)
    11 the reboot queue               -> reboot-nodes       (etcd good)
       nothing to do                  -> completed

Nothing here reads a clock or a random source: ``now`` and ``seed`` are
inputs, so a recorded decision can be re-derived exactly.
"""

from __future__ import annotations

import datetime
import operator
from collections.abc import Mapping, Sequence

import attrs

from cke_core import memo, nodefilter
from cke_core import status as status_module
from cke_core.cluster import Cluster, ConfigDocument, Node, TrustedRestMapping
from cke_core.constraints import Constraints
from cke_core.fields import tuple_field
from cke_core.frozen import FrozenDict
from cke_core.nodefilter import NodeFilter
from cke_core.ops import clean, etcd, k8s, rivers, upgrade
from cke_core.ops import kubernetes as kops
from cke_core.ops import reboot as rops
from cke_core.ops import repair as pops
from cke_core.ops.base import Operation
from cke_core.phases import Phase
from cke_core.reboot import (
    RebootDecision,
    decide_reboots,
    processing_addresses,
    uncordon_candidates,
)
from cke_core.render import components as rc
from cke_core.render import kubernetes as rk
from cke_core.render.images import EngineSettings
from cke_core.repair import (
    DEQUEUE,
    DRAIN_START,
    DRAIN_TIMEOUT,
    EXECUTE,
    FINISH_SUCCEEDED,
    RepairDecision,
    decide_repairs,
    repair_processing_addresses,
)
from cke_core.status import ClusterStatus, Endpoints, EndpointSlice, ResourceStatus
from cke_core.timefmt import ZERO_TIME

CONFIG_VERSION = "2"
_NAME = operator.attrgetter("name")
_UNSCHEDULABLE = operator.attrgetter("unschedulable")


@attrs.frozen
class DecisionInputs:
    """Everything a decision depends on; recorded with it so it can be replayed."""

    cluster: Cluster
    status: ClusterStatus
    constraints: Constraints = Constraints()
    resources: tuple[rk.UserResource, ...] = tuple_field()
    settings: EngineSettings = EngineSettings()
    now: datetime.datetime = ZERO_TIME
    seed: int = 0


@attrs.frozen
class Decision:
    phase: Phase
    operations: tuple[Operation, ...] = ()


def decide(inputs: DecisionInputs) -> Decision:
    """The phase and the operations to run now (§B.1)."""
    nf = NodeFilter(inputs.cluster, inputs.status, inputs.settings)
    cps = nf.control_planes

    if inputs.status.config_version != CONFIG_VERSION:
        if not nf.all_control_planes_connected:
            return Decision(Phase.UPGRADE_ABORTED)
        return _one(Phase.UPGRADE, upgrade.UpgradeOp(inputs.status.config_version, cps))

    if ops := rivers_ops(nf):
        return Decision(Phase.RIVERS, ops)

    if not nf.etcd_bootstrapped:
        if not nf.all_control_planes_connected:
            return Decision(Phase.ETCD_BOOT_ABORTED)
        return _one(Phase.ETCD_BOOT, etcd.EtcdBootstrapOp(nf.cluster, nf.images, cps))

    if stopped := nf.select(nf.etcd_stopped, nf.select(nf.ssh_connected, cps)):
        return _one(Phase.ETCD_START, etcd.EtcdStartOp(nf.cluster, nf.images, stopped))

    if not inputs.status.etcd.is_healthy:
        return _one(Phase.ETCD_WAIT, etcd.EtcdWaitClusterOp(cps))

    reboots = decide_reboots(
        nf.cluster,
        inputs.status.reboot_queue,
        nf.select(nf.ssh_not_connected, nf.nodes),
        inputs.constraints.maximum_unreachable_nodes_for_reboot,
        inputs.now,
    )
    if ops := k8s_ops(nf, reboots):
        return Decision(Phase.K8S_START, ops)

    if nf.all_control_planes_connected and (op := etcd_maint_op(nf)):
        return _one(Phase.ETCD_MAINTAIN, op)

    if ops := k8s_maint_ops(nf, inputs.resources, reboots):
        return Decision(Phase.K8S_MAINTAIN, ops)

    if ops := clean_ops(nf):
        return Decision(Phase.STOP_CP, ops)

    reboot_processing = processing_addresses(inputs.status.reboot_queue)
    repair_processing = repair_processing_addresses(inputs.status.repair_queue)
    if op := reboot_uncordon_op(nf, reboot_processing | repair_processing):
        return _one(Phase.UNCORDON_NODES, op)

    repairs = decide_repairs(nf.cluster, inputs.status.repair_queue, reboot_processing, inputs.now)
    if repairs.active:
        if not nf.etcd_is_good_for_repair(inputs.constraints.control_plane_count):
            return Decision(Phase.REPAIR_MACHINES)
        return Decision(Phase.REPAIR_MACHINES, repair_ops(nf, repairs, inputs))

    if reboots.active:
        if not nf.etcd_is_good:
            return Decision(Phase.REBOOT_NODES)
        return Decision(Phase.REBOOT_NODES, reboot_ops(nf, reboots, inputs))

    return Decision(Phase.COMPLETED)


def clear_caches() -> None:
    """Forget everything memoised across decisions (renders, node facts, shared
    status documents); decisions are the same with or without (tests and the
    benchmark's cold cases use it)."""
    nodefilter.clear_caches()
    rc.clear_caches()
    rk.clear_caches()
    status_module.clear_caches()


def _one(phase: Phase, op: Operation) -> Decision:
    return Decision(phase, (op,))


def _capped(nf: NodeFilter, nodes: Sequence[Node]) -> tuple[Node, ...]:
    """CKE caps node-component operations at ``--max-concurrent-updates`` nodes."""
    return tuple(nodes[: nf.settings.max_concurrent_updates])


# --- step 1: rivers ------------------------------------------------------------------


def rivers_ops(nf: NodeFilter) -> tuple[Operation, ...]:
    """rivers on every node and etcd-rivers on control planes, booted or restarted (§B.2.1)."""
    c, images = nf.cluster, nf.images
    ops: list[Operation] = []
    if nodes := nf.select(nf.rivers_stopped, nf.nodes):
        ops.append(rivers.RiversBootstrapOp(c, images, _capped(nf, nodes)))
    if nodes := nf.select(nf.rivers_outdated, nf.nodes):
        ops.append(rivers.RiversRestartOp(c, images, _capped(nf, nodes)))
    if nodes := nf.select(nf.etcd_rivers_stopped, nf.control_planes):
        ops.append(rivers.EtcdRiversBootstrapOp(c, images, _capped(nf, nodes)))
    if nodes := nf.select(nf.etcd_rivers_outdated, nf.control_planes):
        ops.append(rivers.EtcdRiversRestartOp(c, images, _capped(nf, nodes)))
    return tuple(ops)


# --- step 5: Kubernetes components ----------------------------------------------------


def k8s_ops(nf: NodeFilter, reboots: RebootDecision) -> tuple[Operation, ...]:
    """API servers first, one at a time once all run; then the other components (§B.2.2)."""
    c, images, cps = nf.cluster, nf.images, nf.control_planes
    connected_cps = nf.select(nf.ssh_connected, cps)
    if targets := nf.select(nf.api_server_broken, connected_cps):
        return (
            *master_endpoint_ops(nf, ()),
            k8s.KubeAPIServerRestartOp(c, images, targets),
        )
    if not nf.all_control_planes_connected or nf.select(nf.api_server_unhealthy, cps):
        return master_endpoint_ops(nf, ())
    if outdated := nf.select(nf.api_server_outdated, cps):
        first = outdated[:1]
        return (*master_endpoint_ops(nf, first), k8s.KubeAPIServerRestartOp(c, images, first))

    next_cps = tuple(n for n in cps if n.address in {e.node for e in reboots.next_candidates})
    ops: list[Operation] = list(master_endpoint_ops(nf, next_cps))
    # Stopped and outdated are disjoint (outdated means running): both may be emitted.
    if nodes := nf.select(nf.controller_manager_stopped, cps):
        ops.append(k8s.KubeControllerManagerBootstrapOp(c, images, nodes))
    if nodes := nf.select(nf.controller_manager_outdated, cps):
        ops.append(k8s.KubeControllerManagerRestartOp(c, images, nodes))
    if nodes := nf.select(nf.scheduler_stopped, cps):
        ops.append(k8s.KubeSchedulerBootstrapOp(c, images, nodes))
    if nodes := nf.select(nf.scheduler_outdated, cps):
        ops.append(k8s.KubeSchedulerRestartOp(c, images, nodes))
    ops.extend(_node_component_ops(nf))
    return tuple(ops)


def _node_component_ops(nf: NodeFilter) -> list[Operation]:
    c, images = nf.cluster, nf.images
    nodes = nf.select(nf.ssh_connected, nf.nodes)
    apiserver = _apiserver_address(nf)
    ops: list[Operation] = []

    def running_configs(targets: Sequence[Node]) -> FrozenDict[str, ConfigDocument]:
        configs = {n.address: nf.node_status(n).kubelet.config for n in targets}
        return FrozenDict({a: cfg for a, cfg in configs.items() if cfg is not None})

    def restart_op(restart: Sequence[Node]) -> Operation:
        targets = _capped(nf, restart)
        return k8s.KubeletRestartOp(c, images, targets, running_configs=running_configs(targets))

    # CKE's order: unrecognized kubelets restart, stopped ones boot, then (only with
    # in_place_update) outdated ones restart; a CRI endpoint change never restarts.
    unrecognized = nf.unrecognized_kubelets(nodes)
    if unrecognized:
        ops.append(restart_op(unrecognized))
    if stopped := nf.select(nf.kubelet_stopped, nodes):
        targets = _capped(nf, stopped)
        registered = tuple(n.address for n in targets if nf.kubernetes_node(n) is not None)
        ops.append(
            k8s.KubeletBootstrapOp(
                c,
                images,
                targets,
                running_configs=running_configs(targets),
                registered=registered,
                apiserver=apiserver,
            )
        )
    if c.options.kubelet.in_place_update and (
        outdated_kubelets := [
            n
            for n in nf.select(nf.kubelet_outdated, nodes)
            if n not in unrecognized and not nf.kubelet_runtime_changed(n)
        ]
    ):
        # A node restarted above as unrecognized is not restarted twice in one round.
        ops.append(restart_op(outdated_kubelets))
    if stopped := nf.select(nf.proxy_stopped, nodes):
        ops.append(k8s.KubeProxyBootstrapOp(c, images, _capped(nf, stopped)))
    if outdated := nf.select(nf.proxy_outdated, nodes):
        ops.append(k8s.KubeProxyRestartOp(c, images, _capped(nf, outdated)))
    if unexpected := nf.select(nf.proxy_running_unexpectedly, nodes):
        ops.append(clean.StopOp(rc.KUBE_PROXY, _capped(nf, unexpected)))
    return ops


def _apiserver_address(nf: NodeFilter) -> str:
    healthy = nf.healthy_api_server
    return healthy.address if healthy else ""


def master_endpoint_ops(nf: NodeFilter, marked: Sequence[Node]) -> tuple[Operation, ...]:
    """Endpoints and EndpointSlice ``default/kubernetes``: healthy, unmarked CPs ready (§B.2.2)."""
    apiserver = _apiserver_address(nf)
    if not apiserver:
        return ()
    excluded = {n.address for n in marked} | processing_addresses(nf.status.reboot_queue)
    ready = [
        n.address
        for n in nf.control_planes
        if nf.api_server_healthy(n) and n.address not in excluded
    ]
    not_ready = [n.address for n in nf.control_planes if n.address not in ready]
    k8s_status = nf.status.kubernetes
    return _endpoint_ops(
        apiserver,
        rk.master_endpoints(ready, not_ready),
        k8s_status.master_endpoints,
        rk.master_endpoint_slice(ready, not_ready),
        k8s_status.master_endpoint_slice,
    )


@memo.by_identity()
def _endpoint_ops(
    apiserver: str,
    endpoints: Endpoints,
    current_endpoints: Endpoints | None,
    endpoint_slice: EndpointSlice,
    current_slice: EndpointSlice | None,
) -> tuple[Operation, ...]:
    ops: list[Operation] = []
    if current_endpoints is None:
        ops.append(kops.CreateEndpointsOp(apiserver, endpoints))
    elif not rk.endpoints_equal(current_endpoints, endpoints):
        ops.append(kops.UpdateEndpointsOp(apiserver, endpoints))
    if current_slice is None:
        ops.append(kops.CreateEndpointSliceOp(apiserver, endpoint_slice))
    elif not rk.endpoint_slice_equal(current_slice, endpoint_slice):
        ops.append(kops.UpdateEndpointSliceOp(apiserver, endpoint_slice))
    return tuple(ops)


# --- step 6: etcd maintenance ----------------------------------------------------------


def etcd_maint_op(nf: NodeFilter) -> Operation | None:
    """At most one etcd membership change or restart (§B.2.3)."""
    c, images, cps = nf.cluster, nf.images, nf.control_planes
    members = nf.status.etcd.members
    cp_by_address = {n.address: n for n in cps}
    node_by_address = nf.node_by_address

    def non_cluster(in_sync: bool) -> list[str]:
        return [k for k in members if k not in node_by_address and nf.etcd_in_sync(k) == in_sync]

    def non_cp(in_sync: bool) -> list[Node]:
        """Members on reachable non-CP nodes (destroying one runs commands on the node)."""
        return [
            node_by_address[k]
            for k in members
            if k in node_by_address
            and k not in cp_by_address
            and nf.etcd_in_sync(k) == in_sync
            and nf.ssh_connected(node_by_address[k])
        ]

    if keys := non_cluster(False):
        return etcd.EtcdRemoveMemberOp(cps, (members[keys[0]],))
    if nodes := non_cp(False):
        return etcd.EtcdDestroyMemberOp(c, cps, tuple(nodes[:1]), (members[nodes[0].address].id,))
    if unstarted := [n for n in cps if n.address in members and not members[n.address].name]:
        return etcd.EtcdAddMemberOp(c, images, cps, unstarted[0])
    unmarked = [
        n
        for n in cps
        if n.address in members and nf.etcd_in_sync(n.address) and not nf.etcd_is_added_member(n)
    ]
    if unmarked:
        return etcd.EtcdMarkMemberOp(tuple(unmarked))
    if not nf.etcd_is_good:
        return None
    if new := [n for n in cps if n.address not in members]:
        return etcd.EtcdAddMemberOp(c, images, cps, new[0])
    if keys := non_cluster(True):
        return etcd.EtcdRemoveMemberOp(cps, (members[keys[0]],))
    if nodes := non_cp(True):
        return etcd.EtcdDestroyMemberOp(c, cps, tuple(nodes[:1]), (members[nodes[0].address].id,))
    if outdated := nf.select(nf.etcd_outdated, cps):
        return etcd.EtcdRestartOp(c, images, cps, outdated[0])
    return None


# --- step 7: Kubernetes objects -----------------------------------------------------------


def k8s_maint_ops(
    nf: NodeFilter, resources: Sequence[rk.UserResource], reboots: RebootDecision
) -> tuple[Operation, ...]:
    """Resources, DNS, the cke-etcd Service and endpoints, Node objects (§B.2.4)."""
    apiserver = _apiserver_address(nf)
    if not apiserver:
        return ()
    ks = nf.status.kubernetes
    if not ks.is_control_plane_ready:
        return (kops.WaitKubernetesOp(apiserver),)
    ops: list[Operation] = list(_resource_ops(nf, apiserver, resources))
    ops.extend(_dns_ops(nf, apiserver))
    ops.extend(_etcd_endpoint_ops(nf, apiserver, reboots))
    if outdated := rk.outdated_attrs_nodes(nf.cluster, ks.nodes):
        ops.append(kops.UpdateNodeOp(apiserver, outdated))
    known = nf.known_names
    if not known.issuperset(map(_NAME, ks.nodes)) and (
        removed := [n.name for n in ks.nodes if n.name not in known]
    ):
        ops.append(kops.RemoveNodeOp(apiserver, removed))
    return tuple(ops)


def _resource_ops(
    nf: NodeFilter, apiserver: str, user_resources: Sequence[rk.UserResource]
) -> tuple[Operation, ...]:
    ks = nf.status.kubernetes
    return _resource_apply_ops(
        apiserver,
        rk.static_resources(nf.images),
        tuple(user_resources),
        ks.resource_statuses,
        ks.is_ready(nf.cluster),
        nf.cluster.trusted_rest_mappings,
    )


@memo.by_identity()
def _resource_apply_ops(
    apiserver: str,
    static: Sequence[rk.Resource],
    user_resources: Sequence[rk.UserResource],
    statuses: Mapping[str, ResourceStatus],
    ready: bool,
    mappings: Sequence[TrustedRestMapping],
) -> tuple[Operation, ...]:
    """An apply for each resource whose live object is missing or outdated
    (Deployments only once Kubernetes is ready), in CKE's order."""
    ops: list[Operation] = []
    for resource in (*static, *rk.sort_resources(user_resources)):
        if resource.kind == "Deployment" and not ready:
            continue
        if rk.resource_needs_apply(resource, statuses.get(resource.key)):
            ops.append(
                kops.ResourceApplyOp(apiserver, resource.key, rk.apply_document(resource), mappings)
            )
    return tuple(ops)


def _dns_ops(nf: NodeFilter, apiserver: str) -> list[Operation]:
    ks = nf.status.kubernetes
    domain = rc.cluster_domain(nf.cluster)
    dns_ip = ks.dns_service.cluster_ip if ks.dns_service else None
    upstreams = rk.dns_upstreams(nf.cluster, dns_ip)
    ops: list[Operation] = []
    cluster_dns = rk.cluster_dns_configmap(domain, upstreams)
    current = ks.cluster_dns.config_map
    if current is None:
        ops.append(kops.CreateConfigMapOp(apiserver, cluster_dns))
    elif current.data != cluster_dns.data:
        ops.append(kops.UpdateConfigMapOp(apiserver, cluster_dns))
    if cluster_ip := ks.cluster_dns.cluster_ip:
        node_dns = rk.node_dns_configmap(domain, cluster_ip, upstreams)
        current = ks.node_dns.config_map
        if current is None:
            ops.append(kops.CreateConfigMapOp(apiserver, node_dns))
        elif current.data != node_dns.data:
            ops.append(kops.UpdateConfigMapOp(apiserver, node_dns))
    return ops


def _etcd_endpoint_ops(
    nf: NodeFilter, apiserver: str, reboots: RebootDecision
) -> tuple[Operation, ...]:
    ks = nf.status.kubernetes
    ops: list[Operation] = []
    if ks.etcd_service is None:
        ops.append(kops.CreateEtcdServiceOp(apiserver, rk.etcd_service()))
    elif not rk.etcd_service_ok(ks.etcd_service):
        ops.append(kops.UpdateEtcdServiceOp(apiserver, rk.etcd_service()))
    next_candidates = {e.node for e in reboots.next_candidates}
    excluded = processing_addresses(nf.status.reboot_queue) | next_candidates
    ready = [n.address for n in nf.control_planes if n.address not in excluded]
    not_ready = [n.address for n in nf.control_planes if n.address in excluded]
    return (
        *ops,
        *_endpoint_ops(
            apiserver,
            rk.etcd_endpoints(ready, not_ready),
            ks.etcd_endpoints,
            rk.etcd_endpoint_slice(ready, not_ready),
            ks.etcd_endpoint_slice,
        ),
    )


# --- step 8: control-plane containers on workers ------------------------------------------


def clean_ops(nf: NodeFilter) -> tuple[Operation, ...]:
    """Stop control-plane containers on reachable nodes that are no longer control planes."""
    if not nf.select(nf.stray_any, nf.nodes):
        return ()  # the usual case, in one pass
    ops: list[Operation] = []
    for container, stray in (
        (rc.KUBE_APISERVER, nf.stray_api_server),
        (rc.KUBE_CONTROLLER_MANAGER, nf.stray_controller_manager),
        (rc.KUBE_SCHEDULER, nf.stray_scheduler),
    ):
        if nodes := nf.select(stray, nf.nodes):
            ops.append(clean.StopOp(container, nodes))
    if (nodes := nf.select(nf.stray_etcd, nf.nodes)) and nf.etcd_is_good:
        ops.append(clean.StopOp(rc.ETCD, nodes))
    if nodes := nf.select(nf.stray_etcd_rivers, nf.nodes):
        ops.append(clean.StopOp(rc.ETCD_RIVERS, nodes))
    return tuple(ops)


# --- steps 9-11: uncordon, repair, reboot -----------------------------------------------------


def reboot_uncordon_op(nf: NodeFilter, processing: frozenset[str]) -> Operation | None:
    apiserver = _apiserver_address(nf)
    if not apiserver:
        return None
    k8s_nodes = nf.status.kubernetes.nodes
    # Only unschedulable Nodes can be candidates: skip the scan when there are none.
    if not any(map(_UNSCHEDULABLE, k8s_nodes)):
        return None
    if names := uncordon_candidates(nf.cluster, k8s_nodes, processing):
        return rops.RebootUncordonOp(apiserver, names)
    return None


def repair_ops(
    nf: NodeFilter, repairs: RepairDecision, inputs: DecisionInputs
) -> tuple[Operation, ...]:
    repair, now, seed = nf.cluster.repair, inputs.now, inputs.seed
    apiserver = _apiserver_address(nf)
    ops: list[Operation] = []
    for item in repairs.actions:
        entry = item.entry
        operation = repair.find_operation(entry.machine_type, entry.operation)
        if item.action == DEQUEUE:
            ops.append(pops.RepairDequeueOp(entry))
        elif item.action == DRAIN_START:
            ops.append(pops.RepairDrainStartOp(apiserver, entry, repair, now, seed))
        elif item.action == DRAIN_TIMEOUT:
            ops.append(pops.RepairDrainTimeoutOp(entry, now, seed))
        elif item.action == EXECUTE and operation is not None:
            ops.append(pops.RepairExecuteOp(entry, operation.repair_steps[entry.step], now))
        else:
            succeeded = item.action == FINISH_SUCCEEDED
            ops.append(pops.RepairFinishOp(entry, succeeded, operation, now))
    return tuple(ops)


def reboot_ops(
    nf: NodeFilter, reboots: RebootDecision, inputs: DecisionInputs
) -> tuple[Operation, ...]:
    reboot, now, seed = nf.cluster.reboot, inputs.now, inputs.seed
    if reboots.cancelled or reboots.dequeued:
        ops: list[Operation] = []
        if reboots.cancelled:
            ops.append(rops.RebootCancelOp(reboots.cancelled))
        if reboots.dequeued:
            ops.append(rops.RebootDequeueOp(reboots.dequeued))
        return tuple(ops)
    apiserver = _apiserver_address(nf)
    ops = []
    if reboots.drain_completed:
        ops.append(rops.RebootDeleteDaemonSetPodOp(apiserver, reboots.drain_completed))
        ops.append(rops.RebootRebootOp(reboots.drain_completed, reboot, now))
    if reboots.new_drains:
        ops.append(rops.RebootDrainStartOp(apiserver, reboots.new_drains, reboot, now, seed))
    if reboots.drain_timed_out:
        ops.append(rops.RebootDrainTimeoutOp(reboots.drain_timed_out, now, seed))
    return tuple(ops)
