"""Operations on Kubernetes objects (§B.2.2, §B.2.4, §C.2, §I).

The decision renders the desired objects (``cke_core.render.kubernetes``),
compares them with the observed ones and builds these operations from the
rendered values; an operation only says which API calls to make, through
which apiserver.

``apiserver`` is the address of the control-plane node whose apiserver the
commands use (CKE's first healthy apiserver). Like CKE, every operation here
records that address as its only target, except ``update-node``, which
records the names of the Nodes it updates.

Names follow CKE: the ConfigMap, Endpoints and EndpointSlice operations are
named after the object (``create-cluster-dns-configmap``,
``update-kubernetes-endpoints``, ``create-cke-etcd-endpointslice`` ...); the
``cke-etcd`` Service operations are ``create-etcd-service`` /
``update-etcd-service``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import attrs

from cke_core.cluster import TrustedRestMapping
from cke_core.commands.kube import (
    ApplyResource,
    CreateConfigMap,
    CreateEndpoints,
    CreateEndpointSlice,
    CreateService,
    RemoveNode,
    UpdateConfigMap,
    UpdateEndpoints,
    UpdateEndpointSlice,
    UpdateNode,
    UpdateService,
    WaitKubernetes,
)
from cke_core.frozen import FrozenDict, freeze
from cke_core.ops.base import Command, CommandResult, Operation, nth
from cke_core.status import ConfigMap, Endpoints, EndpointSlice, KubernetesNode, Service


def _freeze_document(value: Mapping[str, Any]) -> FrozenDict[str, Any]:
    frozen: FrozenDict[str, Any] = freeze(value)
    return frozen


def _mappings(value: Iterable[TrustedRestMapping]) -> tuple[TrustedRestMapping, ...]:
    return tuple(value)


def _nodes(value: Iterable[KubernetesNode]) -> tuple[KubernetesNode, ...]:
    return tuple(value)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class _OnAPIServer(Operation):
    """An operation that records the apiserver's address as its target."""

    apiserver: str

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.apiserver,)


@attrs.frozen
class WaitKubernetesOp(_OnAPIServer):
    """``wait-kubernetes``: wait for the controller manager to create SA
    ``kube-system/default`` (the control plane is not ready yet)."""

    NAME: ClassVar[str] = "wait-kubernetes"

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((WaitKubernetes(self.apiserver),), results)


@attrs.frozen
class ResourceApplyOp(_OnAPIServer):
    """``resource-apply``: server-side apply one static or user resource (§I.5).

    ``key`` is the resource key (``Kind/ns/name`` or ``Kind/name``);
    ``document`` the manifest to apply, revision annotation included.
    """

    NAME: ClassVar[str] = "resource-apply"

    key: str
    document: FrozenDict[str, Any] = attrs.field(converter=_freeze_document)
    trusted_mappings: tuple[TrustedRestMapping, ...] = attrs.field(default=(), converter=_mappings)

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        command = ApplyResource(self.apiserver, self.key, self.document, self.trusted_mappings)
        return nth((command,), results)


# ---------------------------------------------------------------------------
# DNS ConfigMaps (§I.2)
# ---------------------------------------------------------------------------


@attrs.frozen
class CreateConfigMapOp(_OnAPIServer):
    """``create-<name>-configmap``: create ConfigMap ``cluster-dns`` or ``node-dns``."""

    config_map: ConfigMap

    @property
    def name(self) -> str:
        return f"create-{self.config_map.name}-configmap"

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((CreateConfigMap(self.apiserver, self.config_map),), results)


@attrs.frozen
class UpdateConfigMapOp(_OnAPIServer):
    """``update-<name>-configmap``: update ConfigMap ``cluster-dns`` or ``node-dns``."""

    config_map: ConfigMap

    @property
    def name(self) -> str:
        return f"update-{self.config_map.name}-configmap"

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((UpdateConfigMap(self.apiserver, self.config_map),), results)


# ---------------------------------------------------------------------------
# The cke-etcd Service (§B.2.4 step 4)
# ---------------------------------------------------------------------------


@attrs.frozen
class CreateEtcdServiceOp(_OnAPIServer):
    """``create-etcd-service``: create the headless Service ``kube-system/cke-etcd``."""

    NAME: ClassVar[str] = "create-etcd-service"

    service: Service

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((CreateService(self.apiserver, self.service),), results)


@attrs.frozen
class UpdateEtcdServiceOp(_OnAPIServer):
    """``update-etcd-service``: update the Service ``kube-system/cke-etcd``."""

    NAME: ClassVar[str] = "update-etcd-service"

    service: Service

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((UpdateService(self.apiserver, self.service),), results)


# ---------------------------------------------------------------------------
# Endpoints and EndpointSlices (§I.3)
# ---------------------------------------------------------------------------


@attrs.frozen
class CreateEndpointsOp(_OnAPIServer):
    """``create-<name>-endpoints`` (``kubernetes`` or ``cke-etcd``)."""

    endpoints: Endpoints

    @property
    def name(self) -> str:
        return f"create-{self.endpoints.name}-endpoints"

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((CreateEndpoints(self.apiserver, self.endpoints),), results)


@attrs.frozen
class UpdateEndpointsOp(_OnAPIServer):
    """``update-<name>-endpoints`` (``kubernetes`` or ``cke-etcd``)."""

    endpoints: Endpoints

    @property
    def name(self) -> str:
        return f"update-{self.endpoints.name}-endpoints"

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((UpdateEndpoints(self.apiserver, self.endpoints),), results)


@attrs.frozen
class CreateEndpointSliceOp(_OnAPIServer):
    """``create-<name>-endpointslice`` (``kubernetes`` or ``cke-etcd``)."""

    endpoint_slice: EndpointSlice

    @property
    def name(self) -> str:
        return f"create-{self.endpoint_slice.name}-endpointslice"

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((CreateEndpointSlice(self.apiserver, self.endpoint_slice),), results)


@attrs.frozen
class UpdateEndpointSliceOp(_OnAPIServer):
    """``update-<name>-endpointslice`` (``kubernetes`` or ``cke-etcd``)."""

    endpoint_slice: EndpointSlice

    @property
    def name(self) -> str:
        return f"update-{self.endpoint_slice.name}-endpointslice"

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((UpdateEndpointSlice(self.apiserver, self.endpoint_slice),), results)


# ---------------------------------------------------------------------------
# Nodes (§I.4, §B.2.4 steps 5 and 6)
# ---------------------------------------------------------------------------


@attrs.frozen
class UpdateNodeOp(Operation):
    """``update-node``: write the desired labels, annotations and taints of the
    Nodes, with one ``update-node`` command for all of them (CKE's
    ``nodeUpdateCommand``). Targets: the Node names."""

    NAME: ClassVar[str] = "update-node"

    apiserver: str
    nodes: tuple[KubernetesNode, ...] = attrs.field(converter=_nodes)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((UpdateNode(self.apiserver, self.nodes),), results)


@attrs.frozen
class RemoveNodeOp(_OnAPIServer):
    """``remove-node``: remove Node objects that no cluster.yml node maps to, with
    one ``remove-node`` command for all the names (for each: skip if being
    deleted, cordon, delete)."""

    NAME: ClassVar[str] = "remove-node"

    names: tuple[str, ...] = attrs.field(converter=_strings)

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((RemoveNode(self.apiserver, self.names),), results)
