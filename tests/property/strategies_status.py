"""Hypothesis strategies for the observed cluster status (``cke_core.status``).

Reusable by any test that needs statuses: ``cluster_statuses()`` draws a whole
``ClusterStatus``; the smaller strategies draw its parts. Sizes are kept small
so that a property runs its examples in a few seconds. Every value drawn is
valid for ``status_from_json``: queue indices are unique and the reboot
queue's index lists only name drawn entries.
"""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import strategies as st

from cke_core.cluster import Mount, ServiceParams, Taint
from cke_core.frozen import FrozenDict, freeze
from cke_core.queues import (
    UTC,
    RebootQueueEntry,
    RebootStatus,
    RepairQueueEntry,
    RepairStatus,
    RepairStepStatus,
)
from cke_core.status import (
    ClusterDNSStatus,
    ClusterStatus,
    ConfigMap,
    EndpointPort,
    Endpoints,
    EndpointSlice,
    EndpointSliceEndpoint,
    EndpointSubset,
    EtcdClusterStatus,
    EtcdMember,
    EtcdStatus,
    KubeComponentStatus,
    KubeletStatus,
    KubernetesNode,
    KubernetesStatus,
    NodeDNSStatus,
    NodeStatus,
    ProxyStatus,
    RebootQueueStatus,
    RepairQueueStatus,
    ResourceStatus,
    SchedulerStatus,
    Service,
    ServicePort,
    ServiceStatus,
)

MAX_ITEMS = 3

# Printable ASCII plus a few characters that JSON must escape or encode.
_ALPHABET = st.sampled_from('abcz019-_./:="\\ é\u2603')


def texts(max_size: int = 8) -> st.SearchStrategy[str]:
    return st.text(_ALPHABET, max_size=max_size)


def addresses() -> st.SearchStrategy[str]:
    return st.builds(
        "10.{}.{}.{}".format,
        st.integers(0, 255),
        st.integers(0, 255),
        st.integers(0, 255),
    )


def small_lists(elements: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(elements, max_size=MAX_ITEMS).map(tuple)


def string_maps(values: st.SearchStrategy[Any]) -> st.SearchStrategy[FrozenDict[str, Any]]:
    return st.dictionaries(texts(), values, max_size=MAX_ITEMS).map(FrozenDict)


def utc_datetimes() -> st.SearchStrategy[datetime.datetime]:
    """Any UTC instant Python can hold, to the microsecond, including Go's zero time."""
    return st.datetimes(
        min_value=datetime.datetime(1, 1, 1),
        max_value=datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
        timezones=st.just(UTC),
    )


def json_values() -> st.SearchStrategy[Any]:
    """JSON scalars and small nested documents (as frozen values)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64)
        | st.floats(allow_nan=False, allow_infinity=False)
        | texts()
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=MAX_ITEMS)
            | st.dictionaries(texts(), inner, max_size=MAX_ITEMS)
        ),
        max_leaves=8,
    ).map(freeze)


def config_documents() -> st.SearchStrategy[FrozenDict[str, Any] | None]:
    """An on-node configuration document (kubelet, scheduler, proxy) or None."""
    return st.none() | st.dictionaries(texts(), json_values(), max_size=MAX_ITEMS).map(freeze)


def service_params() -> st.SearchStrategy[ServiceParams]:
    mounts = st.builds(
        Mount,
        source=texts(),
        destination=texts(),
        read_only=st.booleans(),
        propagation=st.sampled_from(["", "rprivate", "shared"]),
        selinux_label=st.sampled_from(["", "z", "Z"]),
    )
    return st.builds(
        ServiceParams,
        extra_args=small_lists(texts()),
        extra_binds=small_lists(mounts),
        extra_env=string_maps(texts()),
    )


def _service_fields() -> dict[str, st.SearchStrategy[Any]]:
    return {
        "running": st.booleans(),
        "image": texts(),
        "builtin_params": service_params(),
        "extra_params": service_params(),
    }


def service_statuses() -> st.SearchStrategy[ServiceStatus]:
    return st.builds(ServiceStatus, **_service_fields())


def etcd_statuses() -> st.SearchStrategy[EtcdStatus]:
    return st.builds(
        EtcdStatus, has_data=st.booleans(), is_added_member=st.booleans(), **_service_fields()
    )


def kube_component_statuses() -> st.SearchStrategy[KubeComponentStatus]:
    return st.builds(KubeComponentStatus, is_healthy=st.booleans(), **_service_fields())


def _configured(cls: Any) -> st.SearchStrategy[Any]:
    return st.builds(cls, is_healthy=st.booleans(), config=config_documents(), **_service_fields())


def node_statuses() -> st.SearchStrategy[NodeStatus]:
    return st.one_of(
        st.just(NodeStatus()),  # SSH-unreachable: everything zero
        st.builds(
            NodeStatus,
            ssh_connected=st.just(True),
            etcd=etcd_statuses(),
            rivers=service_statuses(),
            etcd_rivers=service_statuses(),
            api_server=kube_component_statuses(),
            controller_manager=kube_component_statuses(),
            scheduler=_configured(SchedulerStatus),
            proxy=_configured(ProxyStatus),
            kubelet=_configured(KubeletStatus),
        ),
    )


def etcd_cluster_statuses() -> st.SearchStrategy[EtcdClusterStatus]:
    urls = small_lists(addresses().map("https://{}:2380".format))
    members = st.builds(
        EtcdMember,
        id=st.integers(0, 2**64 - 1),
        name=texts(),
        peer_urls=urls,
        client_urls=urls,
    )
    return st.builds(
        EtcdClusterStatus,
        is_healthy=st.booleans(),
        members=string_maps(members),
        in_sync_members=string_maps(st.booleans()),
    )


def _ports(cls: Any) -> st.SearchStrategy[Any]:
    return st.builds(
        cls,
        name=st.sampled_from(["", "https", "dns"]),
        protocol=st.sampled_from(["", "TCP", "UDP"]),
        port=st.integers(0, 65535),
    )


def config_maps() -> st.SearchStrategy[ConfigMap]:
    return st.builds(ConfigMap, name=texts(), namespace=texts(), data=string_maps(texts(40)))


def services() -> st.SearchStrategy[Service]:
    return st.builds(
        Service,
        name=texts(),
        namespace=texts(),
        type=st.sampled_from(["", "ClusterIP", "NodePort"]),
        cluster_ip=st.sampled_from(["", "None"]) | addresses(),
        ports=small_lists(_ports(ServicePort)),
    )


def endpoints() -> st.SearchStrategy[Endpoints]:
    subsets = st.builds(
        EndpointSubset,
        addresses=small_lists(addresses()),
        not_ready_addresses=small_lists(addresses()),
        ports=small_lists(_ports(EndpointPort)),
    )
    return st.builds(
        Endpoints,
        name=texts(),
        namespace=texts(),
        labels=string_maps(texts()),
        subsets=small_lists(subsets),
    )


def endpoint_slices() -> st.SearchStrategy[EndpointSlice]:
    slice_endpoints = st.builds(
        EndpointSliceEndpoint,
        addresses=small_lists(addresses()),
        ready=st.none() | st.booleans(),
    )
    return st.builds(
        EndpointSlice,
        name=texts(),
        namespace=texts(),
        labels=string_maps(texts()),
        address_type=st.sampled_from(["", "IPv4", "IPv6"]),
        endpoints=small_lists(slice_endpoints),
        ports=small_lists(_ports(EndpointPort)),
    )


def kubernetes_nodes() -> st.SearchStrategy[KubernetesNode]:
    taints = st.builds(
        Taint,
        key=texts(),
        value=texts(),
        effect=st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
    )
    return st.builds(
        KubernetesNode,
        name=texts(),
        labels=string_maps(texts()),
        annotations=string_maps(texts()),
        taints=small_lists(taints),
        unschedulable=st.booleans(),
        ready=st.booleans(),
        deleting=st.booleans(),
        volumes_in_use=small_lists(texts()),
    )


def kubernetes_statuses() -> st.SearchStrategy[KubernetesStatus]:
    return st.builds(
        KubernetesStatus,
        is_control_plane_ready=st.booleans(),
        nodes=small_lists(kubernetes_nodes()),
        dns_service=st.none() | services(),
        cluster_dns=st.builds(
            ClusterDNSStatus,
            config_map=st.none() | config_maps(),
            cluster_ip=st.just("") | addresses(),
        ),
        node_dns=st.builds(NodeDNSStatus, config_map=st.none() | config_maps()),
        master_endpoints=st.none() | endpoints(),
        master_endpoint_slice=st.none() | endpoint_slices(),
        etcd_service=st.none() | services(),
        etcd_endpoints=st.none() | endpoints(),
        etcd_endpoint_slice=st.none() | endpoint_slices(),
        resource_statuses=string_maps(
            st.builds(
                ResourceStatus,
                annotations=string_maps(texts()),
                has_been_ssa=st.booleans(),
            )
        ),
    )


def queue_indices() -> st.SearchStrategy[int]:
    return st.integers(0, 2**63 - 1)


def reboot_queue_entries() -> st.SearchStrategy[RebootQueueEntry]:
    return st.builds(
        RebootQueueEntry,
        index=queue_indices(),
        node=addresses(),
        status=st.sampled_from(RebootStatus),
        last_transition_time=utc_datetimes(),
        drain_backoff_count=st.integers(0, 100),
        drain_backoff_expire=utc_datetimes(),
    )


def repair_queue_entries() -> st.SearchStrategy[RepairQueueEntry]:
    return st.builds(
        RepairQueueEntry,
        index=queue_indices(),
        address=addresses(),
        nodename=texts(),
        serial=texts(),
        machine_type=texts(),
        operation=texts(),
        status=st.sampled_from(RepairStatus),
        step=st.integers(0, 10),
        step_status=st.sampled_from(RepairStepStatus),
        deleted=st.booleans(),
        last_transition_time=utc_datetimes(),
        drain_backoff_count=st.integers(0, 100),
        drain_backoff_expire=utc_datetimes(),
    )


@st.composite
def reboot_queue_statuses(draw: st.DrawFn) -> RebootQueueStatus:
    entries = draw(
        st.lists(reboot_queue_entries(), max_size=MAX_ITEMS, unique_by=lambda e: e.index)
    )
    indices = [e.index for e in entries]

    def subset() -> tuple[int, ...]:
        if not indices:
            return ()
        return tuple(draw(st.lists(st.sampled_from(indices), max_size=MAX_ITEMS, unique=True)))

    return RebootQueueStatus(
        enabled=draw(st.booleans()),
        entries=tuple(entries),
        next_candidates=subset(),
        drain_completed=subset(),
        drain_timedout=subset(),
        reboot_dequeued=subset(),
        reboot_cancelled=subset(),
    )


@st.composite
def repair_queue_statuses(draw: st.DrawFn) -> RepairQueueStatus:
    entries = draw(
        st.lists(repair_queue_entries(), max_size=MAX_ITEMS, unique_by=lambda e: e.index)
    )
    flags = st.dictionaries(
        st.sampled_from([e.address for e in entries]) if entries else addresses(),
        st.booleans(),
        max_size=MAX_ITEMS,
    ).map(FrozenDict)
    return RepairQueueStatus(
        enabled=draw(st.booleans()),
        entries=tuple(entries),
        repair_completed=draw(flags),
        drain_completed=draw(flags),
    )


def cluster_statuses() -> st.SearchStrategy[ClusterStatus]:
    return st.builds(
        ClusterStatus,
        config_version=st.sampled_from(["1", "2"]),
        nodes=st.dictionaries(addresses(), node_statuses(), max_size=MAX_ITEMS).map(FrozenDict),
        etcd=etcd_cluster_statuses(),
        kubernetes=kubernetes_statuses(),
        reboot_queue=reboot_queue_statuses(),
        repair_queue=repair_queue_statuses(),
    )
