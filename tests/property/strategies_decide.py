"""Hypothesis strategies for ``decide()``: specs and *reachable* statuses with faults.

A scenario is built in layers, so that the statuses a property sees are ones
a real cluster can be in:

1. a **base spec** (1-5 control planes, 0-8 workers, control planes first or
   interleaved, default or "variant" options) and a number of steps: the
   status is what the simulator (``cke_core.simulation``) reaches from an
   empty cluster (every node reachable, nothing running) after that many
   decisions, usually all of them (converged). Trajectories are cached and
   extended lazily, which keeps the properties fast;
2. **spec changes**, as an operator makes them: extra args, in-place kubelet
   updates, kube-proxy disabled, control-plane taint, node labels, boot
   taints, new images, ``max_concurrent_updates``, reboot and repair
   settings, a control plane demoted, a worker promoted, a node removed or
   added. After a change that makes work (membership, args, images) the
   simulator runs the engine on for a drawn number of decisions, or until
   the next decision is of a drawn phase (etcd maintenance ...), so the
   middle of a reconfiguration is reached too;
3. **faults** in the status: nodes unreachable over SSH, containers stopped,
   apiservers unhealthy, etcd members out of sync or etcd unhealthy, the
   configuration version back at "1", Nodes left cordoned, reboot and repair
   queue entries in any state. Health is re-derived after the physical
   faults (SSH, containers) and before the observed-health faults.

Each scenario has one **focus** (``FOCI``): which of the changes and faults
it uses. Any fault sends ``decide`` back to an early step (a stopped rivers
means the ``rivers`` phase), so combining everything every time would never
test the later steps; ``mixed`` still combines them. ``make_scenario`` builds
a scenario from explicit parts, for pinned examples.

``Scenario`` keeps the status before the faults, so a property can "clear"
them again, and prints as a short description.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, Final

import attrs
from hypothesis import strategies as st

from cke_core.cluster import (
    APIServerParams,
    Cluster,
    EtcdParams,
    KubeletParams,
    Node,
    Options,
    ProxyParams,
    Reboot,
    Repair,
    RepairOperation,
    RepairProcedure,
    RepairStep,
    SchedulerParams,
    ServiceParams,
    Taint,
)
from cke_core.constraints import Constraints
from cke_core.frozen import FrozenDict
from cke_core.phases import Phase
from cke_core.queues import (
    UTC,
    RebootQueueEntry,
    RebootStatus,
    RepairQueueEntry,
    RepairStatus,
    RepairStepStatus,
)
from cke_core.reboot import REBOOT_ANNOTATION
from cke_core.render import components as rc
from cke_core.render.images import EngineSettings, Images
from cke_core.simulation import apply_decision, health, stop_container
from cke_core.status import (
    ClusterStatus,
    NodeStatus,
    RebootQueueStatus,
    RepairQueueStatus,
)
from cke_core.strategy import DecisionInputs, decide
from cke_core.timefmt import ZERO_TIME

BASE_TIME: Final = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
SERVICE_SUBNET: Final = "10.68.0.0/16"
#: Bound on the decisions of one simulated trajectory from an empty cluster.
MAX_TRAJECTORY: Final = 60

MACHINE_TYPE: Final = "qemu"
REPAIR_OPERATION: Final = "unreachable"

# ---------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------


def address(i: int) -> str:
    return f"10.0.0.{11 + i}"


def _variant_options() -> Options:
    """Non-default options a cluster may have been bootstrapped with."""
    return Options(
        etcd=EtcdParams(extra_args=("--quota-backend-bytes=8589934592",)),
        kube_api=APIServerParams(
            audit_log_enabled=True, audit_log_policy="apiVersion: audit.k8s.io/v1\n"
        ),
        kube_scheduler=SchedulerParams(
            config=FrozenDict(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "parallelism": 999,
                }
            )
        ),
        kube_proxy=ProxyParams(
            config=FrozenDict(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "mode": "ipvs",
                }
            )
        ),
        kubelet=KubeletParams(
            boot_taints=(Taint("node.cke.test/boot", "", "NoSchedule"),),
            in_place_update=True,
            config=FrozenDict(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "maxPods": 50,
                    "cgroupDriver": "systemd",
                }
            ),
        ),
    )


def base_cluster(control_planes: int, workers: int, interleaved: bool, variant: bool) -> Cluster:
    """``control_planes + workers`` nodes at 10.0.0.11...; control planes first or
    every other node."""
    total = control_planes + workers
    if interleaved:
        cp_positions = (
            set(range(0, 2 * control_planes, 2)) if total >= 2 * control_planes else set()
        )
        if len(cp_positions) != control_planes:
            cp_positions = set(range(control_planes))
    else:
        cp_positions = set(range(control_planes))
    nodes = tuple(
        Node(
            address=address(i),
            control_plane=i in cp_positions,
            labels=FrozenDict({"cke.test/rack": str(i % 2)}) if variant else FrozenDict(),
        )
        for i in range(total)
    )
    return Cluster(
        name="test",
        nodes=nodes,
        service_subnet=SERVICE_SUBNET,
        dns_servers=("8.8.8.8",),
        taint_control_plane=variant,
        options=_variant_options() if variant else Options(),
    )


def empty_status(cluster: Cluster, config_version: str = "2") -> ClusterStatus:
    """A fresh cluster: every node reachable, nothing running, no etcd, no Kubernetes."""
    return ClusterStatus(
        config_version=config_version,
        nodes=FrozenDict({n.address: NodeStatus(ssh_connected=True) for n in cluster.nodes}),
    )


# ---------------------------------------------------------------------------
# Cached trajectories
# ---------------------------------------------------------------------------


@attrs.define
class _Trajectory:
    """Statuses from a start, and the phase of the decision taken at each."""

    statuses: list[ClusterStatus]
    phases: list[Phase] = attrs.field(factory=list)
    done: bool = False

    def extend(self, cluster: Cluster, settings: EngineSettings) -> None:
        """Decide at the last status; apply the decision unless it has no operations."""
        inputs = DecisionInputs(
            cluster=cluster, status=self.statuses[-1], settings=settings, now=BASE_TIME
        )
        decision = decide(inputs)
        self.phases.append(decision.phase)
        if not decision.operations or len(self.statuses) > MAX_TRAJECTORY:
            self.done = True
        else:
            self.statuses.append(apply_decision(inputs, decision))


_TRAJECTORIES: dict[tuple[Any, ...], _Trajectory] = {}


def advance(
    key: tuple[Any, ...],
    start: ClusterStatus,
    cluster: Cluster,
    settings: EngineSettings,
    steps: int,
    until: Phase | None = None,
) -> ClusterStatus:
    """The status after ``steps`` simulated decisions from ``start``, or earlier: the
    first status whose decision has phase ``until``, or the last one if the
    cluster converged. Trajectories are cached under ``key`` (which must
    identify ``start``, ``cluster`` and ``settings``) and extended lazily."""
    path = _TRAJECTORIES.get(key)
    if path is None:
        path = _TRAJECTORIES[key] = _Trajectory([start])
    i = 0
    while True:
        if i >= len(path.phases):
            path.extend(cluster, settings)
        if path.phases[i] is until or i >= steps or i + 1 >= len(path.statuses):
            return path.statuses[i]
        i += 1


def reachable(cluster: Cluster, steps: int) -> ClusterStatus:
    """The status after ``steps`` decisions from ``empty_status(cluster)``."""
    return advance((cluster,), empty_status(cluster), cluster, EngineSettings(), steps)


# ---------------------------------------------------------------------------
# Spec changes
# ---------------------------------------------------------------------------

_EXTRA_ARG_COMPONENTS: Final = (
    "rivers",
    "etcd_rivers",
    "etcd",
    "kube_api",
    "kube_controller_manager",
    "kube_scheduler",
    "kubelet",
    "kube_proxy",
)


def _with_extra_arg(options: Options, component: str) -> Options:
    params: ServiceParams = getattr(options, component)
    changes: dict[str, Any] = {
        component: attrs.evolve(params, extra_args=(*params.extra_args, "--v=3"))
    }
    return attrs.evolve(options, **changes)


def reboot_settings(max_concurrent: int) -> Reboot:
    return Reboot(
        reboot_command=("reboot-node",),
        boot_check_command=("check-boot",),
        max_concurrent_reboots=max_concurrent,
    )


def repair_settings(need_drain: bool, watch_seconds: int | None) -> Repair:
    step = RepairStep(
        repair_command=("repair",), need_drain=need_drain, watch_seconds=watch_seconds
    )
    operation = RepairOperation(
        operation=REPAIR_OPERATION,
        repair_steps=(step, attrs.evolve(step, need_drain=False)),
        health_check_command=("health-check",),
    )
    return Repair(
        repair_procedures=(
            RepairProcedure(machine_types=(MACHINE_TYPE,), repair_operations=(operation,)),
        ),
        max_concurrent_repairs=2,
    )


@attrs.frozen
class SpecChange:
    """What an operator changed in cluster.yml (and the engine's settings)."""

    extra_args: tuple[str, ...] = ()
    in_place_update: bool | None = None
    proxy_disable: bool = False
    taint_control_plane: bool | None = None
    labels: tuple[int, ...] = ()
    boot_taints: bool = False
    new_images: tuple[str, ...] = ()
    max_concurrent_updates: int = 10
    reboot: Reboot | None = None
    repair: Repair | None = None
    membership: str = ""  # "", "demote", "promote", "remove", "add"
    member_index: int = 0

    def apply(self, cluster: Cluster) -> tuple[Cluster, EngineSettings]:
        options = cluster.options
        for component in self.extra_args:
            options = _with_extra_arg(options, component)
        kubelet = options.kubelet
        if self.in_place_update is not None:
            kubelet = attrs.evolve(kubelet, in_place_update=self.in_place_update)
        if self.boot_taints:
            kubelet = attrs.evolve(
                kubelet, boot_taints=(*kubelet.boot_taints, Taint("cke.test/new", "x", "NoExecute"))
            )
        options = attrs.evolve(options, kubelet=kubelet)
        if self.proxy_disable:
            options = attrs.evolve(
                options, kube_proxy=attrs.evolve(options.kube_proxy, disable=True)
            )
        nodes = list(cluster.nodes)
        for i in self.labels:
            if i < len(nodes):
                node = nodes[i]
                nodes[i] = attrs.evolve(node, labels=node.labels.set("cke.test/changed", "yes"))
        nodes = self._membership(nodes)
        changed = attrs.evolve(cluster, nodes=tuple(nodes), options=options)
        if self.taint_control_plane is not None:
            changed = attrs.evolve(changed, taint_control_plane=self.taint_control_plane)
        if self.reboot is not None:
            changed = attrs.evolve(changed, reboot=self.reboot)
        if self.repair is not None:
            changed = attrs.evolve(changed, repair=self.repair)
        images = Images()
        for name in self.new_images:
            images = attrs.evolve(images, **{name: getattr(images, name) + "-next"})
        return changed, EngineSettings(
            max_concurrent_updates=self.max_concurrent_updates, images=images
        )

    def _membership(self, nodes: list[Node]) -> list[Node]:
        cps = [i for i, n in enumerate(nodes) if n.control_plane]
        workers = [i for i, n in enumerate(nodes) if not n.control_plane]
        if self.membership == "demote" and len(cps) >= 2:
            i = cps[self.member_index % len(cps)]
            nodes[i] = attrs.evolve(nodes[i], control_plane=False)
        elif self.membership == "promote" and workers:
            i = workers[self.member_index % len(workers)]
            nodes[i] = attrs.evolve(nodes[i], control_plane=True)
        elif self.membership == "remove" and len(nodes) >= 2:
            i = self.member_index % len(nodes)
            if not nodes[i].control_plane or len(cps) >= 2:
                del nodes[i]
        elif self.membership == "add":
            used = {n.address for n in nodes}
            new = next(address(i) for i in range(len(nodes) + 1) if address(i) not in used)
            nodes.append(Node(address=new))
        return nodes


@st.composite
def option_changes(draw: st.DrawFn, node_count: int) -> SpecChange:
    """Changes of options, labels, images and settings (no membership change)."""

    def sometimes(strategy: st.SearchStrategy[Any], default: Any) -> Any:
        return draw(st.one_of(st.just(default), strategy))

    return SpecChange(
        extra_args=sometimes(
            st.lists(st.sampled_from(_EXTRA_ARG_COMPONENTS), max_size=3, unique=True).map(tuple),
            (),
        ),
        in_place_update=sometimes(st.booleans(), None),
        proxy_disable=sometimes(st.booleans(), False),
        taint_control_plane=sometimes(st.booleans(), None),
        labels=sometimes(
            st.lists(st.integers(0, max(node_count - 1, 0)), max_size=3, unique=True).map(tuple),
            (),
        ),
        boot_taints=sometimes(st.booleans(), False),
        new_images=sometimes(
            st.lists(st.sampled_from(["etcd", "kubernetes", "tools"]), max_size=2, unique=True).map(
                tuple
            ),
            (),
        ),
        max_concurrent_updates=draw(st.integers(1, 10)),
    )


def queue_settings() -> st.SearchStrategy[tuple[Reboot | None, Repair | None]]:
    reboot = st.one_of(st.none(), st.integers(1, 3).map(reboot_settings))
    repair = st.one_of(
        st.none(), st.builds(repair_settings, st.booleans(), st.sampled_from([None, 0, 60]))
    )
    return st.tuples(reboot, repair)


def membership_changes() -> st.SearchStrategy[tuple[str, int]]:
    kinds = ["demote", "demote", "promote", "remove", "remove", "add"]
    return st.tuples(st.sampled_from(kinds), st.integers(0, 12))


# ---------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------

CONTAINERS: Final = rc.CONTAINERS


@attrs.frozen
class Faults:
    """Faults injected into a reachable status (by cluster.yml node index)."""

    unreachable: tuple[int, ...] = ()
    stopped: tuple[tuple[int, str], ...] = ()
    apiserver_unhealthy: tuple[int, ...] = ()
    etcd_out_of_sync: tuple[int, ...] = ()
    etcd_unhealthy: bool = False
    config_version_1: bool = False
    cordoned: tuple[int, ...] = ()
    reboot_queue: RebootQueueStatus | None = None
    repair_queue: RepairQueueStatus | None = None

    @property
    def physical(self) -> bool:
        return bool(self.unreachable or self.stopped)

    def __repr__(self) -> str:
        fields = attrs.asdict(self, recurse=False)
        shown = {k: v for k, v in fields.items() if v not in ((), False, None)}
        return "Faults(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


#: Queued entries are the common case; the others each get a fair share.
_REBOOT_STATUSES: Final = (
    RebootStatus.QUEUED,
    RebootStatus.QUEUED,
    RebootStatus.QUEUED,
    RebootStatus.DRAINING,
    RebootStatus.REBOOTING,
    RebootStatus.CANCELLED,
)


def _reboot_entries(
    draw: st.DrawFn, addresses: Sequence[str], now: datetime.datetime
) -> RebootQueueStatus:
    count = draw(st.integers(1, 5))
    entries: list[RebootQueueEntry] = []
    for index in range(1, count + 1):
        node = draw(st.sampled_from([*addresses, "10.9.9.9"]))
        status = draw(st.sampled_from(_REBOOT_STATUSES))
        ltt = now - datetime.timedelta(seconds=draw(st.integers(0, 1200)))
        backoff = draw(st.sampled_from([None, -600, -1, 0, 1, 600]))
        entries.append(
            RebootQueueEntry(
                index=index,
                node=node,
                status=status,
                last_transition_time=ltt,
                drain_backoff_count=0 if backoff is None else draw(st.integers(1, 3)),
                drain_backoff_expire=ZERO_TIME
                if backoff is None
                else now + datetime.timedelta(seconds=backoff),
            )
        )
    draining = [e.index for e in entries if e.status is RebootStatus.DRAINING]
    rebooting = [e.index for e in entries if e.status is RebootStatus.REBOOTING]
    return RebootQueueStatus(
        enabled=draw(st.sampled_from([True, True, False])),
        entries=tuple(entries),
        drain_completed=tuple(i for i in draining if draw(st.booleans())),
        reboot_dequeued=tuple(i for i in rebooting if draw(st.booleans())),
        reboot_cancelled=tuple(e.index for e in entries if e.status is RebootStatus.CANCELLED),
    )


def _repair_entries(
    draw: st.DrawFn, addresses: Sequence[str], now: datetime.datetime
) -> RepairQueueStatus:
    count = draw(st.integers(1, 4))
    entries: list[RepairQueueEntry] = []
    for index in range(1, count + 1):
        addr = draw(st.sampled_from([*addresses, "10.9.9.8"]))
        status = draw(st.sampled_from(list(RepairStatus)))
        expire = now + datetime.timedelta(seconds=draw(st.sampled_from([-300, 0, 300])))
        entries.append(
            RepairQueueEntry(
                index=index,
                address=addr,
                machine_type=draw(st.sampled_from([MACHINE_TYPE, MACHINE_TYPE, "unknown"])),
                operation=draw(st.sampled_from([REPAIR_OPERATION, REPAIR_OPERATION, "other"])),
                status=status,
                # A queued entry has not started: step 0, waiting (§F.2).
                step=0 if status is RepairStatus.QUEUED else draw(st.integers(0, 2)),
                step_status=RepairStepStatus.WAITING
                if status is RepairStatus.QUEUED
                else draw(st.sampled_from(list(RepairStepStatus))),
                deleted=draw(st.sampled_from([False, False, False, True])),
                last_transition_time=now - datetime.timedelta(seconds=draw(st.integers(0, 1200))),
                drain_backoff_count=draw(st.integers(0, 2)),
                drain_backoff_expire=expire,
            )
        )
    unfinished = [e.address for e in entries if not e.is_finished]
    draining = [
        e.address for e in entries if e.is_processing and e.step_status is RepairStepStatus.DRAINING
    ]
    return RepairQueueStatus(
        enabled=draw(st.sampled_from([True, True, False])),
        entries=tuple(entries),
        repair_completed=FrozenDict({a: True for a in unfinished if draw(st.booleans())}),
        drain_completed=FrozenDict({a: True for a in draining if draw(st.booleans())}),
    )


def _indices(draw: st.DrawFn, n: int, max_size: int = 2) -> tuple[int, ...]:
    if not n:
        return ()
    picked = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=max_size, unique=True))
    return tuple(picked)


@st.composite
def queue_faults(
    draw: st.DrawFn, cluster: Cluster, now: datetime.datetime, *, reboots: bool = False
) -> Faults:
    """Reboot and repair queue entries in any state, and Nodes left cordoned."""
    addresses = [node.address for node in cluster.nodes]
    # With ``reboots`` the reboot queue is the point: the rest is rarer.
    rarely = st.sampled_from([True, False, False, False]) if reboots else st.booleans()
    reboot = _reboot_entries(draw, addresses, now) if reboots or draw(st.booleans()) else None
    repair = _repair_entries(draw, addresses, now) if draw(rarely) else None
    cordoned = _indices(draw, len(addresses)) if draw(rarely) else ()
    unreachable = _indices(draw, len(addresses)) if reboots and draw(rarely) else ()
    return Faults(
        unreachable=unreachable, cordoned=cordoned, reboot_queue=reboot, repair_queue=repair
    )


@st.composite
def node_faults(draw: st.DrawFn, cluster: Cluster) -> Faults:
    """Unreachable nodes and stopped containers."""
    n = len(cluster.nodes)
    stopped: tuple[tuple[int, str], ...] = ()
    unreachable: tuple[int, ...] = ()
    if draw(st.booleans()):
        unreachable = _indices(draw, n)
    if not unreachable or draw(st.booleans()):
        stopped = tuple(
            draw(
                st.lists(
                    st.tuples(st.integers(0, n - 1), st.sampled_from(CONTAINERS)),
                    min_size=1,
                    max_size=3,
                    unique=True,
                )
            )
        )
    return Faults(unreachable=unreachable, stopped=stopped)


@st.composite
def health_faults(draw: st.DrawFn, cluster: Cluster) -> Faults:
    """What observation reports wrong although containers run."""
    n = len(cluster.nodes)
    kind = draw(st.sampled_from(["apiserver", "etcd-sync", "etcd-health", "all"]))
    return Faults(
        apiserver_unhealthy=_indices(draw, n) if kind in ("apiserver", "all") else (),
        etcd_out_of_sync=_indices(draw, n) if kind in ("etcd-sync", "all") else (),
        etcd_unhealthy=kind in ("etcd-health", "all") and draw(st.booleans()),
    )


def merge(*parts: Faults) -> Faults:
    """All the faults of ``parts`` (the later queue statuses win)."""
    merged = Faults()
    for part in parts:
        merged = Faults(
            unreachable=tuple(dict.fromkeys(merged.unreachable + part.unreachable)),
            stopped=tuple(dict.fromkeys(merged.stopped + part.stopped)),
            apiserver_unhealthy=merged.apiserver_unhealthy + part.apiserver_unhealthy,
            etcd_out_of_sync=merged.etcd_out_of_sync + part.etcd_out_of_sync,
            etcd_unhealthy=merged.etcd_unhealthy or part.etcd_unhealthy,
            config_version_1=merged.config_version_1 or part.config_version_1,
            cordoned=merged.cordoned + part.cordoned,
            reboot_queue=part.reboot_queue or merged.reboot_queue,
            repair_queue=part.repair_queue or merged.repair_queue,
        )
    return merged


def inject(status: ClusterStatus, cluster: Cluster, f: Faults) -> ClusterStatus:
    """``status`` with the faults ``f`` (node indices refer to ``cluster.nodes``).

    Containers stop and nodes go down first; health is then observed again;
    the observed-health faults, the configuration version and the queues
    come last, as observation would report them.
    """
    nodes = cluster.nodes

    def addr(i: int) -> str:
        return nodes[i].address

    for i, container in f.stopped:
        if addr(i) in status.nodes and status.nodes[addr(i)].ssh_connected:
            status = stop_container(status, cluster, addr(i), container)
    if f.unreachable:
        down = {addr(i) for i in f.unreachable}
        status = attrs.evolve(
            status,
            nodes=FrozenDict(
                {a: NodeStatus() if a in down else st_ for a, st_ in status.nodes.items()}
            ),
        )
    if f.physical:
        status = health(status, cluster)
    node_statuses = dict(status.nodes)
    for i in f.apiserver_unhealthy:
        current = node_statuses.get(addr(i))
        if current is not None:
            node_statuses[addr(i)] = attrs.evolve(
                current, api_server=attrs.evolve(current.api_server, is_healthy=False)
            )
    etcd = status.etcd
    if f.etcd_out_of_sync:
        out = {addr(i) for i in f.etcd_out_of_sync}
        etcd = attrs.evolve(
            etcd,
            in_sync_members=FrozenDict(
                {k: v and k not in out for k, v in etcd.in_sync_members.items()}
            ),
        )
    if f.etcd_unhealthy:
        etcd = attrs.evolve(etcd, is_healthy=False)
    kubernetes = status.kubernetes
    if f.cordoned:
        names = {nodes[i].nodename for i in f.cordoned}
        kubernetes = attrs.evolve(
            kubernetes,
            nodes=tuple(
                attrs.evolve(
                    k,
                    unschedulable=True,
                    annotations=k.annotations.set(REBOOT_ANNOTATION, "true"),
                )
                if k.name in names
                else k
                for k in kubernetes.nodes
            ),
        )
    return attrs.evolve(
        status,
        config_version="1" if f.config_version_1 else status.config_version,
        nodes=FrozenDict(node_statuses),
        etcd=etcd,
        kubernetes=kubernetes,
        reboot_queue=f.reboot_queue or status.reboot_queue,
        repair_queue=f.repair_queue or status.repair_queue,
    )


def with_new_nodes(status: ClusterStatus, cluster: Cluster) -> ClusterStatus:
    """Nodes added to cluster.yml are observed: reachable, nothing running yet."""
    new = {n.address: NodeStatus(ssh_connected=True) for n in cluster.nodes}
    if new.keys() <= status.nodes.keys():
        return status
    return attrs.evolve(status, nodes=FrozenDict({**new, **status.nodes}))


def clear_faults(status: ClusterStatus, before: ClusterStatus, cluster: Cluster) -> ClusterStatus:
    """Undo the transient faults: unreachable nodes come back as they were, and health
    is observed again. Stopped containers, queue entries and cordons stay: the engine
    has to deal with them."""
    nodes = {
        a: before.nodes.get(a, st_) if not st_.ssh_connected else st_
        for a, st_ in status.nodes.items()
    }
    return health(attrs.evolve(status, nodes=FrozenDict(nodes)), cluster)


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------

#: What a scenario changes or breaks. One focus at a time reaches the later
#: steps of the decision; "mixed" combines everything.
FOCI: Final = (
    "none",
    "nodes",
    "nodes",
    "health",
    "health",
    "queues",
    "queues",
    "options",
    "options",
    "membership",
    "membership",
    "membership+nodes",
    "membership+nodes",
    "membership+nodes",
    "upgrade",
    "mixed",
    "mixed",
)
#: Where a scenario may stop simulating after a spec change: just before the
#: first decision of one of these phases.
AFTER_CHANGE_PHASES: Final = (
    Phase.K8S_START,
    Phase.ETCD_MAINTAIN,
    Phase.ETCD_MAINTAIN,
    Phase.K8S_MAINTAIN,
    Phase.STOP_CP,
)


@attrs.frozen(repr=False)
class Scenario:
    """Decision inputs plus how they were made. ``base`` is the status before the
    faults (after the spec change and the steps simulated after it)."""

    inputs: DecisionInputs
    base: ClusterStatus
    description: str

    def __repr__(self) -> str:
        return f"Scenario({self.description})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        """Hypothesis prints attrs classes field by field; the description is enough."""
        p.text(repr(self))


@st.composite
def base_specs(draw: st.DrawFn) -> Cluster:
    return base_cluster(
        control_planes=draw(st.integers(1, 5)),
        workers=draw(st.integers(0, 8)),
        interleaved=draw(st.booleans()),
        variant=draw(st.booleans()),
    )


def make_scenario(
    cluster: Cluster,
    *,
    steps: int = MAX_TRAJECTORY,
    change: SpecChange = SpecChange(),
    after: int = 0,
    until: Phase | None = None,
    faults: Faults = Faults(),
    now: datetime.datetime = BASE_TIME,
    seed: int = 0,
    max_unreachable: int = 0,
    focus: str = "explicit",
) -> Scenario:
    """Simulate ``cluster`` from empty for ``steps`` decisions, apply ``change``,
    simulate ``after`` more decisions (or until the next one has phase
    ``until``), then inject ``faults`` (node indices of the changed cluster)."""
    base = reachable(cluster, steps)
    changed, settings = change.apply(cluster)
    base = with_new_nodes(base, changed)
    if after or until is not None:
        key = (cluster, steps, changed, settings)
        base = advance(key, base, changed, settings, after, until)
    status = inject(base, changed, faults)
    inputs = DecisionInputs(
        cluster=changed,
        status=status,
        constraints=Constraints(
            control_plane_count=len(changed.control_planes),
            maximum_unreachable_nodes_for_reboot=max_unreachable,
        ),
        settings=settings,
        now=now,
        seed=seed,
    )
    cps = sum(n.control_plane for n in cluster.nodes)
    description = (
        f"focus={focus}, {cps} CPs + {len(cluster.nodes) - cps} workers, "
        f"variant={cluster.options != Options()}, step {steps}, {change}, "
        f"{after} steps after the change (or until {until}), {faults}"
    )
    return Scenario(inputs, base, description)


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    converged: bool | None = None,
    queues_enabled: bool | None = None,
    reboots: bool = False,
) -> Scenario:
    """A reachable status, an operator's change, and faults; ``now`` and ``seed``.

    ``converged``: start from the end of the bootstrap trajectory (True), from
    any step (False), or mostly from the end (None). ``reboots``: reboot
    settings and a reboot queue are always present.
    """
    cluster = draw(base_specs())
    focus = "queues" if reboots else draw(st.sampled_from(FOCI))
    if converged is None:
        converged = reboots or draw(st.sampled_from([True, True, False]))
    steps = MAX_TRAJECTORY if converged else draw(st.integers(0, 15))
    now = BASE_TIME + datetime.timedelta(seconds=draw(st.integers(0, 3600)))

    change = SpecChange()
    if focus in ("options", "mixed"):
        change = draw(option_changes(len(cluster.nodes)))
    if focus.startswith("membership") or (focus == "mixed" and draw(st.booleans())):
        membership, index = draw(membership_changes())
        change = attrs.evolve(change, membership=membership, member_index=index)
    if focus in ("queues", "mixed"):
        reboot, repair = draw(queue_settings())
        if reboots and reboot is None:
            reboot = reboot_settings(draw(st.integers(1, 3)))
        change = attrs.evolve(change, reboot=reboot, repair=repair)
    changed, _ = change.apply(cluster)
    after, until = 0, None
    if change.membership or change.extra_args or change.new_images:
        # Let the engine work on the change for a while.
        after = draw(st.integers(0, 12))
        until = draw(st.sampled_from([None, *AFTER_CHANGE_PHASES]))

    parts: list[Faults] = []
    if focus in ("nodes", "mixed"):
        parts.append(draw(node_faults(changed)))
    if focus == "membership+nodes":
        # The node whose role changed, or another one, goes down mid-change.
        roles = {n.address: n.control_plane for n in cluster.nodes}
        touched = [
            i for i, n in enumerate(changed.nodes) if roles.get(n.address) != n.control_plane
        ]
        down = _indices(draw, len(changed.nodes), 1)
        take_touched: bool = draw(st.booleans())
        if touched and take_touched:
            down = (touched[0],)
        parts.append(Faults(unreachable=down))
    if focus in ("health", "mixed"):
        parts.append(draw(health_faults(changed)))
    if focus in ("queues", "mixed"):
        parts.append(draw(queue_faults(changed, now, reboots=reboots)))
    if focus == "upgrade" or (focus == "mixed" and draw(st.sampled_from([False, False, True]))):
        parts.append(Faults(config_version_1=True))
    f = merge(*parts)
    if queues_enabled is not None:
        f = attrs.evolve(
            f,
            reboot_queue=f.reboot_queue and attrs.evolve(f.reboot_queue, enabled=queues_enabled),
            repair_queue=f.repair_queue and attrs.evolve(f.repair_queue, enabled=queues_enabled),
        )
    return make_scenario(
        cluster,
        steps=steps,
        change=change,
        after=after,
        until=until,
        faults=f,
        now=now,
        seed=draw(st.integers(0, 2**32)),
        max_unreachable=draw(st.integers(0, 2)),
        focus=focus,
    )


@st.composite
def fresh_clusters(draw: st.DrawFn) -> tuple[Cluster, EngineSettings, str]:
    """A spec (base plus operator options and queue settings) to bootstrap from nothing."""
    cluster = draw(base_specs())
    change = draw(option_changes(len(cluster.nodes)))
    reboot, repair = draw(queue_settings())
    changed, settings = attrs.evolve(change, reboot=reboot, repair=repair).apply(cluster)
    return changed, settings, draw(st.sampled_from(["1", "2"]))
