"""Every rule of cluster.yml and constraints: structure (codec) and semantics (validation).

Each test starts from a small valid document (``minimal()`` or ``full()``),
changes one thing and asserts the exact field path and the key part of the
message of every problem reported.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from cke_core import codec
from cke_core.cluster import (
    DEFAULT_AUDIT_LOG_PATH,
    DEFAULT_CRI_ENDPOINT,
    DEFAULT_ETCD_VOLUME,
    Cluster,
    Reboot,
    Repair,
    RepairOperation,
    RepairStep,
)
from cke_core.config import (
    Checked,
    check_cluster,
    check_constraints,
    check_raw,
    load_cluster,
    load_constraints,
)
from cke_core.constraints import Constraints
from cke_core.problems import ConfigError, Problem
from cke_core.validation import check_against_constraints, validate_cluster, validate_constraints

# --- builders ----------------------------------------------------------------------------

Path = tuple[str | int, ...]


def node(address: str, **fields: Any) -> dict[str, Any]:
    return {"address": address, "user": "cybozu", **fields}


def minimal() -> dict[str, Any]:
    """The smallest valid cluster.yml, as raw data."""
    return {
        "name": "test",
        "nodes": [node("10.0.0.11", control_plane=True)],
        "service_subnet": "10.68.0.0/16",
    }


def step(**fields: Any) -> dict[str, Any]:
    return {"repair_command": ["repair", "reboot"], **fields}


def operation(name: str = "unreachable", **fields: Any) -> dict[str, Any]:
    return {
        "operation": name,
        "repair_steps": [step()],
        "health_check_command": ["check"],
        **fields,
    }


def procedure(*machine_types: str, **fields: Any) -> dict[str, Any]:
    return {
        "machine_types": list(machine_types or ("qemu",)),
        "repair_operations": [operation()],
        **fields,
    }


def mapping(group: str = "cert-manager.io", kind: str = "Certificate") -> dict[str, Any]:
    return {
        "group": group,
        "version": "v1",
        "kind": kind,
        "resource": kind.lower() + "s",
        "namespaced": True,
    }


def full() -> dict[str, Any]:
    """A valid document with every section present, so each rule has something to check."""
    doc = minimal()
    doc["nodes"] += [node("10.0.0.12", hostname="worker-1"), node("10.0.0.13")]
    doc.update(
        control_plane_tolerations=["node.cybozu.io/spare"],
        dns_servers=["8.8.8.8"],
        dns_service="kube-system/dns",
        reboot={"reboot_command": ["reboot"], "boot_check_command": ["check"]},
        repair={"repair_procedures": [procedure("qemu")]},
        sabakan={"spare_node_taint_key": "node.cybozu.io/spare"},
        trusted_rest_mappings=[mapping()],
        options={
            "kube-api": {"audit_log_enabled": True, "audit_log_policy": "kind: Policy\n"},
            "kube-scheduler": {"config": config_doc("kube-scheduler")},
            "kube-proxy": {"config": config_doc("kube-proxy")},
            "kubelet": {
                "config": config_doc("kubelet"),
                "cni_conf_file": {"name": "10-net.conf", "content": '{"type": "bridge"}'},
            },
        },
    )
    return doc


CONFIG_KINDS = {
    "kube-scheduler": ("kubescheduler.config.k8s.io/v1", "KubeSchedulerConfiguration"),
    "kube-proxy": ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"),
    "kubelet": ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
}


def config_doc(component: str, **fields: Any) -> dict[str, Any]:
    api_version, kind = CONFIG_KINDS[component]
    return {"apiVersion": api_version, "kind": kind, **fields}


def put(doc: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """Set ``value`` at ``path`` (creating missing mappings) and return ``doc``."""
    target: Any = doc
    for segment in path[:-1]:
        if isinstance(segment, str) and segment not in target:
            target[segment] = {}
        target = target[segment]
    target[path[-1]] = value
    return doc


def check(doc: Any) -> Checked[Cluster]:
    return check_raw(copy.deepcopy(doc), Cluster, validate_cluster)


def found(doc: Any) -> list[tuple[str, str, str]]:
    return [(p.path, p.message, p.severity) for p in check(doc).problems]


def assert_only(doc: Any, path: str, fragment: str, severity: str = "error") -> Problem:
    """``doc`` has exactly one problem, at ``path``, whose message contains ``fragment``."""
    problems = check(doc).problems
    assert [(p.path, p.severity) for p in problems] == [(path, severity)], problems
    assert fragment in problems[0].message, problems[0].message
    return problems[0]


def test_builders_are_valid() -> None:
    assert check(minimal()).problems == ()
    assert check(full()).problems == ()
    assert check(full()).value is not None


# --- top level ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "where", "fragment"),
    [
        (("name",), "", "name", "required: the cluster name must not be empty"),
        (("nodes",), [], "nodes", "required: at least one node"),
        (
            ("control_plane_tolerations",),
            ["ok.example.com/key", "bad key!"],
            "control_plane_tolerations[1]",
            "'bad key!': name part must consist of alphanumeric characters",
        ),
        (
            ("control_plane_tolerations",),
            ["a/b/c"],
            "control_plane_tolerations[0]",
            "'a/b/c': a qualified name must consist of",
        ),
        (("service_subnet",), "", "service_subnet", "required: a CIDR such as 10.68.0.0/16"),
        (("service_subnet",), "10.68.0.0", "service_subnet", "'10.68.0.0' is not a CIDR"),
        (("service_subnet",), "10.68.0.0/33", "service_subnet", "'10.68.0.0/33' is not a valid"),
        (("service_subnet",), "subnet/16", "service_subnet", "'subnet/16' is not a valid CIDR"),
        (
            ("dns_servers",),
            ["8.8.8.8", "dns.example.com"],
            "dns_servers[1]",
            "'dns.example.com' is not an IP address",
        ),
        (("dns_service",), "dns", "dns_service", "'dns' must be NAMESPACE/NAME"),
        (("dns_service",), "a/b/c", "dns_service", "'a/b/c' must be NAMESPACE/NAME"),
        (("dns_service",), "Kube/dns", "dns_service", "namespace must be a lowercase RFC 1123"),
        (("dns_service",), "kube-system/1dns", "dns_service", "name must be a lowercase RFC 1035"),
        (
            ("sabakan", "spare_node_taint_key"),
            "bad key",
            "sabakan.spare_node_taint_key",
            "'bad key': name part must consist",
        ),
    ],
)
def test_top_level_rules(path: Path, value: Any, where: str, fragment: str) -> None:
    assert_only(put(minimal(), path, value), where, fragment)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("service_subnet",), "fd00::/108"),
        (("dns_servers",), ["2001:4860:4860::8888", "1.1.1.1"]),
        (("dns_service",), ""),
        (("control_plane_tolerations",), ["example.com/Key_1", "plain"]),
        (("sabakan", "spare_node_taint_key"), ""),
    ],
)
def test_top_level_accepts(path: Path, value: Any) -> None:
    assert found(put(minimal(), path, value)) == []


# --- nodes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "where", "fragment"),
    [
        ("address", "", "address", "required"),
        ("address", "10.0.0.300", "address", "'10.0.0.300' is not an IP address"),
        ("address", "node1.example.com", "address", "is not an IP address"),
        ("hostname", "CP_1", "hostname", "'CP_1': must be a lowercase RFC 1123 subdomain"),
        ("user", "", "user", "required: the SSH user"),
        (
            "labels",
            {"bad key!": "v"},
            'labels["bad key!"]',
            "key name part must consist of alphanumeric characters",
        ),
        (
            "labels",
            {"Example.com/x": "v"},
            'labels["Example.com/x"]',
            "key prefix part must be a lowercase RFC 1123 subdomain",
        ),
        ("labels", {"/x": "v"}, 'labels["/x"]', "key prefix part must be non-empty"),
        (
            "labels",
            {"example.com/": "v"},
            'labels["example.com/"]',
            "key name part must be non-empty",
        ),
        (
            "labels",
            {"x" * 64: "v"},
            f'labels["{"x" * 64}"]',
            "key name part must be no more than 63 characters",
        ),
        (
            "labels",
            {"example.com/x": "bad value!"},
            'labels["example.com/x"]',
            "'bad value!': a label value must be empty or consist of",
        ),
        (
            "labels",
            {"example.com/x": "v" * 64},
            'labels["example.com/x"]',
            "must be no more than 63 characters",
        ),
        (
            "annotations",
            {"bad key!": "any text is fine"},
            'annotations["bad key!"]',
            "key name part must consist",
        ),
        (
            "annotations",
            {"a": "x" * (256 * 1024)},
            "annotations",
            "annotations may not exceed 262144 bytes",
        ),
        (
            # Kubernetes counts bytes: 131072 two-byte characters are 262144 bytes.
            "annotations",
            {"a": "é" * (128 * 1024)},
            "annotations",
            "annotations may not exceed 262144 bytes",
        ),
        ("taints", [{"effect": "NoSchedule"}], "taints[0].key", "required"),
        (
            "taints",
            [{"key": "bad key", "effect": "NoSchedule"}],
            "taints[0].key",
            "'bad key': name part must consist",
        ),
        (
            "taints",
            [{"key": "k", "value": "bad value!", "effect": "NoSchedule"}],
            "taints[0].value",
            "'bad value!': a label value must be empty",
        ),
        (
            "taints",
            [{"key": "k", "effect": "NoSchedule"}, {"key": "k", "effect": "NoRun"}],
            "taints[1].effect",
            "'NoRun' is not one of NoSchedule, PreferNoSchedule, NoExecute",
        ),
        ("taints", [{"key": "k"}], "taints[0].effect", "'' is not one of NoSchedule"),
    ],
)
def test_node_rules(field: str, value: Any, where: str, fragment: str) -> None:
    doc = full()
    doc["nodes"][1][field] = value
    assert_only(doc, f"nodes[1].{where}", fragment)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("address", "fd00::11"),
        ("hostname", "worker-1.rack0.example.com"),
        ("labels", {"example.com/My_Key.1": "Value-1.x", "plain": ""}),
        ("annotations", {"Example.COM/AnyCase": "anything: goes, even spaces!"}),
        ("annotations", {"a": "x" * (256 * 1024 - 1)}),
        ("taints", [{"key": "k", "effect": e} for e in ("NoSchedule", "NoExecute")]),
    ],
)
def test_node_accepts(field: str, value: Any) -> None:
    doc = full()
    doc["nodes"][1][field] = value
    assert found(doc) == []


def test_duplicate_address() -> None:
    doc = full()
    doc["nodes"][2]["address"] = "10.0.0.11"
    assert_only(doc, "nodes[2].address", "10.0.0.11 duplicates nodes[0]")


def test_duplicate_hostname() -> None:
    doc = full()
    doc["nodes"][2]["hostname"] = "worker-1"
    assert_only(doc, "nodes[2].hostname", "node name 'worker-1' duplicates nodes[1]")


def test_hostname_equal_to_an_earlier_address_is_a_duplicate_node_name() -> None:
    doc = full()
    doc["nodes"][2]["hostname"] = "10.0.0.11"
    assert_only(doc, "nodes[2].hostname", "node name '10.0.0.11' duplicates nodes[0]")


def test_address_equal_to_an_earlier_hostname_is_a_duplicate_node_name() -> None:
    doc = full()
    doc["nodes"][1]["hostname"] = "10.0.0.13"
    assert_only(doc, "nodes[2].address", "node name '10.0.0.13' duplicates nodes[1]")


def test_no_control_plane_is_a_warning() -> None:
    doc = minimal()
    doc["nodes"][0]["control_plane"] = False
    checked = check(doc)
    assert_only(doc, "nodes", "no node has control_plane: true", severity="warning")
    assert checked.errors == ()
    assert checked.value is not None


# --- reboot ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("eviction_timeout_seconds", 0, "must be positive, got 0"),
        ("max_concurrent_reboots", 0, "must be positive, got 0"),
        ("max_concurrent_reboots", -2, "must be positive, got -2"),
        ("command_timeout_seconds", -1, "must not be negative, got -1"),
        ("command_retries", -1, "must not be negative, got -1"),
        ("command_interval", -1, "must not be negative, got -1"),
        ("evict_retries", -1, "must not be negative, got -1"),
        ("evict_interval", -1, "must not be negative, got -1"),
    ],
)
def test_reboot_bounds(field: str, value: int, fragment: str) -> None:
    assert_only(put(full(), ("reboot", field), value), f"reboot.{field}", fragment)


def test_reboot_bounds_accept_zero_where_allowed() -> None:
    doc = full()
    for field in (
        "command_timeout_seconds",
        "command_retries",
        "command_interval",
        "evict_retries",
        "evict_interval",
    ):
        put(doc, ("reboot", field), 0)
    put(doc, ("reboot", "eviction_timeout_seconds"), 1)
    assert found(doc) == []


@pytest.mark.parametrize(
    ("given", "missing"),
    [("reboot_command", "boot_check_command"), ("boot_check_command", "reboot_command")],
)
def test_reboot_with_one_command_is_a_warning(given: str, missing: str) -> None:
    doc = minimal()
    doc["reboot"] = {given: ["/bin/true"]}
    assert_only(doc, f"reboot.{missing}", "empty while the other command is set", "warning")


# --- label selectors (reboot and repair) -------------------------------------------------

SELECTORS = [
    ("reboot", "protected_namespaces"),
    ("reboot", "protected_job_pods"),
    ("repair", "protected_namespaces"),
    ("repair", "protected_job_pods"),
]


@pytest.mark.parametrize(("section", "field"), SELECTORS)
@pytest.mark.parametrize(
    ("selector", "where", "fragment"),
    [
        ({"matchLabels": {"bad key!": "v"}}, 'matchLabels["bad key!"]', "key name part"),
        ({"matchLabels": {"k": "bad value!"}}, 'matchLabels["k"]', "'bad value!': a label value"),
        (
            {"matchExpressions": [{"key": "bad key!", "operator": "Exists"}]},
            "matchExpressions[0].key",
            "'bad key!': name part must consist",
        ),
        (
            {"matchExpressions": [{"key": "k", "operator": "Equals", "values": ["a"]}]},
            "matchExpressions[0].operator",
            "'Equals' is not one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            {"matchExpressions": [{"key": "k", "operator": "In"}]},
            "matchExpressions[0].values",
            "required for operator In",
        ),
        (
            {"matchExpressions": [{"key": "k", "operator": "NotIn", "values": []}]},
            "matchExpressions[0].values",
            "required for operator NotIn",
        ),
        (
            {"matchExpressions": [{"key": "k", "operator": "Exists", "values": ["a"]}]},
            "matchExpressions[0].values",
            "must be empty for operator Exists",
        ),
        (
            {"matchExpressions": [{"key": "k", "operator": "DoesNotExist", "values": ["a"]}]},
            "matchExpressions[0].values",
            "must be empty for operator DoesNotExist",
        ),
        (
            {"matchExpressions": [{"key": "k", "operator": "In", "values": ["ok", "bad!"]}]},
            "matchExpressions[0].values[1]",
            "'bad!': a label value must be empty",
        ),
    ],
)
def test_selector_rules(
    section: str, field: str, selector: dict[str, Any], where: str, fragment: str
) -> None:
    doc = put(full(), (section, field), selector)
    assert_only(doc, f"{section}.{field}.{where}", fragment)


@pytest.mark.parametrize(("section", "field"), SELECTORS)
def test_selectors_accept_valid_ones(section: str, field: str) -> None:
    selector = {
        "matchLabels": {"example.com/team": "a"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["x", "y"]},
            {"key": "example.com/skip", "operator": "DoesNotExist"},
        ],
    }
    doc = put(full(), (section, field), selector)
    assert found(doc) == []
    assert found(put(full(), (section, field), {})) == []


# --- repair ------------------------------------------------------------------------------

PROC = "repair.repair_procedures[0]"
OP = f"{PROC}.repair_operations[0]"
STEP = f"{OP}.repair_steps[0]"


def with_procedures(*procedures: dict[str, Any], **fields: Any) -> dict[str, Any]:
    doc = full()
    doc["repair"] = {"repair_procedures": list(procedures), **fields}
    return doc


@pytest.mark.parametrize(
    ("proc", "where", "fragment"),
    [
        (procedure(machine_types=[]), f"{PROC}.machine_types", "required: at least one machine"),
        (procedure(machine_types=["a", ""]), f"{PROC}.machine_types[1]", "must not be empty"),
        (procedure(repair_operations=[]), f"{PROC}.repair_operations", "at least one operation"),
        (procedure(repair_operations=[operation("")]), f"{OP}.operation", "required"),
        (
            procedure(repair_operations=[operation("x"), operation("y"), operation("x")]),
            f"{PROC}.repair_operations[2].operation",
            "'x' duplicates repair_operations[0]",
        ),
        (
            procedure(repair_operations=[operation(repair_steps=[])]),
            f"{OP}.repair_steps",
            "required: at least one step",
        ),
        (
            procedure(repair_operations=[operation(repair_steps=[step(repair_command=[])])]),
            f"{STEP}.repair_command",
            "required",
        ),
        (
            procedure(repair_operations=[operation(health_check_command=[])]),
            f"{OP}.health_check_command",
            "required",
        ),
    ],
)
def test_repair_procedure_rules(proc: dict[str, Any], where: str, fragment: str) -> None:
    assert_only(with_procedures(proc), where, fragment)


@pytest.mark.parametrize(
    ("fields", "where", "fragment"),
    [
        ({"command_timeout_seconds": -1}, "command_timeout_seconds", "must not be negative"),
        ({"command_retries": -1}, "command_retries", "must not be negative, got -1"),
        ({"command_interval": -5}, "command_interval", "must not be negative, got -5"),
        ({"watch_seconds": 0}, "watch_seconds", "must be positive, got 0"),
        ({"watch_seconds": -1}, "watch_seconds", "must be positive, got -1"),
    ],
)
def test_repair_step_bounds(fields: dict[str, Any], where: str, fragment: str) -> None:
    proc = procedure(repair_operations=[operation(repair_steps=[step(**fields)])])
    assert_only(with_procedures(proc), f"{STEP}.{where}", fragment)


@pytest.mark.parametrize("field", ["command_timeout_seconds", "success_command_timeout"])
def test_repair_operation_bounds(field: str) -> None:
    fields: dict[str, Any] = {field: -1}
    proc = procedure(repair_operations=[operation(**fields)])
    assert_only(with_procedures(proc), f"{OP}.{field}", "must not be negative, got -1")


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("max_concurrent_repairs", 0, "must be positive, got 0"),
        ("eviction_timeout_seconds", 0, "must be positive, got 0"),
        ("evict_retries", -1, "must not be negative, got -1"),
        ("evict_interval", -1, "must not be negative, got -1"),
    ],
)
def test_repair_bounds(field: str, value: int, fragment: str) -> None:
    assert_only(put(full(), ("repair", field), value), f"repair.{field}", fragment)


def test_repair_accepts_zero_timeouts_and_no_watch() -> None:
    proc = procedure(
        repair_operations=[
            operation(
                repair_steps=[step(command_timeout_seconds=0), step(watch_seconds=1)],
                command_timeout_seconds=0,
                success_command=["ok"],
                success_command_timeout=0,
            )
        ]
    )
    assert found(with_procedures(proc)) == []


def test_machine_type_in_two_procedures_is_a_warning() -> None:
    doc = with_procedures(procedure("R640", "qemu"), procedure("x", "qemu"))
    assert_only(
        doc,
        "repair.repair_procedures[1].machine_types[1]",
        "'qemu' is also in repair_procedures[0]; only the first procedure is used",
        "warning",
    )


def test_same_operation_in_two_procedures_is_fine() -> None:
    assert found(with_procedures(procedure("a"), procedure("b"))) == []


# --- trusted REST mappings ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["version", "kind", "resource"])
def test_trusted_rest_mapping_required_fields(field: str) -> None:
    doc = full()
    doc["trusted_rest_mappings"][0][field] = ""
    assert_only(doc, f"trusted_rest_mappings[0].{field}", "required")


def test_trusted_rest_mapping_group_syntax() -> None:
    doc = full()
    doc["trusted_rest_mappings"][0]["group"] = "Cert_Manager"
    assert_only(doc, "trusted_rest_mappings[0].group", "must be a lowercase RFC 1123 subdomain")


def test_trusted_rest_mapping_core_group_is_empty() -> None:
    doc = full()
    doc["trusted_rest_mappings"] = [mapping(group="", kind="ConfigMap")]
    assert found(doc) == []


def test_trusted_rest_mapping_duplicate_gvk() -> None:
    doc = full()
    doc["trusted_rest_mappings"] = [mapping(), mapping(kind="Issuer"), mapping()]
    doc["trusted_rest_mappings"][2]["resource"] = "other"
    assert_only(
        doc,
        "trusted_rest_mappings[2]",
        "cert-manager.io/v1, Kind=Certificate duplicates trusted_rest_mappings[0]",
    )


# --- options: parameters every component takes -------------------------------------------

COMPONENTS = [
    "etcd",
    "rivers",
    "etcd-rivers",
    "kube-api",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubelet",
]


@pytest.mark.parametrize("component", COMPONENTS)
@pytest.mark.parametrize(
    ("params", "where", "fragment"),
    [
        (
            {"extra_binds": [{"source": "data", "destination": "/data"}]},
            "extra_binds[0].source",
            "'data' must be an absolute path",
        ),
        (
            {"extra_binds": [{"source": "/a", "destination": "/a"}, {"source": "/b"}]},
            "extra_binds[1].destination",
            "'' must be an absolute path",
        ),
        (
            {"extra_binds": [{"source": "/a", "destination": "/a", "propagation": "bogus"}]},
            "extra_binds[0].propagation",
            "'bogus' is not one of private, rprivate, shared, rshared, slave, rslave",
        ),
        (
            {"extra_binds": [{"source": "/a", "destination": "/a", "selinux_label": "q"}]},
            "extra_binds[0].selinux_label",
            "'q' is not one of z, Z",
        ),
        (
            {"extra_env": {"OK": "1", "A=B": "x"}},
            'extra_env["A=B"]',
            "an environment variable name must be non-empty and contain no '=' or NUL",
        ),
        ({"extra_env": {"": "x"}}, 'extra_env[""]', "must be non-empty"),
        ({"extra_args": ["--ok", "a\x00b"]}, "extra_args[1]", "contains a NUL character"),
    ],
)
def test_service_params_rules(
    component: str, params: dict[str, Any], where: str, fragment: str
) -> None:
    doc = full()
    doc["options"].setdefault(component, {}).update(params)
    assert_only(doc, f"options.{component}.{where}", fragment)


@pytest.mark.parametrize("component", COMPONENTS)
def test_service_params_accept_valid_ones(component: str) -> None:
    doc = full()
    doc["options"].setdefault(component, {}).update(
        extra_args=["--v=2", ""],
        extra_env={"GOMAXPROCS": "4", "lower_case": "x=y"},
        extra_binds=[
            {
                "source": "/var/lib/x",
                "destination": "/x",
                "read_only": True,
                "propagation": p,
                "selinux_label": s,
            }
            for p, s in (("", ""), ("rshared", "z"), ("private", "Z"))
        ],
    )
    assert found(doc) == []


# --- options: etcd and kube-api ----------------------------------------------------------


@pytest.mark.parametrize("volume", ["-bad", "with space", "a/b", ".hidden"])
def test_etcd_volume_name(volume: str) -> None:
    doc = put(full(), ("options", "etcd", "volume_name"), volume)
    assert_only(doc, "options.etcd.volume_name", f"{volume!r} is not a valid volume name")


def test_audit_log_path_must_be_dash_or_absolute() -> None:
    doc = put(full(), ("options", "kube-api", "audit_log_path"), "audit.log")
    assert_only(
        doc,
        "options.kube-api.audit_log_path",
        "'audit.log' must be '-' (standard output) or an absolute path",
    )
    put(doc, ("options", "kube-api", "audit_log_path"), "/var/log/audit.log")
    assert found(doc) == []


POLICY = "options.kube-api.audit_log_policy"


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        ("", "required when audit_log_enabled is true"),
        ("rules: [", "YAML syntax error: line 1, column 9"),
        ("kind: Policy\nkind: Policy\n", "duplicate key 'kind' (first given on line 1)"),
        ("- kind: Policy\n", "must be a YAML mapping (an audit Policy)"),
        ("apiVersion: audit.k8s.io/v1\nkind: Event\n", "kind must be 'Policy', got 'Event'"),
        ("rules: []\n", "kind must be 'Policy', got None"),
    ],
)
def test_audit_policy_rules(policy: str, fragment: str) -> None:
    doc = put(full(), ("options", "kube-api", "audit_log_policy"), policy)
    assert_only(doc, POLICY, fragment)


def test_audit_policy_is_not_checked_when_audit_is_disabled() -> None:
    doc = full()
    doc["options"]["kube-api"] = {"audit_log_enabled": False, "audit_log_policy": "rules: ["}
    assert found(doc) == []


# --- options: configuration documents ----------------------------------------------------


@pytest.mark.parametrize("component", sorted(CONFIG_KINDS))
def test_config_document_api_version_and_kind(component: str) -> None:
    api_version, kind = CONFIG_KINDS[component]
    path = ("options", component, "config")
    doc = put(full(), path, config_doc(component, apiVersion="v1"))
    assert_only(doc, f"options.{component}.config.apiVersion", f"must be {api_version!r}, got 'v1'")
    doc = put(full(), path, config_doc(component, kind="Pod"))
    assert_only(doc, f"options.{component}.config.kind", f"must be {kind!r}, got 'Pod'")
    doc = put(full(), path, {})
    assert found(doc) == [
        (f"options.{component}.config.apiVersion", f"must be {api_version!r}, got None", "error"),
        (f"options.{component}.config.kind", f"must be {kind!r}, got None", "error"),
    ]


def test_config_documents_are_optional() -> None:
    doc = full()
    for component in CONFIG_KINDS:
        doc["options"][component].pop("config")
    assert found(doc) == []


def test_proxy_mode() -> None:
    path = ("options", "kube-proxy", "config")
    doc = put(full(), path, config_doc("kube-proxy", mode="nftables"))
    assert_only(
        doc,
        "options.kube-proxy.config.mode",
        "'nftables' is not one of userspace, iptables, ipvs",
    )
    for mode in ("", "userspace", "iptables", "ipvs"):
        assert found(put(full(), path, config_doc("kube-proxy", mode=mode))) == []


@pytest.mark.parametrize(
    ("domain", "fragment"),
    [
        ("Cluster_Local", "'Cluster_Local': must be a lowercase RFC 1123 subdomain"),
        (5, "must be a string"),
        (["cluster.local"], "must be a string"),
    ],
)
def test_kubelet_cluster_domain(domain: Any, fragment: str) -> None:
    doc = put(full(), ("options", "kubelet", "config", "clusterDomain"), domain)
    assert_only(doc, "options.kubelet.config.clusterDomain", fragment)


def test_kubelet_boot_taints_are_taints() -> None:
    taints = [{"key": "k", "effect": "NoSchedule"}, {"key": "bad key", "effect": "Never"}]
    doc = put(full(), ("options", "kubelet", "boot_taints"), taints)
    assert found(doc) == [
        ("options.kubelet.boot_taints[1].key", "'bad key': " + _name_part_message(), "error"),
        (
            "options.kubelet.boot_taints[1].effect",
            "'Never' is not one of NoSchedule, PreferNoSchedule, NoExecute",
            "error",
        ),
    ]


def _name_part_message() -> str:
    return (
        "name part must consist of alphanumeric characters, '-', '_' or '.', "
        "and must start and end with an alphanumeric character"
    )


# --- options: CNI configuration file -----------------------------------------------------

CNI = "options.kubelet.cni_conf_file"


def with_cni(name: str, content: str) -> dict[str, Any]:
    return put(full(), ("options", "kubelet", "cni_conf_file"), {"name": name, "content": content})


CONFLIST = {"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "bridge"}]}


@pytest.mark.parametrize(
    ("name", "content", "where", "fragment"),
    [
        ("bad/name.conf", '{"type": "bridge"}', "name", "'bad/name.conf' must match"),
        ("", '{"type": "bridge"}', "name", "'' must match ^[0-9A-Za-z_.-]+$"),
        ("10-net.conf", "", "content", "invalid JSON: line 1, column 1: Expecting value"),
        ("10-net.conf", '{"type": }', "content", "invalid JSON: line 1, column 10"),
        ("10-net.conf", "[]", "content", "must be a JSON object"),
        ("10-net.conf", '{"name": "x"}', "content", "a network configuration needs a string"),
        ("10-net.conf", '{"type": ""}', "content", "a network configuration needs a string"),
        ("10-net.conf", "[" * 100_000, "content", "invalid JSON: nested too deeply"),
        (
            "10-net.conflist",
            json.dumps({**CONFLIST, "name": ""}),
            "content",
            "a .conflist needs a string 'name'",
        ),
        (
            "10-net.conflist",
            json.dumps({**CONFLIST, "plugins": []}),
            "content",
            "a .conflist needs a non-empty 'plugins' list",
        ),
        (
            "10-net.conflist",
            json.dumps({**CONFLIST, "plugins": {"type": "bridge"}}),
            "content",
            "a .conflist needs a non-empty 'plugins' list",
        ),
        (
            "10-net.conflist",
            json.dumps({**CONFLIST, "plugins": [{"type": "bridge"}, {"type": 1}]}),
            "content",
            "plugins[1] needs a string 'type'",
        ),
        (
            "10-net.conflist",
            json.dumps({**CONFLIST, "plugins": ["bridge"]}),
            "content",
            "plugins[0] needs a string 'type'",
        ),
    ],
)
def test_cni_conf_file_rules(name: str, content: str, where: str, fragment: str) -> None:
    assert_only(with_cni(name, content), f"{CNI}.{where}", fragment)


def test_cni_conf_file_accepts_conf_and_conflist_and_nothing() -> None:
    assert found(with_cni("99-loopback.conf", '{"type": "loopback"}')) == []
    assert found(with_cni("10-net.conflist", json.dumps(CONFLIST))) == []
    assert found(with_cni("", "")) == []


# --- structure: unknown fields -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "where", "fragment"),
    [
        (("servce_subnet",), "servce_subnet", "unknown field 'servce_subnet'; did you mean "),
        (("nodes", 0, "control-plane"), "nodes[0].control-plane", "did you mean 'control_plane'"),
        (("nodes", 0, "contol_plane"), "nodes[0].contol_plane", "did you mean 'control_plane'"),
        (("options", "kube_api"), "options.kube_api", "did you mean 'kube-api'?"),
        (("options", "KubeAPI"), "options.KubeAPI", "unknown field 'KubeAPI'"),
        (("options", "kubelet", "cri-endpoint"), "options.kubelet.cri-endpoint", "'cri_endpoint'"),
        (
            ("reboot", "protected_namespaces", "match_labels"),
            "reboot.protected_namespaces.match_labels",
            "did you mean 'matchLabels'?",
        ),
        (
            ("reboot", "max_concurent_reboots"),
            "reboot.max_concurent_reboots",
            "did you mean 'max_concurrent_reboots'?",
        ),
    ],
)
def test_unknown_field_with_suggestion(path: Path, where: str, fragment: str) -> None:
    problem = assert_only(put(minimal(), path, 1), where, fragment)
    assert "unknown field" in problem.message


def test_unknown_field_without_a_close_match_lists_the_known_fields() -> None:
    problem = assert_only(put(minimal(), ("sabakan", "zzz"), "x"), "sabakan.zzz", "")
    assert problem.message == "unknown field 'zzz'; known fields: spare_node_taint_key"


def test_python_attribute_names_are_not_wire_names() -> None:
    """``kube_proxy`` is the attribute; CKE's key is ``kube-proxy``."""
    assert_only(put(minimal(), ("options", "kube_proxy"), {}), "options.kube_proxy", "kube-proxy")


@pytest.mark.parametrize(
    ("key", "where"),
    [(1, "1"), (None, "null"), (True, "true"), (1.5, "1.5")],
)
def test_unknown_non_string_key(key: Any, where: str) -> None:
    doc: dict[Any, Any] = minimal()
    doc[key] = "x"
    doc["zzz"] = "y"  # mixed key types must not break the sorting of unknown keys
    problems = check(doc).problems
    assert [p.path for p in problems] == sorted([where, "zzz"])
    assert all(p.message.startswith("unknown field") for p in problems)


# --- structure: types --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "where", "message"),
    [
        (("name",), 5, "name", "expected a string, got number 5 (quote it)"),
        (("name",), True, "name", "expected a string, got boolean true (quote it)"),
        (("name",), 1.5, "name", "expected a string, got number 1.5 (quote it)"),
        (("name",), ["a"], "name", "expected a string, got a list"),
        (("name",), {"a": 1}, "name", "expected a string, got a mapping"),
        (("taint_control_plane",), "yes", "taint_control_plane", "expected true or false, got"),
        (("taint_control_plane",), 1, "taint_control_plane", "expected true or false, got number"),
        (
            ("nodes", 0, "labels", "example.com/on"),
            True,
            'nodes[0].labels["example.com/on"]',
            "expected a string, got boolean true (quote it)",
        ),
        (
            ("reboot", "eviction_timeout_seconds"),
            "600",
            "reboot.eviction_timeout_seconds",
            "expected an integer, got string '600'",
        ),
        (
            ("reboot", "eviction_timeout_seconds"),
            1.5,
            "reboot.eviction_timeout_seconds",
            "expected an integer, got number 1.5",
        ),
        (
            ("reboot", "eviction_timeout_seconds"),
            True,
            "reboot.eviction_timeout_seconds",
            "expected an integer, got boolean true",
        ),
        (("reboot",), "x", "reboot", "expected a mapping, got string 'x'"),
        (("options",), [], "options", "expected a mapping, got a list"),
        (("nodes",), {"address": "x"}, "nodes", "expected a list, got a mapping"),
        (("nodes", 0, "labels"), ["a=b"], "nodes[0].labels", "expected a mapping, got a list"),
        (
            ("nodes", 0, "labels"),
            {"a": 1},
            'nodes[0].labels["a"]',
            "expected a string, got number 1 (quote it)",
        ),
        (
            ("options", "kube-api", "extra_env"),
            {"GOMAXPROCS": 4},
            'options.kube-api.extra_env["GOMAXPROCS"]',
            "expected a string, got number 4 (quote it)",
        ),
        (
            ("options", "kubelet", "config"),
            "maxPods: 10",
            "options.kubelet.config",
            "expected a mapping, got string 'maxPods: 10'",
        ),
    ],
)
def test_wrong_types(path: Path, value: Any, where: str, message: str) -> None:
    problem = assert_only(put(minimal(), path, value), where, message)
    assert problem.message.startswith("expected ")


def test_quoted_boolean_is_not_a_boolean() -> None:
    doc = minimal()
    doc["nodes"][0]["control_plane"] = "true"
    errors = check(doc).errors
    assert [(p.path, p.message) for p in errors] == [
        ("nodes[0].control_plane", "expected true or false, got string 'true'")
    ]


@pytest.mark.parametrize(
    ("path", "where"),
    [
        (("dns_servers",), "dns_servers"),
        (("control_plane_tolerations",), "control_plane_tolerations"),
        (("reboot", "reboot_command"), "reboot.reboot_command"),
        (("options", "etcd", "extra_args"), "options.etcd.extra_args"),
    ],
)
def test_string_where_a_list_is_expected(path: Path, where: str) -> None:
    doc = put(minimal(), path, "8.8.8.8")
    if path[0] == "reboot":
        doc["reboot"]["boot_check_command"] = ["check"]
    problem = assert_only(doc, where, "expected a list, got string '8.8.8.8'")
    assert problem.message == "expected a list, got string '8.8.8.8'"


def test_mistyped_list_item_is_reported_by_index_and_not_again() -> None:
    doc = minimal()
    doc["dns_servers"] = ["8.8.8.8", 53, "1.1.1.1"]
    doc["nodes"].append(7)
    assert found(doc) == [
        ("nodes[1]", "expected a mapping, got number 7", "error"),
        ("dns_servers[1]", "expected a string, got number 53 (quote it)", "error"),
    ]


def test_null_item_in_a_list_is_an_error() -> None:
    doc = minimal()
    doc["nodes"].append(None)
    assert_only(doc, "nodes[1]", "expected a mapping, got null")


def test_non_string_label_key_is_reported_and_the_rest_still_checked() -> None:
    doc: Any = minimal()
    doc["nodes"][0]["labels"] = {1: "a", "ok": "b"}
    doc["nodes"].append(node("10.0.0.11"))
    assert found(doc) == [
        ('nodes[0].labels["1"]', "expected a string key, got number 1", "error"),
        ("nodes[1].address", "10.0.0.11 duplicates nodes[0]", "error"),
    ]


def test_config_documents_hold_json_data_only() -> None:
    import datetime

    config = config_doc("kubelet", since=datetime.date(2024, 1, 1), ok={"nested": [1, 2.5, None]})
    doc = put(minimal(), ("options", "kubelet", "config"), config)
    assert found(doc) == [
        (
            'options.kubelet.config["since"]',
            "expected JSON data, got date (quote it if it is text)",
            "error",
        )
    ]
    config = config_doc("kubelet", deep={"a": [{"b": float("nan")}]})
    doc = put(minimal(), ("options", "kubelet", "config"), config)
    assert_only(doc, 'options.kubelet.config["deep"]', "got number nan at a[0].b")
    config = config_doc("kubelet", keys={1: "x"})
    doc = put(minimal(), ("options", "kubelet", "config"), config)
    assert_only(doc, 'options.kubelet.config["keys"]', "got a key number 1")


# --- structure: null and defaults --------------------------------------------------------


def test_null_means_default() -> None:
    doc = minimal()
    doc.update(reboot=None, repair=None, options=None, dns_servers=None, sabakan=None)
    doc["nodes"][0].update(labels=None, taints=None, hostname=None)
    checked = check(doc)
    assert checked.problems == ()
    assert checked.value == check(minimal()).value


def test_null_required_field_reports_required_not_a_type_error() -> None:
    assert_only(put(minimal(), ("name",), None), "name", "required: the cluster name")


def test_defaults_are_applied() -> None:
    cluster = load_cluster(json.dumps(minimal()))
    assert cluster.options.etcd.volume_name == DEFAULT_ETCD_VOLUME == "etcd-cke"
    assert cluster.options.kubelet.cri_endpoint == DEFAULT_CRI_ENDPOINT
    assert DEFAULT_CRI_ENDPOINT == "/run/containerd/containerd.sock"
    assert cluster.options.kube_api.audit_log_path == DEFAULT_AUDIT_LOG_PATH == "-"
    assert cluster.options.kube_api.audit_log_enabled is False
    assert cluster.options.kubelet.config is None
    assert cluster.reboot == Reboot()
    assert (cluster.reboot.eviction_timeout_seconds, cluster.reboot.max_concurrent_reboots) == (
        600,
        1,
    )
    assert cluster.reboot.command_timeout_seconds == 0
    assert cluster.reboot.protected_namespaces is None
    assert cluster.reboot.protected_job_pods is None
    assert cluster.repair == Repair()
    assert (cluster.repair.max_concurrent_repairs, cluster.repair.eviction_timeout_seconds) == (
        1,
        600,
    )
    assert cluster.nodes[0].hostname == ""
    assert cluster.nodes[0].nodename == "10.0.0.11"


def test_repair_defaults_are_applied() -> None:
    cluster = load_cluster(json.dumps(with_procedures(procedure())))
    op = cluster.repair.repair_procedures[0].repair_operations[0]
    assert (op.command_timeout_seconds, op.success_command_timeout) == (30, 30)
    assert op.success_command == ()
    assert op.repair_steps[0] == RepairStep(repair_command=("repair", "reboot"))
    assert op.repair_steps[0].command_timeout_seconds == 30
    assert op.repair_steps[0].watch_seconds is None
    assert op.repair_steps[0].need_drain is False
    assert op == RepairOperation(
        operation="unreachable",
        repair_steps=(RepairStep(repair_command=("repair", "reboot")),),
        health_check_command=("check",),
    )


@pytest.mark.parametrize(
    ("path", "attribute", "default"),
    [
        (("options", "etcd", "volume_name"), ("etcd", "volume_name"), "etcd-cke"),
        (
            ("options", "kubelet", "cri_endpoint"),
            ("kubelet", "cri_endpoint"),
            "/run/containerd/containerd.sock",
        ),
        (("options", "kube-api", "audit_log_path"), ("kube_api", "audit_log_path"), "-"),
    ],
)
@pytest.mark.parametrize("given", ["", None])
def test_empty_string_or_null_means_the_default(
    path: Path, attribute: tuple[str, str], default: str, given: str | None
) -> None:
    checked = check(put(minimal(), path, given))
    assert checked.problems == ()
    assert checked.value is not None
    component = getattr(checked.value.options, attribute[0])
    assert getattr(component, attribute[1]) == default


def test_normalised_form_lists_the_defaults() -> None:
    data = codec.unstructure(load_cluster(json.dumps(minimal())))
    assert data["options"]["etcd"]["volume_name"] == "etcd-cke"
    assert data["options"]["kube-api"]["audit_log_path"] == "-"
    assert data["options"]["kubelet"]["cri_endpoint"] == "/run/containerd/containerd.sock"
    assert data["reboot"]["eviction_timeout_seconds"] == 600
    assert "protected_namespaces" not in data["reboot"]  # None is omitted
    assert "config" not in data["options"]["kubelet"]
    assert data["repair"] == {
        "repair_procedures": [],
        "max_concurrent_repairs": 1,
        "evict_retries": 0,
        "evict_interval": 0,
        "eviction_timeout_seconds": 600,
    }


# --- many problems at once ---------------------------------------------------------------


def test_all_problems_are_reported_together() -> None:
    doc = full()
    doc["nodes"][0]["contol_plane"] = True
    doc["nodes"][2]["address"] = "10.0.0.12"
    doc["reboot"]["max_concurrent_reboots"] = "2"
    doc["options"]["kube-proxy"]["config"]["mode"] = "bogus"
    doc["nodes"][1]["control_plane"] = True
    assert found(doc) == [
        (
            "nodes[0].contol_plane",
            "unknown field 'contol_plane'; did you mean 'control_plane'?",
            "error",
        ),
        ("reboot.max_concurrent_reboots", "expected an integer, got string '2'", "error"),
        ("nodes[2].address", "10.0.0.12 duplicates nodes[1]", "error"),
        (
            "options.kube-proxy.config.mode",
            "'bogus' is not one of userspace, iptables, ipvs",
            "error",
        ),
    ]


def test_errors_come_before_warnings() -> None:
    doc = minimal()
    doc["nodes"][0]["control_plane"] = False
    doc["reboot"] = {"reboot_command": ["r"]}
    doc["service_subnet"] = "x"
    severities = [p.severity for p in check(doc).problems]
    assert severities == ["error", "warning", "warning"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("nodes", 0, "user"), [("nodes[0].user", "expected a string, got number 5 (quote it)")]),
        (("nodes", 0, "address"), [("nodes[0].address", "expected a string, got number 5")]),
        (("nodes",), [("nodes", "expected a list, got number 5")]),
        (("service_subnet",), [("service_subnet", "expected a string, got number 5")]),
        (("name",), [("name", "expected a string, got number 5 (quote it)")]),
        (("reboot",), [("reboot", "expected a mapping, got number 5")]),
    ],
)
def test_discarded_input_is_not_reported_again(
    change: Path, expected: list[tuple[str, str]]
) -> None:
    """A field dropped by structuring is not also "required" or "invalid" later."""
    doc = put(minimal(), change, 5)
    problems = check(doc).problems
    assert [p.path for p in problems] == [path for path, _ in expected]
    for problem, (_, message) in zip(problems, expected, strict=True):
        assert problem.message.startswith(message)


def test_discarded_list_item_is_not_validated() -> None:
    doc = full()
    doc["nodes"][1] = "10.0.0.12"
    doc["trusted_rest_mappings"].append(["cert-manager.io"])
    assert found(doc) == [
        ("nodes[1]", "expected a mapping, got string '10.0.0.12'", "error"),
        ("trusted_rest_mappings[1]", "expected a mapping, got a list", "error"),
    ]


def test_unusable_root_gives_one_problem() -> None:
    assert found(["name", "x"]) == [("", "expected a mapping, got a list", "error")]
    assert found("name: x") == [("", "expected a mapping, got string 'name: x'", "error")]
    assert check(["x"]).value is None


# --- text: YAML and JSON -----------------------------------------------------------------


def yaml_text(doc: dict[str, Any]) -> str:
    from cke_core.documents import dump_yaml

    return dump_yaml(doc)


def only_message(text: str) -> str:
    problems = check_cluster(text).problems
    assert len(problems) == 1, problems
    assert problems[0].path == ""
    return problems[0].message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: [\n",
            "YAML syntax error: line 2, column 1: while parsing a flow node "
            "expected the node content, but found '<stream end>'",
        ),
        ("name: x\n  bad: indent\n", "YAML syntax error: line 2, column 6: mapping values"),
        ("nodes:\n- address: 'x\n", "YAML syntax error: line 3, column 1: while scanning a quoted"),
        ("name: x\nservice_subnet: \x01\n", "YAML syntax error: line 2, column 17: unacceptable"),
        ("name: *anchor\n", "YAML syntax error: line 1, column 7: found undefined alias 'anchor'"),
        ("name: !!python/name:os.system x\n", "YAML syntax error: line 1, column 7: could not"),
    ],
)
def test_yaml_syntax_errors_give_line_and_column(text: str, message: str) -> None:
    assert only_message(text).startswith(message)


def test_control_character_message_has_one_line() -> None:
    message = only_message("name: x\n\n  \x07\n")
    assert message == (
        "YAML syntax error: line 3, column 3: unacceptable character #x0007: "
        "special characters are not allowed"
    )


def test_duplicate_yaml_keys() -> None:
    text = yaml_text(minimal()) + "name: other\n"
    assert only_message(text) == (
        "YAML syntax error: line 7, column 1: duplicate key 'name' (first given on line 1)"
    )
    nested = "name: x\nnodes:\n- address: 10.0.0.1\n  user: a\n  address: 10.0.0.2\n"
    assert only_message(nested) == (
        "YAML syntax error: line 5, column 3: duplicate key 'address' (first given on line 3)"
    )


def test_duplicate_json_keys() -> None:
    text = '{"name": "a", "nodes": [{"user": "u", "user": "v"}]}'
    assert only_message(text) == "JSON syntax error: duplicate key 'user'"


def test_json_syntax_error_gives_line_and_column() -> None:
    text = '{\n  "name": "a",\n  "nodes": [}\n'
    assert only_message(text).startswith("JSON syntax error: line 3, column 13: ")


@pytest.mark.parametrize(
    "text",
    ["a\x85b", "\x85", "line\n\x85\n", "a\u2028b", "a\u2029", "tab\tand \x1b escape", "  lead"],
)
def test_normalised_yaml_keeps_unusual_strings(text: str) -> None:
    """NEL and the Unicode line separators are YAML line breaks: they must be escaped."""
    doc = minimal()
    doc["nodes"][0]["annotations"] = {"k": text, "m": f"multi\nline {text}"}
    doc["reboot"] = {"reboot_command": [text], "boot_check_command": [text]}
    first = check(doc).value
    assert first is not None
    again = check_cluster(yaml_text(codec.unstructure(first)))
    assert again.problems == ()
    assert again.value == first


def test_json_and_yaml_give_the_same_value() -> None:
    doc = full()
    from_json = check_cluster(json.dumps(doc))
    from_yaml = check_cluster(yaml_text(doc))
    assert from_json.problems == from_yaml.problems == ()
    assert from_json.value == from_yaml.value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the document is empty"),
        ("# only a comment\n", "the document is empty"),
        ("null\n", "the document is empty"),
        ("- name: x\n", "expected a mapping, got a list"),
        ("just text\n", "expected a mapping, got string 'just text'"),
        ("42\n", "expected a mapping, got number 42"),
    ],
)
def test_documents_that_are_not_a_mapping(text: str, message: str) -> None:
    checked = check_cluster(text)
    assert checked.value is None
    assert only_message(text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: " + "[" * 150 + "]" * 150, "YAML error: nested deeper than 100 levels"),
        ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "JSON error: nested deeper than 100 levels"),
        ("a: " + "[" * 1000, "YAML error: nested deeper than 100 levels"),
        ("a: &x [*x]\n", "YAML error: nested deeper than 100 levels"),
        ('{"name": "\\udc80"}', "JSON error: a string holds a lone surrogate \\udc80"),
        ('name: "\\udc80"\n', "YAML error: a string holds a lone surrogate \\udc80"),
    ],
)
def test_pathological_documents_are_problems_not_crashes(text: str, message: str) -> None:
    assert only_message(text) == message


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)]
    assert only_message("\n".join(lines)) == "YAML error: more than 1000000 values"


def test_aliases_within_limits_are_expanded() -> None:
    text = (
        "name: x\nservice_subnet: 10.68.0.0/16\n"
        "nodes:\n- &n {address: 10.0.0.1, user: u, control_plane: true, labels: &l {a: b}}\n"
        "- {address: 10.0.0.2, user: u, labels: *l}\n"
    )
    checked = check_cluster(text)
    assert checked.problems == ()
    assert checked.value is not None
    assert checked.value.nodes[1].labels == {"a": "b"}


def test_load_cluster_raises_with_every_error() -> None:
    doc = minimal()
    doc["name"] = ""
    doc["service_subnet"] = ""
    with pytest.raises(ConfigError) as info:
        load_cluster(json.dumps(doc))
    assert [p.path for p in info.value.problems] == ["name", "service_subnet"]
    assert str(info.value).splitlines() == [
        "name: required: the cluster name must not be empty",
        "service_subnet: required: a CIDR such as 10.68.0.0/16",
    ]


def test_load_cluster_ignores_warnings() -> None:
    doc = minimal()
    doc["nodes"][0]["control_plane"] = False
    assert load_cluster(json.dumps(doc)).nodes[0].control_plane is False


# --- constraints -------------------------------------------------------------------------


def test_constraints_defaults() -> None:
    assert load_constraints("{}") == Constraints()
    assert Constraints() == Constraints(
        control_plane_count=1,
        minimum_workers_rate=80,
        maximum_unreachable_nodes_for_reboot=0,
        maximum_repair_queue_entries=0,
        wait_seconds_to_repair_rebooting=0,
    )
    assert codec.unstructure(Constraints()) == {
        "control-plane-count": 1,
        "minimum-workers-rate": 80,
        "maximum-unreachable-nodes-for-reboot": 0,
        "maximum-repair-queue-entries": 0,
        "wait-seconds-to-repair-rebooting": 0,
    }


def test_constraints_use_hyphenated_names() -> None:
    text = "control-plane-count: 3\nminimum-workers-rate: 50\nwait-seconds-to-repair-rebooting: 9\n"
    assert load_constraints(text) == Constraints(
        control_plane_count=3, minimum_workers_rate=50, wait_seconds_to_repair_rebooting=9
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("control-plane-count", 0, "must be positive"),
        ("control-plane-count", -1, "must be positive"),
        ("minimum-workers-rate", 101, "must be between 0 and 100"),
        ("minimum-workers-rate", -1, "must be between 0 and 100"),
        ("maximum-unreachable-nodes-for-reboot", -1, "must not be negative"),
        ("maximum-repair-queue-entries", -1, "must not be negative"),
        ("wait-seconds-to-repair-rebooting", -1, "must not be negative"),
        ("control-plane-count", "3", "expected an integer, got string '3'"),
        ("control-plane-count", None, None),
        ("minimum-workers-rate", 0, None),
        ("minimum-workers-rate", 100, None),
    ],
)
def test_constraints_rules(key: str, value: Any, message: str | None) -> None:
    problems = check_constraints(json.dumps({key: value})).problems
    if message is None:
        assert problems == ()
    else:
        assert [(p.path, p.message) for p in problems] == [(key, message)]


def test_constraints_unknown_name_suggests_the_hyphenated_one() -> None:
    problems = check_constraints("control_plane_count: 3\n").problems
    assert [(p.path, p.message) for p in problems] == [
        (
            "control_plane_count",
            "unknown field 'control_plane_count'; did you mean 'control-plane-count'?",
        )
    ]


def test_constraints_report_every_problem() -> None:
    text = "control-plane-count: 0\nminimum-workers-rate: 200\nmaximum-repair-queue-entries: x\n"
    problems = check_constraints(text).problems
    assert [p.path for p in problems] == [
        "maximum-repair-queue-entries",
        "control-plane-count",
        "minimum-workers-rate",
    ]


def test_validate_constraints_directly() -> None:
    assert validate_constraints(Constraints()) == []
    assert validate_constraints(Constraints(control_plane_count=0)) == [
        Problem("control-plane-count", "must be positive")
    ]


@pytest.mark.parametrize(("control_planes", "count"), [(1, 3), (3, 1), (2, 3), (4, 3)])
def test_control_plane_count_cross_check(control_planes: int, count: int) -> None:
    doc = minimal()
    doc["nodes"] = [node(f"10.0.0.{i}", control_plane=i < control_planes) for i in range(5)]
    cluster = load_cluster(json.dumps(doc))
    assert check_against_constraints(cluster, Constraints(control_plane_count=count)) == [
        Problem(
            "nodes",
            f"{control_planes} control plane(s), but the constraint control-plane-count is {count}",
        )
    ]
    matching = Constraints(control_plane_count=control_planes)
    assert check_against_constraints(cluster, matching) == []


def test_no_warning_caused_by_a_discarded_field() -> None:
    from cke_core.config import check_cluster

    text = (
        "name: c\nservice_subnet: 10.0.0.0/24\n"
        'nodes:\n  - {address: 10.0.0.1, user: u, control_plane: "true"}\n'
    )
    problems = [str(p) for p in check_cluster(text).problems]
    assert problems == ["nodes[0].control_plane: expected true or false, got string 'true'"]
