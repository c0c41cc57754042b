"""etcd operations (§C.2): bootstrap, start, wait, membership changes and restart.

The endpoints of the cluster-level commands (``wait-etcd-sync``,
``setup-etcd-auth``, ``*-etcd-member``) are the client URLs of the CPs of
cluster.yml. Membership changes touch one member per operation (§L.3), and
every operation can be run again from its first command after a leader died
half-way (§L.1): volumes are created or removed only as needed, the member is
added only if absent, and containers are removed before they are run.

Data volume: ``options.etcd.volume_name`` (default ``etcd-cke``), mounted at
``/var/lib/etcd``. Volume ``etcd-added-member`` marks a CP whose member joined
the cluster completely; it is created last by bootstrap and add-member and
removed first by add-member and destroy-member.

A node step is one command for all the operation's nodes (``commands.node``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import ClassVar, Literal

import attrs

from cke_core.cluster import Cluster, Node
from cke_core.commands.etcd import (
    ADDED_MEMBER_VOLUME,
    AddEtcdMember,
    RemoveEtcdMember,
    SetupEtcdAuth,
    WaitEtcdSync,
    etcd_endpoints,
)
from cke_core.commands.node import (
    ImagePull,
    KillContainers,
    MakeFiles,
    PrepareEtcdCertificates,
    RunContainer,
    StopContainer,
    VolumeCreate,
    VolumeRemove,
)
from cke_core.fields import tuple_field
from cke_core.ops.base import Command, CommandResult, Operation, nth
from cke_core.render import components
from cke_core.render.files import etcd_certificate_requests
from cke_core.render.images import Images
from cke_core.status import EtcdMember


def _node_tuple(nodes: Iterable[Node]) -> tuple[Node, ...]:
    return tuple(nodes)


def _addresses(nodes: Sequence[Node]) -> tuple[str, ...]:
    return tuple(n.address for n in nodes)


def _volume(cluster: Cluster) -> str:
    return cluster.options.etcd.volume_name


def _prepare_and_write(
    cluster: Cluster, images: Images, nodes: Sequence[Node]
) -> tuple[Command, ...]:
    """``prepare-etcd-certificates``, then ``make-files``, on all ``nodes``."""
    targets = _addresses(nodes)
    return (
        PrepareEtcdCertificates(
            targets, {n.address: etcd_certificate_requests(cluster, n) for n in nodes}
        ),
        MakeFiles(targets, images.tools),
    )


def _run_etcd(
    cluster: Cluster,
    images: Images,
    nodes: Sequence[Node],
    *,
    initial_cluster: Sequence[Node | str] | None = None,
    state: Literal["new", "existing"] | None = None,
) -> RunContainer:
    """``run-container`` etcd on all ``nodes``, each with its own parameters."""
    return RunContainer(
        _addresses(nodes),
        components.ETCD,
        images.etcd,
        components.container_options(components.ETCD, cluster),
        {
            n.address: components.etcd_params(
                cluster, n, initial_cluster=initial_cluster, state=state
            )
            for n in nodes
        },
        components.extra_params(cluster, components.ETCD),
    )


def initial_cluster_from_members(members: Sequence[EtcdMember], address: str) -> tuple[str, ...]:
    """CKE's ``--initial-cluster`` entries from a member list: ``name=peer-url`` for
    every peer URL, where a member without a name (added, never started) is the
    node being added, at ``address``."""
    return tuple(f"{m.name or address}={url}" for m in members for url in m.peer_urls)


def url_host(url: str) -> str:
    """The host part of ``scheme://host:port/...`` (brackets of an IPv6 host removed)."""
    rest = url.split("://", 1)[-1]
    hostport = rest.split("/", 1)[0]
    if hostport.startswith("["):
        return hostport[1:].split("]", 1)[0]
    return hostport.rsplit(":", 1)[0] if ":" in hostport else hostport


def guess_member_name(member: EtcdMember) -> str:
    """CKE's ``GuessMemberName``: the name, else the host of the first peer URL, else the ID."""
    if member.name:
        return member.name
    if member.peer_urls:
        return url_host(member.peer_urls[0])
    return str(member.id)


# ---------------------------------------------------------------------------
# Bootstrap, start, wait
# ---------------------------------------------------------------------------


@attrs.frozen
class EtcdBootstrapOp(Operation):
    """Create the etcd cluster on all CPs at once (``--initial-cluster-state=new``),
    then enable authentication and mark every CP as an added member."""

    NAME: ClassVar[str] = "etcd-bootstrap"
    cluster: Cluster
    images: Images
    control_planes: tuple[Node, ...] = tuple_field()

    @property
    def targets(self) -> tuple[str, ...]:
        return _addresses(self.control_planes)

    @functools.cached_property
    def _plan(self) -> tuple[Command, ...]:
        cps, targets = self.control_planes, self.targets
        endpoints = etcd_endpoints(targets)
        return (
            ImagePull(targets, self.images.etcd),
            *_prepare_and_write(self.cluster, self.images, cps),
            VolumeCreate(targets, _volume(self.cluster)),
            _run_etcd(self.cluster, self.images, cps, initial_cluster=cps, state="new"),
            WaitEtcdSync(endpoints),
            SetupEtcdAuth(endpoints),
            VolumeCreate(targets, ADDED_MEMBER_VOLUME),
        )

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth(self._plan, results)


@attrs.frozen
class EtcdStartOp(Operation):
    """Start stopped members that have data, without ``--initial-*`` flags (their data
    directory already knows the cluster), then wait until they serve."""

    NAME: ClassVar[str] = "etcd-start"
    cluster: Cluster
    images: Images
    nodes: tuple[Node, ...] = tuple_field()

    @property
    def targets(self) -> tuple[str, ...]:
        return _addresses(self.nodes)

    @functools.cached_property
    def _plan(self) -> tuple[Command, ...]:
        return (
            *_prepare_and_write(self.cluster, self.images, self.nodes),
            _run_etcd(self.cluster, self.images, self.nodes),
            WaitEtcdSync(etcd_endpoints(self.targets)),
        )

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth(self._plan, results)


@attrs.frozen
class EtcdWaitClusterOp(Operation):
    """Wait for the cluster to serve. Targets are the endpoints, as CKE records them."""

    NAME: ClassVar[str] = "etcd-wait-cluster"
    control_planes: tuple[Node, ...] = tuple_field()

    @property
    def targets(self) -> tuple[str, ...]:
        return etcd_endpoints(_addresses(self.control_planes))

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((WaitEtcdSync(self.targets),), results)


# ---------------------------------------------------------------------------
# Membership
# ---------------------------------------------------------------------------


@attrs.frozen
class EtcdAddMemberOp(Operation):
    """Add ``node`` (a CP) as a new member, from an empty data volume.

    ``add-etcd-member`` answers the member list after the add; the next
    command runs etcd with ``--initial-cluster`` built from that list and
    ``--initial-cluster-state=existing``. CKE runs etcd inside the add command
    (only if it is not running); here it is a separate ``run-container``, and
    since this operation always stops etcd on the node first, etcd is never
    running at that point, so it is always run.
    """

    NAME: ClassVar[str] = "etcd-add-member"
    cluster: Cluster
    images: Images
    control_planes: tuple[Node, ...] = attrs.field(converter=_node_tuple)
    node: Node

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.node.address,)

    @functools.cached_property
    def _before_add(self) -> tuple[Command, ...]:
        addr = self.node.address
        on = (addr,)
        volume = _volume(self.cluster)
        return (
            ImagePull(on, self.images.etcd),
            StopContainer(on, components.ETCD),
            VolumeRemove(on, ADDED_MEMBER_VOLUME),
            VolumeRemove(on, volume),
            VolumeCreate(on, volume),
            *_prepare_and_write(self.cluster, self.images, (self.node,)),
            AddEtcdMember(etcd_endpoints(_addresses(self.control_planes)), addr),
        )

    @functools.cached_property
    def _after_run(self) -> tuple[Command, ...]:
        addr = self.node.address
        return (
            WaitEtcdSync(etcd_endpoints((addr,))),
            VolumeCreate((addr,), ADDED_MEMBER_VOLUME),
        )

    def run_command(self, members: object) -> RunContainer:
        """The ``run-container`` for the member list ``add-etcd-member`` answered."""
        if not isinstance(members, tuple | list) or not all(
            isinstance(m, EtcdMember) for m in members
        ):
            raise TypeError(f"add-etcd-member must answer a tuple of EtcdMember, got {members!r}")
        entries = initial_cluster_from_members(members, self.node.address)
        if not entries:
            # Starting without --initial-cluster would create a new one-member cluster.
            raise ValueError("add-etcd-member answered a member list without peer URLs")
        return _run_etcd(
            self.cluster, self.images, (self.node,), initial_cluster=entries, state="existing"
        )

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        n = len(results)
        before = self._before_add
        if n < len(before):
            return before[n]
        if n == len(before):
            return self.run_command(results[-1].value)
        return nth(self._after_run, results[len(before) + 1 :])


@attrs.frozen
class EtcdRemoveMemberOp(Operation):
    """Remove members that belong to no CP of cluster.yml (``MemberRemove`` by ID)."""

    NAME: ClassVar[str] = "etcd-remove-member"
    control_planes: tuple[Node, ...] = tuple_field()
    members: tuple[EtcdMember, ...] = tuple_field()

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(guess_member_name(m) for m in self.members)

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        endpoints = etcd_endpoints(_addresses(self.control_planes))
        return nth((RemoveEtcdMember(endpoints, tuple(m.id for m in self.members)),), results)


@attrs.frozen
class EtcdDestroyMemberOp(Operation):
    """Remove the members of nodes that are no longer CPs and destroy their etcd.

    CKE removes volume ``etcd-cke`` whatever ``options.etcd.volume_name`` says
    (§N.9), leaving a custom-named data volume, with the old member's data and
    keys, on the node. This operation removes the configured volume: the one
    its etcd really used. With the default name both behave the same.
    """

    NAME: ClassVar[str] = "etcd-destroy-member"
    cluster: Cluster
    control_planes: tuple[Node, ...] = tuple_field()
    nodes: tuple[Node, ...] = tuple_field()
    ids: tuple[int, ...] = tuple_field()

    @property
    def targets(self) -> tuple[str, ...]:
        return _addresses(self.nodes)

    @functools.cached_property
    def _plan(self) -> tuple[Command, ...]:
        endpoints = etcd_endpoints(_addresses(self.control_planes))
        volume = _volume(self.cluster)
        targets = self.targets
        return (
            VolumeRemove(targets, ADDED_MEMBER_VOLUME),
            RemoveEtcdMember(endpoints, self.ids),
            KillContainers(targets, components.ETCD),
            VolumeRemove(targets, volume),
            WaitEtcdSync(endpoints),
        )

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth(self._plan, results)


@attrs.frozen
class EtcdMarkMemberOp(Operation):
    """Mark CPs whose member is in sync as added members (volume ``etcd-added-member``)."""

    NAME: ClassVar[str] = "etcd-mark-member"
    nodes: tuple[Node, ...] = tuple_field()

    @property
    def targets(self) -> tuple[str, ...]:
        return _addresses(self.nodes)

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((VolumeCreate(self.targets, ADDED_MEMBER_VOLUME),), results)


# ---------------------------------------------------------------------------
# Restart
# ---------------------------------------------------------------------------


@attrs.frozen
class EtcdRestartOp(Operation):
    """Restart an outdated member, only while the others keep a quorum.

    ``wait-etcd-sync`` with redundancy first, so a restart never takes the
    cluster below quorum. The member is run without ``--initial-*`` flags: it
    has data, so etcd would ignore them, and the comparison that found it
    outdated ignores them too (CKE passes the CPs with state ``new``).
    """

    NAME: ClassVar[str] = "etcd-restart"
    cluster: Cluster
    images: Images
    control_planes: tuple[Node, ...] = attrs.field(converter=_node_tuple)
    node: Node

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.node.address,)

    @functools.cached_property
    def _plan(self) -> tuple[Command, ...]:
        on = (self.node.address,)
        return (
            WaitEtcdSync(etcd_endpoints(_addresses(self.control_planes)), redundancy=True),
            ImagePull(on, self.images.etcd),
            StopContainer(on, components.ETCD),
            _run_etcd(self.cluster, self.images, (self.node,)),
        )

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth(self._plan, results)
