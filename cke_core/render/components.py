"""What CKE runs on each node: built-in container parameters and config documents.

Every system container of §C.3 gets a function returning its *built-in*
parameters as a ``cluster.ServiceParams`` (``extra_args`` holds the whole
command line after the image, in CKE's order; ``extra_binds`` the built-in
binds). CKE records exactly these values in the container's label as
``builtin`` and compares them, together with the image and the ``extra``
parameters of cluster.yml, to decide that a component is outdated; the same
values therefore have to come out here, in the same order, or every container
started by CKE would look outdated to this engine.

Container *run options* (``--privileged``, tmpfs and volume mounts ...) are not
part of the label and are kept apart in ``container_options``. In particular
the etcd data volume is mounted with ``--mount type=volume,...`` like CKE does,
not as a built-in bind.

The scheduler, proxy and kubelet configuration documents are built the way
CKE builds them: defaults, then the user's partial document merged over them
(objects merge key by key, anything else is replaced, as Go's ``json.Unmarshal``
into a struct does), then the forced fields. The documents carry no
``apiVersion``/``kind``: that is how the node's copy is observed (TypeMeta
removed), so a rendered document compares directly with the observed one; the
file renderers of ``files.py`` add the TypeMeta when writing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from cke_core.cluster import (
    DEFAULT_ETCD_VOLUME,
    Cluster,
    ConfigDocument,
    Mount,
    Node,
    ServiceParams,
    Taint,
)
from cke_core.frozen import freeze, thaw
from cke_core.render.files import (
    CNI_BIN_DIR,
    CNI_CONF_DIR,
    CNI_VAR_DIR,
    CONTROLLER_MANAGER_KUBECONFIG_PATH,
    ENCRYPTION_CONFIG_PATH,
    ETCD_PKI_DIR,
    KUBELET_CONFIG_PATH,
    KUBELET_KUBECONFIG_PATH,
    PROXY_CONFIG_PATH,
    PROXY_KUBECONFIG_PATH,
    SCHEDULER_CONFIG_PATH,
    SCHEDULER_KUBECONFIG_PATH,
    VOLUME_PLUGIN_DIR,
    audit_policy_path,
    etcd_pki_path,
    k8s_pki_path,
)
from cke_core.status import ServiceStatus

# ---------------------------------------------------------------------------
# Container names and ports (CKE's op/constants.go)
# ---------------------------------------------------------------------------

ETCD: Final = "etcd"
RIVERS: Final = "rivers"
ETCD_RIVERS: Final = "etcd-rivers"
KUBE_APISERVER: Final = "kube-apiserver"
KUBE_CONTROLLER_MANAGER: Final = "kube-controller-manager"
KUBE_SCHEDULER: Final = "kube-scheduler"
KUBELET: Final = "kubelet"
KUBE_PROXY: Final = "kube-proxy"

#: Every system container, in bootstrap order.
CONTAINERS: Final = (
    RIVERS,
    ETCD_RIVERS,
    ETCD,
    KUBE_APISERVER,
    KUBE_CONTROLLER_MANAGER,
    KUBE_SCHEDULER,
    KUBELET,
    KUBE_PROXY,
)

RIVERS_UPSTREAM_PORT: Final = 6443
RIVERS_LISTEN_PORT: Final = 16443
ETCD_RIVERS_UPSTREAM_PORT: Final = 2379
ETCD_RIVERS_LISTEN_PORT: Final = 12379

#: Options every system container is run with (``run-container``, §C.1/§C.3).
SYSTEM_CONTAINER_BASE_OPTIONS: Final = (
    "--log-driver=journald",
    "--read-only",
    "--network=host",
    "--uts=host",
)

#: The volume that marks a control plane as an added etcd member (§C.2).
ETCD_ADDED_MEMBER_VOLUME: Final = "etcd-added-member"
ETCD_DATA_DIR: Final = "/var/lib/etcd"

DEFAULT_CLUSTER_DOMAIN: Final = "cluster.local"
#: ``--requestheader-allowed-names`` and the CN of the aggregation client certificate.
AGGREGATION_CLIENT_CN: Final = "front-proxy-client"
ADMISSION_PLUGINS: Final = ("NodeRestriction", "DenyServiceExternalIPs")

# SELinux labels and bind propagation modes CKE uses on its binds.
_SHARED: Final = "z"
_PRIVATE: Final = "Z"

# Container options (§C.2): not part of the recorded parameters.
_APISERVER_OPTIONS: Final = ("--mount", "type=tmpfs,dst=/run/kubernetes")
_KUBELET_OPTIONS: Final = ("--pid=host", "--privileged", "--tmpfs=/tmp")
_PROXY_OPTIONS: Final = ("--tmpfs=/run", "--privileged")


def _bind(
    path: str, *, read_only: bool, propagation: str = "", label: str = "", dest: str = ""
) -> Mount:
    return Mount(
        source=path,
        destination=dest or path,
        read_only=read_only,
        propagation=propagation,
        selinux_label=label,
    )


_MACHINE_ID: Final = _bind("/etc/machine-id", read_only=True)
_ETC_KUBERNETES: Final = _bind("/etc/kubernetes", read_only=True, label=_SHARED)
_CONTROL_PLANE_BINDS: Final = (_MACHINE_ID, _ETC_KUBERNETES)


def _params(args: Sequence[str], binds: Sequence[Mount] = ()) -> ServiceParams:
    return ServiceParams(extra_args=tuple(args), extra_binds=tuple(binds))


# ---------------------------------------------------------------------------
# rivers and etcd-rivers
# ---------------------------------------------------------------------------


def _rivers(cluster: Cluster, upstream_port: int, listen_port: int) -> ServiceParams:
    upstreams = ",".join(f"{n.address}:{upstream_port}" for n in cluster.control_planes)
    return _params(("rivers", f"--upstreams={upstreams}", f"--listen=127.0.0.1:{listen_port}"))


def rivers_params(cluster: Cluster) -> ServiceParams:
    """rivers on every node: proxies 127.0.0.1:16443 to the apiservers of all CPs."""
    return _rivers(cluster, RIVERS_UPSTREAM_PORT, RIVERS_LISTEN_PORT)


def etcd_rivers_params(cluster: Cluster) -> ServiceParams:
    """etcd-rivers on CPs: proxies 127.0.0.1:12379 to etcd on all CPs."""
    return _rivers(cluster, ETCD_RIVERS_UPSTREAM_PORT, ETCD_RIVERS_LISTEN_PORT)


# ---------------------------------------------------------------------------
# etcd
# ---------------------------------------------------------------------------


def etcd_initial_cluster_entry(node: Node) -> str:
    """One ``--initial-cluster`` entry: ``<address>=https://<address>:2380``."""
    return f"{node.address}=https://{node.address}:2380"


def etcd_params(
    cluster: Cluster,
    node: Node,
    *,
    initial_cluster: Sequence[Node | str] | None = None,
    state: Literal["new", "existing"] | None = None,
) -> ServiceParams:
    """etcd's built-in parameters; the ``--initial-*`` flags only with ``initial_cluster``.

    ``initial_cluster`` lists the members: a ``Node`` stands for
    ``<address>=https://<address>:2380``; a string is a ready ``name=peer-url``
    entry (how ``add-etcd-member`` builds it from the member list). ``state``
    defaults to ``new``. The data volume is a container option
    (``container_options``), as in CKE.
    """
    del cluster  # the parameters do not depend on the spec; kept for a uniform signature
    addr = node.address
    args = [
        f"--name={addr}",
        "--listen-peer-urls=https://0.0.0.0:2380",
        "--listen-client-urls=https://0.0.0.0:2379",
        f"--advertise-client-urls=https://{addr}:2379",
        f"--cert-file={etcd_pki_path('server.crt')}",
        f"--key-file={etcd_pki_path('server.key')}",
        "--client-cert-auth=true",
        f"--trusted-ca-file={etcd_pki_path('ca-client.crt')}",
        f"--peer-cert-file={etcd_pki_path('peer.crt')}",
        f"--peer-key-file={etcd_pki_path('peer.key')}",
        "--peer-client-cert-auth=true",
        f"--peer-trusted-ca-file={etcd_pki_path('ca-peer.crt')}",
        "--enable-pprof=true",
        "--feature-gates=InitialCorruptCheck=true,CompactHashCheck=true",
        "--corrupt-check-time=3h",
    ]
    if initial_cluster:
        entries = [
            m if isinstance(m, str) else etcd_initial_cluster_entry(m) for m in initial_cluster
        ]
        args += [
            f"--initial-advertise-peer-urls=https://{addr}:2380",
            f"--initial-cluster={','.join(entries)}",
            "--initial-cluster-token=cke",
            f"--initial-cluster-state={state or 'new'}",
        ]
    return _params(args, (_bind(ETCD_PKI_DIR, read_only=True, label=_PRIVATE),))


# ---------------------------------------------------------------------------
# Kubernetes control plane
# ---------------------------------------------------------------------------


def api_server_params(cluster: Cluster, node: Node) -> ServiceParams:
    """kube-apiserver's built-in parameters; the audit flags only when audit is enabled."""
    options = cluster.options.kube_api
    args = [
        "kube-apiserver",
        "--allow-privileged",
        "--etcd-servers=https://127.0.0.1:12379",
        f"--etcd-cafile={k8s_pki_path('etcd-ca.crt')}",
        f"--etcd-certfile={k8s_pki_path('apiserver-etcd-client.crt')}",
        f"--etcd-keyfile={k8s_pki_path('apiserver-etcd-client.key')}",
        "--etcd-compaction-interval=5m",
        "--bind-address=0.0.0.0",
        f"--client-ca-file={k8s_pki_path('ca.crt')}",
        f"--tls-cert-file={k8s_pki_path('apiserver.crt')}",
        f"--tls-private-key-file={k8s_pki_path('apiserver.key')}",
        f"--kubelet-certificate-authority={k8s_pki_path('ca.crt')}",
        f"--kubelet-client-certificate={k8s_pki_path('apiserver.crt')}",
        f"--kubelet-client-key={k8s_pki_path('apiserver.key')}",
        f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
        f"--service-account-issuer=https://kubernetes.default.svc.{cluster_domain(cluster)}",
        f"--service-account-key-file={k8s_pki_path('service-account.crt')}",
        f"--service-account-signing-key-file={k8s_pki_path('service-account.key')}",
        "--service-account-lookup",
        f"--requestheader-client-ca-file={k8s_pki_path('aggregation-ca.crt')}",
        f"--requestheader-allowed-names={AGGREGATION_CLIENT_CN}",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        f"--proxy-client-cert-file={k8s_pki_path('aggregation.crt')}",
        f"--proxy-client-key-file={k8s_pki_path('aggregation.key')}",
        "--authorization-mode=Node,RBAC",
        f"--advertise-address={node.address}",
        "--endpoint-reconciler-type=none",
        f"--service-cluster-ip-range={cluster.service_subnet}",
        f"--encryption-provider-config={ENCRYPTION_CONFIG_PATH}",
        "--feature-gates=CoordinatedLeaderElection=true",
        "--runtime-config=coordination.k8s.io/v1beta1=true",
    ]
    if options.audit_log_enabled:
        args += [
            f"--audit-log-path={options.audit_log_path or '-'}",
            f"--audit-policy-file={audit_policy_path(options.audit_log_policy)}",
        ]
    return _params(args, _CONTROL_PLANE_BINDS)


def controller_manager_params(cluster: Cluster, node: Node) -> ServiceParams:
    """kube-controller-manager's built-in parameters (the same on every CP)."""
    del node
    kubeconfig = CONTROLLER_MANAGER_KUBECONFIG_PATH
    args = (
        "kube-controller-manager",
        f"--cluster-name={cluster.name}",
        f"--service-cluster-ip-range={cluster.service_subnet}",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--tls-cert-file={k8s_pki_path('apiserver.crt')}",
        f"--tls-private-key-file={k8s_pki_path('apiserver.key')}",
        f"--root-ca-file={k8s_pki_path('ca.crt')}",
        f"--service-account-private-key-file={k8s_pki_path('service-account.key')}",
        "--use-service-account-credentials=true",
    )
    return _params(args, _CONTROL_PLANE_BINDS)


def scheduler_params(cluster: Cluster, node: Node) -> ServiceParams:
    """kube-scheduler's built-in parameters (its settings live in the config document)."""
    del cluster, node
    args = (
        "kube-scheduler",
        f"--config={SCHEDULER_CONFIG_PATH}",
        f"--authentication-kubeconfig={SCHEDULER_KUBECONFIG_PATH}",
        f"--authorization-kubeconfig={SCHEDULER_KUBECONFIG_PATH}",
        f"--tls-cert-file={k8s_pki_path('apiserver.crt')}",
        f"--tls-private-key-file={k8s_pki_path('apiserver.key')}",
    )
    return _params(args, _CONTROL_PLANE_BINDS)


# ---------------------------------------------------------------------------
# Node components
# ---------------------------------------------------------------------------

_KUBELET_BINDS: Final = (
    _MACHINE_ID,
    _bind("/etc/os-release", read_only=True),
    _ETC_KUBERNETES,
    _bind("/var/lib/kubelet", read_only=False, propagation="rshared", label=_SHARED),
    _bind("/var/lib/docker", read_only=False, label=_PRIVATE),
    _bind(VOLUME_PLUGIN_DIR, read_only=False, propagation="shared", label=_SHARED),
    _bind("/var/log/pods", read_only=False, label=_SHARED),
    _bind("/var/log/containers", read_only=False, label=_SHARED),
    _bind("/run", read_only=False),
    _bind("/sys", read_only=False),
    _bind("/dev", read_only=False),
    _bind(CNI_BIN_DIR, read_only=True, label=_SHARED),
    _bind(CNI_CONF_DIR, read_only=True, label=_SHARED),
    _bind(CNI_VAR_DIR, read_only=False, label=_SHARED),
)

_CRI_ENDPOINT_FLAG: Final = "--container-runtime-endpoint="


def kubelet_params(cluster: Cluster, node: Node) -> ServiceParams:
    """kubelet's built-in parameters; the CRI endpoint is part of them."""
    args = [
        "kubelet",
        f"--config={KUBELET_CONFIG_PATH}",
        f"--kubeconfig={KUBELET_KUBECONFIG_PATH}",
        f"--hostname-override={node.nodename}",
    ]
    cri = cluster.options.kubelet.cri_endpoint
    if cri:
        args.append(_CRI_ENDPOINT_FLAG + cri)
    return _params(args, _KUBELET_BINDS)


def kubelet_runtime_changed(running: ServiceParams, current: ServiceParams) -> bool:
    """Whether the CRI endpoint differs: CKE then warns and never restarts the kubelet."""

    def endpoint(params: ServiceParams) -> str:
        return next((a for a in params.extra_args if a.startswith(_CRI_ENDPOINT_FLAG)), "")

    return endpoint(running) != endpoint(current)


_PROXY_BINDS: Final = (
    _MACHINE_ID,
    _ETC_KUBERNETES,
    _bind("/lib/modules", read_only=True),
)


def proxy_params(cluster: Cluster, node: Node) -> ServiceParams:
    """kube-proxy's built-in parameters (its settings live in the config document)."""
    del cluster, node
    return _params(("kube-proxy", f"--config={PROXY_CONFIG_PATH}"), _PROXY_BINDS)


# ---------------------------------------------------------------------------
# Run options and the options section
# ---------------------------------------------------------------------------


def container_options(name: str, cluster: Cluster | None = None) -> tuple[str, ...]:
    """Engine options for ``name`` besides ``SYSTEM_CONTAINER_BASE_OPTIONS``.

    They are not recorded in the label, so they never make a container
    outdated. etcd's data volume comes from ``options.etcd.volume_name`` of
    ``cluster`` (CKE's default ``etcd-cke`` without one).
    """
    if name == ETCD:
        volume = cluster.options.etcd.volume_name if cluster is not None else ""
        volume = volume or DEFAULT_ETCD_VOLUME
        return ("--mount", f"type=volume,src={volume},dst={ETCD_DATA_DIR}")
    if name == KUBE_APISERVER:
        return _APISERVER_OPTIONS
    if name == KUBELET:
        return _KUBELET_OPTIONS
    if name == KUBE_PROXY:
        return _PROXY_OPTIONS
    if name in CONTAINERS:
        return ()
    raise ValueError(f"unknown system container {name!r}")


def extra_params(cluster: Cluster, container_name: str) -> ServiceParams:
    """The options section's parameters for a container, as a plain ServiceParams.

    The component-specific fields (``volume_name``, ``config`` ...) are
    dropped: CKE records and compares only the base fields.
    """
    options = cluster.options
    params: ServiceParams
    if container_name == ETCD:
        params = options.etcd
    elif container_name == RIVERS:
        params = options.rivers
    elif container_name == ETCD_RIVERS:
        params = options.etcd_rivers
    elif container_name == KUBE_APISERVER:
        params = options.kube_api
    elif container_name == KUBE_CONTROLLER_MANAGER:
        params = options.kube_controller_manager
    elif container_name == KUBE_SCHEDULER:
        params = options.kube_scheduler
    elif container_name == KUBELET:
        params = options.kubelet
    elif container_name == KUBE_PROXY:
        params = options.kube_proxy
    else:
        raise ValueError(f"unknown system container {container_name!r}")
    return ServiceParams(
        extra_args=params.extra_args, extra_binds=params.extra_binds, extra_env=params.extra_env
    )


# ---------------------------------------------------------------------------
# Configuration documents
# ---------------------------------------------------------------------------

_TYPE_META: Final = ("apiVersion", "kind")

#: Kubelet fields kept from the running configuration: the kubelet documents
#: them as "should not be updated without a full node reboot" (CKE's list).
KUBELET_KEPT_FIELDS: Final = (
    "kubeletCgroups",
    "systemCgroups",
    "cgroupRoot",
    "cgroupsPerQOS",
    "cgroupDriver",
    "cpuManagerPolicy",
    "topologyManagerPolicy",
    "qosReserved",
    "systemReservedCgroup",
    "kubeReservedCgroup",
)


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Go's ``json.Unmarshal`` into a filled struct: objects merge, the rest replaces.

    A ``null`` in the overlay unsets the key.
    """
    out = dict(base)
    for key, value in overlay.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = thaw(value)
    return out


def _merged(defaults: dict[str, Any], user: ConfigDocument | None) -> dict[str, Any]:
    partial = {k: v for k, v in (user or {}).items() if k not in _TYPE_META}
    return _merge(defaults, partial)


def _force(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set ``doc[path...] = value``, creating (or replacing non-object) parents."""
    node = doc
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def cluster_domain(cluster: Cluster) -> str:
    """The cluster's DNS domain: the kubelet config's ``clusterDomain`` or cluster.local."""
    config = cluster.options.kubelet.config
    domain = config.get("clusterDomain") if config is not None else None
    return domain if isinstance(domain, str) and domain else DEFAULT_CLUSTER_DOMAIN


def scheduler_config(cluster: Cluster) -> ConfigDocument:
    """The scheduler's configuration: the user's document with CKE's forced fields."""
    doc = _merged({}, cluster.options.kube_scheduler.config)
    _force(doc, ("clientConnection", "kubeconfig"), SCHEDULER_KUBECONFIG_PATH)
    _force(doc, ("leaderElection", "leaderElect"), True)
    frozen: ConfigDocument = freeze(doc)
    return frozen


def proxy_config(cluster: Cluster, node: Node) -> ConfigDocument:
    """kube-proxy's configuration on ``node``: defaults, the user's document, forced kubeconfig.

    Only ``hostnameOverride`` depends on the node, so the document is rendered
    once per user document (``_proxy_template``) and the node's name put in.
    """
    template = _proxy_template(cluster.options.kube_proxy.config)
    if template.get("hostnameOverride") is _NODENAME:
        return template.set("hostnameOverride", node.nodename)
    return template  # the user's document replaced or removed hostnameOverride


#: Stands for the node's name in a rendered proxy configuration template.
_NODENAME: Final = object()
#: Proxy configuration templates by the user's document (by identity; each
#: entry pins its document, so the id cannot be reused while it is here).
_PROXY_TEMPLATES_SIZE: Final = 16
_proxy_templates: dict[int, tuple[ConfigDocument | None, ConfigDocument]] = {}


def _proxy_template(user: ConfigDocument | None) -> ConfigDocument:
    hit = _proxy_templates.get(id(user))
    if hit is not None and hit[0] is user:
        return hit[1]
    template = _render_proxy_config(_NODENAME, user)
    if len(_proxy_templates) >= _PROXY_TEMPLATES_SIZE:
        _proxy_templates.clear()
    _proxy_templates[id(user)] = (user, template)
    return template


def _render_proxy_config(nodename: object, user: ConfigDocument | None) -> ConfigDocument:
    defaults: dict[str, Any] = {
        "hostnameOverride": nodename,
        "metricsBindAddress": "0.0.0.0",
        "conntrack": {"tcpEstablishedTimeout": "24h0m0s", "tcpCloseWaitTimeout": "1h0m0s"},
    }
    doc = _merged(defaults, user)
    _force(doc, ("clientConnection", "kubeconfig"), PROXY_KUBECONFIG_PATH)
    frozen: ConfigDocument = freeze(doc)
    return frozen


def _taint_doc(taint: Taint) -> dict[str, str]:
    """A ``corev1.Taint`` as JSON: ``value`` is omitted when empty."""
    doc = {"key": taint.key}
    if taint.value:
        doc["value"] = taint.value
    doc["effect"] = taint.effect
    return doc


def kubelet_config(
    cluster: Cluster, node: Node, running: Mapping[str, Any] | None = None
) -> ConfigDocument:
    """The kubelet's configuration on ``node``.

    Defaults, then the user's document, then the forced fields: TLS files,
    x509 and webhook authentication (anonymous off), webhook authorization,
    ``clusterDNS=[node address]`` (the node-local unbound), and
    ``boot_taints`` merged into ``registerWithTaints`` (a boot taint replaces
    a registered taint with the same key, as in CKE; others are appended).
    With ``running`` (the node's current document), the fields of
    ``KUBELET_KEPT_FIELDS`` are taken from it, absent ones removed.
    """
    params = cluster.options.kubelet
    defaults: dict[str, Any] = {
        "clusterDomain": DEFAULT_CLUSTER_DOMAIN,
        "runtimeRequestTimeout": "15m0s",
        "healthzBindAddress": "0.0.0.0",
        "volumePluginDir": VOLUME_PLUGIN_DIR,
    }
    doc = _merged(defaults, params.config)
    doc["tlsCertFile"] = k8s_pki_path("kubelet.crt")
    doc["tlsPrivateKeyFile"] = k8s_pki_path("kubelet.key")
    doc["authentication"] = {
        "x509": {"clientCAFile": k8s_pki_path("ca.crt")},
        "webhook": {"enabled": True},
        "anonymous": {"enabled": False},
    }
    doc["authorization"] = {"mode": "Webhook"}
    doc["clusterDNS"] = [node.address]

    if params.boot_taints:
        registered = doc.get("registerWithTaints")
        taints: list[Any] = list(registered) if isinstance(registered, list) else []
        index = {t.get("key"): i for i, t in enumerate(taints) if isinstance(t, dict)}
        for taint in params.boot_taints:
            if taint.key in index:
                taints[index[taint.key]] = _taint_doc(taint)
            else:
                taints.append(_taint_doc(taint))
        doc["registerWithTaints"] = taints

    if running is not None:
        for field in KUBELET_KEPT_FIELDS:
            if field in running and running[field] is not None:
                doc[field] = thaw(running[field])
            else:
                doc.pop(field, None)
    frozen: ConfigDocument = freeze(doc)
    return frozen


# ---------------------------------------------------------------------------
# Equality and "outdated", as CKE compares
# ---------------------------------------------------------------------------


def clear_caches() -> None:
    """Forget the memoised proxy configuration templates (tests, benchmarks)."""
    _proxy_templates.clear()


def params_equal(a: ServiceParams, b: ServiceParams) -> bool:
    """CKE's ``ServiceParams.Equal``: args in order, binds by source/destination/read-only
    (same length and order; propagation and SELinux label do not count), env."""
    if a is b or a == b:  # attrs equality implies CKE's (it compares more fields)
        return True
    return (
        tuple(a.extra_args) == tuple(b.extra_args)
        and len(a.extra_binds) == len(b.extra_binds)
        and all(x.equivalent(y) for x, y in zip(a.extra_binds, b.extra_binds, strict=True))
        and dict(a.extra_env) == dict(b.extra_env)
    )


def _without_initial(params: ServiceParams) -> ServiceParams:
    args = tuple(a for a in params.extra_args if not a.startswith("--initial-"))
    return ServiceParams(
        extra_args=args, extra_binds=params.extra_binds, extra_env=params.extra_env
    )


def etcd_params_equal(a: ServiceParams, b: ServiceParams) -> bool:
    """``params_equal`` ignoring ``--initial-*`` args, which only matter at first start."""
    if a is b or a == b:
        return True
    return params_equal(_without_initial(a), _without_initial(b))


def service_outdated(
    status: ServiceStatus, image: str, builtin: ServiceParams, extra: ServiceParams
) -> bool:
    """CKE's Outdated core: running, and the image or either parameter set differs."""
    return status.running and (
        status.image != image
        or not params_equal(builtin, status.builtin_params)
        or not params_equal(extra, status.extra_params)
    )


def etcd_service_outdated(
    status: ServiceStatus, image: str, builtin: ServiceParams, extra: ServiceParams
) -> bool:
    """``service_outdated`` for etcd: both parameter sets compared without ``--initial-*``."""
    return status.running and (
        status.image != image
        or not etcd_params_equal(builtin, status.builtin_params)
        or not etcd_params_equal(extra, status.extra_params)
    )
