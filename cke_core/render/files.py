"""Files CKE writes on nodes (§C.4): paths, non-secret contents, and secret *requests*.

Three kinds of values live here:

* ``File``: a file whose content the core can render itself from the spec
  (configuration documents, the audit policy, the CNI configuration).
* ``CertificateRequest``, ``CACopy``, ``ServiceAccountFile`` (grouped in
  ``PKIRequests``) and ``KubeconfigRequest``: what the shell must issue or
  copy from the PKI and where to write it. Secrets never enter the core's
  values, so they never reach the event log.
* ``render_kubeconfig`` and ``render_encryption_config``: pure renderers the
  shell calls once it holds the credentials, so the file format is still
  decided (and tested) here.

YAML is rendered with sorted keys, so the same inputs always give the same
bytes.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import attrs
import yaml

from cke_core.cluster import Cluster, Node
from cke_core.fields import tuple_field
from cke_core.frozen import thaw

# ---------------------------------------------------------------------------
# Paths (§C.4)
# ---------------------------------------------------------------------------

K8S_PKI_DIR: Final = "/etc/kubernetes/pki"
ETCD_PKI_DIR: Final = "/etc/etcd/pki"

APISERVER_DIR: Final = "/etc/kubernetes/apiserver"
ENCRYPTION_CONFIG_PATH: Final = APISERVER_DIR + "/encryption.yml"
CONTROLLER_MANAGER_KUBECONFIG_PATH: Final = "/etc/kubernetes/controller-manager/kubeconfig"
SCHEDULER_CONFIG_PATH: Final = "/etc/kubernetes/scheduler/config.yml"
SCHEDULER_KUBECONFIG_PATH: Final = "/etc/kubernetes/scheduler/kubeconfig"
KUBELET_CONFIG_PATH: Final = "/etc/kubernetes/kubelet/config.yml"
KUBELET_KUBECONFIG_PATH: Final = "/etc/kubernetes/kubelet/kubeconfig"
PROXY_CONFIG_PATH: Final = "/etc/kubernetes/proxy/config.yml"
PROXY_KUBECONFIG_PATH: Final = "/etc/kubernetes/proxy/kubeconfig"

CNI_BIN_DIR: Final = "/opt/cni/bin"
CNI_CONF_DIR: Final = "/etc/cni/net.d"
CNI_VAR_DIR: Final = "/var/lib/cni"
VOLUME_PLUGIN_DIR: Final = "/opt/volume/bin"

#: Directories ``kubelet-bootstrap`` creates before writing files (make-dirs, mode 755).
KUBELET_BOOT_DIRS: Final = (
    CNI_BIN_DIR,
    CNI_CONF_DIR,
    CNI_VAR_DIR,
    "/var/log/pods",
    "/var/log/containers",
    VOLUME_PLUGIN_DIR,
)

#: The server component kubeconfigs use: the node-local rivers.
DEFAULT_KUBECONFIG_SERVER: Final = "https://localhost:16443"

SCHEDULER_API_VERSION: Final = "kubescheduler.config.k8s.io/v1"
SCHEDULER_KIND: Final = "KubeSchedulerConfiguration"
KUBELET_API_VERSION: Final = "kubelet.config.k8s.io/v1beta1"
KUBELET_KIND: Final = "KubeletConfiguration"
PROXY_API_VERSION: Final = "kubeproxy.config.k8s.io/v1alpha1"
PROXY_KIND: Final = "KubeProxyConfiguration"
ENCRYPTION_API_VERSION: Final = "apiserver.config.k8s.io/v1"


def k8s_pki_path(name: str) -> str:
    """A file under ``/etc/kubernetes/pki``."""
    return f"{K8S_PKI_DIR}/{name}"


def etcd_pki_path(name: str) -> str:
    """A file under ``/etc/etcd/pki``."""
    return f"{ETCD_PKI_DIR}/{name}"


def audit_policy_path(policy: str) -> str:
    """``audit-policy-<md5 of the policy>.yaml``: a new policy is a new file name, hence
    new apiserver arguments, hence a restart."""
    digest = hashlib.md5(policy.encode(), usedforsecurity=False).hexdigest()
    return f"{APISERVER_DIR}/audit-policy-{digest}.yaml"


# ---------------------------------------------------------------------------
# Non-secret files
# ---------------------------------------------------------------------------


@attrs.frozen
class File:
    """A file to write on a node (``make-files``)."""

    path: str
    content: str
    mode: int = 0o644


def _yaml(doc: Any) -> str:
    return yaml.safe_dump(thaw(doc), sort_keys=True)


def config_yaml(doc: Mapping[str, Any], api_version: str, kind: str) -> str:
    """A configuration document as written on the node: with its TypeMeta."""
    full = dict(thaw(doc))
    full["apiVersion"] = api_version
    full["kind"] = kind
    return _yaml(full)


def scheduler_files(cluster: Cluster) -> tuple[File, ...]:
    """The scheduler's non-secret file: ``config.yml`` (the kubeconfig is a request)."""
    import cke_core.render.components as components  # components imports this module's paths

    doc = components.scheduler_config(cluster)
    return (File(SCHEDULER_CONFIG_PATH, config_yaml(doc, SCHEDULER_API_VERSION, SCHEDULER_KIND)),)


def kubelet_config_file(
    cluster: Cluster, node: Node, running: Mapping[str, Any] | None = None
) -> File:
    """The kubelet's ``config.yml`` on ``node`` (``running``: its current document)."""
    import cke_core.render.components as components

    doc = components.kubelet_config(cluster, node, running)
    return File(KUBELET_CONFIG_PATH, config_yaml(doc, KUBELET_API_VERSION, KUBELET_KIND))


def proxy_files(cluster: Cluster, node: Node) -> tuple[File, ...]:
    """kube-proxy's non-secret file on ``node``: ``config.yml``."""
    import cke_core.render.components as components

    doc = components.proxy_config(cluster, node)
    return (File(PROXY_CONFIG_PATH, config_yaml(doc, PROXY_API_VERSION, PROXY_KIND)),)


def audit_policy_file(cluster: Cluster) -> File | None:
    """The audit policy, verbatim, when audit logging is enabled."""
    options = cluster.options.kube_api
    if not options.audit_log_enabled:
        return None
    return File(audit_policy_path(options.audit_log_policy), options.audit_log_policy)


def cni_conf_file(cluster: Cluster) -> File | None:
    """``/etc/cni/net.d/<name>``, written only at kubelet bootstrap, when configured."""
    conf = cluster.options.kubelet.cni_conf_file
    if not conf.name:
        return None
    return File(f"{CNI_CONF_DIR}/{conf.name}", conf.content)


# ---------------------------------------------------------------------------
# Certificate requests (§H.2)
# ---------------------------------------------------------------------------

CAName = Literal[
    "server",
    "etcd-peer",
    "etcd-client",
    "kubernetes",
    "kubernetes-aggregation",
    "kubernetes-webhook",
]

CA_SERVER: Final = "server"
CA_ETCD_PEER: Final = "etcd-peer"
CA_ETCD_CLIENT: Final = "etcd-client"
CA_KUBERNETES: Final = "kubernetes"
CA_KUBERNETES_AGGREGATION: Final = "kubernetes-aggregation"
CA_KUBERNETES_WEBHOOK: Final = "kubernetes-webhook"

DEFAULT_CERT_TTL: Final = "87600h"


@attrs.frozen(kw_only=True)
class CertificateRequest:
    """A certificate to issue from ``cke/ca-<ca>`` with role ``role`` (Vault PKI terms).

    ``organization`` is a role setting in CKE (the role is created on first
    use). ``server``/``client`` are the role's key-usage flags.
    ``cert_path``/``key_path`` are where the pair is written; both are empty
    for a certificate embedded in a kubeconfig.
    """

    ca: CAName
    role: str
    common_name: str
    organization: str = ""
    alt_names: tuple[str, ...] = tuple_field()
    ip_sans: tuple[str, ...] = tuple_field()
    ttl: str = DEFAULT_CERT_TTL
    cert_path: str = ""
    key_path: str = ""
    server: bool = True
    client: bool = True
    exclude_cn_from_sans: bool = True


@attrs.frozen
class CACopy:
    """Write the root certificate of ``ca`` at ``path``."""

    ca: CAName
    path: str


@attrs.frozen
class ServiceAccountFile:
    """Write the service-account signing certificate or key (kept in etcd) at ``path``."""

    part: Literal["certificate", "key"]
    path: str


@attrs.frozen
class PKIRequests:
    """Everything PKI-backed one component needs on a node."""

    certificates: tuple[CertificateRequest, ...] = tuple_field()
    ca_copies: tuple[CACopy, ...] = tuple_field()
    service_account: tuple[ServiceAccountFile, ...] = tuple_field()

    def paths(self) -> tuple[str, ...]:
        """Every path these requests write, in order."""
        out: list[str] = []
        for cert in self.certificates:
            out += [p for p in (cert.cert_path, cert.key_path) if p]
        out += [c.path for c in self.ca_copies]
        out += [s.path for s in self.service_account]
        return tuple(out)


def etcd_certificate_requests(cluster: Cluster, node: Node) -> PKIRequests:
    """etcd's serving and peer certificates and the two CAs it trusts."""
    del cluster
    ips = ("127.0.0.1", node.address)
    server = CertificateRequest(
        ca=CA_SERVER,
        role="system",
        common_name=node.nodename,
        alt_names=("localhost", "cke-etcd", "cke-etcd.kube-system", "cke-etcd.kube-system.svc"),
        ip_sans=ips,
        client=False,
        exclude_cn_from_sans=False,
        cert_path=etcd_pki_path("server.crt"),
        key_path=etcd_pki_path("server.key"),
    )
    peer = CertificateRequest(
        ca=CA_ETCD_PEER,
        role="system",
        common_name=node.nodename,
        ip_sans=ips,
        cert_path=etcd_pki_path("peer.crt"),
        key_path=etcd_pki_path("peer.key"),
    )
    return PKIRequests(
        certificates=(server, peer),
        ca_copies=(
            CACopy(CA_ETCD_PEER, etcd_pki_path("ca-peer.crt")),
            CACopy(CA_ETCD_CLIENT, etcd_pki_path("ca-client.crt")),
        ),
    )


def kubernetes_service_ip(service_subnet: str) -> str | None:
    """The ``kubernetes`` Service's ClusterIP: the subnet's first address + 1."""
    try:
        network = ipaddress.ip_network(service_subnet, strict=False)
    except ValueError:
        return None
    return str(network.network_address + 1)


def api_server_alt_names(domain: str) -> tuple[str, ...]:
    """DNS SANs of the apiserver certificate; the service name under every suffix of
    ``domain`` (``...svc.cluster``, ``...svc.cluster.local``), as CKE issues it."""
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    labels = domain.split(".")
    names += ["kubernetes.default.svc." + ".".join(labels[: i + 1]) for i in range(len(labels))]
    return tuple(names)


def api_server_certificate_requests(cluster: Cluster, node: Node) -> PKIRequests:
    """The apiserver's serving, etcd-client and aggregation certificates, CA copies
    (ca.crt, etcd-ca.crt, aggregation-ca.crt) and the service-account pair."""
    import cke_core.render.components as components

    ips = ["127.0.0.1", node.address]
    service_ip = kubernetes_service_ip(cluster.service_subnet)
    if service_ip is not None:
        ips.append(service_ip)
    serving = CertificateRequest(
        ca=CA_KUBERNETES,
        role="system",
        common_name="kubernetes",
        alt_names=api_server_alt_names(components.cluster_domain(cluster)),
        ip_sans=tuple(ips),
        cert_path=k8s_pki_path("apiserver.crt"),
        key_path=k8s_pki_path("apiserver.key"),
    )
    etcd_client = CertificateRequest(
        ca=CA_ETCD_CLIENT,
        role="system",
        common_name="kube-apiserver",
        server=False,
        cert_path=k8s_pki_path("apiserver-etcd-client.crt"),
        key_path=k8s_pki_path("apiserver-etcd-client.key"),
    )
    aggregation = CertificateRequest(
        ca=CA_KUBERNETES_AGGREGATION,
        role="system",
        common_name=components.AGGREGATION_CLIENT_CN,
        server=False,
        cert_path=k8s_pki_path("aggregation.crt"),
        key_path=k8s_pki_path("aggregation.key"),
    )
    return PKIRequests(
        certificates=(serving, etcd_client, aggregation),
        ca_copies=(
            CACopy(CA_KUBERNETES, k8s_pki_path("ca.crt")),
            CACopy(CA_SERVER, k8s_pki_path("etcd-ca.crt")),
            CACopy(CA_KUBERNETES_AGGREGATION, k8s_pki_path("aggregation-ca.crt")),
        ),
        service_account=(
            ServiceAccountFile("certificate", k8s_pki_path("service-account.crt")),
            ServiceAccountFile("key", k8s_pki_path("service-account.key")),
        ),
    )


def controller_manager_pki_requests(cluster: Cluster, node: Node) -> PKIRequests:
    """The controller manager's PKI file: the service-account key (it signs tokens)."""
    del cluster, node
    return PKIRequests(
        service_account=(ServiceAccountFile("key", k8s_pki_path("service-account.key")),)
    )


def kubelet_certificate_requests(cluster: Cluster, node: Node) -> PKIRequests:
    """The kubelet's certificate (serving and client) and the Kubernetes CA."""
    del cluster
    alt_names = ("localhost",) if node.nodename == node.address else ("localhost", node.nodename)
    kubelet = CertificateRequest(
        ca=CA_KUBERNETES,
        role="kubelet",
        common_name=f"system:node:{node.nodename}",
        organization="system:nodes",
        alt_names=alt_names,
        ip_sans=("127.0.0.1", node.address),
        cert_path=k8s_pki_path("kubelet.crt"),
        key_path=k8s_pki_path("kubelet.key"),
    )
    return PKIRequests(
        certificates=(kubelet,), ca_copies=(CACopy(CA_KUBERNETES, k8s_pki_path("ca.crt")),)
    )


# ---------------------------------------------------------------------------
# Kubeconfig requests and the pure renderers
# ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class KubeconfigRequest:
    """A kubeconfig to write at ``path`` for ``user``, trusting the Kubernetes CA.

    ``embed``: the CA, certificate and key are embedded (issued on the fly);
    otherwise the kubeconfig references ``ca_path`` and the certificate's
    files, which another request writes (the kubelet's case).
    """

    path: str
    cluster_name: str
    user: str
    certificate: CertificateRequest
    embed: bool = True
    server: str = DEFAULT_KUBECONFIG_SERVER
    ca_path: str = ""


def _component_kubeconfig(
    cluster: Cluster, path: str, role: str, user: str, organization: str
) -> KubeconfigRequest:
    cert = CertificateRequest(
        ca=CA_KUBERNETES, role=role, common_name=user, organization=organization
    )
    return KubeconfigRequest(path=path, cluster_name=cluster.name, user=user, certificate=cert)


def controller_manager_kubeconfig(cluster: Cluster) -> KubeconfigRequest:
    return _component_kubeconfig(
        cluster,
        CONTROLLER_MANAGER_KUBECONFIG_PATH,
        "kube-controller-manager",
        "system:kube-controller-manager",
        "system:kube-controller-manager",
    )


def scheduler_kubeconfig(cluster: Cluster) -> KubeconfigRequest:
    return _component_kubeconfig(
        cluster,
        SCHEDULER_KUBECONFIG_PATH,
        "kube-scheduler",
        "system:kube-scheduler",
        "system:kube-scheduler",
    )


def proxy_kubeconfig(cluster: Cluster) -> KubeconfigRequest:
    return _component_kubeconfig(
        cluster, PROXY_KUBECONFIG_PATH, "kube-proxy", "system:kube-proxy", "system:node-proxier"
    )


def kubelet_kubeconfig(cluster: Cluster, node: Node) -> KubeconfigRequest:
    """The kubelet's kubeconfig references its certificate files instead of embedding them."""
    cert = kubelet_certificate_requests(cluster, node).certificates[0]
    return KubeconfigRequest(
        path=KUBELET_KUBECONFIG_PATH,
        cluster_name=cluster.name,
        user=cert.common_name,
        certificate=cert,
        embed=False,
        ca_path=k8s_pki_path("ca.crt"),
    )


def _b64(pem: str) -> str:
    return base64.b64encode(pem.encode()).decode("ascii")


def render_kubeconfig(
    cluster_name: str,
    server: str,
    user: str,
    ca_pem: str | None,
    cert_pem: str | None = None,
    key_pem: str | None = None,
    cert_path: str | None = None,
    key_path: str | None = None,
    *,
    ca_path: str | None = None,
) -> str:
    """A kubeconfig with one cluster, one user and the context ``default``.

    PEMs are embedded as ``*-data``; paths are referenced (a path wins over a
    PEM for the same item). The shape is ``clientcmd.Write``'s.
    """
    cluster: dict[str, str] = {"server": server}
    if ca_path:
        cluster["certificate-authority"] = ca_path
    elif ca_pem is not None:
        cluster["certificate-authority-data"] = _b64(ca_pem)
    auth: dict[str, str] = {}
    if cert_path:
        auth["client-certificate"] = cert_path
    elif cert_pem is not None:
        auth["client-certificate-data"] = _b64(cert_pem)
    if key_path:
        auth["client-key"] = key_path
    elif key_pem is not None:
        auth["client-key-data"] = _b64(key_pem)
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": user, "user": auth}],
        "contexts": [{"name": "default", "context": {"cluster": cluster_name, "user": user}}],
        "current-context": "default",
        "preferences": {},
    }
    return _yaml(doc)


def render_encryption_config(keys: Sequence[tuple[str, str]]) -> str:
    """The apiserver's EncryptionConfiguration: Secrets with aescbc (``keys`` as
    ``(name, base64 secret)``, the first one encrypts), then identity to read
    Secrets written before encryption was enabled."""
    doc = {
        "apiVersion": ENCRYPTION_API_VERSION,
        "kind": "EncryptionConfiguration",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    {"aescbc": {"keys": [{"name": n, "secret": s} for n, s in keys]}},
                    {"identity": {}},
                ],
            }
        ],
    }
    return _yaml(doc)
