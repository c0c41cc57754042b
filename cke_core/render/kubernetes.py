"""Kubernetes objects CKE maintains, rendered from the spec (§I).

* §I.1 the nine static resources (CKE's ``static/*.yml``), as deep-frozen
  documents carrying their ``cke.cybozu.com/revision`` (and, for the
  DaemonSet and Deployment, ``cke.cybozu.com/image``) annotations;
* §I.5 user-defined resources: keys, ranks, apply order, parsing of
  ``ckecli resource set`` input, and the "needs apply" rule;
* §I.2 the CoreDNS ``Corefile`` and the node-local ``unbound.conf``;
* §I.3 Endpoints and EndpointSlices of ``default/kubernetes`` and
  ``kube-system/cke-etcd``, the headless ``cke-etcd`` Service, and CKE's
  comparisons of what is live with what is wanted;
* §I.4 Node labels, annotations and taints (``update-node``).

Everything here is a pure function of its arguments.
"""

from __future__ import annotations

import contextlib
import operator
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

import attrs

from cke_core import memo
from cke_core.cluster import Cluster, Node, Taint
from cke_core.codec import describe
from cke_core.documents import parse_yaml_all
from cke_core.frozen import FrozenDict, freeze, thaw
from cke_core.memo import trim
from cke_core.problems import ConfigError, Problem, key_path
from cke_core.status import (
    ConfigMap,
    EndpointPort,
    Endpoints,
    EndpointSlice,
    EndpointSliceEndpoint,
    EndpointSubset,
    KubernetesNode,
    ResourceStatus,
    Service,
    ServicePort,
)

#: A Kubernetes object as a deep-frozen JSON value.
Document = FrozenDict[str, Any]

# ---------------------------------------------------------------------------
# Names CKE uses (§A.2, §I)
# ---------------------------------------------------------------------------

ANNOTATION_REVISION: Final = "cke.cybozu.com/revision"
ANNOTATION_IMAGE: Final = "cke.cybozu.com/image"
ANNOTATION_RANK: Final = "cke.cybozu.com/rank"
ANNOTATION_REBOOT: Final = "cke.cybozu.com/reboot"
LABEL_MASTER: Final = "cke.cybozu.com/master"
TAINT_MASTER: Final = "cke.cybozu.com/master"
APPNAME_LABEL: Final = "cke.cybozu.com/appname"

KUBE_SYSTEM: Final = "kube-system"
CLUSTER_DNS_NAME: Final = "cluster-dns"
NODE_DNS_NAME: Final = "node-dns"
CLUSTER_DNS_SERVICE_ACCOUNT: Final = "cke-cluster-dns"
COREFILE_KEY: Final = "Corefile"
UNBOUND_CONF_KEY: Final = "unbound.conf"
UNBOUND_CONTROL_SOCKET: Final = "/var/run/unbound/unbound.sock"

MASTER_ENDPOINTS_NAMESPACE: Final = "default"
MASTER_ENDPOINTS_NAME: Final = "kubernetes"
MASTER_PORT_NAME: Final = "https"
MASTER_PORT: Final = 6443
ETCD_SERVICE_NAME: Final = "cke-etcd"
ETCD_PORT: Final = 2379

LABEL_SKIP_MIRROR: Final = "endpointslice.kubernetes.io/skip-mirror"
LABEL_MANAGED_BY: Final = "endpointslice.kubernetes.io/managed-by"
LABEL_SERVICE_NAME: Final = "kubernetes.io/service-name"
MANAGED_BY_CKE: Final = "cke.cybozu.com"
ADDRESS_TYPE_IPV4: Final = "IPv4"

_INTERNAL_PREFIX: Final = "cke.cybozu.com/"
_INTERNAL_INFIX: Final = ".cke.cybozu.com/"
_NODE_ROLE_PREFIX: Final = "node-role.kubernetes.io/"
_NODE_ROLE_INTERNAL: Final = (
    "node-role.kubernetes.io/master",
    "node-role.kubernetes.io/control-plane",
)

# ---------------------------------------------------------------------------
# Ranks and keys (§I.5)
# ---------------------------------------------------------------------------

RANK_NAMESPACE: Final = 10
RANK_SERVICE_ACCOUNT: Final = 20
RANK_CUSTOM_RESOURCE_DEFINITION: Final = 30
RANK_CLUSTER_ROLE: Final = 40
RANK_CLUSTER_ROLE_BINDING: Final = 50
RANK_CLUSTER_SCOPED_DEFAULT: Final = 1000
RANK_ROLE: Final = 2000
RANK_ROLE_BINDING: Final = 2010
RANK_NETWORK_POLICY: Final = 2020
RANK_SECRET: Final = 2030
RANK_CONFIG_MAP: Final = 2040
RANK_NAMESPACED_DEFAULT: Final = 3000

#: Ranks of the kinds CKE names; the scope does not matter for these.
_KIND_RANKS: Final[Mapping[str, int]] = FrozenDict(
    {
        "Namespace": RANK_NAMESPACE,
        "ServiceAccount": RANK_SERVICE_ACCOUNT,
        "CustomResourceDefinition": RANK_CUSTOM_RESOURCE_DEFINITION,
        "ClusterRole": RANK_CLUSTER_ROLE,
        "ClusterRoleBinding": RANK_CLUSTER_ROLE_BINDING,
        "Role": RANK_ROLE,
        "RoleBinding": RANK_ROLE_BINDING,
        "NetworkPolicy": RANK_NETWORK_POLICY,
        "Secret": RANK_SECRET,
        "ConfigMap": RANK_CONFIG_MAP,
    }
)

#: An explicit ``cke.cybozu.com/rank`` must be below this for cluster-scoped
#: resources and at least this for namespaced ones (CKE's ``DecideRank``).
_NAMESPACED_RANK_MIN: Final = 2000


def resource_rank(kind: str, namespaced: bool, requested: int = 0) -> int:
    """CKE's apply rank of a resource: lower ranks are applied first.

    ``requested`` is an explicit rank (``cke.cybozu.com/rank``); 0 means none.
    An explicit rank is used when it is in the range of the resource's scope
    (cluster-scoped 1..1999, namespaced 2000..); ``parse_user_resources``
    rejects one that is not, so here an out-of-range value falls back to the
    default.
    """
    if requested > 0 and (requested >= _NAMESPACED_RANK_MIN) == namespaced:
        return requested
    rank = _KIND_RANKS.get(kind)
    if rank is not None:
        return rank
    return RANK_NAMESPACED_DEFAULT if namespaced else RANK_CLUSTER_SCOPED_DEFAULT


def _metadata(document: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = document.get("metadata")
    return metadata if isinstance(metadata, Mapping) else FrozenDict()


def _annotations(document: Mapping[str, Any]) -> Mapping[str, Any]:
    annotations = _metadata(document).get("annotations")
    return annotations if isinstance(annotations, Mapping) else FrozenDict()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def resource_key(document: Mapping[str, Any]) -> str:
    """``Kind/namespace/name``, or ``Kind/name`` when there is no namespace."""
    metadata = _metadata(document)
    kind = _text(document.get("kind"))
    name = _text(metadata.get("name"))
    namespace = _text(metadata.get("namespace"))
    if namespace:
        return f"{kind}/{namespace}/{name}"
    return f"{kind}/{name}"


def _requested_rank(document: Mapping[str, Any]) -> int:
    value = _annotations(document).get(ANNOTATION_RANK)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


@attrs.frozen
class Resource:
    """A static resource (§I.1). ``image`` is the ``cke.cybozu.com/image``
    annotation (several images joined by commas for the DaemonSet); empty when
    the resource has no image."""

    key: str
    rank: int
    revision: str
    document: Document
    image: str = ""

    @property
    def kind(self) -> str:
        return _text(self.document.get("kind"))


@attrs.frozen
class UserResource:
    """A user-defined resource (§I.5): its key, the etcd ModRevision of its
    key (the revision), and the manifest."""

    key: str
    revision: int
    document: Document

    @property
    def kind(self) -> str:
        return _text(self.document.get("kind"))

    @property
    def namespace(self) -> str:
        return _text(_metadata(self.document).get("namespace"))

    @property
    def name(self) -> str:
        return _text(_metadata(self.document).get("name"))

    @property
    def rank(self) -> int:
        return resource_rank(self.kind, bool(self.namespace), _requested_rank(self.document))

    @property
    def image(self) -> str:
        """User resources are compared by revision only."""
        return ""


AnyResource = Resource | UserResource


def order_key(resource: AnyResource) -> tuple[int, str]:
    """The apply order: by rank, then by key."""
    return (resource.rank, resource.key)


def sort_resources(resources: Iterable[AnyResource]) -> tuple[AnyResource, ...]:
    """``resources`` in CKE's apply order (rank, then key)."""
    return tuple(sorted(resources, key=order_key))


def resource_needs_apply(
    resource: AnyResource,
    status: ResourceStatus | None,
    *,
    require_ssa: bool = False,
) -> bool:
    """CKE's ``!ok || NeedUpdate``: the live object is missing, has no or another
    revision annotation, or (for a resource with an image) no or another image
    annotation.

    CKE itself does not look at ``has_been_ssa`` (it only chose the force flag
    from it, and forces anyway, §N.7); ``require_ssa=True`` additionally
    re-applies an object that has not yet been server-side applied.
    """
    if status is None:
        return True
    annotations = status.annotations
    if annotations.get(ANNOTATION_REVISION) != str(resource.revision):
        return True
    if resource.image and annotations.get(ANNOTATION_IMAGE) != resource.image:
        return True
    return require_ssa and not status.has_been_ssa


def apply_document(resource: AnyResource) -> Document:
    """The document to server-side apply: step 1 of §I.5, the revision
    annotation set to the resource's revision."""
    document = thaw(resource.document)
    metadata = document.setdefault("metadata", {})
    if not isinstance(metadata.get("annotations"), dict):
        metadata["annotations"] = {}
    metadata["annotations"][ANNOTATION_REVISION] = str(resource.revision)
    frozen: Document = freeze(document)
    return frozen


def parse_user_resources(text: str, *, revision: int = 0) -> tuple[UserResource, ...]:
    """Resources of ``ckecli resource set`` input (multi-document YAML), in
    apply order.

    Every document needs ``apiVersion``, ``kind`` and ``metadata.name``; a
    ``cke.cybozu.com/rank`` annotation must be a positive integer in its
    scope's range; two documents may not have the same key. All problems are
    raised together as one ``ConfigError`` whose paths read like
    ``documents[2].metadata.name`` (counting non-empty documents from 0).
    """
    documents = parse_yaml_all(text)
    problems: list[Problem] = []
    resources: list[UserResource] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(documents):
        path = f"documents[{index}]"
        found = _document_problems(path, raw)
        if found:
            problems.extend(found)
            continue
        document: Document = freeze(raw)
        key = resource_key(document)
        if key in seen:
            problems.append(
                Problem(
                    path, f"{key} is also defined by documents[{seen[key]}]; keys must be unique"
                )
            )
            continue
        seen[key] = index
        resources.append(UserResource(key=key, revision=revision, document=document))
    if problems:
        raise ConfigError(problems)
    return tuple(sorted(resources, key=order_key))


def _document_problems(path: str, raw: Any) -> list[Problem]:
    if not isinstance(raw, Mapping):
        return [Problem(path, f"expected a Kubernetes object (a mapping), got {describe(raw)}")]
    problems: list[Problem] = []
    for field in ("apiVersion", "kind"):
        value = raw.get(field)
        if field not in raw or value is None or value == "":
            problems.append(Problem(f"{path}.{field}", "missing; every resource needs one"))
        elif not isinstance(value, str):
            problems.append(Problem(f"{path}.{field}", f"expected a string, got {describe(value)}"))
    metadata = raw.get("metadata")
    if metadata is None:
        problems.append(Problem(f"{path}.metadata.name", "missing; every resource needs a name"))
        return problems
    if not isinstance(metadata, Mapping):
        problems.append(
            Problem(f"{path}.metadata", f"expected a mapping, got {describe(metadata)}")
        )
        return problems
    name = metadata.get("name")
    if name is None or name == "":
        problems.append(Problem(f"{path}.metadata.name", "missing; every resource needs a name"))
    elif not isinstance(name, str):
        problems.append(
            Problem(f"{path}.metadata.name", f"expected a string, got {describe(name)}")
        )
    namespace = metadata.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        problems.append(
            Problem(f"{path}.metadata.namespace", f"expected a string, got {describe(namespace)}")
        )
    annotations = metadata.get("annotations")
    if annotations is not None and not isinstance(annotations, Mapping):
        problems.append(
            Problem(
                f"{path}.metadata.annotations", f"expected a mapping, got {describe(annotations)}"
            )
        )
    elif annotations and ANNOTATION_RANK in annotations:
        problems.extend(
            _rank_problems(
                key_path(f"{path}.metadata.annotations", ANNOTATION_RANK),
                annotations[ANNOTATION_RANK],
                namespaced=isinstance(namespace, str) and bool(namespace),
            )
        )
    return problems


def _rank_problems(path: str, value: Any, *, namespaced: bool) -> list[Problem]:
    if not isinstance(value, str) or not value.isdigit() or int(value) == 0:
        return [Problem(path, f"expected a positive integer as a string, got {describe(value)}")]
    rank = int(value)
    if namespaced and rank < _NAMESPACED_RANK_MIN:
        return [Problem(path, f"a namespaced resource needs a rank of at least 2000, got {rank}")]
    if not namespaced and rank >= _NAMESPACED_RANK_MIN:
        return [Problem(path, f"a cluster-scoped resource needs a rank below 2000, got {rank}")]
    return []


# ---------------------------------------------------------------------------
# Static resources (§I.1)
# ---------------------------------------------------------------------------


class ImageSet(Protocol):
    """The images the static resources use (``render.images.Images`` fits)."""

    @property
    def coredns(self) -> str: ...

    @property
    def unbound(self) -> str: ...

    @property
    def unbound_exporter(self) -> str: ...


_RBAC_GROUP: Final = "rbac.authorization.k8s.io"
_RBAC_DEFAULTS: Final = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_AUTOUPDATE: Final = {"rbac.authorization.kubernetes.io/autoupdate": "true"}
_DROP_ALL: Final = {"drop": ["all"]}


def _meta(
    name: str,
    revision: int,
    *,
    namespace: str = "",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    meta["annotations"] = {**(annotations or {}), ANNOTATION_REVISION: str(revision)}
    return meta


def _cluster_dns_service_account() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(CLUSTER_DNS_SERVICE_ACCOUNT, 1, namespace=KUBE_SYSTEM),
    }


def _cluster_dns_cluster_role() -> dict[str, Any]:
    return {
        "apiVersion": f"{_RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": _meta("system:cluster-dns", 2, labels=_RBAC_DEFAULTS, annotations=_AUTOUPDATE),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["list", "watch"],
            },
        ],
    }


def _apiserver_to_kubelet_cluster_role() -> dict[str, Any]:
    subresources = ("proxy", "stats", "log", "spec", "metrics", "configz", "healthz", "pods")
    return {
        "apiVersion": f"{_RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": _meta(
            "system:kube-apiserver-to-kubelet",
            2,
            labels=_RBAC_DEFAULTS,
            annotations=_AUTOUPDATE,
        ),
        "rules": [
            {
                "apiGroups": [""],
                "resources": [f"nodes/{s}" for s in subresources],
                "verbs": ["*"],
            }
        ],
    }


def _cluster_dns_binding() -> dict[str, Any]:
    return {
        "apiVersion": f"{_RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _meta("system:cluster-dns", 1, labels=_RBAC_DEFAULTS, annotations=_AUTOUPDATE),
        "roleRef": {"apiGroup": _RBAC_GROUP, "kind": "ClusterRole", "name": "system:cluster-dns"},
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": CLUSTER_DNS_SERVICE_ACCOUNT,
                "namespace": KUBE_SYSTEM,
            }
        ],
    }


def _apiserver_binding() -> dict[str, Any]:
    return {
        "apiVersion": f"{_RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _meta(
            "system:kube-apiserver", 1, labels=_RBAC_DEFAULTS, annotations=_AUTOUPDATE
        ),
        "roleRef": {
            "apiGroup": _RBAC_GROUP,
            "kind": "ClusterRole",
            "name": "system:kube-apiserver-to-kubelet",
        },
        "subjects": [{"apiGroup": _RBAC_GROUP, "kind": "User", "name": "kubernetes"}],
    }


def node_dns_image_annotation(images: ImageSet) -> str:
    """The DaemonSet's ``cke.cybozu.com/image``: unbound and the exporter, joined."""
    return f"{images.unbound},{images.unbound_exporter}"


def _node_dns_daemonset(images: ImageSet) -> dict[str, Any]:
    config_mount = {"name": "config-volume", "mountPath": "/etc/unbound"}
    run_mount = {"name": "unbound-run", "mountPath": "/var/run/unbound"}
    tcp53 = {"tcpSocket": {"port": 53, "host": "localhost"}, "periodSeconds": 1}
    unbound = {
        "name": "unbound",
        "image": images.unbound,
        "args": ["-c", f"/etc/unbound/{UNBOUND_CONF_KEY}"],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["all"]},
            "readOnlyRootFilesystem": True,
        },
        "readinessProbe": dict(tcp53),
        "livenessProbe": {**tcp53, "initialDelaySeconds": 1, "failureThreshold": 6},
        "volumeMounts": [config_mount, run_mount],
    }
    reload = {
        "name": "reload",
        "image": images.unbound,
        "command": ["/usr/local/bin/reload-unbound"],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": _DROP_ALL,
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [config_mount, run_mount],
    }
    exporter = {
        "name": "exporter",
        "image": images.unbound_exporter,
        "args": [f"--unbound.host=unix://{UNBOUND_CONTROL_SOCKET}"],
        "ports": [{"name": "metrics", "containerPort": 9167, "protocol": "TCP"}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": _DROP_ALL,
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [run_mount],
    }
    selector = {APPNAME_LABEL: NODE_DNS_NAME}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": _meta(
            NODE_DNS_NAME,
            4,
            namespace=KUBE_SYSTEM,
            annotations={ANNOTATION_IMAGE: node_dns_image_annotation(images)},
        ),
        "spec": {
            "selector": {"matchLabels": selector},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "35%", "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "hostNetwork": True,
                    "tolerations": [{"operator": "Exists"}],
                    "terminationGracePeriodSeconds": 1,
                    "containers": [unbound, reload, exporter],
                    "volumes": [
                        {
                            "name": "config-volume",
                            "configMap": {
                                "name": NODE_DNS_NAME,
                                "items": [{"key": UNBOUND_CONF_KEY, "path": UNBOUND_CONF_KEY}],
                            },
                        },
                        {"name": "unbound-run", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def _cluster_dns_deployment(images: ImageSet) -> dict[str, Any]:
    selector = {APPNAME_LABEL: CLUSTER_DNS_NAME}
    coredns = {
        "name": "coredns",
        "image": images.coredns,
        "imagePullPolicy": "IfNotPresent",
        "resources": {
            "limits": {"memory": "170Mi"},
            "requests": {"cpu": "100m", "memory": "70Mi"},
        },
        "args": ["-conf", f"/etc/coredns/{COREFILE_KEY}"],
        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "sleep 5"]}}},
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
        "ports": [
            {"containerPort": 1053, "name": "dns", "protocol": "UDP"},
            {"containerPort": 1053, "name": "dns-tcp", "protocol": "TCP"},
            {"containerPort": 9153, "name": "metrics", "protocol": "TCP"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": _DROP_ALL,
            "readOnlyRootFilesystem": True,
        },
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"}},
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"},
            "initialDelaySeconds": 60,
            "timeoutSeconds": 5,
            "successThreshold": 1,
            "failureThreshold": 5,
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(
            CLUSTER_DNS_NAME,
            5,
            namespace=KUBE_SYSTEM,
            annotations={ANNOTATION_IMAGE: images.coredns},
        ),
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": {**selector, "k8s-app": "coredns"},
                    "annotations": {"prometheus.io/port": "9153"},
                },
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": CLUSTER_DNS_SERVICE_ACCOUNT,
                    "tolerations": [
                        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                    ],
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "labelSelector": {"matchLabels": selector},
                                        "topologyKey": "kubernetes.io/hostname",
                                    },
                                }
                            ]
                        }
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": selector},
                        }
                    ],
                    "containers": [coredns],
                    "dnsPolicy": "Default",
                    "volumes": [
                        {
                            "name": "config-volume",
                            "configMap": {
                                "name": CLUSTER_DNS_NAME,
                                "items": [{"key": COREFILE_KEY, "path": COREFILE_KEY}],
                            },
                        }
                    ],
                },
            },
        },
    }


def _cluster_dns_pdb() -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta("cluster-dns-pdb", 1, namespace=KUBE_SYSTEM),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {APPNAME_LABEL: CLUSTER_DNS_NAME}},
        },
    }


def _cluster_dns_service() -> dict[str, Any]:
    selector = {APPNAME_LABEL: CLUSTER_DNS_NAME}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(CLUSTER_DNS_NAME, 1, namespace=KUBE_SYSTEM, labels=selector),
        "spec": {
            "selector": selector,
            "ports": [
                {"name": "dns", "port": 53, "targetPort": 1053, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "targetPort": 1053, "protocol": "TCP"},
            ],
        },
    }


def _static(raw: dict[str, Any]) -> Resource:
    document: Document = freeze(raw)
    metadata = _metadata(document)
    annotations = _annotations(document)
    return Resource(
        key=resource_key(document),
        rank=resource_rank(_text(document.get("kind")), bool(_text(metadata.get("namespace")))),
        revision=_text(annotations.get(ANNOTATION_REVISION)),
        document=document,
        image=_text(annotations.get(ANNOTATION_IMAGE)),
    )


#: ``static_resources`` by the three images it reads: the documents are the same
#: for the same images, and ``decide`` asks for them at every decision. Bounded:
#: cleared when it holds this many image sets.
_STATIC_CACHE_SIZE: Final = 16
_static_cache: dict[tuple[str, str, str], tuple[Resource, ...]] = {}


def static_resources(images: ImageSet) -> tuple[Resource, ...]:
    """The nine static resources of §I.1 in apply order (rank, then key).

    Memoised by ``(coredns, unbound, unbound_exporter)``: the result is an
    immutable value computed from those strings only.
    """
    key = (images.coredns, images.unbound, images.unbound_exporter)
    cached = _static_cache.get(key)
    if cached is None:
        cached = _static_resources(images)
        if len(_static_cache) >= _STATIC_CACHE_SIZE:
            _static_cache.clear()
        _static_cache[key] = cached
    return cached


def _static_resources(images: ImageSet) -> tuple[Resource, ...]:
    raws = (
        _cluster_dns_service_account(),
        _cluster_dns_cluster_role(),
        _apiserver_to_kubelet_cluster_role(),
        _cluster_dns_binding(),
        _apiserver_binding(),
        _node_dns_daemonset(images),
        _cluster_dns_deployment(images),
        _cluster_dns_pdb(),
        _cluster_dns_service(),
    )
    return tuple(sorted((_static(raw) for raw in raws), key=order_key))


# ---------------------------------------------------------------------------
# DNS (§I.2, §A.6)
# ---------------------------------------------------------------------------


def dns_upstreams(cluster: Cluster, dns_service_cluster_ip: str | None) -> tuple[str, ...]:
    """The upstream resolvers: the ClusterIP of ``dns_service`` when that Service
    exists and has one (not ``""`` or ``None``), else ``dns_servers``.

    ``dns_service_cluster_ip`` is the observed ``spec.clusterIP`` of the
    Service, or ``None`` when it does not exist.
    """
    if dns_service_cluster_ip and dns_service_cluster_ip != "None":
        return (dns_service_cluster_ip,)
    return tuple(cluster.dns_servers)


def corefile(domain: str, upstreams: Sequence[str]) -> str:
    """CoreDNS's configuration: the cluster domain and the reverse zones from
    the Kubernetes API; everything else (and reverse lookups the cluster does
    not know) forwarded to the upstreams, when there are any."""
    lines = [
        ".:1053 {",
        "    errors",
        "    health",
        "    ready",
        "    log",
        f"    kubernetes {domain} in-addr.arpa ip6.arpa {{",
        "      pods verified",
    ]
    if upstreams:
        lines.append("      fallthrough in-addr.arpa ip6.arpa")
    lines.append("    }")
    if upstreams:
        lines.append(f"    forward . {' '.join(upstreams)}")
    lines += [
        "    prometheus :9153",
        "    cache 30",
        "    reload",
        "    loadbalance",
        "}",
    ]
    return "\n".join(lines) + "\n"


@memo.by_value()
def cluster_dns_configmap(domain: str, upstreams: Sequence[str]) -> ConfigMap:
    """ConfigMap ``kube-system/cluster-dns`` (key ``Corefile``)."""
    return ConfigMap(
        name=CLUSTER_DNS_NAME,
        namespace=KUBE_SYSTEM,
        data=FrozenDict({COREFILE_KEY: corefile(domain, upstreams)}),
    )


#: Reverse zones of the private address ranges (10/8, 172.16/12, 192.168/16).
PRIVATE_REVERSE_ZONES: Final = (
    "10.in-addr.arpa.",
    "168.192.in-addr.arpa.",
    *(f"{octet}.172.in-addr.arpa." for octet in range(16, 32)),
)

_UNBOUND_SERVER: Final = (
    "do-daemonize: no",
    "interface: 0.0.0.0",
    "interface-automatic: yes",
    "access-control: 0.0.0.0/0 allow",
    'chroot: ""',
    'username: ""',
    'directory: "/etc/unbound"',
    'logfile: ""',
    "use-syslog: no",
    "log-time-ascii: yes",
    "log-queries: yes",
    "log-replies: yes",
    "log-local-actions: yes",
    "log-servfail: yes",
    "num-threads: 4",
    "incoming-num-tcp: 1000",
    "outgoing-num-tcp: 1000",
    "num-queries-per-thread: 4096",
    "outgoing-range: 8192",
    "rrset-roundrobin: yes",
    "extended-statistics: yes",
    "rrset-cache-size: 256m",
    "rrset-cache-slabs: 4",
    "msg-cache-size: 256m",
    "msg-cache-slabs: 4",
    "infra-cache-slabs: 4",
    "key-cache-slabs: 4",
    "so-rcvbuf: 4m",
    'pidfile: "/tmp/unbound.pid"',
    "infra-host-ttl: 60",
    "prefetch: yes",
    "tcp-upstream: yes",
    "so-reuseport: yes",
)


def unbound_conf(domain: str, cluster_dns_ip: str, upstreams: Sequence[str]) -> str:
    """The node-local resolver's configuration.

    The cluster domain is a stub zone and the reverse zones are forwarded to
    the cluster-dns ClusterIP (CoreDNS); the private reverse zones are
    transparent local zones, and those and the domain are DNSSEC-insecure.
    Everything else goes to the upstreams, DNSSEC-validated, or is resolved
    from the root when there are none.
    """
    lines = ["server:"]
    lines += [f"  {line}" for line in _UNBOUND_SERVER]
    lines += [f'  local-zone: "{zone}" transparent' for zone in PRIVATE_REVERSE_ZONES]
    lines += [
        '  root-hints: "/usr/local/unbound/etc/unbound/root.hints"',
        '  trust-anchor-file: "/usr/local/unbound/etc/unbound/root.key"',
        f'  domain-insecure: "{domain}"',
    ]
    lines += [f'  domain-insecure: "{zone}"' for zone in PRIVATE_REVERSE_ZONES]
    lines += [
        "remote-control:",
        "  control-enable: yes",
        f"  control-interface: {UNBOUND_CONTROL_SOCKET}",
        "  control-use-cert: no",
        "stub-zone:",
        f'  name: "{domain}"',
        f"  stub-addr: {cluster_dns_ip}",
    ]
    for zone in ("in-addr.arpa.", "ip6.arpa."):
        lines += ["forward-zone:", f'  name: "{zone}"', f"  forward-addr: {cluster_dns_ip}"]
    if upstreams:
        lines += ["forward-zone:", '  name: "."']
        lines += [f"  forward-addr: {upstream}" for upstream in upstreams]
    return "\n".join(lines) + "\n"


@memo.by_value()
def node_dns_configmap(domain: str, cluster_dns_ip: str, upstreams: Sequence[str]) -> ConfigMap:
    """ConfigMap ``kube-system/node-dns`` (key ``unbound.conf``)."""
    return ConfigMap(
        name=NODE_DNS_NAME,
        namespace=KUBE_SYSTEM,
        data=FrozenDict({UNBOUND_CONF_KEY: unbound_conf(domain, cluster_dns_ip, upstreams)}),
    )


# ---------------------------------------------------------------------------
# Endpoints, EndpointSlices and the cke-etcd Service (§I.3)
# ---------------------------------------------------------------------------


def _unique_sorted(ips: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(ips)))


def _split(
    ready: Iterable[str], not_ready: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Sorted, de-duplicated ready and not-ready IPs; an IP given as both is ready."""
    ready_ips = _unique_sorted(ready)
    chosen = set(ready_ips)
    return ready_ips, _unique_sorted(ip for ip in not_ready if ip not in chosen)


@memo.by_value()
def _endpoints(
    namespace: str,
    name: str,
    ready: Sequence[str],
    not_ready: Sequence[str],
    port_name: str,
    port: int,
) -> Endpoints:
    ready_ips, not_ready_ips = _split(ready, not_ready)
    return Endpoints(
        name=name,
        namespace=namespace,
        labels=FrozenDict({LABEL_SKIP_MIRROR: "true"}),
        subsets=(
            EndpointSubset(
                addresses=ready_ips,
                not_ready_addresses=not_ready_ips,
                ports=(EndpointPort(name=port_name, protocol="TCP", port=port),),
            ),
        ),
    )


@memo.by_value()
def _endpoint_slice(
    namespace: str,
    name: str,
    service_name: str,
    ready: Sequence[str],
    not_ready: Sequence[str],
    port_name: str,
    port: int,
) -> EndpointSlice:
    ready_ips, not_ready_ips = _split(ready, not_ready)
    endpoints = tuple(EndpointSliceEndpoint(addresses=(ip,), ready=True) for ip in ready_ips)
    endpoints += tuple(EndpointSliceEndpoint(addresses=(ip,), ready=False) for ip in not_ready_ips)
    return EndpointSlice(
        name=name,
        namespace=namespace,
        labels=FrozenDict({LABEL_MANAGED_BY: MANAGED_BY_CKE, LABEL_SERVICE_NAME: service_name}),
        address_type=ADDRESS_TYPE_IPV4,
        endpoints=endpoints,
        ports=(EndpointPort(name=port_name, protocol="TCP", port=port),),
    )


def master_endpoints(ready: Sequence[str], not_ready: Sequence[str]) -> Endpoints:
    """Endpoints ``default/kubernetes``: the apiservers, ``https``/6443."""
    return _endpoints(
        MASTER_ENDPOINTS_NAMESPACE,
        MASTER_ENDPOINTS_NAME,
        ready,
        not_ready,
        MASTER_PORT_NAME,
        MASTER_PORT,
    )


def master_endpoint_slice(ready: Sequence[str], not_ready: Sequence[str]) -> EndpointSlice:
    """EndpointSlice ``default/kubernetes`` for Service ``kubernetes``."""
    return _endpoint_slice(
        MASTER_ENDPOINTS_NAMESPACE,
        MASTER_ENDPOINTS_NAME,
        MASTER_ENDPOINTS_NAME,
        ready,
        not_ready,
        MASTER_PORT_NAME,
        MASTER_PORT,
    )


def etcd_service() -> Service:
    """The headless Service ``kube-system/cke-etcd`` (one port, 2379)."""
    return Service(
        name=ETCD_SERVICE_NAME,
        namespace=KUBE_SYSTEM,
        type="ClusterIP",
        cluster_ip="None",
        ports=(ServicePort(name="", protocol="TCP", port=ETCD_PORT),),
    )


def etcd_endpoints(ready: Sequence[str], not_ready: Sequence[str] = ()) -> Endpoints:
    """Endpoints ``kube-system/cke-etcd``: port 2379 with an empty name."""
    return _endpoints(KUBE_SYSTEM, ETCD_SERVICE_NAME, ready, not_ready, "", ETCD_PORT)


def etcd_endpoint_slice(ready: Sequence[str], not_ready: Sequence[str] = ()) -> EndpointSlice:
    """EndpointSlice ``kube-system/cke-etcd`` for Service ``cke-etcd``."""
    return _endpoint_slice(
        KUBE_SYSTEM,
        ETCD_SERVICE_NAME,
        ETCD_SERVICE_NAME,
        ready,
        not_ready,
        "",
        ETCD_PORT,
    )


def _has_labels(actual: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(actual.get(k) == v for k, v in wanted.items())


def _same_ips(actual: Sequence[str], wanted: Sequence[str]) -> bool:
    return len(actual) == len(wanted) and set(actual) == set(wanted)


def _same_port(actual: Sequence[EndpointPort], wanted: EndpointPort) -> bool:
    return len(actual) == 1 and (actual[0].name, actual[0].port) == (wanted.name, wanted.port)


def endpoints_equal(actual: Endpoints | None, expected: Endpoints) -> bool:
    """Whether the live Endpoints already is ``expected`` as far as CKE cares:
    ``expected``'s labels present, one subset with the same ready and not-ready
    IPs (in any order), and one port with the same name and number.
    Extra labels and the port protocol are not compared."""
    if actual is None or len(actual.subsets) != 1 or len(expected.subsets) != 1:
        return False
    if not _has_labels(actual.labels, expected.labels):
        return False
    have, want = actual.subsets[0], expected.subsets[0]
    return (
        len(want.ports) == 1
        and _same_port(have.ports, want.ports[0])
        and _same_ips(have.addresses, want.addresses)
        and _same_ips(have.not_ready_addresses, want.not_ready_addresses)
    )


def endpoint_slice_equal(actual: EndpointSlice | None, expected: EndpointSlice) -> bool:
    """Whether the live EndpointSlice already is ``expected``: labels present,
    same address type, the same endpoints in the same order (addresses as a
    set, ``ready`` set and equal), and one port with the same name and number."""
    if actual is None or not _has_labels(actual.labels, expected.labels):
        return False
    if actual.address_type != expected.address_type:
        return False
    if len(actual.endpoints) != len(expected.endpoints):
        return False
    for have, want in zip(actual.endpoints, expected.endpoints, strict=True):
        if have.ready is None or have.ready != want.ready:
            return False
        if not _same_ips(have.addresses, want.addresses):
            return False
    return len(expected.ports) == 1 and _same_port(actual.ports, expected.ports[0])


def etcd_service_ok(svc: Service | None) -> bool:
    """Whether ``cke-etcd`` exists as CKE wants it: one port, 2379, type
    ``ClusterIP`` and ClusterIP ``None`` (headless)."""
    if svc is None or len(svc.ports) != 1:
        return False
    return svc.ports[0].port == ETCD_PORT and svc.type == "ClusterIP" and svc.cluster_ip == "None"


# ---------------------------------------------------------------------------
# Node attributes (§I.4, §A.2)
# ---------------------------------------------------------------------------


def is_internal_key(key: str, node: Node | None = None) -> bool:
    """Whether a label, annotation or taint key is CKE-internal, i.e. kept in
    sync with cluster.yml instead of being left alone when absent from it.

    Internal: ``cke.cybozu.com/*`` (except the ``cke.cybozu.com/reboot``
    annotation), ``*.cke.cybozu.com/*``, ``node-role.kubernetes.io/master``
    and ``node-role.kubernetes.io/control-plane``, and any
    ``node-role.kubernetes.io/*`` key that ``node``'s cluster.yml labels set.
    """
    if key == ANNOTATION_REBOOT:
        return False
    if key.startswith(_INTERNAL_PREFIX) or _INTERNAL_INFIX in key:
        return True
    if key in _NODE_ROLE_INTERNAL:
        return True
    return node is not None and key.startswith(_NODE_ROLE_PREFIX) and key in node.labels


def _master_taint() -> Taint:
    return Taint(key=TAINT_MASTER, value="", effect="PreferNoSchedule")


def desired_node(cluster: Cluster, node: Node, current: KubernetesNode) -> KubernetesNode:
    """``current`` with the attributes ``update-node`` writes:

    * labels: current non-internal ones, cluster.yml's, and
      ``cke.cybozu.com/master=true`` on control planes;
    * annotations: current non-internal ones and cluster.yml's;
    * taints: cluster.yml's, the current non-internal ones whose key
      cluster.yml does not set, and ``cke.cybozu.com/master:PreferNoSchedule``
      on control planes when ``taint_control_plane``.
    """
    labels = {k: v for k, v in current.labels.items() if not is_internal_key(k, node)}
    labels.update(node.labels)
    if node.control_plane:
        labels[LABEL_MASTER] = "true"
    annotations = {k: v for k, v in current.annotations.items() if not is_internal_key(k, node)}
    annotations.update(node.annotations)
    spec_keys = {t.key for t in node.taints}
    taints = list(node.taints)
    taints += [
        t for t in current.taints if not is_internal_key(t.key, node) and t.key not in spec_keys
    ]
    if cluster.taint_control_plane and node.control_plane:
        taints.append(_master_taint())
    return attrs.evolve(
        current,
        labels=FrozenDict(labels),
        annotations=FrozenDict(annotations),
        taints=tuple(taints),
    )


def node_outdated(cluster: Cluster, node: Node, current: KubernetesNode) -> bool:
    """CKE's ``nodeIsOutdated``: a cluster.yml label, annotation or taint is
    missing or different, an internal one is present but not in cluster.yml,
    or the master label or taint is wrong."""
    if any(current.labels.get(k) != v for k, v in node.labels.items()):
        return True
    for key in current.labels:
        if key != LABEL_MASTER and is_internal_key(key, node) and key not in node.labels:
            return True
    if node.control_plane:
        if current.labels.get(LABEL_MASTER) != "true":
            return True
    elif LABEL_MASTER in current.labels:
        return True

    if any(current.annotations.get(k) != v for k, v in node.annotations.items()):
        return True
    for key in current.annotations:
        if is_internal_key(key, node) and key not in node.annotations:
            return True

    current_taints = {t.key: t for t in current.taints}
    for taint in node.taints:
        have = current_taints.get(taint.key)
        if have is None or (have.value, have.effect) != (taint.value, taint.effect):
            return True
    spec_keys = {t.key for t in node.taints}
    for taint in current.taints:
        internal = taint.key != TAINT_MASTER and is_internal_key(taint.key, node)
        if internal and taint.key not in spec_keys:
            return True
    master = current_taints.get(TAINT_MASTER)
    if cluster.taint_control_plane and node.control_plane:
        return master is None or master.effect != "PreferNoSchedule"
    return master is not None


class _AttrsMemo:
    """What ``outdated_attrs_nodes`` remembers about one cluster object: per node,
    the verdict for the last Node object seen, and the last whole answer."""

    __slots__ = ("cluster", "last", "verdicts")

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        #: address -> (node, Node object, outdated); Node objects by weak reference.
        self.verdicts: dict[str, tuple[Node, weakref.ref[KubernetesNode], bool]] = {}
        #: (the Node objects, the answer for them).
        self.last: (
            tuple[tuple[weakref.ref[KubernetesNode], ...], tuple[KubernetesNode, ...]] | None
        ) = None


#: Clusters ``outdated_attrs_nodes`` remembers, by ``id`` (each memo pins its
#: cluster, so the id cannot be reused while it is here); least recently used
#: first out.
_ATTRS_MEMO_SIZE: Final = 4
_attrs_memos: dict[int, _AttrsMemo] = {}


def _attrs_memo(cluster: Cluster) -> _AttrsMemo:
    memo = _attrs_memos.pop(id(cluster), None) or _AttrsMemo(cluster)
    _attrs_memos[id(cluster)] = memo
    trim(_attrs_memos, _ATTRS_MEMO_SIZE)
    return memo


def clear_caches() -> None:
    """Forget memoised static resources, renders and Node verdicts (tests, benchmarks)."""
    _static_cache.clear()
    _attrs_memos.clear()
    memo.clear_caches()


def outdated_attrs_nodes(
    cluster: Cluster, current_nodes: Iterable[KubernetesNode]
) -> tuple[KubernetesNode, ...]:
    """CKE's ``OutdatedAttrsNodes``: for every cluster.yml node (in cluster.yml
    order) whose Node object exists and is outdated, the Node ``update-node``
    should write. Nodes without a Node object are skipped.

    Memoised per cluster object by identity: a node's verdict is reused while
    the node and its Node object are the very same objects as last time, the
    whole answer while every Node object is (``status_from_json`` gives an
    unchanged Node the same object from one observation to the next). Node
    objects are held by weak references: one that is gone never matches.
    """
    memo = _attrs_memo(cluster)
    current_tuple = tuple(current_nodes)
    last = memo.last
    if (
        last is not None
        and len(last[0]) == len(current_tuple)
        and all(map(operator.is_, map(operator.call, last[0]), current_tuple))
    ):
        return last[1]
    verdicts = memo.verdicts
    by_name = {n.name: n for n in current_tuple}
    result: list[KubernetesNode] = []
    for node in cluster.nodes:
        current = by_name.get(node.nodename)
        if current is None:
            continue
        seen = verdicts.get(node.address)
        if seen is not None and seen[0] is node and seen[1]() is current:
            outdated = seen[2]
        else:
            outdated = node_outdated(cluster, node, current)
            # Not remembered if the Node object cannot be weakly referenced.
            with contextlib.suppress(TypeError):
                verdicts[node.address] = (node, weakref.ref(current), outdated)
        if outdated:
            result.append(desired_node(cluster, node, current))
    answer = tuple(result)
    try:
        memo.last = (tuple(map(weakref.ref, current_tuple)), answer)
    except TypeError:  # cannot be weakly referenced: not remembered
        memo.last = None
    return answer
