"""Status gathering (§D): what the decision sees of the live cluster.

``Observer.observe`` builds a ``ClusterStatus`` the way CKE's
``GetClusterStatus`` does:

1. every node of cluster.yml in parallel (bounded by ``concurrency``), §D.1:
   reachable over SSH or not; one ``container inspect`` of the eight system
   containers (their ``com.cybozu.cke`` labels give the parameters they run
   with); one ``volume ls`` for ``has_data`` / ``is_added_member``; the
   scheduler, proxy and kubelet ``config.yml`` of the components that run;
   then, once every node is known, the components' health through the
   ``KubernetesPort``;
2. ``config_version`` as the event log holds it (the caller passes it);
3. stop there unless some control plane ``is_added_member``; else the etcd
   cluster through its client URLs (member list, health by lease grant,
   in-sync by revision). An etcd error gives a partial status and a warning;
4. stop there unless a control plane runs an apiserver (the *living master*);
   else the Kubernetes objects through the ``KubernetesPort``;
5. the reboot and repair queues (entries from the event log, the derived
   lists of §D.2 steps 6-7; the boot-check and health-check commands run on
   this host, as CKE runs them).

Failures follow §L.6: a node that cannot be reached over SSH (or whose
session breaks) is ``ssh_connected=False`` with every other field zero, not
an error; a container CLI error, an unreadable scheduler configuration or a
Kubernetes error fails the whole observation (``ObservationError``, one
line), which blocks every decision until the next round.

Unchanged nodes give the *same* ``NodeStatus`` object from one round to the
next (``Observer`` keeps the previous round's values), as statuses parsed
from the recorded JSON form do, so ``decide`` reuses what it worked out
about them (``cke_core.nodefilter``).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

import attrs
import yaml

from cke_adapters.oneline import error_line
from cke_adapters.ports import KubernetesPort
from cke_adapters.runtime import ContainerRuntime, RuntimeCommandError
from cke_adapters.ssh import CommandFailed, FileTransferFailed, SSHError, SSHPool
from cke_core.cluster import Cluster, Node
from cke_core.commands.etcd import etcd_endpoints
from cke_core.frozen import FrozenDict, freeze
from cke_core.queues import RebootQueueEntry, RebootStatus, RepairQueueEntry
from cke_core.reboot import choose_reboot_candidates, drain_timed_out, first_entry_per_node
from cke_core.render import components
from cke_core.status import (
    ClusterStatus,
    EtcdClusterStatus,
    EtcdStatus,
    KubeComponentStatus,
    KubeletStatus,
    NodeStatus,
    ProxyStatus,
    RebootQueueStatus,
    RepairQueueStatus,
    SchedulerStatus,
    ServiceStatus,
)

__all__ = [
    "EtcdStatusSource",
    "LocalCommands",
    "Observation",
    "ObservationError",
    "Observer",
    "QueueState",
    "decode_config",
]

#: The system containers one ``inspect`` asks about (§D.1).
SYSTEM_CONTAINERS: Final = components.CONTAINERS

SCHEDULER_CONFIG: Final = "/etc/kubernetes/scheduler/config.yml"
PROXY_CONFIG: Final = "/etc/kubernetes/proxy/config.yml"
KUBELET_CONFIG: Final = "/etc/kubernetes/kubelet/config.yml"

_TYPE_META: Final = ("apiVersion", "kind")
_LOADER: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: How long a boot-check or health-check command may run during observation.
LOCAL_CHECK_TIMEOUT: Final = 60.0


class ObservationError(Exception):
    """The whole status failed (§L.6); the message is one line."""


class EtcdStatusSource(Protocol):
    """What observation needs of the etcd adapter (``cke_adapters.etcd_cluster``)."""

    async def cluster_status(
        self, endpoints: Sequence[str]
    ) -> tuple[EtcdClusterStatus, Sequence[str]]: ...


class LocalCommands(Protocol):
    """Runs CKE's boot-check / health-check commands on the engine's host."""

    async def prints_true(self, argv: Sequence[str], timeout: float) -> bool: ...


class SubprocessCommands:
    """``LocalCommands`` with real processes (no shell): true when the command
    exits 0 and prints ``true`` (surrounding white space ignored)."""

    async def prints_true(self, argv: Sequence[str], timeout: float) -> bool:
        if not argv:
            return False
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError:
            return False
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            return False
        return process.returncode == 0 and out.strip() == b"true"


@attrs.frozen
class QueueState:
    """A queue as the event log holds it: enabled, and its entries in order."""

    enabled: bool = True
    entries: tuple[Any, ...] = ()


@attrs.frozen
class Observation:
    """One round's status, and what went wrong without failing it."""

    status: ClusterStatus
    warnings: tuple[str, ...] = ()
    #: Nodes that could not be reached, with why (for progress and logs).
    unreachable: FrozenDict[str, str] = attrs.field(factory=FrozenDict)


def decode_config(content: bytes | str) -> FrozenDict[str, Any] | None:
    """A component's ``config.yml`` as observation reports it: decoded, TypeMeta
    dropped (CKE decodes it and clears ``TypeMeta``); None when not a mapping."""
    doc = yaml.load(content, Loader=_LOADER)
    if not isinstance(doc, dict):
        return None
    frozen: FrozenDict[str, Any] = freeze({k: v for k, v in doc.items() if k not in _TYPE_META})
    return frozen


class Observer:
    """Gathers ``ClusterStatus`` over SSH, etcd and the Kubernetes port."""

    def __init__(
        self,
        ssh: SSHPool,
        runtime: ContainerRuntime,
        etcd: EtcdStatusSource,
        kubernetes: KubernetesPort,
        *,
        concurrency: int = 64,
        local: LocalCommands | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.ssh = ssh
        self.runtime = runtime
        self.etcd = etcd
        self.kubernetes = kubernetes
        self.local: LocalCommands = local or SubprocessCommands()
        self._limit = asyncio.Semaphore(concurrency)
        self._previous: dict[NodeStatus, NodeStatus] = {}

    # --- per node (§D.1) ------------------------------------------------------------

    async def node_status(self, cluster: Cluster, node: Node) -> tuple[NodeStatus, str]:
        """The status of ``node`` and, when unreachable, why ("" otherwise)."""
        address = node.address
        async with self._limit:
            try:
                # No separate reachability probe: the first command connects (or
                # reuses the connection), and an SSH failure anywhere is "unreachable".
                services = await self.runtime.inspect(address, SYSTEM_CONTAINERS)
                has_data, added = await self.runtime.etcd_volumes(
                    address, cluster.options.etcd.volume_name
                )
                configs = await self._configs(address, services)
            except RuntimeCommandError as exc:
                raise ObservationError(str(exc)) from None
            except SSHError as exc:  # the session broke while observing: unreachable
                return NodeStatus(), str(exc)
        return _node_status(services, has_data, added, configs), ""

    async def _configs(
        self, address: str, services: Mapping[str, ServiceStatus]
    ) -> dict[str, FrozenDict[str, Any] | None]:
        """The configuration documents of the scheduler, proxy and kubelet that run.

        A scheduler whose configuration cannot be read fails the status (CKE's
        behaviour); a proxy or kubelet without one reports none.
        """
        wanted = {
            components.KUBE_SCHEDULER: SCHEDULER_CONFIG,
            components.KUBE_PROXY: PROXY_CONFIG,
            components.KUBELET: KUBELET_CONFIG,
        }
        configs: dict[str, FrozenDict[str, Any] | None] = {}
        for name, path in wanted.items():
            service = services.get(name)
            if service is None or not service.running:
                continue
            try:
                content = await self.ssh.read_file(address, path)
            except (FileTransferFailed, CommandFailed) as exc:
                if name == components.KUBE_SCHEDULER:
                    raise ObservationError(f"{address}: cannot read {path}: {exc}") from None
                configs[name] = None
                continue
            try:
                configs[name] = decode_config(content)
            except yaml.YAMLError as exc:
                problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if name == components.KUBE_SCHEDULER:
                    raise ObservationError(f"{address}: {path}: {problem}") from None
                configs[name] = None
        return configs

    # --- the whole cluster (§D.2) -------------------------------------------------------

    async def observe(
        self,
        cluster: Cluster,
        *,
        config_version: str,
        now: datetime.datetime,
        reboot_queue: QueueState = QueueState(),
        repair_queue: QueueState = QueueState(),
    ) -> Observation:
        """One observation of ``cluster``; ``ObservationError`` when it fails as a whole."""
        gathered = await asyncio.gather(*(self.node_status(cluster, n) for n in cluster.nodes))
        nodes: dict[str, NodeStatus] = {}
        unreachable: dict[str, str] = {}
        for node, (observed, why) in zip(cluster.nodes, gathered, strict=True):
            nodes[node.address] = observed
            if why:
                unreachable[node.address] = why
        # Health once every node is known: a stand-in apiserver's depends on the others' etcd.
        checked = await asyncio.gather(
            *(
                self.kubernetes.component_health(cluster, a, st, nodes=nodes)
                for a, st in nodes.items()
                if st.ssh_connected
            )
        )
        reachable = [a for a, st in nodes.items() if st.ssh_connected]
        for address, healthy in zip(reachable, checked, strict=True):
            nodes[address] = healthy
        nodes = {a: self._shared(st) for a, st in nodes.items()}
        self._previous = {s: s for s in nodes.values()}
        status = ClusterStatus(config_version=config_version, nodes=FrozenDict(nodes))
        warnings: list[str] = []

        cps = cluster.control_planes
        if not any(nodes[n.address].etcd.is_added_member for n in cps):
            return Observation(status, (), FrozenDict(unreachable))
        etcd, etcd_warnings = await self.etcd.cluster_status(etcd_endpoints(n.address for n in cps))
        warnings.extend(etcd_warnings)
        status = attrs.evolve(status, etcd=etcd)

        living = next((n.address for n in cps if nodes[n.address].api_server.running), "")
        if not living:
            return Observation(status, tuple(warnings), FrozenDict(unreachable))
        try:
            kubernetes = await self.kubernetes.observe(cluster, living, status.nodes)
            reboot, repair = await self.kubernetes.queue_status(
                cluster,
                await self._reboot_queue(cluster, reboot_queue, now),
                await self._repair_queue(cluster, repair_queue),
                status.nodes,
            )
        except ObservationError:
            raise
        except Exception as exc:  # §L.6: a Kubernetes error fails the whole status
            raise ObservationError(f"kubernetes: {error_line(exc)}") from None
        status = attrs.evolve(
            status, kubernetes=kubernetes, reboot_queue=reboot, repair_queue=repair
        )
        return Observation(status, tuple(warnings), FrozenDict(unreachable))

    def _shared(self, status: NodeStatus) -> NodeStatus:
        """The previous round's object when it is equal (identity for ``decide``'s caches)."""
        return self._previous.get(status, status)

    async def _reboot_queue(
        self, cluster: Cluster, queue: QueueState, now: datetime.datetime
    ) -> RebootQueueStatus:
        """§D.2 step 7 without the drain fields (the Kubernetes port adds them)."""
        entries = first_entry_per_node(
            tuple(e for e in queue.entries if isinstance(e, RebootQueueEntry))
        )
        members = {n.address for n in cluster.nodes}
        cps = frozenset(n.address for n in cluster.control_planes)
        candidates = choose_reboot_candidates(
            entries, cps, cluster.reboot.max_concurrent_reboots, now
        )
        dequeued: list[int] = []
        for entry in entries:
            if entry.node not in members:
                dequeued.append(entry.index)
            elif entry.status is RebootStatus.REBOOTING and cluster.reboot.boot_check_command:
                argv = (*cluster.reboot.boot_check_command, entry.node)
                timeout = cluster.reboot.command_timeout_seconds or LOCAL_CHECK_TIMEOUT
                if await self.local.prints_true(argv, float(timeout)):
                    dequeued.append(entry.index)
        timed_out = [
            e.index
            for e in entries
            if drain_timed_out(e, cluster.reboot.eviction_timeout_seconds, now)
        ]
        return RebootQueueStatus(
            enabled=queue.enabled,
            entries=entries,
            next_candidates=tuple(e.index for e in candidates),
            drain_timedout=tuple(timed_out),
            reboot_dequeued=tuple(dequeued),
            reboot_cancelled=tuple(e.index for e in entries if e.status is RebootStatus.CANCELLED),
        )

    async def _repair_queue(self, cluster: Cluster, queue: QueueState) -> RepairQueueStatus:
        """§D.2 step 6 without the drain fields: health checks of unfinished entries."""
        entries = tuple(e for e in queue.entries if isinstance(e, RepairQueueEntry))
        completed: dict[str, bool] = {}
        for entry in entries:
            if entry.is_finished:
                continue
            operation = cluster.repair.find_operation(entry.machine_type, entry.operation)
            if operation is None or not operation.health_check_command:
                completed[entry.address] = False
                continue
            argv = (*operation.health_check_command, entry.address)
            completed[entry.address] = await self.local.prints_true(
                argv, float(operation.command_timeout_seconds or LOCAL_CHECK_TIMEOUT)
            )
        return RepairQueueStatus(
            enabled=queue.enabled, entries=entries, repair_completed=FrozenDict(completed)
        )


def _node_status(
    services: Mapping[str, ServiceStatus],
    has_data: bool,
    added: bool,
    configs: Mapping[str, FrozenDict[str, Any] | None],
) -> NodeStatus:
    def fields(name: str) -> dict[str, Any]:
        s = services.get(name, ServiceStatus())
        return {
            "running": s.running,
            "image": s.image,
            "builtin_params": s.builtin_params,
            "extra_params": s.extra_params,
        }

    return NodeStatus(
        ssh_connected=True,
        etcd=EtcdStatus(**fields(components.ETCD), has_data=has_data, is_added_member=added),
        rivers=ServiceStatus(**fields(components.RIVERS)),
        etcd_rivers=ServiceStatus(**fields(components.ETCD_RIVERS)),
        api_server=KubeComponentStatus(**fields(components.KUBE_APISERVER)),
        controller_manager=KubeComponentStatus(**fields(components.KUBE_CONTROLLER_MANAGER)),
        scheduler=SchedulerStatus(
            **fields(components.KUBE_SCHEDULER), config=configs.get(components.KUBE_SCHEDULER)
        ),
        proxy=ProxyStatus(
            **fields(components.KUBE_PROXY), config=configs.get(components.KUBE_PROXY)
        ),
        kubelet=KubeletStatus(**fields(components.KUBELET), config=configs.get(components.KUBELET)),
    )
