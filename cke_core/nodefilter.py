"""CKE's predicates over nodes (server/node_filter.go), built once per decision.

Each predicate answers one question about one node and is named as CKE names
it (``etcd_stopped``, ``api_server_outdated`` ...). ``NodeFilter`` indexes the
spec and the status once, in O(nodes); sub-decisions select nodes with
``nf.select(predicate, nodes)``, so no predicate scans all nodes per node.

What the node *should* run (image, built-in and extra parameters, configuration
documents) comes from ``cke_core.render``; "outdated" means running and any of
those differs from what the node reports (§B.3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cached_property

from cke_core.cluster import Cluster, Node, ServiceParams
from cke_core.render import components as rc
from cke_core.render.images import EngineSettings
from cke_core.status import (
    ClusterStatus,
    EtcdMember,
    KubernetesNode,
    NodeStatus,
    ServiceStatus,
)

Predicate = Callable[[Node], bool]

_UNOBSERVED = NodeStatus()


class NodeFilter:
    """The spec and the observed status, indexed for CKE's predicates."""

    def __init__(self, cluster: Cluster, status: ClusterStatus, settings: EngineSettings) -> None:
        self.cluster = cluster
        self.status = status
        self.settings = settings
        self.images = settings.images
        self.control_planes: tuple[Node, ...] = cluster.control_planes
        self.nodes: tuple[Node, ...] = cluster.nodes
        self.addresses: frozenset[str] = frozenset(n.address for n in cluster.nodes)
        self.cp_addresses: frozenset[str] = frozenset(n.address for n in self.control_planes)
        self._k8s_nodes: dict[str, KubernetesNode] = {n.name: n for n in status.kubernetes.nodes}

    # --- selection -----------------------------------------------------------

    @staticmethod
    def select(predicate: Predicate, nodes: Iterable[Node]) -> tuple[Node, ...]:
        return tuple(n for n in nodes if predicate(n))

    def node_status(self, node: Node) -> NodeStatus:
        return self.status.nodes.get(node.address, _UNOBSERVED)

    def kubernetes_node(self, node: Node) -> KubernetesNode | None:
        return self._k8s_nodes.get(node.nodename)

    def running(self, node: Node, container: str) -> bool:
        """Whether ``container`` (a name of ``render.components``) runs on ``node``."""
        return self._service(node, container).running

    def _service(self, node: Node, container: str) -> ServiceStatus:
        st = self.node_status(node)
        return {
            rc.ETCD: st.etcd,
            rc.RIVERS: st.rivers,
            rc.ETCD_RIVERS: st.etcd_rivers,
            rc.KUBE_APISERVER: st.api_server,
            rc.KUBE_CONTROLLER_MANAGER: st.controller_manager,
            rc.KUBE_SCHEDULER: st.scheduler,
            rc.KUBELET: st.kubelet,
            rc.KUBE_PROXY: st.proxy,
        }[container]

    # --- SSH ------------------------------------------------------------------

    def ssh_connected(self, node: Node) -> bool:
        return self.node_status(node).ssh_connected

    def ssh_not_connected(self, node: Node) -> bool:
        return not self.node_status(node).ssh_connected

    @cached_property
    def all_control_planes_connected(self) -> bool:
        return all(self.ssh_connected(n) for n in self.control_planes)

    # --- rendered expectations (cached per decision) ----------------------------

    @cached_property
    def _rivers_params(self) -> ServiceParams:
        return rc.rivers_params(self.cluster)

    @cached_property
    def _etcd_rivers_params(self) -> ServiceParams:
        return rc.etcd_rivers_params(self.cluster)

    def _extra(self, container: str) -> ServiceParams:
        return self._extras[container]

    @cached_property
    def _extras(self) -> dict[str, ServiceParams]:
        return {name: rc.extra_params(self.cluster, name) for name in rc.CONTAINERS}

    def _outdated(
        self, status: ServiceStatus, image: str, builtin: ServiceParams, container: str
    ) -> bool:
        return rc.service_outdated(status, image, builtin, self._extra(container))

    # --- rivers -------------------------------------------------------------------

    def rivers_stopped(self, node: Node) -> bool:
        return self.ssh_connected(node) and not self.node_status(node).rivers.running

    def rivers_outdated(self, node: Node) -> bool:
        return self.ssh_connected(node) and self._outdated(
            self.node_status(node).rivers, self.images.tools, self._rivers_params, rc.RIVERS
        )

    def etcd_rivers_stopped(self, node: Node) -> bool:
        return self.ssh_connected(node) and not self.node_status(node).etcd_rivers.running

    def etcd_rivers_outdated(self, node: Node) -> bool:
        return self.ssh_connected(node) and self._outdated(
            self.node_status(node).etcd_rivers,
            self.images.tools,
            self._etcd_rivers_params,
            rc.ETCD_RIVERS,
        )

    # --- etcd -------------------------------------------------------------------

    def etcd_has_data(self, node: Node) -> bool:
        return self.node_status(node).etcd.has_data

    def etcd_is_added_member(self, node: Node) -> bool:
        return self.node_status(node).etcd.is_added_member

    @cached_property
    def etcd_bootstrapped(self) -> bool:
        """Whether any control plane has the etcd data volume (§B.1 step 2)."""
        return any(self.etcd_has_data(n) for n in self.control_planes)

    @property
    def etcd_members(self) -> dict[str, EtcdMember]:
        return dict(self.status.etcd.members)

    def etcd_is_member(self, node: Node) -> bool:
        return node.address in self.status.etcd.members

    def etcd_in_sync(self, key: str) -> bool:
        return self.status.etcd.in_sync_members.get(key, False)

    def etcd_stopped(self, node: Node) -> bool:
        """A control plane that joined etcd but whose etcd is not running (§B.3)."""
        etcd = self.node_status(node).etcd
        return (
            node.control_plane
            and etcd.is_added_member
            and not etcd.running
            and (self.etcd_is_member(node) or not self.status.etcd.is_healthy)
        )

    @cached_property
    def etcd_is_good(self) -> bool:
        """Healthy, and every member in sync."""
        etcd = self.status.etcd
        return etcd.is_healthy and all(self.etcd_in_sync(name) for name in etcd.members)

    def etcd_is_good_for_repair(self, control_plane_count: int) -> bool:
        """Good enough to repair one control plane: only unreachable CPs out of sync (§F.2)."""
        etcd = self.status.etcd
        if not etcd.is_healthy:
            return False
        by_address = {n.address: n for n in self.control_planes}
        in_sync = 0
        for name in etcd.members:
            if self.etcd_in_sync(name):
                in_sync += 1
                continue
            node = by_address.get(name)
            if node is None or self.ssh_connected(node):
                return False
        return in_sync >= control_plane_count - 1

    def etcd_outdated(self, node: Node) -> bool:
        etcd = self.node_status(node).etcd
        return etcd.running and rc.etcd_service_outdated(
            etcd, self.images.etcd, rc.etcd_params(self.cluster, node), self._extra(rc.ETCD)
        )

    # --- Kubernetes control plane -------------------------------------------------

    def api_server_stopped(self, node: Node) -> bool:
        return not self.node_status(node).api_server.running

    def api_server_healthy(self, node: Node) -> bool:
        return self.node_status(node).api_server.is_healthy

    def api_server_unhealthy(self, node: Node) -> bool:
        return not self.node_status(node).api_server.is_healthy

    def api_server_outdated(self, node: Node) -> bool:
        return self._outdated(
            self.node_status(node).api_server,
            self.images.kubernetes,
            rc.api_server_params(self.cluster, node),
            rc.KUBE_APISERVER,
        )

    @cached_property
    def healthy_api_server(self) -> Node | None:
        """The first control plane in cluster.yml order with a healthy API server."""
        return next((n for n in self.control_planes if self.api_server_healthy(n)), None)

    def controller_manager_stopped(self, node: Node) -> bool:
        return not self.node_status(node).controller_manager.running

    def controller_manager_outdated(self, node: Node) -> bool:
        return self._outdated(
            self.node_status(node).controller_manager,
            self.images.kubernetes,
            rc.controller_manager_params(self.cluster, node),
            rc.KUBE_CONTROLLER_MANAGER,
        )

    @cached_property
    def _scheduler_config(self) -> object:
        return rc.scheduler_config(self.cluster)

    def scheduler_stopped(self, node: Node) -> bool:
        return not self.node_status(node).scheduler.running

    def scheduler_outdated(self, node: Node) -> bool:
        scheduler = self.node_status(node).scheduler
        return scheduler.running and (
            self._outdated(
                scheduler,
                self.images.kubernetes,
                rc.scheduler_params(self.cluster, node),
                rc.KUBE_SCHEDULER,
            )
            or scheduler.config != self._scheduler_config
        )

    # --- node components ----------------------------------------------------------

    def kubelet_stopped(self, node: Node) -> bool:
        return not self.node_status(node).kubelet.running

    def kubelet_unrecognized(self, node: Node) -> bool:
        """Running, but Kubernetes has no Node object for it."""
        return self.node_status(node).kubelet.running and self.kubernetes_node(node) is None

    def kubelet_outdated(self, node: Node) -> bool:
        kubelet = self.node_status(node).kubelet
        return kubelet.running and (
            self._outdated(
                kubelet, self.images.kubernetes, rc.kubelet_params(self.cluster, node), rc.KUBELET
            )
            or kubelet.config != rc.kubelet_config(self.cluster, node, kubelet.config)
        )

    def kubelet_runtime_changed(self, node: Node) -> bool:
        """The CRI endpoint differs from the running kubelet's: CKE never restarts for that."""
        return rc.kubelet_runtime_changed(
            self.node_status(node).kubelet.builtin_params, rc.kubelet_params(self.cluster, node)
        )

    def proxy_stopped(self, node: Node) -> bool:
        return (
            not self.cluster.options.kube_proxy.disable and not self.node_status(node).proxy.running
        )

    def proxy_outdated(self, node: Node) -> bool:
        proxy = self.node_status(node).proxy
        return (
            not self.cluster.options.kube_proxy.disable
            and proxy.running
            and (
                self._outdated(
                    proxy,
                    self.images.kubernetes,
                    rc.proxy_params(self.cluster, node),
                    rc.KUBE_PROXY,
                )
                or proxy.config != rc.proxy_config(self.cluster, node)
            )
        )

    def proxy_running_unexpectedly(self, node: Node) -> bool:
        return self.cluster.options.kube_proxy.disable and self.node_status(node).proxy.running
