"""Fixtures for decision tests: CKE's ``newData()`` and chainable status builders.

CKE tests its strategy (server/strategy_test.go) with one fixture and a chain
of ``with*`` builders that layer an observed status in bootstrap order
(rivers, etcd, apiserver, the other components, Kubernetes objects), then
faults and queue states on top. This module is the same, for library users and
our own tests, and it is pure (no I/O):

* ``fixture_cluster()`` is ``newData()``'s cluster.yml: control planes
  10.0.0.11-13, workers 10.0.0.14-16 (10.0.0.14 has labels, annotations and
  taints), service subnet 12.34.56.0/24, DNS server 8.8.8.8, and a scheduler
  configuration with ``parallelism: 999``.
* ``StatusBuilder()`` starts from ``newData()``'s status: every node reachable
  over SSH, nothing running, config version "2". Each ``with_*`` method
  returns a new builder; ``inputs()`` gives the ``DecisionInputs``::

      ready = StatusBuilder().with_k8s_resource_ready()
      decide(ready.inputs()).phase                     # Phase.COMPLETED
      decide(ready.with_api_server_unhealthy("10.0.0.11").inputs())

* A component builder renders what is "up to date" from the cluster *as it is
  when the builder is called* (image, built-in and extra parameters and
  configuration documents of ``cke_core.render``). Changing the cluster
  afterwards (``with_cluster``, ``with_options``) therefore makes the
  components outdated, which is how a spec change is tested.
* Builders leave SSH-unreachable nodes alone: their status stays zero, as
  observation reports it, whatever the order of the calls.
* Queue entries: ``with_reboot_entries`` and ``with_repair_entries`` take
  entries or addresses (an address is a queued entry; repair entries are of
  machine type ``type1``, operation ``op1`` of ``FIXTURE_REPAIR``). An entry
  with index 0 gets the next free index; a repair entry's ``nodename`` is
  filled from cluster.yml, as observation does. Observations about entries
  (``with_drain_completed``, ``with_reboot_dequeued``) name the nodes of
  entries added before.
* ``step_ops(op)`` drives an operation's plan with successful results, as the
  executor would, and fails if it does not finish within 100 commands.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any, Final

import attrs

from cke_core.cluster import (
    Cluster,
    Node,
    Options,
    Reboot,
    Repair,
    RepairOperation,
    RepairProcedure,
    RepairStep,
    SchedulerParams,
    Taint,
)
from cke_core.commands.etcd import AddEtcdMember, EtcdMemberList
from cke_core.constraints import Constraints
from cke_core.fields import tuple_field
from cke_core.frozen import FrozenDict
from cke_core.ops.base import SUCCESS, Command, CommandResult, Operation
from cke_core.ops.etcd import url_host
from cke_core.queues import RebootQueueEntry, RepairQueueEntry
from cke_core.render import components as rc
from cke_core.render import kubernetes as rk
from cke_core.render.images import EngineSettings
from cke_core.status import (
    ClusterDNSStatus,
    ClusterStatus,
    EtcdClusterStatus,
    EtcdMember,
    EtcdStatus,
    KubeComponentStatus,
    KubeletStatus,
    KubernetesNode,
    NodeDNSStatus,
    NodeStatus,
    ProxyStatus,
    ResourceStatus,
    SchedulerStatus,
    ServiceStatus,
)
from cke_core.strategy import CONFIG_VERSION, Decision, DecisionInputs, decide
from cke_core.timefmt import UTC

__all__ = [
    "CONTROL_PLANE_ADDRESSES",
    "FIXTURE_CLUSTER_DNS_IP",
    "FIXTURE_MACHINE_TYPE",
    "FIXTURE_NOW",
    "FIXTURE_OPERATION",
    "FIXTURE_REBOOT",
    "FIXTURE_REPAIR",
    "MAX_COMMANDS",
    "WORKER_ADDRESSES",
    "Responder",
    "StatusBuilder",
    "UnfinishedPlanError",
    "fixture_cluster",
    "fixture_kubernetes_nodes",
    "step_ops",
    "successful_result",
]

CONTROL_PLANE_ADDRESSES: Final = ("10.0.0.11", "10.0.0.12", "10.0.0.13")
WORKER_ADDRESSES: Final = ("10.0.0.14", "10.0.0.15", "10.0.0.16")
#: The ClusterIP of Service ``kube-system/cluster-dns`` once it exists.
FIXTURE_CLUSTER_DNS_IP: Final = "10.0.0.53"
#: The decision time of every builder (a whole second, as CKE's writes are).
FIXTURE_NOW: Final = datetime.datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)

#: ``reboot`` settings with both commands set (CKE's ``withRebootConfig``).
FIXTURE_REBOOT: Final = Reboot(reboot_command=("reboot",), boot_check_command=("boot-check",))

FIXTURE_MACHINE_TYPE: Final = "type1"
FIXTURE_OPERATION: Final = "op1"
#: ``repair`` settings: machine type ``type1``, operation ``op1`` with two steps:
#: step 0 drains and watches 30 s, step 1 neither drains nor watches. Operation
#: ``op2`` of the same type has one step without a drain.
FIXTURE_REPAIR: Final = Repair(
    repair_procedures=(
        RepairProcedure(
            machine_types=(FIXTURE_MACHINE_TYPE,),
            repair_operations=(
                RepairOperation(
                    operation=FIXTURE_OPERATION,
                    repair_steps=(
                        RepairStep(
                            repair_command=("repair", "0"), need_drain=True, watch_seconds=30
                        ),
                        RepairStep(repair_command=("repair", "1")),
                    ),
                    health_check_command=("health-check",),
                    success_command=("succeeded",),
                ),
                RepairOperation(
                    operation="op2",
                    repair_steps=(RepairStep(repair_command=("repair", "op2")),),
                    health_check_command=("health-check",),
                ),
            ),
        ),
    ),
)

#: The most commands an operation may take with successful results (§M.1).
MAX_COMMANDS: Final = 100


def fixture_cluster(**overrides: Any) -> Cluster:
    """CKE's ``newData()`` cluster.yml; ``overrides`` replace top-level fields."""
    cps = tuple(Node(address=a, user="cybozu", control_plane=True) for a in CONTROL_PLANE_ADDRESSES)
    first, *others = WORKER_ADDRESSES
    workers = (
        Node(
            address=first,
            user="cybozu",
            labels=FrozenDict({"label1": "value"}),
            annotations=FrozenDict({"annotation1": "value"}),
            taints=(
                Taint(key="taint1", value="value1", effect="NoSchedule"),
                Taint(key="taint2", effect="PreferNoSchedule"),
            ),
        ),
        *(Node(address=a, user="cybozu") for a in others),
    )
    cluster = Cluster(
        name="test",
        nodes=cps + workers,
        service_subnet="12.34.56.0/24",
        dns_servers=("8.8.8.8",),
        options=Options(
            kube_scheduler=SchedulerParams(config=FrozenDict({"parallelism": 999})),
        ),
    )
    return attrs.evolve(cluster, **overrides)


def fixture_kubernetes_nodes(cluster: Cluster) -> tuple[KubernetesNode, ...]:
    """A Ready Node object per node of ``cluster``, with up-to-date attributes (§I.4)."""
    return tuple(
        rk.desired_node(cluster, n, KubernetesNode(name=n.nodename, ready=True))
        for n in cluster.nodes
    )


def _initial_status(cluster: Cluster) -> ClusterStatus:
    return ClusterStatus(
        config_version=CONFIG_VERSION,
        nodes=FrozenDict({n.address: NodeStatus(ssh_connected=True) for n in cluster.nodes}),
    )


def _member_id(address: str, fallback: int) -> int:
    try:
        return int(ipaddress.ip_address(address))
    except ValueError:
        return fallback


def _member(address: str, fallback_id: int, *, started: bool = True) -> EtcdMember:
    return EtcdMember(
        id=_member_id(address, fallback_id),
        name=address if started else "",
        peer_urls=(f"https://{address}:2380",),
        client_urls=(f"https://{address}:2379",) if started else (),
    )


@attrs.frozen
class StatusBuilder:
    """A decision's inputs under construction; every ``with_*`` returns a new builder."""

    cluster: Cluster = attrs.field(factory=fixture_cluster)
    status: ClusterStatus = attrs.field(
        default=attrs.Factory(lambda self: _initial_status(self.cluster), takes_self=True)
    )
    settings: EngineSettings = EngineSettings()
    now: datetime.datetime = FIXTURE_NOW
    seed: int = 0
    constraints: Constraints = Constraints(control_plane_count=3)
    resources: tuple[rk.UserResource, ...] = tuple_field()

    # --- results -------------------------------------------------------------------

    def inputs(self) -> DecisionInputs:
        """The ``DecisionInputs`` built so far."""
        return DecisionInputs(
            cluster=self.cluster,
            status=self.status,
            constraints=self.constraints,
            resources=self.resources,
            settings=self.settings,
            now=self.now,
            seed=self.seed,
        )

    def decide(self) -> Decision:
        """``decide(self.inputs())``."""
        return decide(self.inputs())

    def with_(self, func: Callable[[StatusBuilder], StatusBuilder]) -> StatusBuilder:
        """Apply any function of a builder (CKE's ``with``; ``with`` is a Python keyword)."""
        return func(self)

    # --- the spec and the other inputs ----------------------------------------------

    def with_cluster(self, **changes: Any) -> StatusBuilder:
        """Change top-level fields of cluster.yml (statuses built so far stay as they are)."""
        return attrs.evolve(self, cluster=attrs.evolve(self.cluster, **changes))

    def with_options(self, **changes: Any) -> StatusBuilder:
        """Change fields of ``cluster.options`` (e.g. ``kubelet=KubeletParams(...)``)."""
        return self.with_cluster(options=attrs.evolve(self.cluster.options, **changes))

    def with_reboot_config(self, **changes: Any) -> StatusBuilder:
        """Set ``cluster.reboot`` to ``FIXTURE_REBOOT`` with ``changes``."""
        return self.with_cluster(reboot=attrs.evolve(FIXTURE_REBOOT, **changes))

    def with_repair_config(self, **changes: Any) -> StatusBuilder:
        """Set ``cluster.repair`` to ``FIXTURE_REPAIR`` with ``changes``."""
        return self.with_cluster(repair=attrs.evolve(FIXTURE_REPAIR, **changes))

    def with_settings(self, **changes: Any) -> StatusBuilder:
        """Change the engine settings (``max_concurrent_updates``, ``images``)."""
        return attrs.evolve(self, settings=attrs.evolve(self.settings, **changes))

    def with_constraints(self, **changes: Any) -> StatusBuilder:
        """Change the constraints (the fixture has ``control_plane_count=3``)."""
        return attrs.evolve(self, constraints=attrs.evolve(self.constraints, **changes))

    def with_resources(self, *resources: rk.UserResource) -> StatusBuilder:
        """Add user-defined resources (``ckecli resource set``)."""
        return attrs.evolve(self, resources=(*self.resources, *resources))

    def at(self, now: datetime.datetime) -> StatusBuilder:
        """Decide at ``now`` instead of ``FIXTURE_NOW``."""
        return attrs.evolve(self, now=now)

    def with_config_version(self, version: str) -> StatusBuilder:
        """Set the stored ``config-version`` (anything but "2" asks for an upgrade)."""
        return self._with_status(config_version=version)

    # --- components, in bootstrap order ---------------------------------------------

    def with_rivers(self) -> StatusBuilder:
        """rivers up to date on every node."""
        c, images = self.cluster, self.settings.images
        running = ServiceStatus(
            running=True,
            image=images.tools,
            builtin_params=rc.rivers_params(c),
            extra_params=rc.extra_params(c, rc.RIVERS),
        )
        return self._set_component(self.cluster.nodes, "rivers", lambda _: running)

    def with_etcd_rivers(self) -> StatusBuilder:
        """etcd-rivers up to date on every control plane."""
        c, images = self.cluster, self.settings.images
        running = ServiceStatus(
            running=True,
            image=images.tools,
            builtin_params=rc.etcd_rivers_params(c),
            extra_params=rc.extra_params(c, rc.ETCD_RIVERS),
        )
        return self._set_component(c.control_planes, "etcd_rivers", lambda _: running)

    def with_unhealthy_etcd(self) -> StatusBuilder:
        """etcd up to date and running on every control plane; the cluster not healthy."""
        c, images = self.cluster, self.settings.images

        def etcd(n: Node) -> EtcdStatus:
            return EtcdStatus(
                running=True,
                image=images.etcd,
                builtin_params=rc.etcd_params(c, n),
                extra_params=rc.extra_params(c, rc.ETCD),
                has_data=True,
                is_added_member=True,
            )

        built = self._set_component(c.control_planes, "etcd", etcd)
        return built._with_status(etcd=EtcdClusterStatus())

    def with_healthy_etcd(self) -> StatusBuilder:
        """``with_unhealthy_etcd``, healthy, every control plane a member in sync."""
        cps = [n.address for n in self.cluster.control_planes]
        return self.with_unhealthy_etcd()._with_etcd(is_healthy=True).with_etcd_members(*cps)

    def with_api_server(self) -> StatusBuilder:
        """Healthy, up-to-date apiservers on every control plane, and Ready Node objects."""
        c, images = self.cluster, self.settings.images

        def apiserver(n: Node) -> KubeComponentStatus:
            return KubeComponentStatus(
                running=True,
                is_healthy=True,
                image=images.kubernetes,
                builtin_params=rc.api_server_params(c, n),
                extra_params=rc.extra_params(c, rc.KUBE_APISERVER),
            )

        built = self._set_component(c.control_planes, "api_server", apiserver)
        if built.status.kubernetes.nodes:
            return built
        return built.with_kubernetes(nodes=fixture_kubernetes_nodes(c))

    def with_master_endpoints(self, *not_ready: str) -> StatusBuilder:
        """Endpoints/EndpointSlice ``default/kubernetes``: CPs ready except ``not_ready``."""
        ready, unready = self._split_control_planes(not_ready)
        return self.with_kubernetes(
            master_endpoints=rk.master_endpoints(ready, unready),
            master_endpoint_slice=rk.master_endpoint_slice(ready, unready),
        )

    def with_controller_manager(self) -> StatusBuilder:
        """Healthy, up-to-date controller managers on every control plane."""
        c, images = self.cluster, self.settings.images

        def manager(n: Node) -> KubeComponentStatus:
            return KubeComponentStatus(
                running=True,
                is_healthy=True,
                image=images.kubernetes,
                builtin_params=rc.controller_manager_params(c, n),
                extra_params=rc.extra_params(c, rc.KUBE_CONTROLLER_MANAGER),
            )

        return self._set_component(c.control_planes, "controller_manager", manager)

    def with_scheduler(self) -> StatusBuilder:
        """Healthy, up-to-date schedulers (and their config.yml) on every control plane."""
        c, images = self.cluster, self.settings.images

        def scheduler(n: Node) -> SchedulerStatus:
            return SchedulerStatus(
                running=True,
                is_healthy=True,
                image=images.kubernetes,
                builtin_params=rc.scheduler_params(c, n),
                extra_params=rc.extra_params(c, rc.KUBE_SCHEDULER),
                config=rc.scheduler_config(c),
            )

        return self._set_component(c.control_planes, "scheduler", scheduler)

    def with_kubelet(self) -> StatusBuilder:
        """Healthy, up-to-date kubelets (and their config.yml) on every node."""
        c, images = self.cluster, self.settings.images

        def kubelet(n: Node) -> KubeletStatus:
            config = rc.kubelet_config(c, n, rc.kubelet_config(c, n))
            return KubeletStatus(
                running=True,
                is_healthy=True,
                image=images.kubernetes,
                builtin_params=rc.kubelet_params(c, n),
                extra_params=rc.extra_params(c, rc.KUBELET),
                config=config,
            )

        return self._set_component(c.nodes, "kubelet", kubelet)

    def with_proxy(self) -> StatusBuilder:
        """Healthy, up-to-date kube-proxies (and their config.yml) on every node."""
        c, images = self.cluster, self.settings.images

        def proxy(n: Node) -> ProxyStatus:
            return ProxyStatus(
                running=True,
                is_healthy=True,
                image=images.kubernetes,
                builtin_params=rc.proxy_params(c, n),
                extra_params=rc.extra_params(c, rc.KUBE_PROXY),
                config=rc.proxy_config(c, n),
            )

        return self._set_component(c.nodes, "proxy", proxy)

    def with_all_services(self) -> StatusBuilder:
        """Every component up to date and healthy, etcd healthy, master endpoints set."""
        return (
            self.with_rivers()
            .with_etcd_rivers()
            .with_healthy_etcd()
            .with_api_server()
            .with_master_endpoints()
            .with_controller_manager()
            .with_scheduler()
            .with_kubelet()
            .with_proxy()
        )

    def with_k8s_ready(self) -> StatusBuilder:
        """``with_all_services`` and the control plane ready (SA ``kube-system/default``)."""
        return self.with_all_services().with_kubernetes(is_control_plane_ready=True)

    def with_etcd_endpoints(self, *not_ready: str) -> StatusBuilder:
        """Service and endpoints ``kube-system/cke-etcd``: CPs ready except ``not_ready``."""
        ready, unready = self._split_control_planes(not_ready)
        return self.with_kubernetes(
            etcd_service=rk.etcd_service(),
            etcd_endpoints=rk.etcd_endpoints(ready, unready),
            etcd_endpoint_slice=rk.etcd_endpoint_slice(ready, unready),
        )

    def with_resources_applied(self) -> StatusBuilder:
        """Every static and user resource applied at its revision (and image)."""
        statuses = dict(self.status.kubernetes.resource_statuses)
        resources: list[rk.AnyResource] = [*rk.static_resources(self.settings.images)]
        resources.extend(self.resources)
        for resource in resources:
            annotations = {rk.ANNOTATION_REVISION: str(resource.revision)}
            if resource.image:
                annotations[rk.ANNOTATION_IMAGE] = resource.image
            statuses[resource.key] = ResourceStatus(
                annotations=FrozenDict(annotations), has_been_ssa=True
            )
        return self.with_kubernetes(resource_statuses=FrozenDict(statuses))

    def with_dns(self) -> StatusBuilder:
        """DNS ConfigMaps up to date and the ClusterIP of Service ``cluster-dns`` set."""
        ks = self.status.kubernetes
        domain = rc.cluster_domain(self.cluster)
        dns_ip = ks.dns_service.cluster_ip if ks.dns_service else None
        upstreams = rk.dns_upstreams(self.cluster, dns_ip)
        return self.with_kubernetes(
            cluster_dns=ClusterDNSStatus(
                config_map=rk.cluster_dns_configmap(domain, upstreams),
                cluster_ip=FIXTURE_CLUSTER_DNS_IP,
            ),
            node_dns=NodeDNSStatus(
                config_map=rk.node_dns_configmap(domain, FIXTURE_CLUSTER_DNS_IP, upstreams)
            ),
        )

    def with_k8s_resource_ready(self) -> StatusBuilder:
        """Everything in place: ``with_k8s_ready`` + resources, DNS, cke-etcd (``completed``)."""
        return self.with_k8s_ready().with_resources_applied().with_dns().with_etcd_endpoints()

    # --- faults -------------------------------------------------------------------------

    def with_ssh_not_connected(self, *addresses: str) -> StatusBuilder:
        """The nodes are unreachable over SSH: their status is zero (§D.1)."""
        nodes = dict(self.status.nodes)
        for address in addresses:
            nodes[address] = NodeStatus()
        return self._with_status(nodes=FrozenDict(nodes))

    def with_api_server_unhealthy(self, *addresses: str) -> StatusBuilder:
        """The apiservers at ``addresses`` run but fail their health check."""
        return self._update_component(addresses, "api_server", is_healthy=False)

    def with_stopped_etcd(self, *addresses: str) -> StatusBuilder:
        """etcd has its volumes but does not run (all control planes if none given)."""
        targets = addresses or tuple(n.address for n in self.cluster.control_planes)
        stopped = EtcdStatus(has_data=True, is_added_member=True)
        return self._set_component(self._nodes(targets), "etcd", lambda _: stopped)

    def with_init_failed_etcd(self) -> StatusBuilder:
        """A half-done bootstrap: data volumes, no ``etcd-added-member``, nothing running."""
        failed = EtcdStatus(has_data=True)
        built = self._set_component(self.cluster.control_planes, "etcd", lambda _: failed)
        return built._with_status(etcd=EtcdClusterStatus())

    def with_etcd_members(
        self, *addresses: str, in_sync: bool = True, started: bool = True
    ) -> StatusBuilder:
        """Add or replace members named by address (``started=False``: empty name)."""
        etcd = self.status.etcd
        members = dict(etcd.members)
        in_sync_members = dict(etcd.in_sync_members)
        for address in addresses:
            members[address] = _member(address, len(members) + 1, started=started)
            in_sync_members[address] = in_sync
        return self._with_etcd(
            members=FrozenDict(members), in_sync_members=FrozenDict(in_sync_members)
        )

    def without_etcd_members(self, *addresses: str) -> StatusBuilder:
        """Remove members from the etcd member list."""
        etcd = self.status.etcd
        return self._with_etcd(
            members=FrozenDict({k: v for k, v in etcd.members.items() if k not in addresses}),
            in_sync_members=FrozenDict(
                {k: v for k, v in etcd.in_sync_members.items() if k not in addresses}
            ),
        )

    def with_out_of_sync(self, *addresses: str) -> StatusBuilder:
        """The members are behind the cluster's revision (not in sync)."""
        in_sync = dict(self.status.etcd.in_sync_members)
        in_sync.update(dict.fromkeys(addresses, False))
        return self._with_etcd(in_sync_members=FrozenDict(in_sync))

    def with_component(self, address: str, component: str, **changes: Any) -> StatusBuilder:
        """Change one NodeStatus field (``etcd``, ``api_server``, ``kubelet`` ...) of one node."""
        return self._update_component((address,), component, **changes)

    def with_kubernetes(self, **changes: Any) -> StatusBuilder:
        """Change fields of the Kubernetes status."""
        return self._with_status(kubernetes=attrs.evolve(self.status.kubernetes, **changes))

    def with_node(self, name: str, **changes: Any) -> StatusBuilder:
        """Change the Node object ``name``, or add one (Ready) if it does not exist."""
        nodes = list(self.status.kubernetes.nodes)
        for i, node in enumerate(nodes):
            if node.name == name:
                nodes[i] = attrs.evolve(node, **changes)
                break
        else:
            nodes.append(attrs.evolve(KubernetesNode(name=name, ready=True), **changes))
        return self.with_kubernetes(nodes=tuple(nodes))

    def without_nodes(self, *names: str) -> StatusBuilder:
        """Remove Node objects."""
        kept = tuple(n for n in self.status.kubernetes.nodes if n.name not in names)
        return self.with_kubernetes(nodes=kept)

    # --- queues ---------------------------------------------------------------------------

    def with_reboot_entries(
        self, *entries: RebootQueueEntry | str, enabled: bool = True
    ) -> StatusBuilder:
        """Append reboot-queue entries (see "Queue entries") and set ``enabled``."""
        queue = self.status.reboot_queue
        added = list(queue.entries)
        for entry in entries:
            item = RebootQueueEntry(node=entry) if isinstance(entry, str) else entry
            if item.index == 0:
                item = attrs.evolve(item, index=max((e.index for e in added), default=0) + 1)
            added.append(item)
        return self._with_status(
            reboot_queue=attrs.evolve(queue, enabled=enabled, entries=tuple(added))
        )

    def with_repair_entries(
        self, *entries: RepairQueueEntry | str, enabled: bool = True
    ) -> StatusBuilder:
        """Append repair-queue entries (see "Queue entries") and set ``enabled``."""
        queue = self.status.repair_queue
        names = {n.address: n.nodename for n in self.cluster.nodes}
        added = list(queue.entries)
        for entry in entries:
            item = (
                RepairQueueEntry(
                    address=entry, machine_type=FIXTURE_MACHINE_TYPE, operation=FIXTURE_OPERATION
                )
                if isinstance(entry, str)
                else entry
            )
            if item.index == 0:
                item = attrs.evolve(item, index=max((e.index for e in added), default=0) + 1)
            if not item.nodename:
                item = attrs.evolve(item, nodename=names.get(item.address, ""))
            added.append(item)
        return self._with_status(
            repair_queue=attrs.evolve(queue, enabled=enabled, entries=tuple(added))
        )

    def with_drain_completed(self, *addresses: str) -> StatusBuilder:
        """The drains of these nodes completed (both queues; add the entries first)."""
        reboot = self.status.reboot_queue
        indices = [e.index for e in reboot.entries if e.node in addresses]
        repair = self.status.repair_queue
        completed = dict(repair.drain_completed)
        completed.update(dict.fromkeys(addresses, True))
        return self._with_status(
            reboot_queue=attrs.evolve(reboot, drain_completed=(*reboot.drain_completed, *indices)),
            repair_queue=attrs.evolve(repair, drain_completed=FrozenDict(completed)),
        )

    def with_reboot_dequeued(self, *addresses: str) -> StatusBuilder:
        """The nodes' boot checks passed: their reboot entries are to be dequeued."""
        queue = self.status.reboot_queue
        indices = [e.index for e in queue.entries if e.node in addresses]
        dequeued = (*queue.reboot_dequeued, *indices)
        return self._with_status(reboot_queue=attrs.evolve(queue, reboot_dequeued=dequeued))

    def with_repair_completed(self, *addresses: str) -> StatusBuilder:
        """The machines' health checks passed (``repair_completed``)."""
        queue = self.status.repair_queue
        completed = dict(queue.repair_completed)
        completed.update(dict.fromkeys(addresses, True))
        return self._with_status(
            repair_queue=attrs.evolve(queue, repair_completed=FrozenDict(completed))
        )

    # --- internals --------------------------------------------------------------------------

    def _with_status(self, **changes: Any) -> StatusBuilder:
        return attrs.evolve(self, status=attrs.evolve(self.status, **changes))

    def _with_etcd(self, **changes: Any) -> StatusBuilder:
        return self._with_status(etcd=attrs.evolve(self.status.etcd, **changes))

    def _nodes(self, addresses: Iterable[str]) -> tuple[Node, ...]:
        wanted = frozenset(addresses)
        return tuple(n for n in self.cluster.nodes if n.address in wanted)

    def _split_control_planes(self, not_ready: Iterable[str]) -> tuple[list[str], list[str]]:
        excluded = frozenset(not_ready)
        cps = [n.address for n in self.cluster.control_planes]
        return [a for a in cps if a not in excluded], [a for a in cps if a in excluded]

    def _set_component(
        self, nodes: Iterable[Node], component: str, make: Callable[[Node], Any]
    ) -> StatusBuilder:
        statuses = dict(self.status.nodes)
        for node in nodes:
            current = statuses.get(node.address, NodeStatus())
            if current.ssh_connected:
                statuses[node.address] = attrs.evolve(current, **{component: make(node)})
        return self._with_status(nodes=FrozenDict(statuses))

    def _update_component(
        self, addresses: Iterable[str], component: str, **changes: Any
    ) -> StatusBuilder:
        statuses = dict(self.status.nodes)
        for address in addresses:
            current = statuses.get(address, NodeStatus())
            updated = attrs.evolve(getattr(current, component), **changes)
            statuses[address] = attrs.evolve(current, **{component: updated})
        return self._with_status(nodes=FrozenDict(statuses))


# ---------------------------------------------------------------------------
# Driving an operation's plan
# ---------------------------------------------------------------------------

#: Answers one command with its result.
Responder = Callable[[Command], CommandResult]


class UnfinishedPlanError(AssertionError):
    """An operation's plan did not finish within ``MAX_COMMANDS`` commands."""


def successful_result(command: Command) -> CommandResult:
    """A successful result, carrying the value a command answers with: the member
    list for ``add-etcd-member`` (the node just added, unnamed) and ``etcd-member-list``."""
    if isinstance(command, AddEtcdMember | EtcdMemberList):
        hosts = [url_host(e) for e in command.endpoints]
        node = command.node if isinstance(command, AddEtcdMember) else ""
        if node and node not in hosts:
            hosts.append(node)
        members = tuple(
            _member(h, i + 1, started=h != node) for i, h in enumerate(dict.fromkeys(hosts))
        )
        return CommandResult(value=members)
    return SUCCESS


def _responder(results: CommandResult | Responder) -> Responder:
    if not isinstance(results, CommandResult):
        return results
    if results.ok and results.value is None:
        return successful_result
    fixed = results
    return lambda _: fixed


def step_ops(
    op: Operation, results: CommandResult | Responder = SUCCESS, *, limit: int = MAX_COMMANDS
) -> list[Command]:
    """Drive ``op``'s plan as the executor does and return its commands.

    ``results`` is the result of every command, or a function answering each
    one; a plain success answers commands that return a value with a plausible
    one (``successful_result``). The plan stops at the first failed result
    unless the operation tolerates failures, or when it reports a fatal error.
    Raises ``UnfinishedPlanError`` if it is not done after ``limit`` commands.
    """
    respond = _responder(results)
    done: list[CommandResult] = []
    commands: list[Command] = []
    while (command := op.next_command(done)) is not None:
        if len(commands) >= limit:
            raise UnfinishedPlanError(f"{op.name} did not finish within {limit} commands")
        commands.append(command)
        result = respond(command)
        done.append(result)
        if (not result.ok and not op.tolerates_failures) or op.fatal_error(done):
            break
    return commands
