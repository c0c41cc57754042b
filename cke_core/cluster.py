"""The cluster specification: CKE's ``cluster.yml`` as frozen values.

Field names, nesting and defaults are CKE's (config version "2"), so an
operator's existing file loads unchanged. Every field has a default so that a
document with mistakes can still be structured and checked as a whole; what is
*required* is a validation rule (``cke_core.validation``), not a constructor
error. Defaults that CKE applies lazily through getters (``volume_name``,
``cri_endpoint``, reboot and repair timeouts ...) are applied here eagerly, so
the normalised configuration shows the values the engine will really use.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from cke_core.fields import defaulted_str, mapping_field, named, tuple_field
from cke_core.frozen import FrozenDict

DEFAULT_ETCD_VOLUME: Final = "etcd-cke"
DEFAULT_CRI_ENDPOINT: Final = "/run/containerd/containerd.sock"
DEFAULT_AUDIT_LOG_PATH: Final = "-"
DEFAULT_EVICTION_TIMEOUT_SECONDS: Final = 600
DEFAULT_REPAIR_COMMAND_TIMEOUT_SECONDS: Final = 30

TAINT_EFFECTS: Final = ("NoSchedule", "PreferNoSchedule", "NoExecute")
PROPAGATION_MODES: Final = ("", "private", "rprivate", "shared", "rshared", "slave", "rslave")
SELINUX_LABELS: Final = ("", "z", "Z")
PROXY_MODES: Final = ("", "userspace", "iptables", "ipvs")

#: A partial Kubernetes configuration document (kubelet, scheduler, proxy).
ConfigDocument = FrozenDict[str, Any]


@attrs.frozen
class Taint:
    """A Kubernetes taint, as on a Node or in ``boot_taints``."""

    key: str = ""
    value: str = ""
    effect: str = ""


@attrs.frozen
class Mount:
    """An extra bind mount; CKE compares only source, destination and read_only."""

    source: str = ""
    destination: str = ""
    read_only: bool = False
    propagation: str = ""
    selinux_label: str = ""

    def equivalent(self, other: Mount) -> bool:
        """CKE's equality for mounts: propagation and SELinux label do not count."""
        return (self.source, self.destination, self.read_only) == (
            other.source,
            other.destination,
            other.read_only,
        )


@attrs.frozen
class ServiceParams:
    """Extra parameters every component accepts; inlined into each component's options."""

    extra_args: tuple[str, ...] = tuple_field()
    extra_binds: tuple[Mount, ...] = tuple_field()
    extra_env: FrozenDict[str, str] = mapping_field()


@attrs.frozen
class EtcdParams(ServiceParams):
    volume_name: str = defaulted_str(DEFAULT_ETCD_VOLUME)


@attrs.frozen
class APIServerParams(ServiceParams):
    audit_log_enabled: bool = False
    audit_log_policy: str = ""
    audit_log_path: str = defaulted_str(DEFAULT_AUDIT_LOG_PATH)


@attrs.frozen
class SchedulerParams(ServiceParams):
    config: ConfigDocument | None = None


@attrs.frozen
class ProxyParams(ServiceParams):
    config: ConfigDocument | None = None
    disable: bool = False


@attrs.frozen
class CNIConfFile:
    """A CNI configuration file written into ``/etc/cni/net.d`` at kubelet bootstrap."""

    name: str = ""
    content: str = ""


@attrs.frozen
class KubeletParams(ServiceParams):
    boot_taints: tuple[Taint, ...] = tuple_field()
    cni_conf_file: CNIConfFile = CNIConfFile()
    config: ConfigDocument | None = None
    cri_endpoint: str = defaulted_str(DEFAULT_CRI_ENDPOINT)
    in_place_update: bool = False


@attrs.frozen
class Options:
    """Per-component options; the keys are CKE's (some hyphenated)."""

    etcd: EtcdParams = EtcdParams()
    rivers: ServiceParams = ServiceParams()
    etcd_rivers: ServiceParams = named("etcd-rivers", default=ServiceParams())
    kube_api: APIServerParams = named("kube-api", default=APIServerParams())
    kube_controller_manager: ServiceParams = named(
        "kube-controller-manager", default=ServiceParams()
    )
    kube_scheduler: SchedulerParams = named("kube-scheduler", default=SchedulerParams())
    kube_proxy: ProxyParams = named("kube-proxy", default=ProxyParams())
    kubelet: KubeletParams = KubeletParams()


@attrs.frozen
class LabelSelectorRequirement:
    key: str = ""
    operator: str = ""
    values: tuple[str, ...] = tuple_field()


@attrs.frozen
class LabelSelector:
    """A Kubernetes ``metav1.LabelSelector``."""

    match_labels: FrozenDict[str, str] = mapping_field("matchLabels")
    match_expressions: tuple[LabelSelectorRequirement, ...] = tuple_field("matchExpressions")

    @property
    def is_empty(self) -> bool:
        """An empty selector matches everything."""
        return not self.match_labels and not self.match_expressions


@attrs.frozen
class Reboot:
    """The reboot queue's settings (§A.4)."""

    reboot_command: tuple[str, ...] = tuple_field()
    boot_check_command: tuple[str, ...] = tuple_field()
    eviction_timeout_seconds: int = DEFAULT_EVICTION_TIMEOUT_SECONDS
    command_timeout_seconds: int = 0
    command_retries: int = 0
    command_interval: int = 0
    evict_retries: int = 0
    evict_interval: int = 0
    max_concurrent_reboots: int = 1
    protected_namespaces: LabelSelector | None = None
    protected_job_pods: LabelSelector | None = None


@attrs.frozen
class RepairStep:
    repair_command: tuple[str, ...] = tuple_field()
    command_timeout_seconds: int = DEFAULT_REPAIR_COMMAND_TIMEOUT_SECONDS
    command_retries: int = 0
    command_interval: int = 0
    need_drain: bool = False
    watch_seconds: int | None = None


@attrs.frozen
class RepairOperation:
    operation: str = ""
    repair_steps: tuple[RepairStep, ...] = tuple_field()
    health_check_command: tuple[str, ...] = tuple_field()
    command_timeout_seconds: int = DEFAULT_REPAIR_COMMAND_TIMEOUT_SECONDS
    success_command: tuple[str, ...] = tuple_field()
    success_command_timeout: int = DEFAULT_REPAIR_COMMAND_TIMEOUT_SECONDS


@attrs.frozen
class RepairProcedure:
    machine_types: tuple[str, ...] = tuple_field()
    repair_operations: tuple[RepairOperation, ...] = tuple_field()


@attrs.frozen
class Repair:
    """The repair queue's settings (§A.5)."""

    repair_procedures: tuple[RepairProcedure, ...] = tuple_field()
    max_concurrent_repairs: int = 1
    protected_namespaces: LabelSelector | None = None
    protected_job_pods: LabelSelector | None = None
    evict_retries: int = 0
    evict_interval: int = 0
    eviction_timeout_seconds: int = DEFAULT_EVICTION_TIMEOUT_SECONDS

    def find_operation(self, machine_type: str, operation: str) -> RepairOperation | None:
        """The operation of the first procedure listing ``machine_type`` (CKE's rule)."""
        for procedure in self.repair_procedures:
            if machine_type in procedure.machine_types:
                for op in procedure.repair_operations:
                    if op.operation == operation:
                        return op
                return None
        return None


@attrs.frozen
class Sabakan:
    spare_node_taint_key: str = ""


@attrs.frozen
class TrustedRestMapping:
    """A REST mapping used when API discovery fails (e.g. a CR applied before its CRD)."""

    group: str = ""
    version: str = ""
    kind: str = ""
    resource: str = ""
    namespaced: bool = False


@attrs.frozen
class Node:
    """A machine of the cluster, reached over SSH at ``address``."""

    address: str = ""
    hostname: str = ""
    user: str = ""
    control_plane: bool = False
    annotations: FrozenDict[str, str] = mapping_field()
    labels: FrozenDict[str, str] = mapping_field()
    taints: tuple[Taint, ...] = tuple_field()

    @property
    def nodename(self) -> str:
        """The Kubernetes Node name: ``hostname`` if set, else the address."""
        return self.hostname or self.address


@attrs.frozen
class Cluster:
    """The whole of ``cluster.yml``."""

    name: str = ""
    nodes: tuple[Node, ...] = tuple_field()
    taint_control_plane: bool = False
    control_plane_tolerations: tuple[str, ...] = tuple_field()
    service_subnet: str = ""
    dns_servers: tuple[str, ...] = tuple_field()
    dns_service: str = ""
    reboot: Reboot = Reboot()
    repair: Repair = Repair()
    sabakan: Sabakan = Sabakan()
    trusted_rest_mappings: tuple[TrustedRestMapping, ...] = tuple_field()
    options: Options = Options()

    @property
    def control_planes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.control_plane)

    @property
    def workers(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if not n.control_plane)

    def node_by_address(self) -> dict[str, Node]:
        return {n.address: n for n in self.nodes}
