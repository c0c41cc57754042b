"""The managed etcd cluster, as the engine talks to it (§C.1, §C.2, §D.2 step 3).

:class:`EtcdCluster` speaks etcd's gRPC API over TLS with a client
certificate (``cke_adapters.pki.etcd_client_credentials``: the root
certificate from the etcd-client CA, trusting the server CA). It is async;
the ``pyetcd`` client underneath is synchronous, so every call runs in a
worker thread (``asyncio.to_thread``).

Endpoints are client URLs (``https://<address>:2379``, as
``cke_core.commands.etcd.etcd_endpoints`` builds them). A call "on the
cluster" tries them in order and takes the first answer; an endpoint that is
down or times out (gRPC ``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, which is also
how etcd reports "no leader" and "request timed out") passes the call to the
next. Any other error ends the call. Every error the caller sees is an
:class:`EtcdCommandError` whose message is one line naming the endpoint(s)
and the cause; :meth:`EtcdCluster.cluster_status` never raises and returns
warnings instead, since observation must go on with a partial status.

The raw gRPC stubs pyetcd ships (``pyetcd.etcdrpc``) are used on pyetcd's
channels rather than its wrapper methods, because the wrappers drop the
response headers (the revisions §D.2 compares), have no user and role calls,
and mark an endpoint that failed once as unusable for minutes. The channels
reconnect at most 1 s after a member comes back.

The TLS material is written to a private temporary directory (0700, keys
0600) that the adapter owns and removes on :meth:`EtcdCluster.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import grpc  # type: ignore[import-untyped]
import pyetcd  # type: ignore[import-untyped]
from pyetcd import etcdrpc

from cke_adapters.ports import TLSCredentials
from cke_core.commands.etcd import peer_url
from cke_core.frozen import FrozenDict
from cke_core.ops.etcd import guess_member_name, url_host
from cke_core.status import EtcdClusterStatus, EtcdMember

__all__ = [
    "DEFAULT_TIMEOUT",
    "KUBE_APISERVER_PREFIX",
    "EtcdCluster",
    "EtcdCommandError",
]

#: Seconds every RPC may take.
DEFAULT_TIMEOUT: Final = 5.0
#: The lease TTL of the health probes (CKE's ``Grant(10)``).
PROBE_LEASE_TTL: Final = 10
#: The key whose Get tells whether a member has caught up (§D.2 step 3).
HEALTH_KEY: Final = b"health"
#: What the ``kube-apiserver`` role may read and write.
KUBE_APISERVER_PREFIX: Final = "/registry/"

_NOT_ANSWERING: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_CHANNEL_OPTIONS: Final = [
    # gRPC backs off up to 2 minutes between reconnections by default; a member
    # that restarts must be usable again at the next observation.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class EtcdCommandError(RuntimeError):
    """An etcd call failed; the message is one line naming the endpoint(s) and the cause."""


def _describe(error: grpc.RpcError) -> str:
    code = error.code() if hasattr(error, "code") else None
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    name = code.name if code is not None else "ERROR"
    return " ".join(f"{name}: {details}".split())


def _code(error: grpc.RpcError) -> Any:
    return error.code() if hasattr(error, "code") else None


def _member(m: Any) -> EtcdMember:
    return EtcdMember(
        id=int(m.ID),
        name=str(m.name),
        peer_urls=tuple(str(u) for u in m.peerURLs),
        client_urls=tuple(str(u) for u in m.clientURLs),
    )


def _prefix_end(prefix: str) -> bytes:
    """The range end that selects every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return bytes(raw)


def _already_exists(error: grpc.RpcError) -> bool:
    return "already exists" in ((error.details() if hasattr(error, "details") else "") or "")


def _not_found(error: grpc.RpcError) -> bool:
    return bool(_code(error) == grpc.StatusCode.NOT_FOUND)


class EtcdCluster:
    """Member list, status, sync waits, authentication set-up and membership changes.

    ``timeout``: seconds per RPC. ``add_member_pause``: the sleep before
    ``MemberAdd`` (etcd refuses a membership change too soon after the last
    one). ``sync_tries`` / ``sync_interval``: :meth:`wait_sync`'s retries.
    """

    def __init__(
        self,
        credentials: TLSCredentials,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        add_member_pause: float = 10.0,
        sync_tries: int = 10,
        sync_interval: float = 2.0,
    ) -> None:
        self.timeout = timeout
        self.add_member_pause = add_member_pause
        self.sync_tries = max(1, sync_tries)
        self.sync_interval = sync_interval
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._dir = Path(tempfile.mkdtemp(prefix="cke-etcd-client-"))  # mode 0700
        try:
            ca = self._dir / "ca.crt"
            cert = self._dir / "client.crt"
            key = self._dir / "client.key"
            for path, content, mode in (
                (ca, credentials.ca_certificate, 0o644),
                (cert, credentials.certificate, 0o644),
                (key, credentials.private_key, 0o600),
            ):
                path.touch(mode=mode)
                path.write_text(content)
            self._tls = pyetcd.MultiEndpointEtcd3Client.get_secure_creds(
                str(ca), cert_key=str(key), cert_cert=str(cert)
            )
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    # -- lifecycle

    @property
    def credentials_directory(self) -> Path:
        """The private directory holding the TLS files (gone after :meth:`close`)."""
        return self._dir

    async def close(self) -> None:
        """Close the connections and remove the TLS files; closing twice is harmless."""
        with self._lock:
            self._closed = True
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):  # closing must not fail close()
                client.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- connections and calls (synchronous, run in threads)

    def _client(self, endpoint: str) -> Any:
        """The single-endpoint pyetcd client of ``endpoint`` (created once)."""
        with self._lock:
            if self._closed:
                raise EtcdCommandError("the etcd client is closed")
            client = self._clients.get(endpoint)
            if client is not None:
                return client
            host, port = _host_port(endpoint)
            ep = pyetcd.Endpoint(
                host, port, secure=True, creds=self._tls, time_retry=0.0, opts=_CHANNEL_OPTIONS
            )
            client = pyetcd.MultiEndpointEtcd3Client(endpoints=[ep], timeout=self.timeout)
            self._clients[endpoint] = client
            return client

    def _call(self, endpoint: str, stub: str, method: str, request: Any) -> Any:
        """One RPC on one endpoint; raises ``grpc.RpcError``."""
        client = self._client(endpoint)
        return getattr(getattr(client, stub), method)(request, self.timeout)

    def _first(
        self,
        endpoints: Sequence[str],
        what: str,
        stub: str,
        method: str,
        request: Any,
        *,
        accept: Callable[[grpc.RpcError], bool] | None = None,
    ) -> tuple[str, Any]:
        """The first answer of ``endpoints`` in order: ``(endpoint, response)``.

        ``accept``: an error that counts as success (the response is then None).
        """
        if not endpoints:
            raise EtcdCommandError(f"{what}: no etcd endpoints given")
        failures: list[str] = []
        for endpoint in endpoints:
            try:
                return endpoint, self._call(endpoint, stub, method, request)
            except grpc.RpcError as e:
                if accept is not None and accept(e):
                    return endpoint, None
                if _code(e) not in _NOT_ANSWERING:
                    raise EtcdCommandError(f"{what} at {endpoint}: {_describe(e)}") from None
                failures.append(f"{endpoint}: {_describe(e)}")
        raise EtcdCommandError(f"{what}: no etcd endpoint answered ({'; '.join(failures)})")

    def _member_list(self, endpoints: Sequence[str]) -> tuple[EtcdMember, ...]:
        _, response = self._first(
            endpoints, "etcd MemberList", "clusterstub", "MemberList", etcdrpc.MemberListRequest()
        )
        return tuple(_member(m) for m in response.members)

    def _grant(self, endpoints: Sequence[str]) -> int:
        """Grant (then revoke) a probe lease; the revision of the Grant's response."""
        request = etcdrpc.LeaseGrantRequest(TTL=PROBE_LEASE_TTL)
        endpoint, response = self._first(
            endpoints, "etcd LeaseGrant", "leasestub", "LeaseGrant", request
        )
        # A failed revoke is harmless: the lease expires in PROBE_LEASE_TTL seconds.
        with contextlib.suppress(grpc.RpcError):
            self._call(
                endpoint, "leasestub", "LeaseRevoke", etcdrpc.LeaseRevokeRequest(ID=response.ID)
            )
        return int(response.header.revision)

    def _revision_of(self, endpoint: str) -> int | None:
        """The header revision of a single-endpoint ``Get("health")``; None on error."""
        try:
            response = self._call(endpoint, "kvstub", "Range", etcdrpc.RangeRequest(key=HEALTH_KEY))
        except (grpc.RpcError, EtcdCommandError, ValueError):
            return None
        return int(response.header.revision)

    def _status_ok(self, endpoint: str) -> bool:
        try:
            self._call(endpoint, "maintenancestub", "Status", etcdrpc.StatusRequest())
        except (grpc.RpcError, EtcdCommandError, ValueError):
            return False
        return True

    # -- the commands

    async def member_list(self, endpoints: Sequence[str]) -> tuple[EtcdMember, ...]:
        """``MemberList`` from the first endpoint that answers."""
        return await asyncio.to_thread(self._member_list, endpoints)

    async def cluster_status(self, endpoints: Sequence[str]) -> tuple[EtcdClusterStatus, list[str]]:
        """§D.2 step 3; errors give a partial status and warnings, never an exception.

        ``members`` by member name (the peer-URL host for a member added but not
        started); ``is_healthy``: a lease ``Grant`` succeeds; ``in_sync_members``:
        a ``Get`` on each member alone answers with a revision at least the
        Grant's.
        """
        try:
            members = await self.member_list(endpoints)
        except EtcdCommandError as e:
            return EtcdClusterStatus(), [str(e)]
        by_name = {guess_member_name(m): m for m in members}
        partial = EtcdClusterStatus(members=FrozenDict(by_name))
        try:
            revision = await asyncio.to_thread(self._grant, endpoints)
        except EtcdCommandError as e:
            return partial, [str(e)]
        names = list(by_name)
        revisions = await asyncio.gather(
            *(asyncio.to_thread(self._revision_of, self._member_url(n, by_name[n])) for n in names)
        )
        in_sync = {
            n: r is not None and r >= revision for n, r in zip(names, revisions, strict=True)
        }
        return (
            EtcdClusterStatus(
                is_healthy=True, members=FrozenDict(by_name), in_sync_members=FrozenDict(in_sync)
            ),
            [],
        )

    @staticmethod
    def _member_url(name: str, member: EtcdMember) -> str:
        """Where to ask a member alone: its client URL, else CKE's ``https://<name>:2379``."""
        if member.client_urls:
            return member.client_urls[0]
        return f"https://{name}:2379"

    async def wait_sync(self, endpoints: Sequence[str], redundancy: bool) -> None:
        """CKE's ``wait-etcd-sync``: a lease Grant succeeds and, with ``redundancy``,
        more than ⌊(n+1)/2⌋ of the n endpoints answer ``Status``; up to
        ``sync_tries`` tries ``sync_interval`` apart."""
        if not endpoints:
            raise EtcdCommandError("wait-etcd-sync: no etcd endpoints given")
        needed = (len(endpoints) + 1) // 2
        last = "no try"
        for attempt in range(self.sync_tries):
            if attempt:
                await asyncio.sleep(self.sync_interval)
            try:
                await asyncio.to_thread(self._grant, endpoints)
            except EtcdCommandError as e:
                last = str(e)
                continue
            if not redundancy:
                return
            answers = await asyncio.gather(
                *(asyncio.to_thread(self._status_ok, ep) for ep in endpoints)
            )
            healthy = sum(answers)
            if healthy > needed:
                return
            last = (
                f"{healthy} of {len(endpoints)} endpoints answer Status, more than {needed} needed"
            )
        raise EtcdCommandError(
            f"wait-etcd-sync {','.join(endpoints)}: not in sync after {self.sync_tries} "
            f"tries: {last}"
        )

    async def setup_auth(self, endpoints: Sequence[str]) -> None:
        """CKE's ``setup-etcd-auth``, idempotent: users ``root`` (role root) and
        ``kube-apiserver`` (role ``kube-apiserver``, read-write on ``/registry/``,
        plus role root, which compaction needs), then ``AuthEnable``.

        Users get an empty password, as in CKE: clients authenticate with
        certificates, whose CN is the user name.
        """
        await asyncio.to_thread(self._setup_auth, endpoints)

    def _setup_auth(self, endpoints: Sequence[str]) -> None:
        permission = etcdrpc.Permission(
            permType=etcdrpc.Permission.READWRITE,
            key=KUBE_APISERVER_PREFIX.encode(),
            range_end=_prefix_end(KUBE_APISERVER_PREFIX),
        )
        steps: list[tuple[str, str, Any, bool]] = [
            ("UserAdd root", "UserAdd", etcdrpc.AuthUserAddRequest(name="root", password=""), True),
            (
                "UserGrantRole root root",
                "UserGrantRole",
                etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"),
                False,
            ),
            (
                "RoleAdd kube-apiserver",
                "RoleAdd",
                etcdrpc.AuthRoleAddRequest(name="kube-apiserver"),
                True,
            ),
            (
                "RoleGrantPermission kube-apiserver",
                "RoleGrantPermission",
                etcdrpc.AuthRoleGrantPermissionRequest(name="kube-apiserver", perm=permission),
                False,
            ),
            (
                "UserAdd kube-apiserver",
                "UserAdd",
                etcdrpc.AuthUserAddRequest(name="kube-apiserver", password=""),
                True,
            ),
            (
                "UserGrantRole kube-apiserver kube-apiserver",
                "UserGrantRole",
                etcdrpc.AuthUserGrantRoleRequest(user="kube-apiserver", role="kube-apiserver"),
                False,
            ),
            (
                "UserGrantRole kube-apiserver root",
                "UserGrantRole",
                etcdrpc.AuthUserGrantRoleRequest(user="kube-apiserver", role="root"),
                False,
            ),
            ("AuthEnable", "AuthEnable", etcdrpc.AuthEnableRequest(), False),
        ]
        for what, method, request, may_exist in steps:
            self._first(
                endpoints,
                f"etcd {what}",
                "authstub",
                method,
                request,
                accept=_already_exists if may_exist else None,
            )

    async def add_member(self, endpoints: Sequence[str], address: str) -> tuple[EtcdMember, ...]:
        """CKE's ``add-etcd-member``: unless a member's peer URL has host ``address``,
        pause ``add_member_pause`` seconds and ``MemberAdd https://<address>:2380``.
        Returns the member list after. Re-entrant: a repeat adds nothing."""
        members = await self.member_list(endpoints)
        if any(url_host(u) == address for m in members for u in m.peer_urls):
            return members
        if self.add_member_pause > 0:
            await asyncio.sleep(self.add_member_pause)
        request = etcdrpc.MemberAddRequest(peerURLs=[peer_url(address)])
        await asyncio.to_thread(
            self._first,
            endpoints,
            f"etcd MemberAdd {peer_url(address)}",
            "clusterstub",
            "MemberAdd",
            request,
            accept=_already_exists,
        )
        return await self.member_list(endpoints)

    async def remove_members(self, endpoints: Sequence[str], ids: Sequence[int]) -> None:
        """``MemberRemove`` each ID in order; a member already gone is not an error."""
        for member_id in ids:
            await asyncio.to_thread(
                self._first,
                endpoints,
                f"etcd MemberRemove {member_id}",
                "clusterstub",
                "MemberRemove",
                etcdrpc.MemberRemoveRequest(ID=member_id),
                accept=_not_found,
            )


def _host_port(endpoint: str) -> tuple[str, int]:
    """``(host, port)`` of a client URL, the host bracketed if IPv6, as gRPC wants it."""
    text = endpoint if "://" in endpoint else f"https://{endpoint}"
    try:
        parts = urllib.parse.urlsplit(text)
        host, port = parts.hostname, parts.port or 2379
    except ValueError as e:
        raise EtcdCommandError(f"invalid etcd endpoint {endpoint!r}: {e}") from None
    if parts.scheme != "https" or not host:
        raise EtcdCommandError(f"invalid etcd endpoint {endpoint!r}: expected https://HOST:PORT")
    return (f"[{host}]" if ":" in host else host), port


class RenewingEtcdCluster:
    """An ``EtcdCluster`` whose client certificate is re-issued as it ages.

    CKE issues the engine's etcd client certificate (1 h TTL) for each round;
    a long-running engine must do the same. ``credentials`` issues a fresh
    one; after ``renew_after`` seconds the next call opens a new
    ``EtcdCluster`` with it and closes the old one. ``kwargs`` go to
    ``EtcdCluster``.
    """

    def __init__(
        self,
        credentials: Callable[[], TLSCredentials],
        *,
        renew_after: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        self._credentials = credentials
        self._renew_after = renew_after
        self._clock = clock
        self._kwargs = kwargs
        self._current: EtcdCluster | None = None
        self._since = 0.0

    async def _cluster(self) -> EtcdCluster:
        now = self._clock()
        if self._current is None or now - self._since >= self._renew_after:
            fresh = EtcdCluster(await asyncio.to_thread(self._credentials), **self._kwargs)
            old, self._current, self._since = self._current, fresh, now
            if old is not None:
                await old.close()
        return self._current

    async def member_list(self, endpoints: Sequence[str]) -> tuple[EtcdMember, ...]:
        return await (await self._cluster()).member_list(endpoints)

    async def cluster_status(self, endpoints: Sequence[str]) -> tuple[EtcdClusterStatus, list[str]]:
        return await (await self._cluster()).cluster_status(endpoints)

    async def wait_sync(self, endpoints: Sequence[str], redundancy: bool) -> None:
        await (await self._cluster()).wait_sync(endpoints, redundancy)

    async def setup_auth(self, endpoints: Sequence[str]) -> None:
        await (await self._cluster()).setup_auth(endpoints)

    async def add_member(self, endpoints: Sequence[str], address: str) -> tuple[EtcdMember, ...]:
        return await (await self._cluster()).add_member(endpoints, address)

    async def remove_members(self, endpoints: Sequence[str], ids: Sequence[int]) -> None:
        await (await self._cluster()).remove_members(endpoints, ids)

    async def close(self) -> None:
        if self._current is not None:
            current, self._current = self._current, None
            await current.close()
