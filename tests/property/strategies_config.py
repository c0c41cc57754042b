"""Hypothesis strategies for VALID cluster configurations (``cke_core.cluster``).

``clusters()`` draws a whole ``Cluster`` that ``validate_cluster`` accepts
without a single error or warning: addresses and node names unique, at least
one control plane, Kubernetes syntax for labels, taints and selectors,
repair procedures with unique machine types and operations, configuration
documents with the right apiVersion and kind, and so on. Every optional
section is sometimes absent and sometimes full.

Free text (user names, commands, annotation values, environment values ...)
is drawn from all of Unicode, so the YAML and JSON writers meet quotes,
control characters, line breaks and non-ASCII text.

Every strategy is built once, at import: building strategies inside a draw
costs more than drawing from them. Names are assembled from characters, as
``st.from_regex`` is several times slower.
"""

from __future__ import annotations

import ipaddress
import json
import string
from typing import Any, TypeVar

from hypothesis import strategies as st

from cke_core.cluster import (
    PROPAGATION_MODES,
    PROXY_MODES,
    SELINUX_LABELS,
    TAINT_EFFECTS,
    APIServerParams,
    Cluster,
    CNIConfFile,
    EtcdParams,
    KubeletParams,
    LabelSelector,
    LabelSelectorRequirement,
    Mount,
    Node,
    Options,
    ProxyParams,
    Reboot,
    Repair,
    RepairOperation,
    RepairProcedure,
    RepairStep,
    Sabakan,
    SchedulerParams,
    ServiceParams,
    Taint,
    TrustedRestMapping,
)
from cke_core.documents import dump_yaml
from cke_core.frozen import FrozenDict, freeze

T = TypeVar("T")

MAX_ITEMS = 2
MAX_NODES = 5


def tuples(elements: st.SearchStrategy[T], min_size: int = 0) -> st.SearchStrategy[tuple[T, ...]]:
    return st.lists(elements, min_size=min_size, max_size=MAX_ITEMS).map(tuple)


# --- text ---------------------------------------------------------------------------------

#: Any Unicode text (no surrogates, as in every real document).
TEXT = st.text(max_size=10)
NONEMPTY_TEXT = st.text(min_size=1, max_size=10)
#: Text without NUL (arguments and environment variable names cannot hold one).
_NO_NUL = st.characters(exclude_characters="\x00", codec="utf-8")
ARG_TEXT = st.text(_NO_NUL, max_size=10)
WORDS = st.text(_NO_NUL, min_size=1, max_size=10)
ENV_NAMES = st.text(
    st.characters(exclude_characters="\x00=", codec="utf-8"),
    min_size=1,
    max_size=10,
)
ABSOLUTE_PATHS = ARG_TEXT.map(lambda rest: "/" + rest)
COMMANDS = tuples(TEXT, min_size=1)

# --- Kubernetes names -----------------------------------------------------------------------

_ALNUM = string.ascii_letters + string.digits
_LOWER_ALNUM = string.ascii_lowercase + string.digits


def _bounded(first: str, middle: str, last: str, max_middle: int) -> st.SearchStrategy[str]:
    """One character of ``first``, or ``first`` + ``middle``* + ``last``."""
    return st.sampled_from(first) | st.builds(
        "{}{}{}".format,
        st.sampled_from(first),
        st.text(middle, max_size=max_middle),
        st.sampled_from(last),
    )


DNS1123_LABELS = _bounded(_LOWER_ALNUM, _LOWER_ALNUM + "-", _LOWER_ALNUM, 6)
DNS1035_LABELS = _bounded(string.ascii_lowercase, _LOWER_ALNUM + "-", _LOWER_ALNUM, 6)
DNS_SUBDOMAINS = st.lists(DNS1123_LABELS, min_size=1, max_size=3).map(".".join)
_NAMES = _bounded(_ALNUM, _ALNUM + "-_.", _ALNUM, 10)
#: ``[prefix/]name``: label keys, taint keys, annotation keys.
QUALIFIED_NAMES = _NAMES | st.builds("{}/{}".format, DNS_SUBDOMAINS, _NAMES)
LABEL_VALUES = st.just("") | _NAMES

LABELS = st.dictionaries(QUALIFIED_NAMES, LABEL_VALUES, max_size=MAX_ITEMS).map(FrozenDict)
ANNOTATIONS = st.dictionaries(QUALIFIED_NAMES, TEXT, max_size=MAX_ITEMS).map(FrozenDict)
TAINTS = st.builds(
    Taint,
    key=QUALIFIED_NAMES,
    value=LABEL_VALUES,
    effect=st.sampled_from(TAINT_EFFECTS),
)

SELECTOR_REQUIREMENTS = st.builds(
    LabelSelectorRequirement,
    key=QUALIFIED_NAMES,
    operator=st.sampled_from(["In", "NotIn"]),
    values=tuples(LABEL_VALUES, min_size=1),
) | st.builds(
    LabelSelectorRequirement,
    key=QUALIFIED_NAMES,
    operator=st.sampled_from(["Exists", "DoesNotExist"]),
)
#: None and ``{}`` both match everything; both are valid.
SELECTORS = st.none() | st.builds(
    LabelSelector,
    match_labels=LABELS,
    match_expressions=tuples(SELECTOR_REQUIREMENTS),
)

# --- network --------------------------------------------------------------------------------

IP_ADDRESSES = st.ip_addresses().map(str)
SUBNETS = (
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32))
    | st.tuples(st.ip_addresses(v=6), st.integers(0, 128))
).map(lambda ip_prefix: str(ipaddress.ip_network(ip_prefix, strict=False)))
DNS_SERVICES = st.just("") | st.builds("{}/{}".format, DNS1123_LABELS, DNS1035_LABELS)

# --- nodes ------------------------------------------------------------------------------------

_NODE_DETAILS = st.fixed_dictionaries(
    {
        "user": WORDS,
        "control_plane": st.booleans(),
        "annotations": ANNOTATIONS,
        "labels": LABELS,
        "taints": tuples(TAINTS),
    }
)


@st.composite
def _node_lists(draw: st.DrawFn) -> tuple[Node, ...]:
    addresses = draw(st.lists(IP_ADDRESSES, min_size=1, max_size=MAX_NODES, unique=True))
    count = len(addresses)
    hostnames = draw(st.lists(st.just("") | DNS_SUBDOMAINS, min_size=count, max_size=count))
    details: list[dict[str, Any]] = draw(st.lists(_NODE_DETAILS, min_size=count, max_size=count))
    details[draw(st.integers(0, count - 1))]["control_plane"] = True
    nodes = []
    names = set(addresses)  # a hostname must not repeat another node's name
    for address, hostname, fields in zip(addresses, hostnames, details, strict=True):
        if hostname in names:
            hostname = ""
        names.add(hostname)
        nodes.append(Node(address=address, hostname=hostname, **fields))
    return tuple(nodes)


NODE_LISTS = _node_lists()

# --- reboot and repair ------------------------------------------------------------------------

_REBOOT_COMMANDS = st.tuples(st.just(()), st.just(())) | st.tuples(COMMANDS, COMMANDS)


_REBOOT_FIELDS = st.fixed_dictionaries(
    {
        "eviction_timeout_seconds": st.integers(1, 10**6),
        "command_timeout_seconds": st.integers(0, 3600),
        "command_retries": st.integers(0, 10),
        "command_interval": st.integers(0, 600),
        "evict_retries": st.integers(0, 10),
        "evict_interval": st.integers(0, 600),
        "max_concurrent_reboots": st.integers(1, 10),
        "protected_namespaces": SELECTORS,
        "protected_job_pods": SELECTORS,
    }
)


@st.composite
def _reboots(draw: st.DrawFn) -> Reboot:
    # Both commands or neither: one without the other is a warning.
    reboot_command, boot_check_command = draw(_REBOOT_COMMANDS)
    fields: dict[str, Any] = draw(_REBOOT_FIELDS)
    return Reboot(reboot_command=reboot_command, boot_check_command=boot_check_command, **fields)


REBOOTS = _reboots()

REPAIR_STEPS = st.builds(
    RepairStep,
    repair_command=COMMANDS,
    command_timeout_seconds=st.integers(0, 3600),
    command_retries=st.integers(0, 5),
    command_interval=st.integers(0, 600),
    need_drain=st.booleans(),
    watch_seconds=st.none() | st.integers(1, 3600),
)
_OPERATION_DETAILS = st.fixed_dictionaries(
    {
        "repair_steps": tuples(REPAIR_STEPS, min_size=1),
        "health_check_command": COMMANDS,
        "command_timeout_seconds": st.integers(0, 600),
        "success_command": tuples(TEXT),
        "success_command_timeout": st.integers(0, 600),
    }
)


@st.composite
def _repair_procedure_lists(draw: st.DrawFn) -> tuple[RepairProcedure, ...]:
    """Machine types never repeat across procedures, operations never within one."""
    count = draw(st.integers(0, MAX_ITEMS))
    machine_types = draw(
        st.lists(NONEMPTY_TEXT, min_size=2 * count, max_size=2 * count, unique=True)
    )
    procedures = []
    for i in range(count):
        names = draw(st.lists(NONEMPTY_TEXT, min_size=1, max_size=MAX_ITEMS, unique=True))
        details: list[dict[str, Any]] = draw(
            st.lists(_OPERATION_DETAILS, min_size=len(names), max_size=len(names))
        )
        procedures.append(
            RepairProcedure(
                machine_types=tuple(machine_types[2 * i : 2 * i + draw(st.integers(1, 2))]),
                repair_operations=tuple(
                    RepairOperation(operation=name, **fields)
                    for name, fields in zip(names, details, strict=True)
                ),
            )
        )
    return tuple(procedures)


REPAIRS = st.builds(
    Repair,
    repair_procedures=_repair_procedure_lists(),
    max_concurrent_repairs=st.integers(1, 10),
    protected_namespaces=SELECTORS,
    protected_job_pods=SELECTORS,
    evict_retries=st.integers(0, 10),
    evict_interval=st.integers(0, 600),
    eviction_timeout_seconds=st.integers(1, 10**6),
)

TRUSTED_REST_MAPPING_LISTS = st.lists(
    st.builds(
        TrustedRestMapping,
        group=st.just("") | DNS_SUBDOMAINS,
        version=WORDS,
        kind=WORDS,
        resource=WORDS,
        namespaced=st.booleans(),
    ),
    max_size=MAX_ITEMS,
    unique_by=lambda m: (m.group, m.version, m.kind),
).map(tuple)

# --- options ---------------------------------------------------------------------------------

#: JSON data, as a Kubernetes configuration document holds it.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=MAX_ITEMS) | st.dictionaries(TEXT, inner, max_size=2),
    max_leaves=5,
)

_RESERVED_CONFIG_KEYS = frozenset({"apiVersion", "kind", "mode", "clusterDomain"})
_CONFIG_EXTRAS = st.dictionaries(TEXT, JSON_VALUES, max_size=MAX_ITEMS)


def config_documents(
    api_version: str, kind: str, **special: st.SearchStrategy[Any]
) -> st.SearchStrategy[FrozenDict[str, Any] | None]:
    """None, or a partial configuration of ``kind`` with free-form extra fields."""
    specials = st.fixed_dictionaries({}, optional=special)

    def build(parts: tuple[dict[str, Any], dict[str, Any]]) -> FrozenDict[str, Any]:
        extra, chosen = parts
        extra = {k: v for k, v in extra.items() if k not in _RESERVED_CONFIG_KEYS}
        document: FrozenDict[str, Any] = freeze(
            {"apiVersion": api_version, "kind": kind, **extra, **chosen}
        )
        return document

    return st.none() | st.tuples(_CONFIG_EXTRAS, specials).map(build)


MOUNTS = st.builds(
    Mount,
    source=ABSOLUTE_PATHS,
    destination=ABSOLUTE_PATHS,
    read_only=st.booleans(),
    propagation=st.sampled_from(PROPAGATION_MODES),
    selinux_label=st.sampled_from(SELINUX_LABELS),
)
SERVICE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "extra_args": tuples(ARG_TEXT),
    "extra_binds": tuples(MOUNTS),
    "extra_env": st.dictionaries(ENV_NAMES, TEXT, max_size=MAX_ITEMS).map(FrozenDict),
}

_AUDIT_RULES = st.fixed_dictionaries(
    {"level": st.sampled_from(["None", "Metadata", "Request", "RequestResponse"])},
    optional={"users": st.lists(NONEMPTY_TEXT, max_size=2), "verbs": st.lists(NONEMPTY_TEXT)},
)
AUDIT_POLICIES = st.fixed_dictionaries(
    {
        "apiVersion": st.just("audit.k8s.io/v1"),
        "kind": st.just("Policy"),
        "rules": st.lists(_AUDIT_RULES, max_size=MAX_ITEMS),
    }
).map(dump_yaml)

#: The policy is parsed only when auditing is on; otherwise any text is kept as it is.
_AUDIT = st.tuples(st.just(True), AUDIT_POLICIES) | st.tuples(st.just(False), TEXT)
_SERVICE_PARAMS = st.fixed_dictionaries(SERVICE_FIELDS)
_AUDIT_LOG_PATHS = st.just("-") | ABSOLUTE_PATHS


@st.composite
def _api_server_params(draw: st.DrawFn) -> APIServerParams:
    enabled, policy = draw(_AUDIT)
    return APIServerParams(
        **draw(_SERVICE_PARAMS),
        audit_log_enabled=enabled,
        audit_log_policy=policy,
        audit_log_path=draw(_AUDIT_LOG_PATHS),
    )


API_SERVER_PARAMS = _api_server_params()

_PLUGINS = st.fixed_dictionaries({"type": NONEMPTY_TEXT}, optional={"extra": JSON_VALUES})
CNI_CONF_FILES = (
    st.just(CNIConfFile())
    | st.builds(
        CNIConfFile,
        name=st.text(_ALNUM + "_.-", max_size=8).map(lambda n: n + ".conflist"),
        content=st.fixed_dictionaries(
            {
                "cniVersion": st.just("1.0.0"),
                "name": NONEMPTY_TEXT,
                "plugins": st.lists(_PLUGINS, min_size=1, max_size=2),
            }
        ).map(lambda d: json.dumps(d, indent=2)),
    )
    | st.builds(
        CNIConfFile,
        name=st.text(_ALNUM + "_.-", max_size=8).map(lambda n: n + ".conf"),
        content=st.fixed_dictionaries({"type": NONEMPTY_TEXT}, optional={"name": TEXT}).map(
            json.dumps
        ),
    )
)


def _params(cls: type[ServiceParams], **extra: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(cls, **SERVICE_FIELDS, **extra)


OPTIONS = st.builds(
    Options,
    etcd=_params(EtcdParams, volume_name=_bounded(_ALNUM, _ALNUM + "_.-", _ALNUM + "_.-", 10)),
    rivers=_params(ServiceParams),
    etcd_rivers=_params(ServiceParams),
    kube_api=API_SERVER_PARAMS,
    kube_controller_manager=_params(ServiceParams),
    kube_scheduler=_params(
        SchedulerParams,
        config=config_documents("kubescheduler.config.k8s.io/v1", "KubeSchedulerConfiguration"),
    ),
    kube_proxy=_params(
        ProxyParams,
        config=config_documents(
            "kubeproxy.config.k8s.io/v1alpha1",
            "KubeProxyConfiguration",
            mode=st.sampled_from(PROXY_MODES),
        ),
        disable=st.booleans(),
    ),
    kubelet=_params(
        KubeletParams,
        boot_taints=tuples(TAINTS),
        cni_conf_file=CNI_CONF_FILES,
        config=config_documents(
            "kubelet.config.k8s.io/v1beta1",
            "KubeletConfiguration",
            clusterDomain=DNS_SUBDOMAINS,
        ),
        cri_endpoint=ABSOLUTE_PATHS,
        in_place_update=st.booleans(),
    ),
)

# --- the cluster ---------------------------------------------------------------------------

CLUSTERS = st.builds(
    Cluster,
    name=NONEMPTY_TEXT,
    nodes=NODE_LISTS,
    taint_control_plane=st.booleans(),
    control_plane_tolerations=tuples(QUALIFIED_NAMES),
    service_subnet=SUBNETS,
    dns_servers=tuples(IP_ADDRESSES),
    dns_service=DNS_SERVICES,
    reboot=st.just(Reboot()) | REBOOTS,
    repair=st.just(Repair()) | REPAIRS,
    sabakan=st.builds(Sabakan, spare_node_taint_key=st.just("") | QUALIFIED_NAMES),
    trusted_rest_mappings=TRUSTED_REST_MAPPING_LISTS,
    options=st.just(Options()) | OPTIONS,
)


def clusters() -> st.SearchStrategy[Cluster]:
    """A valid ``Cluster``: ``validate_cluster`` reports nothing at all."""
    return CLUSTERS
