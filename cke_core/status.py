"""The observed cluster status (§D) as frozen values, and its versioned JSON form.

Observation (an adapter) fills a ``ClusterStatus``; decisions (§B) read it and
nothing else about the live cluster. Recorded observations, replay and
``plan`` exchange it as JSON, so the JSON form is a documented, versioned
format: ``docs/status-json.md``.

Rules of the model, which are CKE's:

* Every field has a zero value, and a stage that was not observed leaves its
  part zero-valued (§D.2): no CP with ``is_added_member`` → etcd, Kubernetes
  and queues stay zero; no running apiserver → Kubernetes and queues stay
  zero, so ``reboot_queue.enabled`` is false. An SSH-unreachable node has
  ``ssh_connected=False`` and every other field zero (§D.1).
* Kubernetes objects CKE reads are kept as the small subsets its decisions
  compare (names, the fields CKE writes). ``None`` means the object does not
  exist (CKE's nil pointer), which is what makes CKE *create* it.
* Maps keyed by data: ``nodes`` by node address, ``etcd.members`` by member
  name (or the peer-URL host when the name is empty), ``resource_statuses`` by
  resource key (``Kind/namespace/name`` or ``Kind/name``), the repair queue's
  maps by address.
* The reboot queue's derived lists (``next_candidates``, ``drain_completed``
  ...) hold entry **indices**, each of which names an entry of
  ``reboot_queue.entries``; ``RebootQueueStatus.entries_at`` resolves them.

The JSON form is ``{"format": "cke-status", "version": 1, "status": {...}}``
with snake_case keys; ``status_to_json`` and ``status_from_json`` convert.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from operator import attrgetter
from typing import Any, Final, TypeVar

import attrs

from cke_core.cluster import Cluster, ConfigDocument, ServiceParams, Taint
from cke_core.codec import CONVERTER, describe, structure, unstructure
from cke_core.fields import mapping_field, tuple_field
from cke_core.frozen import FrozenDict
from cke_core.memo import trim
from cke_core.problems import ConfigError, Problem, join_path
from cke_core.queues import RebootQueueEntry, RepairQueueEntry

STATUS_FORMAT: Final = "cke-status"
STATUS_FORMAT_VERSION: Final = 1

#: ``config_version`` when the ``config-version`` key is absent (§D.2, §E.1).
DEFAULT_CONFIG_VERSION: Final = "1"

# ---------------------------------------------------------------------------
# Per node (§D.1)
# ---------------------------------------------------------------------------


@attrs.frozen
class ServiceStatus:
    """One container as ``docker inspect`` shows it; zero when not running."""

    running: bool = False
    image: str = ""
    builtin_params: ServiceParams = ServiceParams()
    extra_params: ServiceParams = ServiceParams()


@attrs.frozen
class EtcdStatus(ServiceStatus):
    """``has_data``: the etcd data volume exists; ``is_added_member``: and so does
    the ``etcd-added-member`` volume."""

    has_data: bool = False
    is_added_member: bool = False


@attrs.frozen
class KubeComponentStatus(ServiceStatus):
    """A component with a health check; ``is_healthy`` is only true when running."""

    is_healthy: bool = False


@attrs.frozen
class SchedulerStatus(KubeComponentStatus):
    """``config``: ``/etc/kubernetes/scheduler/config.yml`` on the node, TypeMeta
    removed; None when it was not read."""

    config: ConfigDocument | None = None


@attrs.frozen
class ProxyStatus(KubeComponentStatus):
    """``config``: ``/etc/kubernetes/proxy/config.yml`` on the node, TypeMeta removed."""

    config: ConfigDocument | None = None


@attrs.frozen
class KubeletStatus(KubeComponentStatus):
    """``config``: ``/etc/kubernetes/kubelet/config.yml`` on the node, TypeMeta removed
    (it carries ``containerRuntimeEndpoint``, the CRI endpoint)."""

    config: ConfigDocument | None = None


@attrs.frozen
class NodeStatus:
    """Everything observed on one node over SSH (§D.1)."""

    ssh_connected: bool = False
    etcd: EtcdStatus = EtcdStatus()
    rivers: ServiceStatus = ServiceStatus()
    etcd_rivers: ServiceStatus = ServiceStatus()
    api_server: KubeComponentStatus = KubeComponentStatus()
    controller_manager: KubeComponentStatus = KubeComponentStatus()
    scheduler: SchedulerStatus = SchedulerStatus()
    proxy: ProxyStatus = ProxyStatus()
    kubelet: KubeletStatus = KubeletStatus()


# ---------------------------------------------------------------------------
# etcd (§D.2 step 3)
# ---------------------------------------------------------------------------


@attrs.frozen
class EtcdMember:
    """A member of ``MemberList``. ``id`` is etcd's unsigned 64-bit member ID; an
    empty ``name`` means added but never started."""

    id: int = 0
    name: str = ""
    peer_urls: tuple[str, ...] = tuple_field()
    client_urls: tuple[str, ...] = tuple_field()


@attrs.frozen
class EtcdClusterStatus:
    is_healthy: bool = False
    members: FrozenDict[str, EtcdMember] = mapping_field()
    in_sync_members: FrozenDict[str, bool] = mapping_field()


# ---------------------------------------------------------------------------
# Kubernetes (§D.2 step 5): subsets of the objects CKE reads
# ---------------------------------------------------------------------------


@attrs.frozen
class KubernetesNode:
    """The parts of a ``v1.Node`` that decisions read.

    ``ready``: the ``Ready`` condition is ``True``. ``deleting``: the object has
    a deletion timestamp. ``volumes_in_use``: ``status.volumesInUse``.
    """

    name: str = ""
    labels: FrozenDict[str, str] = mapping_field()
    annotations: FrozenDict[str, str] = mapping_field()
    taints: tuple[Taint, ...] = tuple_field()
    unschedulable: bool = False
    ready: bool = False
    deleting: bool = False
    volumes_in_use: tuple[str, ...] = tuple_field()


@attrs.frozen
class ConfigMap:
    name: str = ""
    namespace: str = ""
    data: FrozenDict[str, str] = mapping_field()


@attrs.frozen
class ServicePort:
    name: str = ""
    protocol: str = ""
    port: int = 0


@attrs.frozen
class Service:
    """``type`` and ``cluster_ip`` are ``spec.type`` and ``spec.clusterIP``."""

    name: str = ""
    namespace: str = ""
    type: str = ""
    cluster_ip: str = ""
    ports: tuple[ServicePort, ...] = tuple_field()


@attrs.frozen
class EndpointPort:
    """A port of an Endpoints subset or of an EndpointSlice."""

    name: str = ""
    protocol: str = ""
    port: int = 0


@attrs.frozen
class EndpointSubset:
    """One subset of a ``v1.Endpoints``; addresses are the IPs."""

    addresses: tuple[str, ...] = tuple_field()
    not_ready_addresses: tuple[str, ...] = tuple_field()
    ports: tuple[EndpointPort, ...] = tuple_field()


@attrs.frozen
class Endpoints:
    name: str = ""
    namespace: str = ""
    labels: FrozenDict[str, str] = mapping_field()
    subsets: tuple[EndpointSubset, ...] = tuple_field()


@attrs.frozen
class EndpointSliceEndpoint:
    """``ready`` is ``conditions.ready``; None when the object leaves it unset."""

    addresses: tuple[str, ...] = tuple_field()
    ready: bool | None = None


@attrs.frozen
class EndpointSlice:
    name: str = ""
    namespace: str = ""
    labels: FrozenDict[str, str] = mapping_field()
    address_type: str = ""
    endpoints: tuple[EndpointSliceEndpoint, ...] = tuple_field()
    ports: tuple[EndpointPort, ...] = tuple_field()


@attrs.frozen
class ClusterDNSStatus:
    """ConfigMap ``kube-system/cluster-dns`` and the ClusterIP of Service ``cluster-dns``."""

    config_map: ConfigMap | None = None
    cluster_ip: str = ""


@attrs.frozen
class NodeDNSStatus:
    """ConfigMap ``kube-system/node-dns``."""

    config_map: ConfigMap | None = None


@attrs.frozen
class ResourceStatus:
    """A user or static resource as it is live: a copy of its annotations, and
    whether it has already been updated by server-side apply."""

    annotations: FrozenDict[str, str] = mapping_field()
    has_been_ssa: bool = False


@attrs.frozen
class KubernetesStatus:
    """What the first CP with a running apiserver reports (§D.2 step 5)."""

    is_control_plane_ready: bool = False
    nodes: tuple[KubernetesNode, ...] = tuple_field()
    dns_service: Service | None = None
    cluster_dns: ClusterDNSStatus = ClusterDNSStatus()
    node_dns: NodeDNSStatus = NodeDNSStatus()
    master_endpoints: Endpoints | None = None
    master_endpoint_slice: EndpointSlice | None = None
    etcd_service: Service | None = None
    etcd_endpoints: Endpoints | None = None
    etcd_endpoint_slice: EndpointSlice | None = None
    resource_statuses: FrozenDict[str, ResourceStatus] = mapping_field()

    def node_by_name(self) -> dict[str, KubernetesNode]:
        return {n.name: n for n in self.nodes}

    def is_ready(self, cluster: Cluster) -> bool:
        """CKE's ``IsReady``: control plane ready and more than half the nodes of
        cluster.yml have a Ready Node object (gates Deployments, §B.2.4)."""
        if not self.is_control_plane_ready or not cluster.nodes:
            return False
        ready: int = sum(map(_READY, self.nodes))
        return len(cluster.nodes) // 2 < ready


_READY: Final = attrgetter("ready")


# ---------------------------------------------------------------------------
# Queues (§D.2 steps 6 and 7, §F)
# ---------------------------------------------------------------------------


@attrs.frozen
class RebootQueueStatus:
    """The reboot queue as observed. The lists after ``entries`` hold entry
    indices (``RebootQueueEntry.index``), each naming one of ``entries``."""

    enabled: bool = False
    entries: tuple[RebootQueueEntry, ...] = tuple_field()
    next_candidates: tuple[int, ...] = tuple_field()
    drain_completed: tuple[int, ...] = tuple_field()
    drain_timedout: tuple[int, ...] = tuple_field()
    reboot_dequeued: tuple[int, ...] = tuple_field()
    reboot_cancelled: tuple[int, ...] = tuple_field()

    def entry_by_index(self) -> dict[int, RebootQueueEntry]:
        return {e.index: e for e in self.entries}

    def entries_at(self, indices: Iterable[int]) -> tuple[RebootQueueEntry, ...]:
        """The entries named by ``indices``, in that order; unknown indices are skipped."""
        by_index = self.entry_by_index()
        return tuple(by_index[i] for i in indices if i in by_index)


@attrs.frozen
class RepairQueueStatus:
    """The repair queue as observed; both maps are keyed by address."""

    enabled: bool = False
    entries: tuple[RepairQueueEntry, ...] = tuple_field()
    repair_completed: FrozenDict[str, bool] = mapping_field()
    drain_completed: FrozenDict[str, bool] = mapping_field()


# ---------------------------------------------------------------------------
# The whole status
# ---------------------------------------------------------------------------


@attrs.frozen
class ClusterStatus:
    """CKE's ``ClusterStatus``: everything one observation saw (§D)."""

    config_version: str = DEFAULT_CONFIG_VERSION
    nodes: FrozenDict[str, NodeStatus] = mapping_field()
    etcd: EtcdClusterStatus = EtcdClusterStatus()
    kubernetes: KubernetesStatus = KubernetesStatus()
    reboot_queue: RebootQueueStatus = RebootQueueStatus()
    repair_queue: RepairQueueStatus = RepairQueueStatus()

    def node(self, address: str) -> NodeStatus:
        """The status of the node at ``address``; zero (unreachable) if not observed."""
        return self.nodes.get(address, _ZERO_NODE)


_ZERO_NODE: Final = NodeStatus()

# ---------------------------------------------------------------------------
# Versioned JSON form (docs/status-json.md)
# ---------------------------------------------------------------------------

_ENVELOPE_KEYS: Final = ("format", "version", "status")
_REBOOT_INDEX_LISTS: Final = (
    "next_candidates",
    "drain_completed",
    "drain_timedout",
    "reboot_dequeued",
    "reboot_cancelled",
)


def status_to_json(status: ClusterStatus) -> dict[str, Any]:
    """The JSON document for ``status``: plain dicts, lists and scalars."""
    return {
        "format": STATUS_FORMAT,
        "version": STATUS_FORMAT_VERSION,
        "status": unstructure(status),
    }


def status_from_json(doc: Any) -> ClusterStatus:
    """Read a document written by ``status_to_json`` (after ``json.loads``).

    Raises ``ConfigError`` carrying every problem: an unknown format or
    version (named by its envelope field), then every structural problem of
    ``status`` and every dangling queue index, each named by its path.
    """
    if not isinstance(doc, Mapping):
        raise ConfigError(
            [Problem("", f"expected a {STATUS_FORMAT} document, got {describe(doc)}")]
        )
    problems = _envelope_problems(doc)
    if problems:
        raise ConfigError(problems)
    shared = _structure_sharing(doc["status"])
    if shared is not None:
        return shared
    value, found, _ = structure(doc["status"], ClusterStatus)
    problems = [Problem(_under_status(p.path), p.message, p.severity) for p in found]
    if value is not None:
        problems.extend(_reference_problems(value))
    if problems or value is None:
        raise ConfigError(problems or [Problem("status", "unusable status")])
    return value


# ---------------------------------------------------------------------------
# Shared values: the same node document gives the same object
# ---------------------------------------------------------------------------

#: Documents ``status_from_json`` remembers beyond those of the latest status,
#: per memo (nodes, Kubernetes Nodes); least recently used first out.
SHARED_MEMO_SLACK: Final = 1024

_T = TypeVar("_T")
_node_memo: dict[bytes, NodeStatus] = {}
_k8s_node_memo: dict[bytes, KubernetesNode] = {}


def clear_caches() -> None:
    """Forget the node documents ``status_from_json`` remembers (tests, benchmarks)."""
    _node_memo.clear()
    _k8s_node_memo.clear()


def _document_key(raw: Any) -> bytes:
    """A key naming ``raw`` exactly: the BLAKE2b-256 digest of its ``repr``.

    The ``repr`` tells apart every value ``json.loads`` produces (``1``,
    ``1.0``, ``true`` and ``"1"``; ``{"1": ...}`` and ``{1: ...}``; key order);
    the digest keeps the memo small (a worker's document is about 5 kB).
    """
    return hashlib.blake2b(repr(raw).encode("utf-8", "surrogatepass"), digest_size=32).digest()


def _shared(raw: Any, cls: type[_T], memo: dict[bytes, _T]) -> _T | None:
    """``raw`` structured as ``cls``, the same object for the same document.

    A remembered value is exactly what structuring ``raw`` gives (see
    ``_document_key``). None when ``raw`` has a problem: the caller then
    structures the whole status, which reports it.
    """
    key = _document_key(raw)
    value = memo.pop(key, None)
    if value is None:
        try:
            value = CONVERTER.structure(raw, cls)
        except Exception:  # reported by the full structuring
            return None
    memo[key] = value  # the most recently used last
    return value


def _structure_sharing(raw: Any) -> ClusterStatus | None:
    """``structure(raw, ClusterStatus)`` for a well-formed status, each node and
    each Kubernetes Node structured once per distinct document (``_shared``);
    None when anything is unusual, for the caller to structure it all.

    A daemon observes mostly unchanged nodes: their statuses are then the
    same objects from one observation to the next, which makes the parsing
    cheap and lets ``decide`` reuse what it worked out about them
    (``cke_core.nodefilter``). Statuses are immutable, so sharing is invisible.
    Each memo keeps the documents of the latest status and at most
    ``SHARED_MEMO_SLACK`` others.
    """
    if type(raw) is not dict:
        return None
    rest = dict(raw)
    nodes_raw = rest.pop("nodes", {})
    if type(nodes_raw) is not dict:
        return None
    k8s_raw = rest.get("kubernetes")
    k8s_items = k8s_raw.get("nodes") if type(k8s_raw) is dict else None
    k8s_nodes: tuple[KubernetesNode, ...] | None = None
    try:
        nodes = _shared_nodes(nodes_raw)
        if nodes is None:
            return None
        if type(k8s_raw) is dict and type(k8s_items) is list:
            k8s_nodes = _shared_k8s_nodes(k8s_items)
            if k8s_nodes is None:
                return None
            rest["kubernetes"] = {k: v for k, v in k8s_raw.items() if k != "nodes"}
    finally:
        trim(_node_memo, len(nodes_raw) + SHARED_MEMO_SLACK)
        count = len(k8s_items) if type(k8s_items) is list else 0
        trim(_k8s_node_memo, count + SHARED_MEMO_SLACK)
    try:
        value = CONVERTER.structure(rest, ClusterStatus)
    except Exception:  # reported by the full structuring
        return None
    if k8s_nodes is not None:
        value = attrs.evolve(value, kubernetes=attrs.evolve(value.kubernetes, nodes=k8s_nodes))
    value = attrs.evolve(value, nodes=FrozenDict(nodes))
    if _reference_problems(value):
        return None
    return value


def _shared_nodes(nodes_raw: dict[Any, Any]) -> dict[str, NodeStatus] | None:
    nodes: dict[str, NodeStatus] = {}
    for address, node_raw in nodes_raw.items():
        if type(address) is not str or type(node_raw) is not dict:
            return None
        node = _shared(node_raw, NodeStatus, _node_memo)
        if node is None:
            return None
        nodes[address] = node
    return nodes


def _shared_k8s_nodes(items: list[Any]) -> tuple[KubernetesNode, ...] | None:
    k8s_nodes: list[KubernetesNode] = []
    for item in items:
        k8s_node = _shared(item, KubernetesNode, _k8s_node_memo) if type(item) is dict else None
        if k8s_node is None:
            return None
        k8s_nodes.append(k8s_node)
    return tuple(k8s_nodes)


def _envelope_problems(doc: Mapping[Any, Any]) -> list[Problem]:
    problems: list[Problem] = []
    fmt = doc.get("format")
    if fmt != STATUS_FORMAT:
        got = "nothing" if "format" not in doc else describe(fmt)
        problems.append(Problem("format", f"expected {STATUS_FORMAT!r}, got {got}"))
    version = doc.get("version")
    if "version" not in doc:
        problems.append(Problem("version", "missing; this reader understands version 1"))
    elif type(version) is not int or version != STATUS_FORMAT_VERSION:
        problems.append(
            Problem(
                "version",
                f"unsupported version {describe(version)}; this reader understands "
                f"version {STATUS_FORMAT_VERSION} only",
            )
        )
    if "status" not in doc:
        problems.append(Problem("status", "missing"))
    problems.extend(
        Problem(str(key), f"unknown field {key!r}; known fields: {', '.join(_ENVELOPE_KEYS)}")
        for key in doc
        if key not in _ENVELOPE_KEYS
    )
    return problems


def _duplicate_indices(queue: str, indices: list[int]) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[int] = set()
    for position, index in enumerate(indices):
        if index in seen:
            path = f"status.{queue}.entries[{position}].index"
            problems.append(Problem(path, f"duplicate entry index {index}"))
        seen.add(index)
    return problems


def _under_status(path: str) -> str:
    if not path:
        return "status"
    return "status" + path if path.startswith("[") else f"status.{path}"


def reference_problems(status: ClusterStatus) -> list[Problem]:
    """What ``status_from_json`` checks beyond the structure: queue indices
    must be unique and the reboot lists must name real entries."""
    return _reference_problems(status)


def _reference_problems(status: ClusterStatus) -> list[Problem]:
    """Queue indices must be unique and the reboot lists must name real entries."""
    problems = _duplicate_indices("reboot_queue", [e.index for e in status.reboot_queue.entries])
    problems += _duplicate_indices("repair_queue", [e.index for e in status.repair_queue.entries])
    known = {e.index for e in status.reboot_queue.entries}
    for name in _REBOOT_INDEX_LISTS:
        for position, index in enumerate(getattr(status.reboot_queue, name)):
            if index not in known:
                path = join_path(f"status.reboot_queue.{name}", position)
                problems.append(
                    Problem(path, f"index {index} is not the index of any reboot_queue entry")
                )
    return problems
