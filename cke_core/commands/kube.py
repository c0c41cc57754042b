"""Kubernetes API commands (§C.2, §F, §I) as data.

Every command names the apiserver it talks through (``apiserver``: the address
of a control-plane node with a healthy apiserver, CKE's ``apiserver *cke.Node``);
the shell opens a client to it with CKE's admin credentials. ``target`` is what
the operation record shows: the object (``namespace/name``), the resource key
or the Node names (joined with ",": the Node commands take a list of Nodes, as
CKE's do, except the per-node drain commands ``evict-pods`` and
``delete-daemonset-pods``).

Objects are the core's subsets of the Kubernetes objects (``cke_core.status``);
the shell turns them into full API objects (§I.2, §I.3). A command's result is
``ok`` when the API call succeeded, with the exceptions each command documents
(an idempotent create, a NotFound that counts as done ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

import attrs

from cke_core.cluster import LabelSelector, TrustedRestMapping
from cke_core.commands.node import node_list
from cke_core.frozen import FrozenDict, freeze
from cke_core.ops.base import Command
from cke_core.status import ConfigMap, Endpoints, EndpointSlice, KubernetesNode, Service

#: Node annotation CKE sets when it cordons a node for a reboot or a repair.
ANNOTATION_REBOOT: Final = "cke.cybozu.com/reboot"
#: Field manager of CKE's server-side applies.
FIELD_MANAGER: Final = "cke"


def _freeze_document(value: Mapping[str, Any]) -> FrozenDict[str, Any]:
    frozen: FrozenDict[str, Any] = freeze(value)
    return frozen


def _mappings(value: Iterable[TrustedRestMapping]) -> tuple[TrustedRestMapping, ...]:
    return tuple(value)


def _object_target(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


# ---------------------------------------------------------------------------
# Waiting and applying
# ---------------------------------------------------------------------------


@attrs.frozen
class WaitKubernetes(Command):
    """Poll ServiceAccount ``kube-system/default`` up to 100 times, 1 s apart.

    Found: ok. NotFound on every try: still ok (a timeout is not an error; the
    next cycle waits again). Any other API error: not ok.
    """

    NAME: ClassVar[str] = "wait-kubernetes"
    TRIES: ClassVar[int] = 100
    INTERVAL_SECONDS: ClassVar[int] = 1

    apiserver: str

    @property
    def target(self) -> str:
        return "kube-system sa/default"


@attrs.frozen
class ApplyResource(Command):
    """Server-side apply of one resource (§I.5 steps 2-5).

    ``document`` is the manifest as a JSON value, already carrying the
    ``cke.cybozu.com/revision`` annotation (step 1, rendered by the core). The
    shell resolves the REST mapping by discovery, falling back to
    ``trusted_mappings``; injects the webhook CA into webhook configurations
    annotated ``cke.cybozu.com/inject-cacert=true``; issues a certificate for
    a Secret annotated ``cke.cybozu.com/issue-cert``; then PATCHes with an
    ApplyPatch, ``fieldManager=cke`` and ``force=true``. A NotFound (the type
    is not served yet) is reported as ok: the next cycle retries because the
    live annotation is still absent.
    """

    NAME: ClassVar[str] = "apply-resource"
    FIELD_MANAGER: ClassVar[str] = FIELD_MANAGER
    FORCE: ClassVar[bool] = True

    apiserver: str
    key: str
    document: FrozenDict[str, Any] = attrs.field(converter=_freeze_document)
    trusted_mappings: tuple[TrustedRestMapping, ...] = attrs.field(default=(), converter=_mappings)

    @property
    def target(self) -> str:
        return self.key


# ---------------------------------------------------------------------------
# ConfigMaps, Services, Endpoints, EndpointSlices
# ---------------------------------------------------------------------------


@attrs.frozen
class CreateConfigMap(Command):
    """Create the ConfigMap; an AlreadyExists answer counts as ok (§L.8)."""

    NAME: ClassVar[str] = "create-configmap"

    apiserver: str
    config_map: ConfigMap

    @property
    def target(self) -> str:
        return _object_target(self.config_map.namespace, self.config_map.name)


@attrs.frozen
class UpdateConfigMap(Command):
    """Update (replace) the ConfigMap's data."""

    NAME: ClassVar[str] = "update-configmap"

    apiserver: str
    config_map: ConfigMap

    @property
    def target(self) -> str:
        return _object_target(self.config_map.namespace, self.config_map.name)


@attrs.frozen
class CreateService(Command):
    """Create the Service (type, clusterIP and ports as given)."""

    NAME: ClassVar[str] = "create-service"

    apiserver: str
    service: Service

    @property
    def target(self) -> str:
        return _object_target(self.service.namespace, self.service.name)


@attrs.frozen
class UpdateService(Command):
    """Update the Service's spec (type, clusterIP and ports as given)."""

    NAME: ClassVar[str] = "update-service"

    apiserver: str
    service: Service

    @property
    def target(self) -> str:
        return _object_target(self.service.namespace, self.service.name)


@attrs.frozen
class CreateEndpoints(Command):
    """Create the Endpoints object (labels and subsets as given, §I.3)."""

    NAME: ClassVar[str] = "create-endpoints"

    apiserver: str
    endpoints: Endpoints

    @property
    def target(self) -> str:
        return _object_target(self.endpoints.namespace, self.endpoints.name)


@attrs.frozen
class UpdateEndpoints(Command):
    """Update the Endpoints object (labels and subsets as given, §I.3)."""

    NAME: ClassVar[str] = "update-endpoints"

    apiserver: str
    endpoints: Endpoints

    @property
    def target(self) -> str:
        return _object_target(self.endpoints.namespace, self.endpoints.name)


@attrs.frozen
class CreateEndpointSlice(Command):
    """Create the EndpointSlice (labels, address type, endpoints, ports, §I.3)."""

    NAME: ClassVar[str] = "create-endpointslice"

    apiserver: str
    endpoint_slice: EndpointSlice

    @property
    def target(self) -> str:
        return _object_target(self.endpoint_slice.namespace, self.endpoint_slice.name)


@attrs.frozen
class UpdateEndpointSlice(Command):
    """Update the EndpointSlice (labels, address type, endpoints, ports, §I.3)."""

    NAME: ClassVar[str] = "update-endpointslice"

    apiserver: str
    endpoint_slice: EndpointSlice

    @property
    def target(self) -> str:
        return _object_target(self.endpoint_slice.namespace, self.endpoint_slice.name)


# ---------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------


def _kubernetes_nodes(value: Iterable[KubernetesNode]) -> tuple[KubernetesNode, ...]:
    if isinstance(value, KubernetesNode):
        raise TypeError("nodes must be a sequence of KubernetesNode, not one")
    return tuple(value)


@attrs.frozen
class UpdateNode(Command):
    """For each of ``nodes``: set the live Node's labels, annotations and taints to
    the given ones and Update it.

    Only ``labels``, ``annotations`` and ``taints`` are written (§I.4); the
    shell reads the live object, replaces those three and sends
    ``Nodes().Update``. ``unschedulable``, ``ready`` and the rest are ignored.
    The Nodes are independent: the shell may update them concurrently; the
    command fails if any update fails (``value``: the failed names, see
    ``ops.base.failed_nodes``). Target: the names joined with ",".
    """

    NAME: ClassVar[str] = "update-node"

    apiserver: str
    nodes: tuple[KubernetesNode, ...] = attrs.field(converter=_kubernetes_nodes)

    @property
    def target(self) -> str:
        return ",".join(node.name for node in self.nodes)


@attrs.frozen
class _OnNamedNodes(Command):
    """A command on the Nodes named ``nodes``, each independent of the others: the
    shell may run them concurrently; the command fails if any fails (``value``: the
    failed names, see ``ops.base.failed_nodes``). Target: the names joined with ","."""

    apiserver: str
    nodes: tuple[str, ...] = attrs.field(converter=node_list)

    @property
    def target(self) -> str:
        return ",".join(self.nodes)


@attrs.frozen
class RemoveNode(_OnNamedNodes):
    """Remove the Node objects named ``nodes``.

    For each: read it; already gone or being deleted (a deletion timestamp) →
    ok, nothing to do. Otherwise patch ``spec.unschedulable=true`` if it is
    schedulable, then Delete it (NotFound counts as ok).
    """

    NAME: ClassVar[str] = "remove-node"


@attrs.frozen
class CordonNode(_OnNamedNodes):
    """Strategic-merge patch each Node: annotation ``cke.cybozu.com/reboot: "true"``
    and ``spec.unschedulable: true``."""

    NAME: ClassVar[str] = "cordon-node"
    ANNOTATION: ClassVar[str] = ANNOTATION_REBOOT


@attrs.frozen
class UncordonNode(_OnNamedNodes):
    """Strategic-merge patch each Node: remove annotation ``cke.cybozu.com/reboot``
    and ``spec.unschedulable`` (both set to null)."""

    NAME: ClassVar[str] = "uncordon-node"
    ANNOTATION: ClassVar[str] = ANNOTATION_REBOOT


@attrs.frozen
class EvictPods(Command):
    """Evict or delete the pods on Node ``node`` (§F.1); ``ok`` = no error.

    The shell lists the pods with ``spec.nodeName=<node>`` and, in order:

    * pods controlled by a DaemonSet are skipped;
    * pods controlled by a Job whose phase is not Pending, Succeeded or
      Failed: if they match ``protected_job_pods`` (None or an empty selector
      matches every pod) the command fails; otherwise they are deleted;
    * every other pod is evicted (policy/v1 Eviction). NotFound is fine. A 429
      (a PodDisruptionBudget) in a namespace *not* matched by
      ``protected_namespaces`` → the pod is deleted instead; a 429 in a
      protected namespace (None = every namespace is protected) → retried
      ``evict_retries`` more times, ``evict_interval`` seconds apart, then the
      command fails. Any other error fails it.

    ``dry_run``: the same walk with ``DryRun=All`` on every call; pods in
    unprotected namespaces are skipped, so the dry run fails only on what a
    real drain could not get past (protected Job pods, blocking PDBs in
    protected namespaces). The result's ``error`` names the blocking pod.
    """

    NAME: ClassVar[str] = "evict-pods"

    apiserver: str
    node: str
    dry_run: bool = False
    protected_namespaces: LabelSelector | None = None
    protected_job_pods: LabelSelector | None = None
    evict_retries: int = 0
    evict_interval: int = 0

    @property
    def name(self) -> str:
        return "evict-pods-dry-run" if self.dry_run else self.NAME

    @property
    def target(self) -> str:
        return self.node


@attrs.frozen
class DeleteDaemonSetPods(Command):
    """Delete the pods on Node ``node`` owned by DaemonSets whose update strategy
    is ``OnDelete`` (they are not evicted by the drain, §F.1)."""

    NAME: ClassVar[str] = "delete-daemonset-pods"

    apiserver: str
    node: str

    @property
    def target(self) -> str:
        return self.node
