"""Commands against the managed etcd cluster and CKE's own storage (§C.1, §C.2, §E.1).

The endpoints are the CPs' client URLs (``https://<address>:2379``), in
cluster.yml order, as CKE builds them. The shell connects with the root
client certificate. Targets are CKE's: the joined endpoints for the sync and
auth commands, the joined member IDs for ``remove-etcd-member``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, Final

import attrs

from cke_core.fields import tuple_field
from cke_core.ops.base import Command
from cke_core.render import components

#: The volume whose presence marks a CP as an added member (§D.1).
ADDED_MEMBER_VOLUME: Final = components.ETCD_ADDED_MEMBER_VOLUME


def etcd_endpoint(address: str) -> str:
    """The client URL of the member on ``address``."""
    return f"https://{address}:2379"


def etcd_endpoints(addresses: Iterable[str]) -> tuple[str, ...]:
    return tuple(etcd_endpoint(a) for a in addresses)


def peer_url(address: str) -> str:
    """The peer URL of the member on ``address`` (what ``MemberAdd`` registers)."""
    return f"https://{address}:2380"


@attrs.frozen
class WaitEtcdSync(Command):
    """Wait until etcd grants a lease (≤10 tries, 2 s apart).

    With ``redundancy``, more than ⌊(n+1)/2⌋ endpoints must also answer
    ``Status``, so that restarting one member cannot lose quorum.
    """

    NAME: ClassVar[str] = "wait-etcd-sync"
    endpoints: tuple[str, ...] = tuple_field()
    redundancy: bool = False

    @property
    def target(self) -> str:
        return ",".join(self.endpoints)


@attrs.frozen
class SetupEtcdAuth(Command):
    """Create users ``root`` (role root) and ``kube-apiserver`` (RW ``/registry/``
    plus role root, which compaction needs), then enable authentication."""

    NAME: ClassVar[str] = "setup-etcd-auth"
    endpoints: tuple[str, ...] = tuple_field()

    @property
    def target(self) -> str:
        return ",".join(self.endpoints)


@attrs.frozen
class EtcdMemberList(Command):
    """``MemberList``; the result's value is a ``tuple[status.EtcdMember, ...]``."""

    NAME: ClassVar[str] = "etcd-member-list"
    endpoints: tuple[str, ...] = tuple_field()

    @property
    def target(self) -> str:
        return ",".join(self.endpoints)


@attrs.frozen
class AddEtcdMember(Command):
    """Add ``node`` to the cluster unless a member already has its peer URL.

    The shell does what CKE does: ``MemberList``; if no member's peer URL has
    host ``node``, sleep 10 s (etcd refuses a second change too soon after the
    last one) and ``MemberAdd https://<node>:2380``. The result's value is the
    member list after the add, a ``tuple[status.EtcdMember, ...]``; the
    operation builds ``--initial-cluster`` from it. Checking first makes the
    command re-entrant when a leader died after ``MemberAdd`` (§L.1).
    """

    NAME: ClassVar[str] = "add-etcd-member"
    endpoints: tuple[str, ...] = tuple_field()
    node: str = ""

    @property
    def target(self) -> str:
        return self.node


@attrs.frozen
class RemoveEtcdMember(Command):
    """``MemberRemove`` each ID in order."""

    NAME: ClassVar[str] = "remove-etcd-member"
    endpoints: tuple[str, ...] = tuple_field()
    ids: tuple[int, ...] = tuple_field()

    @property
    def target(self) -> str:
        return ",".join(str(i) for i in self.ids)


@attrs.frozen
class UpgradeVersionFrom1To2(Command):
    """Create volume ``etcd-added-member`` on ``nodes`` (if absent), then put
    ``config-version=2`` in a transaction conditioned on the leader key.

    Version 1 clusters predate the marker volume; every CP of a running
    version-1 cluster is a member, so marking them all is exact.
    """

    NAME: ClassVar[str] = "upgrade-version-from-1-to-2"
    nodes: tuple[str, ...] = tuple_field()

    @property
    def target(self) -> str:
        return ADDED_MEMBER_VOLUME
