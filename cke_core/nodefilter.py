"""CKE's predicates over nodes (server/node_filter.go), built once per decision.

Each predicate answers one question about one node and is named as CKE names
it (``etcd_stopped``, ``api_server_outdated`` ...). ``NodeFilter`` indexes the
spec and the status once, in O(nodes); sub-decisions select nodes with
``nf.select(predicate, nodes)``, so no predicate scans all nodes per node.

What the node *should* run (image, built-in and extra parameters, configuration
documents) comes from ``cke_core.render``; "outdated" means running and any of
those differs from what the node reports (§B.3).

Memoisation across decisions
----------------------------

The daemon keeps the same ``Cluster`` object while the spec is unchanged and
observes a new status every loop, in which an unchanged node's status is very
often the *same object* as in the previous loop (``status_from_json`` shares
the values of identical node documents). Most predicates ("node facts") depend
on nothing but the cluster, the engine settings, the node and that node's
status, so ``NodeFilter`` remembers:

1. the values rendered for the cluster and for each node (built-in parameters,
   configuration documents, extra parameters), computed on first use;
2. per node, the answers of the node facts for each of the last
   ``_STATES_SIZE`` statuses it saw, reused only while the status is the very
   same object (a node going back to a state seen before finds its answers);
3. the result of ``select(fact, nf.nodes)`` and ``select(fact,
   nf.control_planes)`` for every node fact, for each of the last
   ``_SELECTIONS_SIZE`` sets of node statuses, reused only while *every*
   node's status is the very same object as when it was computed.

Node facts and the renders behind them are computed from the cluster's
*basis*: the cluster with its nodes' Kubernetes metadata (labels,
annotations, taints) left out, which CKE applies through the API and never
renders into a component (a property test checks every render facts use).
So 1 and 2 are kept per basis (``_SharedMemo``: the same cluster fields
besides the nodes, compared on lookup, the same nodes but for their metadata,
the same settings) and survive a cluster.yml change of node labels; 3 holds
the cluster's own Node objects and is kept per cluster object
(``_ClusterMemo``).

Every entry is keyed by object identity or compared whole: the cluster memo
pins its cluster (so its ``id`` cannot be reused while the entry exists), and
statuses are held by weak references (a status that is gone never matches;
the memo does not keep old observations alive). So another basis or settings
value, an edited node or a newly observed status never sees another one's
answers; a status equal to a remembered one but not identical is simply
recomputed. The memory is bounded: ``_MEMO_SIZE`` clusters and as many bases
(least recently used first out), each basis holding at most ``_STATES_SIZE``
entries per node and each cluster ``_SELECTIONS_SIZE`` selection sets.
Nothing here changes a result, so decisions stay pure functions of their
inputs (``clear_caches`` empties everything; the tests compare decisions with
and without it).
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Iterable, Mapping
from itertools import repeat
from typing import Any, Final, Generic, TypeVar

import attrs

from cke_core.cluster import Cluster, ConfigDocument, Node, ServiceParams
from cke_core.frozen import FrozenDict
from cke_core.memo import trim
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
#: A node fact before memoisation: the node and its observed status.
_Fact = Callable[["NodeFilter", Node, NodeStatus], bool]

_UNOBSERVED: Final = NodeStatus()
_NAME: Final = operator.attrgetter("name")

#: The ``NodeStatus`` attribute of each container of ``render.components``.
_FIELD: Final = {
    rc.ETCD: "etcd",
    rc.RIVERS: "rivers",
    rc.ETCD_RIVERS: "etcd_rivers",
    rc.KUBE_APISERVER: "api_server",
    rc.KUBE_CONTROLLER_MANAGER: "controller_manager",
    rc.KUBE_SCHEDULER: "scheduler",
    rc.KUBELET: "kubelet",
    rc.KUBE_PROXY: "proxy",
}

#: Clusters remembered across decisions (least recently used first out).
_MEMO_SIZE: Final = 4

#: Sets of node statuses whose selections are remembered, per cluster.
_SELECTIONS_SIZE: Final = 64

#: Statuses per node whose facts are remembered, per cluster.
_STATES_SIZE: Final = 16

#: Node facts by their implementing function: the predicates whose answer
#: depends only on the cluster, the settings, the node and its status.
_FACTS: dict[Callable[..., bool], str] = {}


def _fact(fn: _Fact) -> Callable[[NodeFilter, Node], bool]:
    """A node fact: answered once per ``(node, status)`` pair and remembered.

    ``fn`` gets the node's basis (``basis_node``) and renders from the
    cluster's basis (``_render``, ``_per_node``, ``_extra``, ``_basis``): its
    answer is shared by every cluster with the same basis (``_SharedMemo``)."""
    name = fn.__name__

    def predicate(self: NodeFilter, node: Node) -> bool:
        facts, basis = self._facts(node)
        if facts is None:
            return fn(self, basis, self.node_status(node))
        value = facts.get(name)
        if value is None:
            value = facts[name] = fn(self, basis, self.node_status(node))
        return value

    predicate.__name__ = name
    predicate.__qualname__ = fn.__qualname__
    predicate.__doc__ = fn.__doc__
    _FACTS[predicate] = name
    return predicate


_F = TypeVar("_F", bound=Callable[..., bool])


def _selectable(fn: _F) -> _F:
    """A cheap node fact: computed at every call, but its selections are remembered."""
    _FACTS[fn] = fn.__name__
    return fn


_V = TypeVar("_V")


class _once(Generic[_V]):
    """``functools.cached_property`` without its lock (Python 3.11 takes one on
    every first access; a ``NodeFilter`` lives in one decision, in one thread):
    computed on first access, then an ordinary attribute."""

    def __init__(self, fn: Callable[[Any], _V]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> _V:
        if obj is None:
            me: Any = self
            return me  # type: ignore[no-any-return]
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


#: The fields of a node that node facts may depend on: all but its Kubernetes
#: metadata (labels, annotations, taints), which CKE applies through the API
#: (``update-node``) and never renders into a component's parameters.
_NODE_METADATA: Final = frozenset({"labels", "annotations", "taints"})
_BASIS_NODE_FIELDS: Final = tuple(
    f.name for f in attrs.fields(Node) if f.name not in _NODE_METADATA
)
#: The cluster fields besides its nodes.
_CLUSTER_FIELDS: Final = tuple(f.name for f in attrs.fields(Cluster) if f.name != "nodes")


def basis_node(node: Node) -> Node:
    """``node`` without its Kubernetes metadata: what its node facts see."""
    if not (node.labels or node.annotations or node.taints):
        return node
    return attrs.evolve(node, labels=FrozenDict(), annotations=FrozenDict(), taints=())


class _SharedMemo:
    """What ``NodeFilter`` remembers for every cluster object with the same
    *basis*: the same cluster fields (besides its nodes) and nodes that differ
    at most in their Kubernetes metadata, and the same settings. Renders and
    node facts are computed from the basis (``cluster`` here, its nodes
    without metadata), so they are the same for all of these clusters: a
    cluster.yml change of node labels keeps every answer."""

    __slots__ = (
        "basis_nodes",
        "cluster",
        "extras",
        "per_node",
        "rendered",
        "rest",
        "settings",
        "states",
    )

    def __init__(self, cluster: Cluster, settings: EngineSettings, rest: tuple[Any, ...]) -> None:
        self.rest = rest
        self.settings = settings
        nodes = tuple(map(basis_node, cluster.nodes))
        #: The basis: the cluster with its nodes' metadata left out (the cluster
        #: itself when it has none).
        self.cluster = (
            cluster
            if all(map(operator.is_, nodes, cluster.nodes))
            else attrs.evolve(cluster, nodes=nodes)
        )
        self.basis_nodes = {n.address: n for n in nodes}
        self.extras = {name: rc.extra_params(self.cluster, name) for name in rc.CONTAINERS}
        #: Node-independent renders, by name.
        self.rendered: dict[str, Any] = {}
        #: Per-node renders: (render function, address) -> (basis node, value).
        self.per_node: dict[tuple[Callable[..., Any], str], tuple[Node, Any]] = {}
        #: address -> id(status) -> (status, facts): the facts of the last
        #: ``_STATES_SIZE`` statuses seen, least recently used first.
        self.states: dict[str, dict[int, tuple[weakref.ref[NodeStatus], dict[str, bool]]]] = {}


class _ClusterMemo:
    """What ``NodeFilter`` remembers about one cluster object and settings value."""

    __slots__ = (
        "addresses",
        "cluster",
        "control_planes",
        "cp_addresses",
        "known_names",
        "node_addresses",
        "node_by_address",
        "nodenames",
        "nodes",
        "selections",
        "shared",
    )

    def __init__(self, cluster: Cluster, shared: _SharedMemo) -> None:
        self.cluster = cluster
        self.shared = shared
        self.nodes = cluster.nodes
        self.control_planes = cluster.control_planes
        self.node_addresses = tuple(n.address for n in cluster.nodes)
        self.addresses = frozenset(self.node_addresses)
        self.cp_addresses = frozenset(n.address for n in self.control_planes)
        #: Kubernetes Node names of the cluster's nodes, and with their addresses.
        self.nodenames = frozenset(n.nodename for n in cluster.nodes)
        self.known_names = self.nodenames | self.addresses
        self.node_by_address = cluster.node_by_address()
        #: ids of every node's status in cluster order -> (weak references to
        #: those statuses, selections of node facts), least recently used first.
        self.selections: dict[
            tuple[int, ...],
            tuple[tuple[weakref.ref[NodeStatus], ...], dict[tuple[str, bool], tuple[Node, ...]]],
        ] = {}


_memos: dict[int, _ClusterMemo] = {}
#: Shared memos by the basis fields of the cluster's nodes (the rest of the
#: basis is compared on lookup), least recently used first.
_shared: dict[tuple[Any, ...], _SharedMemo] = {}


def _memo_for(cluster: Cluster, settings: EngineSettings) -> _ClusterMemo:
    key = id(cluster)
    memo = _memos.pop(key, None)
    # The memo pins its cluster, so an id in the table is that object's.
    if memo is None or not _same(memo.shared.settings, settings):
        memo = _ClusterMemo(cluster, _shared_for(cluster, settings))
    _memos[key] = memo
    trim(_memos, _MEMO_SIZE)
    return memo


def _shared_for(cluster: Cluster, settings: EngineSettings) -> _SharedMemo:
    nodes = tuple(tuple(getattr(n, f) for f in _BASIS_NODE_FIELDS) for n in cluster.nodes)
    rest = tuple(getattr(cluster, f) for f in _CLUSTER_FIELDS)
    shared = _shared.pop(nodes, None)
    # Unchanged fields are usually the very same objects: comparing is cheap.
    if shared is None or shared.rest != rest or not _same(shared.settings, settings):
        shared = _SharedMemo(cluster, settings, rest)
    _shared[nodes] = shared
    trim(_shared, _MEMO_SIZE)
    return shared


def _same(a: EngineSettings, b: EngineSettings) -> bool:
    return a is b or a == b


def clear_caches() -> None:
    """Forget every memoised render and answer (tests and benchmarks)."""
    _memos.clear()
    _shared.clear()


class NodeFilter:
    """The spec and the observed status, indexed for CKE's predicates."""

    def __init__(self, cluster: Cluster, status: ClusterStatus, settings: EngineSettings) -> None:
        self.cluster = cluster
        self.status = status
        self.settings = settings
        self.images = settings.images
        memo = _memo_for(cluster, settings)
        self._memo = memo
        self._shared = memo.shared
        self.control_planes: tuple[Node, ...] = memo.control_planes
        self.nodes: tuple[Node, ...] = cluster.nodes
        self.addresses: frozenset[str] = memo.addresses
        self.cp_addresses: frozenset[str] = memo.cp_addresses
        self._statuses: dict[str, NodeStatus] = status.nodes.to_dict()
        #: address -> (node, its basis node, facts) looked up in this decision.
        self._seen: dict[str, tuple[Node, Node, dict[str, bool]]] = {}

    # --- selection -----------------------------------------------------------

    def select(self, predicate: Predicate, nodes: Iterable[Node]) -> tuple[Node, ...]:
        """The nodes of ``nodes`` (in order) for which ``predicate`` holds."""
        every = nodes is self.nodes
        if (every or nodes is self.control_planes) and getattr(predicate, "__self__", None) is self:
            func: Any = getattr(predicate, "__func__", None)
            name: str | None = _FACTS.get(func)
            if name is not None:
                selections: dict[tuple[str, bool], tuple[Node, ...]] = self._selections
                key = (name, every)
                found = selections.get(key)
                if found is None:
                    found = selections[key] = self._select(predicate, nodes)
                return found
        return self._select(predicate, nodes)

    @staticmethod
    def _select(predicate: Predicate, nodes: Iterable[Node]) -> tuple[Node, ...]:
        selected = tuple(n for n in nodes if predicate(n))
        if isinstance(nodes, tuple) and len(selected) == len(nodes):
            same: tuple[Node, ...] = nodes  # keeps ``nodes is nf.nodes`` true downstream
            return same
        return selected

    @_once
    def _selections(self) -> dict[tuple[str, bool], tuple[Node, ...]]:
        """Selections of node facts over ``nodes`` or ``control_planes``, shared
        with earlier decisions whose every node status was the same object."""
        memo = self._memo
        statuses = tuple(map(self._statuses.get, memo.node_addresses, repeat(_UNOBSERVED)))
        key = tuple(map(id, statuses))
        remembered = memo.selections
        entry = remembered.pop(key, None)
        if entry is not None and all(map(operator.is_, map(operator.call, entry[0]), statuses)):
            remembered[key] = entry  # the most recently used last
            return entry[1]
        selections: dict[tuple[str, bool], tuple[Node, ...]] = {}
        try:
            remembered[key] = (tuple(map(weakref.ref, statuses)), selections)
        except TypeError:  # a status that cannot be weakly referenced: not remembered
            return selections
        trim(remembered, _SELECTIONS_SIZE)
        return selections

    def _facts(self, node: Node) -> tuple[dict[str, bool] | None, Node]:
        """The remembered facts of ``node`` and its status (None: not
        remembered), and the basis node to compute one from."""
        seen = self._seen.get(node.address)
        if seen is not None and (seen[0] is node or seen[1] is node):
            return seen[2], seen[1]
        return self._load_facts(node)

    def _load_facts(self, node: Node) -> tuple[dict[str, bool] | None, Node]:
        address = node.address
        shared = self._shared
        basis = shared.basis_nodes.get(address)
        if basis is None or (basis is not node and self._memo.node_by_address[address] is not node):
            # Not a node of the cluster: nothing is remembered about it.
            return None, basis_node(node)
        status = self.node_status(node)
        states = shared.states.get(address)
        if states is None:
            states = shared.states[address] = {}
        key = id(status)
        state = states.pop(key, None)
        if state is not None and state[0]() is status:
            facts = state[1]
            states[key] = state  # the most recently used last
        else:
            try:
                ref = weakref.ref(status)
            except TypeError:  # cannot be weakly referenced: not remembered
                return None, basis
            facts = {}
            states[key] = (ref, facts)
            trim(states, _STATES_SIZE)
        self._seen[address] = (node, basis, facts)
        return facts, basis

    def node_status(self, node: Node) -> NodeStatus:
        return self._statuses.get(node.address, _UNOBSERVED)

    @_once
    def _k8s_nodes(self) -> dict[str, KubernetesNode]:
        return {n.name: n for n in self.status.kubernetes.nodes}

    def kubernetes_node(self, node: Node) -> KubernetesNode | None:
        return self._k8s_nodes.get(node.nodename)

    @property
    def known_names(self) -> frozenset[str]:
        """Kubernetes Node names and addresses of the cluster's nodes."""
        return self._memo.known_names

    @property
    def node_by_address(self) -> Mapping[str, Node]:
        """``cluster.node_by_address()``, built once per cluster (do not modify)."""
        return self._memo.node_by_address

    def running(self, node: Node, container: str) -> bool:
        """Whether ``container`` (a name of ``render.components``) runs on ``node``."""
        return self._service(node, container).running

    def _service(self, node: Node, container: str) -> ServiceStatus:
        service: ServiceStatus = getattr(self.node_status(node), _FIELD[container])
        return service

    # --- SSH ------------------------------------------------------------------

    @_selectable
    def ssh_connected(self, node: Node) -> bool:
        return self.node_status(node).ssh_connected

    @_selectable
    def ssh_not_connected(self, node: Node) -> bool:
        return not self.node_status(node).ssh_connected

    @_once
    def all_control_planes_connected(self) -> bool:
        return all(self.ssh_connected(n) for n in self.control_planes)

    # --- rendered expectations (memoised per cluster) ---------------------------

    @property
    def _basis(self) -> Cluster:
        """The cluster without its nodes' metadata: what node facts render from."""
        return self._shared.cluster

    def _render(self, name: str, fn: Callable[[Cluster], Any]) -> Any:
        rendered = self._shared.rendered
        value = rendered.get(name)
        if value is None:
            value = rendered[name] = fn(self._shared.cluster)
        return value

    def _per_node(self, fn: Callable[[Cluster, Node], Any], node: Node) -> Any:
        """``fn(basis, node)`` for a basis node, remembered for the cluster's."""
        shared = self._shared
        key = (fn, node.address)
        hit = shared.per_node.get(key)
        if hit is not None and hit[0] is node:
            return hit[1]
        value = fn(shared.cluster, node)
        if shared.basis_nodes.get(node.address) is node:
            shared.per_node[key] = (node, value)
        return value

    @property
    def _rivers_params(self) -> ServiceParams:
        params: ServiceParams = self._render("rivers", rc.rivers_params)
        return params

    @property
    def _etcd_rivers_params(self) -> ServiceParams:
        params: ServiceParams = self._render("etcd-rivers", rc.etcd_rivers_params)
        return params

    @property
    def _scheduler_config(self) -> ConfigDocument:
        config: ConfigDocument = self._render("scheduler-config", rc.scheduler_config)
        return config

    def _extra(self, container: str) -> ServiceParams:
        return self._shared.extras[container]

    def _params(self, fn: Callable[[Cluster, Node], ServiceParams], node: Node) -> ServiceParams:
        params: ServiceParams = self._per_node(fn, node)
        return params

    def _outdated(
        self, status: ServiceStatus, image: str, builtin: ServiceParams, container: str
    ) -> bool:
        return rc.service_outdated(status, image, builtin, self._extra(container))

    # --- rivers -------------------------------------------------------------------

    @_selectable
    def rivers_stopped(self, node: Node) -> bool:
        st = self.node_status(node)
        return st.ssh_connected and not st.rivers.running

    @_fact
    def rivers_outdated(self, node: Node, st: NodeStatus) -> bool:
        return st.ssh_connected and self._outdated(
            st.rivers, self.images.tools, self._rivers_params, rc.RIVERS
        )

    @_selectable
    def etcd_rivers_stopped(self, node: Node) -> bool:
        st = self.node_status(node)
        return st.ssh_connected and not st.etcd_rivers.running

    @_fact
    def etcd_rivers_outdated(self, node: Node, st: NodeStatus) -> bool:
        return st.ssh_connected and self._outdated(
            st.etcd_rivers, self.images.tools, self._etcd_rivers_params, rc.ETCD_RIVERS
        )

    # --- etcd -------------------------------------------------------------------

    def etcd_has_data(self, node: Node) -> bool:
        return self.node_status(node).etcd.has_data

    def etcd_is_added_member(self, node: Node) -> bool:
        return self.node_status(node).etcd.is_added_member

    @_once
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

    @_once
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

    @_fact
    def etcd_outdated(self, node: Node, st: NodeStatus) -> bool:
        etcd = st.etcd
        return etcd.running and rc.etcd_service_outdated(
            etcd, self.images.etcd, self._params(rc.etcd_params, node), self._extra(rc.ETCD)
        )

    # --- Kubernetes control plane -------------------------------------------------

    @_selectable
    def api_server_stopped(self, node: Node) -> bool:
        return not self.node_status(node).api_server.running

    def api_server_healthy(self, node: Node) -> bool:
        return self.node_status(node).api_server.is_healthy

    @_selectable
    def api_server_unhealthy(self, node: Node) -> bool:
        return not self.node_status(node).api_server.is_healthy

    @_fact
    def api_server_outdated(self, node: Node, st: NodeStatus) -> bool:
        return self._outdated(
            st.api_server,
            self.images.kubernetes,
            self._params(rc.api_server_params, node),
            rc.KUBE_APISERVER,
        )

    @_fact
    def api_server_broken(self, node: Node, st: NodeStatus) -> bool:
        """Stopped, or unhealthy with outdated parameters: restart it first (§B.2.2)."""
        api_server = st.api_server
        return not api_server.running or (
            not api_server.is_healthy and self.api_server_outdated(node)
        )

    @_once
    def healthy_api_server(self) -> Node | None:
        """The first control plane in cluster.yml order with a healthy API server."""
        return next((n for n in self.control_planes if self.api_server_healthy(n)), None)

    @_selectable
    def controller_manager_stopped(self, node: Node) -> bool:
        return not self.node_status(node).controller_manager.running

    @_fact
    def controller_manager_outdated(self, node: Node, st: NodeStatus) -> bool:
        return self._outdated(
            st.controller_manager,
            self.images.kubernetes,
            self._params(rc.controller_manager_params, node),
            rc.KUBE_CONTROLLER_MANAGER,
        )

    @_selectable
    def scheduler_stopped(self, node: Node) -> bool:
        return not self.node_status(node).scheduler.running

    @_fact
    def scheduler_outdated(self, node: Node, st: NodeStatus) -> bool:
        scheduler = st.scheduler
        return scheduler.running and (
            self._outdated(
                scheduler,
                self.images.kubernetes,
                self._params(rc.scheduler_params, node),
                rc.KUBE_SCHEDULER,
            )
            or scheduler.config != self._scheduler_config
        )

    # --- node components ----------------------------------------------------------

    @_selectable
    def kubelet_stopped(self, node: Node) -> bool:
        return not self.node_status(node).kubelet.running

    @_selectable
    def kubelet_running(self, node: Node) -> bool:
        return self.node_status(node).kubelet.running

    def kubelet_unrecognized(self, node: Node) -> bool:
        """Running, but Kubernetes has no Node object for it."""
        return self.node_status(node).kubelet.running and self.kubernetes_node(node) is None

    def unrecognized_kubelets(self, nodes: Iterable[Node]) -> tuple[Node, ...]:
        """``select(kubelet_unrecognized, nodes)``, with the running kubelets of a
        remembered selection when ``nodes`` is ``self.nodes``."""
        running = self.select(self.kubelet_running, nodes)
        if nodes is self.nodes:
            # The usual answer, in O(nodes) at C speed: every node has its Node object.
            names = map(_NAME, self.status.kubernetes.nodes)
            missing = self._memo.nodenames.difference(names)
            if not missing:
                return ()
            return tuple(n for n in running if n.nodename in missing)
        return tuple(n for n in running if self.kubernetes_node(n) is None)

    @_fact
    def kubelet_outdated(self, node: Node, st: NodeStatus) -> bool:
        kubelet = st.kubelet
        return kubelet.running and (
            self._outdated(
                kubelet,
                self.images.kubernetes,
                self._params(rc.kubelet_params, node),
                rc.KUBELET,
            )
            or kubelet.config != rc.kubelet_config(self._basis, node, kubelet.config)
        )

    @_fact
    def kubelet_runtime_changed(self, node: Node, st: NodeStatus) -> bool:
        """The CRI endpoint differs from the running kubelet's: CKE never restarts for that."""
        return rc.kubelet_runtime_changed(
            st.kubelet.builtin_params, self._params(rc.kubelet_params, node)
        )

    @_selectable
    def proxy_stopped(self, node: Node) -> bool:
        return (
            not self.cluster.options.kube_proxy.disable and not self.node_status(node).proxy.running
        )

    @_fact
    def proxy_outdated(self, node: Node, st: NodeStatus) -> bool:
        proxy = st.proxy
        return (
            not self._basis.options.kube_proxy.disable
            and proxy.running
            and (
                self._outdated(
                    proxy,
                    self.images.kubernetes,
                    self._params(rc.proxy_params, node),
                    rc.KUBE_PROXY,
                )
                or proxy.config != self._per_node(rc.proxy_config, node)
            )
        )

    @_selectable
    def proxy_running_unexpectedly(self, node: Node) -> bool:
        return self.cluster.options.kube_proxy.disable and self.node_status(node).proxy.running

    # --- control-plane containers left on workers (clean-up, §B.2.5) ---------------

    def _stray(self, node: Node, field: str) -> bool:
        st = self.node_status(node)
        return not node.control_plane and st.ssh_connected and getattr(st, field).running

    @_selectable
    def stray_any(self, node: Node) -> bool:
        """A reachable worker running any control-plane container."""
        st = self.node_status(node)
        return (
            not node.control_plane
            and st.ssh_connected
            and (
                st.api_server.running
                or st.controller_manager.running
                or st.scheduler.running
                or st.etcd.running
                or st.etcd_rivers.running
            )
        )

    @_selectable
    def stray_api_server(self, node: Node) -> bool:
        """A reachable worker running kube-apiserver."""
        return self._stray(node, "api_server")

    @_selectable
    def stray_controller_manager(self, node: Node) -> bool:
        """A reachable worker running kube-controller-manager."""
        return self._stray(node, "controller_manager")

    @_selectable
    def stray_scheduler(self, node: Node) -> bool:
        """A reachable worker running kube-scheduler."""
        return self._stray(node, "scheduler")

    @_selectable
    def stray_etcd(self, node: Node) -> bool:
        """A reachable worker running etcd."""
        return self._stray(node, "etcd")

    @_selectable
    def stray_etcd_rivers(self, node: Node) -> bool:
        """A reachable worker running etcd-rivers."""
        return self._stray(node, "etcd_rivers")
