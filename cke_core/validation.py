"""Semantic validation of cluster.yml and constraints (§A.6), all problems at once.

CKE's ``Cluster.Validate`` returns the first problem it meets. Here every rule
runs and each problem names the field by its path, so an operator fixes a
file in one round. Everything CKE rejects is an error; a few things CKE
accepts but that cannot work as intended are warnings (they never fail
``ckecli cluster validate`` on their own, so CKE files stay accepted).

Rules are grouped by the section of the document they check, in document order.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from cke_core import k8s_names
from cke_core.cluster import (
    PROPAGATION_MODES,
    PROXY_MODES,
    SELINUX_LABELS,
    TAINT_EFFECTS,
    APIServerParams,
    Cluster,
    CNIConfFile,
    KubeletParams,
    LabelSelector,
    Mount,
    Node,
    Options,
    Reboot,
    Repair,
    ServiceParams,
    Taint,
    TrustedRestMapping,
)
from cke_core.constraints import Constraints
from cke_core.documents import parse_yaml
from cke_core.problems import ConfigError, Problem, join_path, key_path

KUBELET_CONFIG: Final = ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration")
SCHEDULER_CONFIG: Final = ("kubescheduler.config.k8s.io/v1", "KubeSchedulerConfiguration")
PROXY_CONFIG: Final = ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration")

_CNI_FILE_NAME_RE: Final = re.compile(r"^[0-9A-Za-z_.-]+$")
_VOLUME_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_ENV_NAME_RE: Final = re.compile(r"^[^=\x00]+$")


class _Report:
    """Collects problems while the rules walk the document."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def warn(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, "warning"))

    def each(self, path: str, messages: Iterable[str], value: str | None = None) -> None:
        for message in messages:
            self.error(path, f"{value!r}: {message}" if value is not None else message)


def validate_cluster(cluster: Cluster) -> list[Problem]:
    """Every problem of ``cluster``; errors first in document order, then warnings."""
    report = _Report()
    if not cluster.name:
        report.error("name", "required: the cluster name must not be empty")
    _check_nodes(report, cluster.nodes)
    for i, key in enumerate(cluster.control_plane_tolerations):
        report.each(join_path("control_plane_tolerations", i), k8s_names.qualified_name(key), key)
    _check_service_subnet(report, cluster.service_subnet)
    for i, server in enumerate(cluster.dns_servers):
        if not _is_ip(server):
            report.error(join_path("dns_servers", i), f"{server!r} is not an IP address")
    _check_dns_service(report, cluster.dns_service)
    _check_reboot(report, cluster.reboot)
    _check_repair(report, cluster.repair)
    if cluster.sabakan.spare_node_taint_key:
        key = cluster.sabakan.spare_node_taint_key
        report.each("sabakan.spare_node_taint_key", k8s_names.qualified_name(key), key)
    _check_trusted_rest_mappings(report, cluster.trusted_rest_mappings)
    _check_options(report, cluster.options)
    return sorted(report.problems, key=lambda p: p.severity != "error")


def validate_constraints(constraints: Constraints) -> list[Problem]:
    report = _Report()
    if constraints.control_plane_count <= 0:
        report.error("control-plane-count", "must be positive")
    if not 0 <= constraints.minimum_workers_rate <= 100:
        report.error("minimum-workers-rate", "must be between 0 and 100")
    for key, value in (
        ("maximum-unreachable-nodes-for-reboot", constraints.maximum_unreachable_nodes_for_reboot),
        ("maximum-repair-queue-entries", constraints.maximum_repair_queue_entries),
        ("wait-seconds-to-repair-rebooting", constraints.wait_seconds_to_repair_rebooting),
    ):
        if value < 0:
            report.error(key, "must not be negative")
    return report.problems


def check_against_constraints(cluster: Cluster, constraints: Constraints) -> list[Problem]:
    """The extra check of ``ckecli cluster set``: the number of control planes."""
    count = len(cluster.control_planes)
    if count != constraints.control_plane_count:
        return [
            Problem(
                "nodes",
                f"{count} control plane(s), but the constraint control-plane-count "
                f"is {constraints.control_plane_count}",
            )
        ]
    return []


def raise_for_errors(problems: Iterable[Problem]) -> None:
    found = [p for p in problems if p.severity == "error"]
    if found:
        raise ConfigError(found)


# --- nodes -------------------------------------------------------------------


def _check_nodes(report: _Report, nodes: tuple[Node, ...]) -> None:
    if not nodes:
        report.error("nodes", "required: at least one node")
        return
    if not any(n.control_plane for n in nodes):
        report.warn("nodes", "no node has control_plane: true; nothing can run")
    by_address: dict[str, int] = {}
    by_name: dict[str, int] = {}
    for i, node in enumerate(nodes):
        path = join_path("nodes", i)
        if node.address:
            if node.address in by_address:
                report.error(
                    join_path(path, "address"),
                    f"{node.address} duplicates nodes[{by_address[node.address]}]",
                )
            else:
                by_address[node.address] = i
        name = node.nodename
        # The Kubernetes Node name (hostname, else address) must be unique too. Two
        # nodes with the same address and no hostname are already reported above.
        if name in by_name and (node.hostname or nodes[by_name[name]].hostname):
            field = "hostname" if node.hostname else "address"
            report.error(
                join_path(path, field),
                f"node name {name!r} duplicates nodes[{by_name[name]}]",
            )
        elif name:
            by_name.setdefault(name, i)
        _check_node(report, path, node)


def _check_node(report: _Report, path: str, node: Node) -> None:
    if not node.address:
        report.error(join_path(path, "address"), "required")
    elif not _is_ip(node.address):
        report.error(join_path(path, "address"), f"{node.address!r} is not an IP address")
    if node.hostname:
        report.each(
            join_path(path, "hostname"), k8s_names.dns1123_subdomain(node.hostname), node.hostname
        )
    if not node.user:
        report.error(join_path(path, "user"), "required: the SSH user")
    _check_labels(report, join_path(path, "labels"), node.labels)
    _check_annotations(report, join_path(path, "annotations"), node.annotations)
    _check_taints(report, join_path(path, "taints"), node.taints)


def _check_labels(report: _Report, path: str, labels: Mapping[str, str]) -> None:
    for key, value in labels.items():
        entry = key_path(path, key)
        report.each(entry, (f"key {m}" for m in k8s_names.qualified_name(key)))
        report.each(entry, k8s_names.label_value(value), value)


def _check_annotations(report: _Report, path: str, annotations: Mapping[str, str]) -> None:
    total = 0
    for key, value in annotations.items():
        report.each(key_path(path, key), (f"key {m}" for m in k8s_names.annotation_key(key)))
        # Kubernetes counts bytes of UTF-8, not characters.
        total += len(key.encode(errors="surrogatepass")) + len(value.encode(errors="surrogatepass"))
    if total > k8s_names.ANNOTATIONS_MAX_BYTES:
        report.error(path, f"annotations may not exceed {k8s_names.ANNOTATIONS_MAX_BYTES} bytes")


def _check_taints(report: _Report, path: str, taints: tuple[Taint, ...]) -> None:
    for i, taint in enumerate(taints):
        entry = join_path(path, i)
        if not taint.key:
            report.error(join_path(entry, "key"), "required")
        else:
            report.each(join_path(entry, "key"), k8s_names.qualified_name(taint.key), taint.key)
        report.each(join_path(entry, "value"), k8s_names.label_value(taint.value), taint.value)
        if taint.effect not in TAINT_EFFECTS:
            report.error(
                join_path(entry, "effect"),
                f"{taint.effect!r} is not one of {', '.join(TAINT_EFFECTS)}",
            )


# --- network ----------------------------------------------------------------


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_service_subnet(report: _Report, subnet: str) -> None:
    if not subnet:
        report.error("service_subnet", "required: a CIDR such as 10.68.0.0/16")
        return
    if "/" not in subnet:
        report.error("service_subnet", f"{subnet!r} is not a CIDR (no prefix length)")
        return
    try:
        ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        report.error("service_subnet", f"{subnet!r} is not a valid CIDR")


def _check_dns_service(report: _Report, dns_service: str) -> None:
    if not dns_service:
        return
    parts = dns_service.split("/")
    if len(parts) != 2:
        report.error("dns_service", f"{dns_service!r} must be NAMESPACE/NAME")
        return
    namespace, name = parts
    report.each("dns_service", (f"namespace {m}" for m in k8s_names.dns1123_label(namespace)))
    report.each("dns_service", (f"name {m}" for m in k8s_names.dns1035_label(name)))


# --- reboot and repair --------------------------------------------------------


def _at_least(report: _Report, path: str, value: int, minimum: int) -> None:
    if value < minimum:
        word = "positive" if minimum == 1 else "negative"
        report.error(path, f"must {'be' if minimum else 'not be'} {word}, got {value}")


def _check_reboot(report: _Report, reboot: Reboot) -> None:
    _at_least(report, "reboot.eviction_timeout_seconds", reboot.eviction_timeout_seconds, 1)
    _at_least(report, "reboot.max_concurrent_reboots", reboot.max_concurrent_reboots, 1)
    for field in (
        "command_timeout_seconds",
        "command_retries",
        "command_interval",
        "evict_retries",
        "evict_interval",
    ):
        _at_least(report, f"reboot.{field}", getattr(reboot, field), 0)
    _check_selector(report, "reboot.protected_namespaces", reboot.protected_namespaces)
    _check_selector(report, "reboot.protected_job_pods", reboot.protected_job_pods)
    if bool(reboot.reboot_command) != bool(reboot.boot_check_command):
        missing = "boot_check_command" if reboot.reboot_command else "reboot_command"
        report.warn(
            f"reboot.{missing}",
            "empty while the other command is set: the reboot queue will not run",
        )


def _check_repair(report: _Report, repair: Repair) -> None:
    seen_types: dict[str, int] = {}
    for i, procedure in enumerate(repair.repair_procedures):
        path = join_path("repair.repair_procedures", i)
        if not procedure.machine_types:
            report.error(join_path(path, "machine_types"), "required: at least one machine type")
        for j, machine_type in enumerate(procedure.machine_types):
            entry = join_path(join_path(path, "machine_types"), j)
            if not machine_type:
                report.error(entry, "must not be empty")
            elif machine_type in seen_types:
                report.warn(
                    entry,
                    f"{machine_type!r} is also in repair_procedures[{seen_types[machine_type]}]; "
                    "only the first procedure is used",
                )
            else:
                seen_types[machine_type] = i
        if not procedure.repair_operations:
            report.error(join_path(path, "repair_operations"), "required: at least one operation")
        names: dict[str, int] = {}
        for j, operation in enumerate(procedure.repair_operations):
            op_path = join_path(join_path(path, "repair_operations"), j)
            if not operation.operation:
                report.error(join_path(op_path, "operation"), "required")
            elif operation.operation in names:
                first = names[operation.operation]
                report.error(
                    join_path(op_path, "operation"),
                    f"{operation.operation!r} duplicates repair_operations[{first}]",
                )
            else:
                names[operation.operation] = j
            if not operation.repair_steps:
                report.error(join_path(op_path, "repair_steps"), "required: at least one step")
            for k, step in enumerate(operation.repair_steps):
                step_path = join_path(join_path(op_path, "repair_steps"), k)
                if not step.repair_command:
                    report.error(join_path(step_path, "repair_command"), "required")
                for field in ("command_timeout_seconds", "command_retries", "command_interval"):
                    _at_least(report, join_path(step_path, field), getattr(step, field), 0)
                if step.watch_seconds is not None:
                    _at_least(report, join_path(step_path, "watch_seconds"), step.watch_seconds, 1)
            if not operation.health_check_command:
                report.error(join_path(op_path, "health_check_command"), "required")
            for field in ("command_timeout_seconds", "success_command_timeout"):
                _at_least(report, join_path(op_path, field), getattr(operation, field), 0)
    _at_least(report, "repair.max_concurrent_repairs", repair.max_concurrent_repairs, 1)
    _at_least(report, "repair.eviction_timeout_seconds", repair.eviction_timeout_seconds, 1)
    _at_least(report, "repair.evict_retries", repair.evict_retries, 0)
    _at_least(report, "repair.evict_interval", repair.evict_interval, 0)
    _check_selector(report, "repair.protected_namespaces", repair.protected_namespaces)
    _check_selector(report, "repair.protected_job_pods", repair.protected_job_pods)


def _check_selector(report: _Report, path: str, selector: LabelSelector | None) -> None:
    if selector is None:
        return
    _check_labels(report, join_path(path, "matchLabels"), selector.match_labels)
    for i, requirement in enumerate(selector.match_expressions):
        entry = join_path(join_path(path, "matchExpressions"), i)
        report.each(
            join_path(entry, "key"), k8s_names.qualified_name(requirement.key), requirement.key
        )
        operator = requirement.operator
        if operator not in k8s_names.SELECTOR_OPERATORS:
            report.error(
                join_path(entry, "operator"),
                f"{operator!r} is not one of {', '.join(k8s_names.SELECTOR_OPERATORS)}",
            )
        elif operator in ("In", "NotIn") and not requirement.values:
            report.error(join_path(entry, "values"), f"required for operator {operator}")
        elif operator in ("Exists", "DoesNotExist") and requirement.values:
            report.error(join_path(entry, "values"), f"must be empty for operator {operator}")
        for j, value in enumerate(requirement.values):
            report.each(
                join_path(join_path(entry, "values"), j), k8s_names.label_value(value), value
            )


def _check_trusted_rest_mappings(report: _Report, mappings: tuple[TrustedRestMapping, ...]) -> None:
    seen: dict[tuple[str, str, str], int] = {}
    for i, mapping in enumerate(mappings):
        path = join_path("trusted_rest_mappings", i)
        for field in ("version", "kind", "resource"):
            if not getattr(mapping, field):
                report.error(join_path(path, field), "required")
        if mapping.group:
            report.each(join_path(path, "group"), k8s_names.dns1123_subdomain(mapping.group))
        gvk = (mapping.group, mapping.version, mapping.kind)
        if gvk in seen:
            report.error(
                path,
                f"{mapping.group}/{mapping.version}, Kind={mapping.kind} "
                f"duplicates trusted_rest_mappings[{seen[gvk]}]",
            )
        else:
            seen[gvk] = i


# --- options ----------------------------------------------------------------


def _check_options(report: _Report, options: Options) -> None:
    services: tuple[tuple[str, ServiceParams], ...] = (
        ("etcd", options.etcd),
        ("rivers", options.rivers),
        ("etcd-rivers", options.etcd_rivers),
        ("kube-api", options.kube_api),
        ("kube-controller-manager", options.kube_controller_manager),
        ("kube-scheduler", options.kube_scheduler),
        ("kube-proxy", options.kube_proxy),
        ("kubelet", options.kubelet),
    )
    for name, params in services:
        _check_service_params(report, join_path("options", name), params)
    if not _VOLUME_NAME_RE.match(options.etcd.volume_name):
        report.error(
            "options.etcd.volume_name",
            f"{options.etcd.volume_name!r} is not a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)",
        )
    _check_api_server(report, options.kube_api)
    _check_config_document(
        report, "options.kube-scheduler.config", options.kube_scheduler.config, SCHEDULER_CONFIG
    )
    _check_config_document(
        report, "options.kube-proxy.config", options.kube_proxy.config, PROXY_CONFIG
    )
    if options.kube_proxy.config is not None:
        mode = options.kube_proxy.config.get("mode", "")
        if mode not in PROXY_MODES:
            report.error(
                "options.kube-proxy.config.mode",
                f"{mode!r} is not one of {', '.join(m for m in PROXY_MODES if m)}",
            )
    _check_kubelet(report, options.kubelet)


def _check_service_params(report: _Report, path: str, params: ServiceParams) -> None:
    for i, mount in enumerate(params.extra_binds):
        _check_mount(report, join_path(join_path(path, "extra_binds"), i), mount)
    for key in params.extra_env:
        if not _ENV_NAME_RE.match(key):
            report.error(
                key_path(join_path(path, "extra_env"), key),
                "an environment variable name must be non-empty and contain no '=' or NUL",
            )
    for i, arg in enumerate(params.extra_args):
        if "\x00" in arg:
            report.error(join_path(join_path(path, "extra_args"), i), "contains a NUL character")


def _check_mount(report: _Report, path: str, mount: Mount) -> None:
    for field in ("source", "destination"):
        value = getattr(mount, field)
        if not value.startswith("/"):
            report.error(join_path(path, field), f"{value!r} must be an absolute path")
    if mount.propagation not in PROPAGATION_MODES:
        report.error(
            join_path(path, "propagation"),
            f"{mount.propagation!r} is not one of {', '.join(m for m in PROPAGATION_MODES if m)}",
        )
    if mount.selinux_label not in SELINUX_LABELS:
        report.error(
            join_path(path, "selinux_label"), f"{mount.selinux_label!r} is not one of z, Z"
        )


def _check_api_server(report: _Report, params: APIServerParams) -> None:
    path = "options.kube-api"
    if params.audit_log_path != "-" and not params.audit_log_path.startswith("/"):
        report.error(
            join_path(path, "audit_log_path"),
            f"{params.audit_log_path!r} must be '-' (standard output) or an absolute path",
        )
    if not params.audit_log_enabled:
        return
    policy_path = join_path(path, "audit_log_policy")
    if not params.audit_log_policy:
        report.error(policy_path, "required when audit_log_enabled is true")
        return
    try:
        policy = parse_yaml(params.audit_log_policy)
    except ConfigError as exc:
        report.each(policy_path, (p.message for p in exc.problems))
        return
    if not isinstance(policy, Mapping):
        report.error(policy_path, "must be a YAML mapping (an audit Policy)")
    elif policy.get("kind") != "Policy":
        report.error(policy_path, f"kind must be 'Policy', got {policy.get('kind')!r}")


def _check_config_document(
    report: _Report, path: str, document: Mapping[str, Any] | None, expected: tuple[str, str]
) -> None:
    if document is None:
        return
    api_version, kind = expected
    if document.get("apiVersion") != api_version:
        report.error(
            join_path(path, "apiVersion"),
            f"must be {api_version!r}, got {document.get('apiVersion')!r}",
        )
    if document.get("kind") != kind:
        report.error(join_path(path, "kind"), f"must be {kind!r}, got {document.get('kind')!r}")


def _check_kubelet(report: _Report, kubelet: KubeletParams) -> None:
    path = "options.kubelet"
    _check_taints(report, join_path(path, "boot_taints"), kubelet.boot_taints)
    _check_cni_conf_file(report, join_path(path, "cni_conf_file"), kubelet.cni_conf_file)
    _check_config_document(report, join_path(path, "config"), kubelet.config, KUBELET_CONFIG)
    if kubelet.config is not None:
        domain = kubelet.config.get("clusterDomain")
        if domain is not None:
            if isinstance(domain, str):
                report.each(
                    join_path(path, "config.clusterDomain"),
                    k8s_names.dns1123_subdomain(domain),
                    domain,
                )
            else:
                report.error(join_path(path, "config.clusterDomain"), "must be a string")


def _check_cni_conf_file(report: _Report, path: str, conf: CNIConfFile) -> None:
    """The checks libcni applies when it loads the file (ConfFromBytes / ConfListFromBytes)."""
    if not conf.name and not conf.content:
        return
    if not _CNI_FILE_NAME_RE.match(conf.name):
        report.error(join_path(path, "name"), f"{conf.name!r} must match ^[0-9A-Za-z_.-]+$")
    content_path = join_path(path, "content")
    try:
        document = json.loads(conf.content)
    except json.JSONDecodeError as exc:
        report.error(
            content_path, f"invalid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}"
        )
        return
    except RecursionError:
        report.error(content_path, "invalid JSON: nested too deeply")
        return
    if not isinstance(document, dict):
        report.error(content_path, "must be a JSON object")
        return
    if conf.name.endswith(".conflist"):
        if not isinstance(document.get("name"), str) or not document["name"]:
            report.error(content_path, "a .conflist needs a string 'name'")
        plugins = document.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            report.error(content_path, "a .conflist needs a non-empty 'plugins' list")
        else:
            for i, plugin in enumerate(plugins):
                if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
                    report.error(content_path, f"plugins[{i}] needs a string 'type'")
    elif not isinstance(document.get("type"), str) or not document["type"]:
        report.error(content_path, "a network configuration needs a string 'type'")
