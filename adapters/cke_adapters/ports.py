"""The seams between the service layer and the outside world.

The service layer (``cke_adapters.service``) observes, decides and executes
through these protocols only; the composition root (``cke_daemon``, the lab,
a test) chooses the implementations:

* :class:`Issuer`: certificates, CA certificates, the service-account pair and
  the Secret encryption keys. Implemented by ``cke_adapters.pki.LocalCA``
  (a CA kept in a local directory; labs and tests) and, later, by the Vault
  issuer of §H behind the same methods.
* :class:`KubernetesPort`: what the engine reads from and writes to the
  Kubernetes API, plus the component health checks of §D.1. Implemented by
  ``cke_adapters.kubernetes.standin.StandInKubernetes`` (an in-memory API
  where no kube-apiserver can run, as here) and by a client of a real API
  server.

Nodes (SSH + container runtime) and etcd have concrete adapters
(``cke_adapters.ssh``, ``cke_adapters.runtime``, ``cke_adapters.etcd_cluster``)
that tests drive for real, so they need no protocol here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs

from cke_core.cluster import Cluster
from cke_core.ops.base import Command, CommandResult
from cke_core.render.files import CertificateRequest
from cke_core.status import KubernetesStatus, NodeStatus, RebootQueueStatus, RepairQueueStatus

__all__ = ["IssuedCertificate", "Issuer", "KubernetesPort", "TLSCredentials"]


@attrs.frozen(repr=False)
class IssuedCertificate:
    """A certificate issued for a request: PEMs of the certificate, its private
    key and the issuing CA. ``repr`` never shows the key."""

    certificate: str
    private_key: str
    ca_certificate: str

    def __repr__(self) -> str:
        return "IssuedCertificate(<certificate>, <private key>, <ca>)"


@attrs.frozen(repr=False)
class TLSCredentials:
    """A client's TLS material as PEM text: the CA it trusts, its certificate
    and its key. ``repr`` never shows the key."""

    ca_certificate: str
    certificate: str
    private_key: str

    def __repr__(self) -> str:
        return "TLSCredentials(<ca>, <certificate>, <private key>)"


@runtime_checkable
class Issuer(Protocol):
    """The PKI of §H as the executor needs it (secrets never enter the core)."""

    def ca_certificate(self, ca: str) -> str:
        """The PEM certificate of CA ``ca`` (``render.files.CA_*`` names)."""
        ...

    def issue(self, request: CertificateRequest) -> IssuedCertificate:
        """Issue a certificate as ``request`` describes (CA, CN, O, SANs, TTL, usages)."""
        ...

    def service_account(self) -> tuple[str, str]:
        """The service-account signing pair ``(certificate PEM, key PEM)``,
        created once and the same ever after (CKE keeps it in etcd)."""
        ...

    def encryption_keys(self) -> Sequence[tuple[str, str]]:
        """Secret encryption keys ``(name, base64 secret)``, the current one first."""
        ...


@runtime_checkable
class KubernetesPort(Protocol):
    """The Kubernetes API as the engine uses it (§D.1 health, §D.2 steps 4-7, §I).

    ``nodes`` is the per-node status observed over SSH in this round (the
    containers that run); implementations that stand in for a real API use
    it to answer as the real one would.
    """

    async def component_health(
        self,
        cluster: Cluster,
        address: str,
        node: NodeStatus,
        *,
        nodes: Mapping[str, NodeStatus] | None = None,
    ) -> NodeStatus:
        """``node`` with ``is_healthy`` of the apiserver, controller manager,
        scheduler, proxy and kubelet filled in (each only if it runs).

        ``nodes``: every node observed over SSH in this round, when the caller
        has them. A real client probes each component and ignores it; a
        stand-in needs it to answer for an apiserver, whose health depends on
        the etcd of *other* nodes.
        """
        ...

    async def observe(
        self, cluster: Cluster, living_master: str, nodes: Mapping[str, NodeStatus]
    ) -> KubernetesStatus:
        """§D.2 step 5 through the apiserver on ``living_master``; an error raises
        (it fails the whole status, §L.6)."""
        ...

    async def queue_status(
        self,
        cluster: Cluster,
        reboot: RebootQueueStatus,
        repair: RepairQueueStatus,
        nodes: Mapping[str, NodeStatus],
    ) -> tuple[RebootQueueStatus, RepairQueueStatus]:
        """The queues with the Kubernetes-derived fields of §D.2 steps 6-7 filled
        in (drains completed or timed out); the entries come from the event log."""
        ...

    def handles(self, command: Command) -> bool:
        """Whether ``command`` is one of the Kubernetes API commands this port runs."""
        ...

    async def run(
        self, cluster: Cluster, command: Command, nodes: Mapping[str, NodeStatus]
    ) -> CommandResult:
        """Run one Kubernetes API command (``commands.kube``, ``retaint-before-kubelet-boot``)."""
        ...
