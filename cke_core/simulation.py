"""A pure, simple model of a cluster: what each command does to a ``ClusterStatus``.

Theory of operation. ``decide`` looks at a status and returns operations; the
simulator plays the rest of the loop. ``execute`` drives an operation's plan
(``next_command(results)``) against a simulated world built from the status,
answering each command as the world would (the member list from the simulated
etcd, evictions that succeed, queue reads of the stored entries ...) and
applying its effect. ``health`` then derives the fields a real observation
would report from what now runs (§D). ``converge`` loops decide → execute
every operation → health, which is how tests and benchmarks reach realistic
statuses and check that the decisions converge. ``apply_command`` is one step
of ``execute`` and ``node_health``, ``register_nodes``, ``kubernetes_health``,
``reboot_drain_completed`` and ``repair_drain_completed`` are parts of
``health``, public for adapters that stand in for a part of the cluster
(``cke_adapters.kubernetes.standin``) so that they answer as this model does.

The status is the simulated world's only state: the etcd member list lives
in ``status.etcd.members``, Kubernetes objects in ``status.kubernetes``, the
queues in ``status.*_queue``. The model is deliberately small:

* containers: ``run-container`` records image, built-in and extra parameters
  and ``running``; ``stop-container`` / ``kill-containers`` clear them. The
  configuration documents survive a stop (they are files on the node).
* volumes: the data volume (``options.etcd.volume_name``) is ``has_data``;
  volume ``etcd-added-member`` sets ``is_added_member`` while the data
  volume exists (observation reports ``HasData && marker``, §D.1; a marker
  created on a node without data is forgotten).
* ``make-files``: the scheduler, kubelet and proxy ``config.yml`` are decoded
  and kept, TypeMeta dropped, as the node would report them.
* etcd: running etcd with ``--initial-cluster-state=new`` creates the members
  of ``--initial-cluster``; with ``existing`` it starts (names) the added
  member; ``add-etcd-member`` / ``remove-etcd-member`` edit the member list.
  Member IDs are allocated sequentially, so the model is deterministic.
* Kubernetes: objects are stored as the commands carry them; a running
  kubelet registers its Node; ``wait-kubernetes`` makes the control plane
  ready once a controller manager runs; Node, DNS and endpoint commands
  edit their objects.
* queues: entry writes and deletes; drains find no pods, reboot and repair
  commands succeed, boot and health checks pass (``health``).
* every local command, image pull, wait and PKI request succeeds.

A command over SSH runs on each of its nodes as the shell's concurrent
per-node parts would: the part on a node whose status says it is unreachable
fails, the others take effect, and the command fails naming the unreachable
nodes (its value maps each to its error, ``ops.base.failed_nodes``); a test
that injects that fault zeroes the node's status as observation does. The
Kubernetes commands over several Nodes (``update-node``, ``cordon-node`` ...)
behave the same way per Node.

Simplifications: the status is not cut down as observation cuts it (§D.2
steps 2 and 4 leave etcd, Kubernetes and the queues zero-valued without an
added member or a running apiserver); the simulated world keeps them.
Nodes removed from cluster.yml keep their status: the machine still runs
what it ran, and ``health`` counts its etcd member.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
import yaml

from cke_core.cluster import Cluster, ServiceParams, Taint
from cke_core.commands import etcd as ec
from cke_core.commands import kube as kc
from cke_core.commands import node as nc
from cke_core.commands import queue as qc
from cke_core.frozen import FrozenDict, freeze
from cke_core.ops.base import Command, CommandResult, Operation
from cke_core.phases import Phase
from cke_core.queues import (
    RebootQueueEntry,
    RebootStatus,
    RepairQueueEntry,
    RepairStatus,
    RepairStepStatus,
)
from cke_core.reboot import REBOOT_ANNOTATION, first_entry_per_node
from cke_core.render import components as rc
from cke_core.render import files as rf
from cke_core.render import kubernetes as rk
from cke_core.render.images import EngineSettings
from cke_core.status import (
    ClusterStatus,
    EtcdClusterStatus,
    EtcdMember,
    EtcdStatus,
    KubeComponentStatus,
    KubernetesNode,
    KubernetesStatus,
    NodeDNSStatus,
    NodeStatus,
    RebootQueueStatus,
    RepairQueueStatus,
    ResourceStatus,
    ServiceStatus,
)
from cke_core.strategy import Decision, DecisionInputs, decide

#: A plan longer than this is treated as a runaway (the contract is 100 per plan).
MAX_COMMANDS: Final = 100_000

#: The static Service whose ClusterIP the node-local DNS forwards to (§B.2.4 step 3).
CLUSTER_DNS_SERVICE_KEY: Final = f"Service/{rk.KUBE_SYSTEM}/{rk.CLUSTER_DNS_NAME}"

_NODE_FIELD: Final = {
    rc.ETCD: "etcd",
    rc.RIVERS: "rivers",
    rc.ETCD_RIVERS: "etcd_rivers",
    rc.KUBE_APISERVER: "api_server",
    rc.KUBE_CONTROLLER_MANAGER: "controller_manager",
    rc.KUBE_SCHEDULER: "scheduler",
    rc.KUBELET: "kubelet",
    rc.KUBE_PROXY: "proxy",
}

_CONFIG_FIELD: Final = {
    rf.SCHEDULER_CONFIG_PATH: "scheduler",
    rf.KUBELET_CONFIG_PATH: "kubelet",
    rf.PROXY_CONFIG_PATH: "proxy",
}

_TYPE_META: Final = ("apiVersion", "kind")


class SimulationError(Exception):
    """The simulated world cannot answer: a runaway plan or an unknown command."""


@attrs.frozen
class Execution:
    """One operation run in the simulated world: the status after it, and what it ran."""

    status: ClusterStatus
    commands: tuple[Command, ...]
    results: tuple[CommandResult, ...]


@attrs.frozen
class Run:
    """A ``converge`` run: every decision taken, and the status after the last one."""

    decisions: tuple[Decision, ...]
    status: ClusterStatus


# ---------------------------------------------------------------------------
# Running operations
# ---------------------------------------------------------------------------


def execute(
    status: ClusterStatus,
    cluster: Cluster,
    settings: EngineSettings,
    op: Operation,
    now: datetime.datetime,
) -> Execution:
    """Run ``op``'s plan in the world described by ``status``.

    As the executor does, the plan stops at the first failed result unless
    the operation ``tolerates_failures``. ``settings`` and ``now`` are taken
    for symmetry with the real executor; the model does not need them.
    """
    del settings, now
    world = _World(status, cluster)
    commands: list[Command] = []
    results: list[CommandResult] = []
    while (command := op.next_command(results)) is not None:
        if len(commands) >= MAX_COMMANDS:
            raise SimulationError(f"{op.name}: more than {MAX_COMMANDS} commands")
        result = world.apply(command)
        commands.append(command)
        results.append(result)
        if not result.ok and not op.tolerates_failures:
            break
    return Execution(world.freeze(), tuple(commands), tuple(results))


def run_operation(
    status: ClusterStatus,
    cluster: Cluster,
    settings: EngineSettings,
    op: Operation,
    now: datetime.datetime,
) -> ClusterStatus:
    """The status after running ``op`` in the simulated world (health not re-derived)."""
    return execute(status, cluster, settings, op, now).status


def stop_container(
    status: ClusterStatus, cluster: Cluster, address: str, container: str
) -> ClusterStatus:
    """``status`` with ``container`` stopped on ``address``, as ``stop-container`` does
    (a fault for tests: a crashed or killed container)."""
    world = _World(status, cluster)
    world.apply(nc.StopContainer((address,), container))
    return world.freeze()


def apply_command(
    status: ClusterStatus, cluster: Cluster, command: Command
) -> tuple[ClusterStatus, CommandResult]:
    """One command's effect on the world described by ``status``, and its result.

    The building block of ``execute``, public so that an adapter standing in for
    a part of the cluster (``cke_adapters.kubernetes.standin``, a test harness
    for node or etcd commands) answers exactly as the simulator does. Health is
    not re-derived (``health``, ``kubernetes_health``). Raises
    ``SimulationError`` for a command the model does not know.
    """
    world = _World(status, cluster)
    result = world.apply(command)
    return world.freeze(), result


def apply_decision(inputs: DecisionInputs, decision: Decision) -> ClusterStatus:
    """Run every operation of ``decision`` in order, then re-derive health."""
    status = inputs.status
    for op in decision.operations:
        status = run_operation(status, inputs.cluster, inputs.settings, op, inputs.now)
    return health(status, inputs.cluster)


def run(
    inputs: DecisionInputs,
    max_steps: int,
    *,
    tick: datetime.timedelta = datetime.timedelta(0),
) -> Run:
    """Decide and apply up to ``max_steps`` times. ``tick`` advances ``now`` per step.

    The run stops at ``completed``, or at any decision without operations when
    the clock stands still (nothing would change any more). With a ``tick``,
    a decision without operations in another phase is a wait (a drain
    timeout, a watch, a backoff) and the run goes on.
    """
    decisions: list[Decision] = []
    status = inputs.status
    for _ in range(max_steps):
        decision = decide(inputs)
        decisions.append(decision)
        if not decision.operations and (decision.phase is Phase.COMPLETED or not tick):
            break
        status = apply_decision(inputs, decision)
        inputs = attrs.evolve(inputs, status=status, now=inputs.now + tick)
    return Run(tuple(decisions), status)


def converge(
    inputs: DecisionInputs,
    max_steps: int,
    *,
    tick: datetime.timedelta = datetime.timedelta(0),
) -> list[Decision]:
    """The decisions of ``run``: the last is ``completed`` when the cluster converged."""
    return list(run(inputs, max_steps, tick=tick).decisions)


# ---------------------------------------------------------------------------
# Health: what observation would report
# ---------------------------------------------------------------------------


def health(status: ClusterStatus, cluster: Cluster) -> ClusterStatus:
    """Derive the health fields from what runs (§D):

    * etcd is healthy when more than half of its members run etcd on a
      reachable node; a member is in sync when it runs and etcd is healthy;
    * an apiserver is healthy when it runs and etcd is healthy; the other
      components when they run;
    * a Node is Ready when the kubelet of its cluster.yml node runs;
    * the ``cluster-dns`` ClusterIP exists once its Service was applied;
    * the queues' derived fields: drains complete at once (no pods), a
      rebooting node has booted, nodes outside cluster.yml are dequeued,
      a repaired (watching) machine passes its health check.
    """
    members = status.etcd.members

    def etcd_runs(key: str) -> bool:
        node = status.nodes.get(key)
        return node is not None and node.ssh_connected and node.etcd.running

    running = [k for k, m in members.items() if m.name and etcd_runs(k)]
    etcd_healthy = bool(members) and 2 * len(running) > len(members)
    etcd = EtcdClusterStatus(
        is_healthy=etcd_healthy,
        members=members,
        in_sync_members=FrozenDict({k: etcd_healthy and k in running for k in members}),
    )
    nodes = FrozenDict({addr: node_health(st, etcd_healthy) for addr, st in status.nodes.items()})
    return attrs.evolve(
        status,
        etcd=etcd,
        nodes=nodes,
        kubernetes=kubernetes_health(status.kubernetes, cluster, nodes),
        reboot_queue=_reboot_queue_health(status.reboot_queue, cluster),
        repair_queue=_repair_queue_health(status.repair_queue),
    )


def _component_health(st: KubeComponentStatus, healthy: bool) -> Any:
    return st if st.is_healthy == healthy else attrs.evolve(st, is_healthy=healthy)


def node_health(st: NodeStatus, etcd_healthy: bool) -> NodeStatus:
    """``st`` with the components' ``is_healthy`` derived from what runs: the
    apiserver when it runs and ``etcd_healthy`` (it needs its etcd), the others
    when they run. An unreachable node is left as it is (observed as zero)."""
    if not st.ssh_connected:
        return st
    return attrs.evolve(
        st,
        api_server=_component_health(st.api_server, st.api_server.running and etcd_healthy),
        controller_manager=_component_health(st.controller_manager, st.controller_manager.running),
        scheduler=_component_health(st.scheduler, st.scheduler.running),
        proxy=_component_health(st.proxy, st.proxy.running),
        kubelet=_component_health(st.kubelet, st.kubelet.running),
    )


def cluster_dns_ip(cluster: Cluster) -> str:
    """The ClusterIP the simulated Service ``cluster-dns`` gets: the 10th address
    of the service subnet (10.0.0.10 when the subnet is not usable)."""
    try:
        network = ipaddress.ip_network(cluster.service_subnet, strict=False)
        return str(network[10])
    except (ValueError, IndexError):
        return "10.0.0.10"


def registered_node(cluster: Cluster, name: str) -> KubernetesNode:
    """The Node a kubelet registers under ``name``: the boot taints of cluster.yml
    (``register-with-taints``), not Ready until ``kubernetes_health`` says so."""
    return KubernetesNode(name=name, taints=cluster.options.kubelet.boot_taints)


def register_nodes(
    ks: KubernetesStatus, cluster: Cluster, nodes: Mapping[str, NodeStatus]
) -> KubernetesStatus:
    """``ks`` with a Node for each cluster.yml node whose kubelet runs (on a
    reachable node) and has none yet (``registered_node``), appended in
    cluster.yml order; existing Nodes are left as they are.

    The simulator registers a Node when it runs a kubelet; an observer that sees
    kubelets run without having run them (a stand-in API) registers them here.
    """
    known = {n.name for n in ks.nodes}
    new = []
    for node in cluster.nodes:
        st = nodes.get(node.address)
        runs = st is not None and st.ssh_connected and st.kubelet.running
        if runs and node.nodename not in known:
            known.add(node.nodename)
            new.append(registered_node(cluster, node.nodename))
    return attrs.evolve(ks, nodes=(*ks.nodes, *new)) if new else ks


def kubernetes_health(
    ks: KubernetesStatus, cluster: Cluster, nodes: Mapping[str, NodeStatus]
) -> KubernetesStatus:
    """The Kubernetes fields ``health`` derives: a Node of a cluster.yml node is
    Ready when that node's kubelet runs (Nodes of other machines keep theirs);
    the ``cluster-dns`` ClusterIP exists once its Service was applied."""
    address_of = {n.nodename: n.address for n in cluster.nodes}

    def ready(node: KubernetesNode) -> bool:
        address = address_of.get(node.name)
        if address is None:
            return node.ready
        st = nodes.get(address)
        return st is not None and st.ssh_connected and st.kubelet.running

    k8s_nodes = tuple(
        n if n.ready == ready(n) else attrs.evolve(n, ready=ready(n)) for n in ks.nodes
    )
    applied = CLUSTER_DNS_SERVICE_KEY in ks.resource_statuses
    cluster_ip = cluster_dns_ip(cluster) if applied else ""
    cluster_dns = ks.cluster_dns
    if cluster_dns.cluster_ip != cluster_ip:
        cluster_dns = attrs.evolve(cluster_dns, cluster_ip=cluster_ip)
    return attrs.evolve(ks, nodes=k8s_nodes, cluster_dns=cluster_dns)


def reboot_drain_completed(queue: RebootQueueStatus, cluster: Cluster) -> tuple[int, ...]:
    """The reboot entries whose drain completed (§D.2 step 7): every draining
    entry of a cluster.yml node (the first entry per node), as no pod is left."""
    members = {n.address for n in cluster.nodes}
    return tuple(
        e.index
        for e in first_entry_per_node(queue.entries)
        if e.status is RebootStatus.DRAINING and e.node in members
    )


def repair_drain_completed(queue: RepairQueueStatus) -> FrozenDict[str, bool]:
    """The repair entries whose drain completed (§D.2 step 6): every processing
    entry in its draining step, as no pod is left (or the machine left the cluster)."""
    return FrozenDict(
        {
            e.address: True
            for e in queue.entries
            if e.status is RepairStatus.PROCESSING and e.step_status is RepairStepStatus.DRAINING
        }
    )


def _reboot_queue_health(queue: RebootQueueStatus, cluster: Cluster) -> RebootQueueStatus:
    members = {n.address for n in cluster.nodes}
    entries = first_entry_per_node(queue.entries)
    return attrs.evolve(
        queue,
        next_candidates=(),
        drain_timedout=(),
        drain_completed=reboot_drain_completed(queue, cluster),
        reboot_dequeued=tuple(
            e.index
            for e in entries
            if e.status is not RebootStatus.CANCELLED
            and (e.node not in members or e.status is RebootStatus.REBOOTING)
        ),
        reboot_cancelled=tuple(e.index for e in entries if e.status is RebootStatus.CANCELLED),
    )


def _repair_queue_health(queue: RepairQueueStatus) -> RepairQueueStatus:
    processing = [e for e in queue.entries if e.status is RepairStatus.PROCESSING]
    return attrs.evolve(
        queue,
        repair_completed=FrozenDict(
            {e.address: True for e in processing if e.step_status is RepairStepStatus.WATCHING}
        ),
        drain_completed=repair_drain_completed(queue),
    )


# ---------------------------------------------------------------------------
# The simulated world
# ---------------------------------------------------------------------------

_OK: Final = CommandResult()


def _fail(error: str) -> CommandResult:
    return CommandResult(ok=False, error=error)


def _each(name: str, results: Sequence[tuple[str, CommandResult]]) -> CommandResult:
    """The result of a command over several nodes (or Nodes) from each one's: ok
    if all are; otherwise failed, its value mapping each failed one to its error."""
    failed = {target: r.error for target, r in results if not r.ok}
    if not failed:
        return _OK
    details = "; ".join(f"{target}: {error}" for target, error in failed.items())
    return CommandResult(ok=False, value=FrozenDict(failed), error=f"{name}: {details}")


def _url_host(url: str) -> str:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    return rest.rsplit(":", 1)[0] if ":" in rest else rest


def ssh_targets(command: Command) -> tuple[str, ...]:
    """Every node a command reaches over SSH, in its order (none for API, etcd and
    local commands)."""
    if isinstance(command, nc.NodeCommand | ec.UpgradeVersionFrom1To2):
        return command.nodes
    return ()


def _member_key(member: EtcdMember) -> str:
    """Observation's key: the name, else the host of the first peer URL (§D.2)."""
    if member.name:
        return member.name
    return _url_host(member.peer_urls[0]) if member.peer_urls else str(member.id)


def _arg(args: Iterable[str], flag: str) -> str | None:
    prefix = flag + "="
    return next((a[len(prefix) :] for a in args if a.startswith(prefix)), None)


#: libyaml's loader when PyYAML was built with it (the same documents, much faster).
_LOADER: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=1024)
def _decode_config(content: str) -> FrozenDict[str, Any] | None:
    """A configuration file as observation reports it: decoded, TypeMeta dropped."""
    doc = yaml.load(content, Loader=_LOADER)
    if not isinstance(doc, dict):
        return None
    frozen: FrozenDict[str, Any] = freeze({k: v for k, v in doc.items() if k not in _TYPE_META})
    return frozen


class _World:
    """A mutable copy of a status that commands edit; ``freeze`` gives the new status."""

    def __init__(self, status: ClusterStatus, cluster: Cluster) -> None:
        self.cluster = cluster
        self.config_version = status.config_version
        self.nodes: dict[str, NodeStatus] = dict(status.nodes)
        self.etcd = status.etcd
        self.members: dict[str, EtcdMember] = dict(status.etcd.members)
        self.k8s = status.kubernetes
        self.k8s_nodes: dict[str, KubernetesNode] = {n.name: n for n in status.kubernetes.nodes}
        self.resources: dict[str, ResourceStatus] = dict(status.kubernetes.resource_statuses)
        self.reboot = status.reboot_queue
        self.reboot_entries: list[RebootQueueEntry] = list(status.reboot_queue.entries)
        self.repair = status.repair_queue
        self.repair_entries: list[RepairQueueEntry] = list(status.repair_queue.entries)
        self.nodename = {n.address: n.nodename for n in cluster.nodes}
        self.volume = cluster.options.etcd.volume_name

    # --- the result --------------------------------------------------------------

    def freeze(self) -> ClusterStatus:
        reboot_indices = {e.index for e in self.reboot_entries}

        def known(indices: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(i for i in indices if i in reboot_indices)

        reboot = attrs.evolve(
            self.reboot,
            entries=tuple(self.reboot_entries),
            next_candidates=known(self.reboot.next_candidates),
            drain_completed=known(self.reboot.drain_completed),
            drain_timedout=known(self.reboot.drain_timedout),
            reboot_dequeued=known(self.reboot.reboot_dequeued),
            reboot_cancelled=known(self.reboot.reboot_cancelled),
        )
        in_sync = {k: v for k, v in self.etcd.in_sync_members.items() if k in self.members}
        return ClusterStatus(
            config_version=self.config_version,
            nodes=FrozenDict(self.nodes),
            etcd=attrs.evolve(
                self.etcd, members=FrozenDict(self.members), in_sync_members=FrozenDict(in_sync)
            ),
            kubernetes=attrs.evolve(
                self.k8s,
                nodes=tuple(self.k8s_nodes.values()),
                resource_statuses=FrozenDict(self.resources),
            ),
            reboot_queue=reboot,
            repair_queue=attrs.evolve(self.repair, entries=tuple(self.repair_entries)),
        )

    # --- dispatch ----------------------------------------------------------------

    def apply(self, command: Command) -> CommandResult:
        if isinstance(command, nc.NodeCommand):
            return self._on_nodes(command)
        if isinstance(command, ec.UpgradeVersionFrom1To2):
            down = [a for a in command.nodes if not self._node(a).ssh_connected]
            if down:
                return _fail(f"{command.name}: no SSH connection to {', '.join(down)}")
        match command:
            case nc.RetaintBeforeKubeletBoot():
                self._retaint(command.nodes, command.taints)
            case ec.WaitEtcdSync() | ec.SetupEtcdAuth():
                pass
            case ec.EtcdMemberList():
                return CommandResult(value=tuple(self.members.values()))
            case ec.AddEtcdMember():
                return self._add_member(command.node)
            case ec.RemoveEtcdMember():
                ids = set(command.ids)
                self.members = {k: m for k, m in self.members.items() if m.id not in ids}
            case ec.UpgradeVersionFrom1To2():
                for node in command.nodes:
                    self._volume(node, ec.ADDED_MEMBER_VOLUME, exists=True)
                self.config_version = "2"
            case kc.WaitKubernetes():
                if any(st.controller_manager.running for st in self.nodes.values()):
                    self.k8s = attrs.evolve(self.k8s, is_control_plane_ready=True)
            case kc.ApplyResource():
                self._apply_resource(command)
            case kc.CreateConfigMap() | kc.UpdateConfigMap():
                create = isinstance(command, kc.CreateConfigMap)
                self._config_map(command.config_map, create=create)
            case kc.CreateService() | kc.UpdateService():
                if command.service.name == rk.ETCD_SERVICE_NAME:
                    self.k8s = attrs.evolve(self.k8s, etcd_service=command.service)
            case kc.CreateEndpoints() | kc.UpdateEndpoints():
                field = self._endpoint_field(command.endpoints.name, "endpoints")
                if field:
                    self._set_k8s(field, command.endpoints)
            case kc.CreateEndpointSlice() | kc.UpdateEndpointSlice():
                field = self._endpoint_field(command.endpoint_slice.name, "endpoint_slice")
                if field:
                    self._set_k8s(field, command.endpoint_slice)
            case kc.UpdateNode():
                return _each(command.name, [(n.name, self._update_node(n)) for n in command.nodes])
            case kc.RemoveNode():
                for name in command.nodes:
                    self.k8s_nodes.pop(name, None)
            case kc.CordonNode() | kc.UncordonNode():
                cordon = isinstance(command, kc.CordonNode)
                return _each(
                    command.name, [(n, self._cordon(n, cordon=cordon)) for n in command.nodes]
                )
            case kc.EvictPods() | kc.DeleteDaemonSetPods():
                pass
            case qc.GetRebootQueueEntry():
                found = [e for e in self.reboot_entries if e.index == command.index]
                return CommandResult(value=found[0] if found else None)
            case qc.UpdateRebootQueueEntry():
                return self._update_reboot_entry(command.entry)
            case qc.DeleteRebootQueueEntry():
                self.reboot_entries = [e for e in self.reboot_entries if e.index != command.index]
            case qc.UpdateRepairQueueEntry():
                return self._update_repair_entry(command.entry)
            case qc.DeleteRepairQueueEntry():
                self.repair_entries = [e for e in self.repair_entries if e.index != command.index]
            case qc.RunLocalCommand():
                return CommandResult(value="")
            case _:
                raise SimulationError(f"the simulator does not model {command.name!r}")
        return _OK

    # --- nodes ---------------------------------------------------------------------

    def _node(self, address: str) -> NodeStatus:
        return self.nodes.get(address, NodeStatus())

    def _service(self, address: str, container: str) -> Any:
        return getattr(self._node(address), _NODE_FIELD[container])

    def _set_service(self, address: str, container: str, value: ServiceStatus) -> None:
        changes: dict[str, Any] = {_NODE_FIELD[container]: value}
        self.nodes[address] = attrs.evolve(self._node(address), **changes)

    def _on_nodes(self, command: nc.NodeCommand) -> CommandResult:
        """A node command: its effect on each of its nodes, in order, as the shell's
        concurrent per-node parts would have it. Unreachable nodes fail their part
        (the others still run); the command then fails with them as its value."""
        results = []
        for address in command.nodes:
            if self._node(address).ssh_connected:
                self._on_node(command, address)
                results.append((address, _OK))
            else:
                results.append((address, _fail("no SSH connection")))
        return _each(command.name, results)

    def _on_node(self, command: nc.NodeCommand, address: str) -> None:
        match command:
            case nc.RunContainer():
                self._run_container(command, address)
            case nc.StopContainer() | nc.KillContainers():
                self._stop(address, command.container)
            case nc.VolumeCreate():
                self._volume(address, command.volume, exists=True)
            case nc.VolumeRemove():
                self._volume(address, command.volume, exists=False)
            case nc.MakeFiles():
                self._make_files(address, command.files_of(address))
            case (
                nc.ImagePull()
                | nc.MakeDirs()
                | nc.EmptyDir()
                | nc.InstallCNI()
                | nc.PrepareFiles()
                | nc.WaitForKubeletReady()
            ):
                pass
            case _:
                raise SimulationError(f"the simulator does not model {command.name!r}")

    def _run_container(self, command: nc.RunContainer, address: str) -> None:
        params = command.params_of(address)
        current = self._service(address, command.container)
        self._set_service(
            address,
            command.container,
            attrs.evolve(
                current,
                running=True,
                image=command.image,
                builtin_params=params,
                extra_params=command.extra,
            ),
        )
        if command.container == rc.ETCD:
            self._etcd_started(address, params)
        elif command.container == rc.KUBELET:
            self._register(address)

    def _stop(self, address: str, container: str) -> None:
        current = self._service(address, container)
        stopped = attrs.evolve(
            current,
            running=False,
            image="",
            builtin_params=ServiceParams(),
            extra_params=ServiceParams(),
        )
        if isinstance(stopped, KubeComponentStatus):
            stopped = attrs.evolve(stopped, is_healthy=False)
        self._set_service(address, container, stopped)

    def _volume(self, address: str, volume: str, *, exists: bool) -> None:
        etcd: EtcdStatus = self._node(address).etcd
        if volume == self.volume:
            etcd = attrs.evolve(
                etcd, has_data=exists, is_added_member=exists and etcd.is_added_member
            )
        elif volume == ec.ADDED_MEMBER_VOLUME:
            etcd = attrs.evolve(etcd, is_added_member=exists and etcd.has_data)
        else:
            return
        self.nodes[address] = attrs.evolve(self._node(address), etcd=etcd)

    def _make_files(self, address: str, files: Iterable[rf.File]) -> None:
        for file in files:
            field = _CONFIG_FIELD.get(file.path)
            if field is None:
                continue
            current = getattr(self._node(address), field)
            changes: dict[str, Any] = {
                field: attrs.evolve(current, config=_decode_config(file.content))
            }
            self.nodes[address] = attrs.evolve(self._node(address), **changes)

    # --- etcd ----------------------------------------------------------------------

    def _next_id(self) -> int:
        return max((m.id for m in self.members.values()), default=0) + 1

    def _member_by_peer(self, address: str) -> tuple[str, EtcdMember] | None:
        for key, member in self.members.items():
            if any(_url_host(u) == address for u in member.peer_urls):
                return key, member
        return None

    def _etcd_started(self, address: str, params: ServiceParams) -> None:
        state = _arg(params.extra_args, "--initial-cluster-state")
        initial = _arg(params.extra_args, "--initial-cluster")
        if state == "new" and initial:
            for entry in initial.split(","):
                name, _, url = entry.partition("=")
                if self._member_by_peer(_url_host(url)) is None:
                    self.members[name] = EtcdMember(
                        self._next_id(), name, (url,), (ec.etcd_endpoint(_url_host(url)),)
                    )
        found = self._member_by_peer(address)
        if found is None:
            return
        key, member = found
        if not member.name:
            del self.members[key]
            started = attrs.evolve(member, name=address, client_urls=(ec.etcd_endpoint(address),))
            self.members[_member_key(started)] = started

    def _add_member(self, address: str) -> CommandResult:
        if self._member_by_peer(address) is None:
            member = EtcdMember(self._next_id(), "", (ec.peer_url(address),), ())
            self.members[_member_key(member)] = member
        return CommandResult(value=tuple(self.members.values()))

    # --- Kubernetes ----------------------------------------------------------------

    def _register(self, address: str) -> None:
        name = self.nodename.get(address, address)
        if name not in self.k8s_nodes:
            self.k8s_nodes[name] = registered_node(self.cluster, name)

    def _retaint(self, names: Sequence[str], taints: Sequence[Taint]) -> None:
        for name in names:
            node = self.k8s_nodes.get(name)
            if node is None:
                continue
            current = list(node.taints)
            for taint in taints:
                same = [
                    i
                    for i, t in enumerate(current)
                    if (t.key, t.effect) == (taint.key, taint.effect)
                ]
                if same:
                    current[same[0]] = taint
                else:
                    current.append(taint)
            self.k8s_nodes[name] = attrs.evolve(node, taints=tuple(current))

    def _apply_resource(self, command: kc.ApplyResource) -> None:
        metadata = command.document.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
        values = dict(annotations) if isinstance(annotations, Mapping) else {}
        self.resources[command.key] = ResourceStatus(
            annotations=FrozenDict({str(k): str(v) for k, v in values.items()}),
            has_been_ssa=True,
        )

    def _config_map(self, config_map: Any, *, create: bool) -> None:
        if config_map.name == rk.CLUSTER_DNS_NAME:
            current = self.k8s.cluster_dns
            if not create or current.config_map is None:
                self.k8s = attrs.evolve(
                    self.k8s, cluster_dns=attrs.evolve(current, config_map=config_map)
                )
        elif config_map.name == rk.NODE_DNS_NAME and (
            not create or self.k8s.node_dns.config_map is None
        ):
            self.k8s = attrs.evolve(self.k8s, node_dns=NodeDNSStatus(config_map=config_map))

    def _set_k8s(self, field: str, value: Any) -> None:
        changes: dict[str, Any] = {field: value}
        self.k8s = attrs.evolve(self.k8s, **changes)

    @staticmethod
    def _endpoint_field(name: str, kind: str) -> str:
        if name == rk.MASTER_ENDPOINTS_NAME:
            return f"master_{kind}"
        if name == rk.ETCD_SERVICE_NAME:
            return f"etcd_{kind}"
        return ""

    def _update_node(self, desired: KubernetesNode) -> CommandResult:
        node = self.k8s_nodes.get(desired.name)
        if node is None:
            return _fail(f"node {desired.name} not found")
        self.k8s_nodes[desired.name] = attrs.evolve(
            node, labels=desired.labels, annotations=desired.annotations, taints=desired.taints
        )
        return _OK

    def _cordon(self, name: str, *, cordon: bool) -> CommandResult:
        node = self.k8s_nodes.get(name)
        if node is None:
            return _fail(f"node {name} not found")
        annotations = {k: v for k, v in node.annotations.items() if k != REBOOT_ANNOTATION}
        if cordon:
            annotations[REBOOT_ANNOTATION] = "true"
        self.k8s_nodes[name] = attrs.evolve(
            node, annotations=FrozenDict(annotations), unschedulable=cordon
        )
        return _OK

    # --- queues --------------------------------------------------------------------

    def _update_reboot_entry(self, entry: RebootQueueEntry) -> CommandResult:
        for i, current in enumerate(self.reboot_entries):
            if current.index == entry.index:
                self.reboot_entries[i] = entry
                return _OK
        return _fail(f"reboot queue entry {entry.index} not found")

    def _update_repair_entry(self, entry: RepairQueueEntry) -> CommandResult:
        for i, current in enumerate(self.repair_entries):
            if current.index == entry.index:
                self.repair_entries[i] = entry
                return _OK
        return _fail(f"repair queue entry {entry.index} not found")
