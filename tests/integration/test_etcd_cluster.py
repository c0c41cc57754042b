"""``cke_adapters.etcd_cluster`` against a real three-member etcd with CKE's TLS set-up.

Each member runs Debian's etcd (3.4) on its own loopback address
(127.X.Y.11-14, so that, as on real nodes, every member has its own host and
CKE's fixed ports 2379/2380 and peer URL ``https://<address>:2380`` work).
Certificates come from ``LocalCA`` through ``stage_files`` of the core's own
``prepare-etcd-certificates`` command, and the flags from
``render.components.etcd_params`` (the 3.5-only ``--feature-gates`` and
``--corrupt-check-time`` dropped, ``0.0.0.0`` replaced by the member's address,
``/etc/etcd/pki`` by the member's directory): client-cert-auth trusting the
etcd-client CA, serving certificates from the server CA, peer certificates
from the etcd-peer CA.

The tests share one cluster and run in file order; the last one kills members.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]
import pyetcd  # type: ignore[import-untyped]
import pytest
from cke_adapters.etcd_cluster import EtcdCluster, EtcdCommandError
from cke_adapters.local_etcd import EtcdNotFoundError, find_etcd_binary
from cke_adapters.pki import LocalCA, etcd_client_credentials, stage_files
from cke_adapters.ports import TLSCredentials
from missing import component_missing
from pyetcd import etcdrpc

from cke_core.cluster import Cluster, Node
from cke_core.commands.etcd import etcd_endpoint
from cke_core.commands.node import PrepareEtcdCertificates
from cke_core.ops.etcd import initial_cluster_from_members
from cke_core.render import components, files
from cke_core.status import EtcdMember

pytestmark = pytest.mark.integration

T = TypeVar("T")

#: A loopback /24 of our own, so parallel runs on one machine do not collide.
PREFIX = f"127.{100 + os.getpid() % 100}.{1 + (os.getpid() // 100) % 250}"
ADDRESSES = tuple(f"{PREFIX}.{n}" for n in (11, 12, 13))
NEW_MEMBER = f"{PREFIX}.14"
#: etcd 3.4 refuses MemberAdd until the leader has been connected to every peer
#: for 5 s (strict reconfiguration check; why CKE pauses 10 s before adding).
RECONFIG_SETTLE = 6.0


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def write_credentials(directory: Path, creds: TLSCredentials) -> tuple[str, str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "ca.crt", directory / "client.crt", directory / "client.key")
    for path, content in zip(
        paths, (creds.ca_certificate, creds.certificate, creds.private_key), strict=True
    ):
        path.write_text(content)
    return str(paths[0]), str(paths[1]), str(paths[2])


class TLSEtcd:
    """Members started as CKE starts them, on loopback addresses, stopped with SIGKILL."""

    def __init__(self, root: Path, ca: LocalCA) -> None:
        self.root = root
        self.ca = ca
        self.binary = find_etcd_binary()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at = 0.0
        self.client_files = write_credentials(root / "client", etcd_client_credentials(ca))

    def cluster(self, addresses: Sequence[str]) -> Cluster:
        return Cluster(
            name="t",
            nodes=tuple(Node(address=a, user="u", control_plane=True) for a in addresses),
        )

    def _args(self, address: str, initial_cluster: Sequence[Node | str], state: str) -> list[str]:
        cluster = self.cluster([address])
        node = cluster.nodes[0]
        member_dir = self.root / address
        command = PrepareEtcdCertificates(
            nodes=(address,), pki={address: files.etcd_certificate_requests(cluster, node)}
        )
        for f in stage_files(self.ca, command, address, cluster):
            path = member_dir / "pki" / Path(f.path).relative_to(files.ETCD_PKI_DIR)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(f.content))
            path.chmod(f.mode)
        params = components.etcd_params(
            cluster,
            node,
            initial_cluster=initial_cluster,
            state=state,  # type: ignore[arg-type]
        )
        args = [self.binary]
        for arg in params.extra_args:
            if arg.startswith(("--feature-gates=", "--corrupt-check-time=")):
                continue  # etcd 3.5 flags
            arg = arg.replace("https://0.0.0.0:", f"https://{address}:")
            arg = arg.replace(files.ETCD_PKI_DIR + "/", f"{member_dir}/pki/")
            args.append(arg)
        return [
            *args,
            f"--data-dir={member_dir}/data",
            "--logger=zap",
            "--log-outputs=stderr",
        ]

    def start(self, address: str, initial_cluster: Sequence[Node | str], state: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        log = open(self.root / f"{address}.log", "wb")  # noqa: SIM115 - the child keeps it
        with log:
            self.processes[address] = subprocess.Popen(
                self._args(address, initial_cluster, state),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def log_tail(self, address: str) -> str:
        with contextlib.suppress(OSError):
            return (self.root / f"{address}.log").read_text(errors="replace")[-3000:]
        return "<no log>"

    def healthy(self, address: str) -> bool:
        """``GET /health`` with the root client certificate says true."""
        ca, cert, key = self.client_files
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(cert, key)
        try:
            with urllib.request.urlopen(
                f"https://{address}:2379/health", timeout=1, context=context
            ) as response:
                return b'"true"' in response.read()
        except OSError:
            return False

    def wait_healthy(self, addresses: Sequence[str], limit: float = 20.0) -> None:
        deadline = time.monotonic() + limit
        pending = list(addresses)
        while pending:
            for address in list(pending):
                code = self.processes[address].poll()
                if code is not None:
                    raise AssertionError(
                        f"etcd {address} exited with {code}:\n{self.log_tail(address)}"
                    )
                if self.healthy(address):
                    pending.remove(address)
            if pending and time.monotonic() > deadline:
                raise AssertionError(f"etcd {pending[0]} not healthy:\n{self.log_tail(pending[0])}")
            time.sleep(0.1)

    def kill(self, address: str) -> None:
        process = self.processes[address]
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for address in list(self.processes):
            self.kill(address)


@pytest.fixture(scope="module")
def etcd() -> Iterator[TLSEtcd]:
    try:
        find_etcd_binary()
    except EtcdNotFoundError as e:
        component_missing(str(e))
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # cheap fsync
    with tempfile.TemporaryDirectory(prefix="cke-etcd-tls-", dir=shm) as tmp:
        root = Path(tmp)
        cluster = TLSEtcd(root, LocalCA(root / "ca"))
        nodes = cluster.cluster(ADDRESSES).nodes
        try:
            for address in ADDRESSES:
                cluster.start(address, nodes, "new")
            cluster.wait_healthy(ADDRESSES)
            cluster.started_at = time.monotonic()
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture(scope="module")
def adapter(etcd: TLSEtcd) -> Iterator[EtcdCluster]:
    client = EtcdCluster(
        etcd_client_credentials(etcd.ca),
        timeout=2.0,
        add_member_pause=0.0,
        sync_tries=2,
        sync_interval=0.3,
    )
    yield client
    run(client.close())


ENDPOINTS = tuple(etcd_endpoint(a) for a in ADDRESSES)


def raw_client(etcd: TLSEtcd, creds: TLSCredentials, name: str, address: str) -> Any:
    ca, cert, key = write_credentials(etcd.root / name, creds)
    return pyetcd.client(
        host=address, port=2379, ca_cert=ca, cert_cert=cert, cert_key=key, timeout=3
    )


def leader_of(etcd: TLSEtcd) -> str:
    """The address of the current raft leader."""
    client = raw_client(etcd, etcd_client_credentials(etcd.ca), "leader", ADDRESSES[0])
    try:
        leader = client.maintenancestub.Status(etcdrpc.StatusRequest(), 3).leader
        for member in client.clusterstub.MemberList(etcdrpc.MemberListRequest(), 3).members:
            if leader == member.ID:
                return str(member.name)
    finally:
        client.close()
    raise AssertionError("no leader")


# ---------------------------------------------------------------------------
# A healthy cluster
# ---------------------------------------------------------------------------


def test_member_list(adapter: EtcdCluster) -> None:
    members = run(adapter.member_list(ENDPOINTS))
    assert sorted(m.name for m in members) == sorted(ADDRESSES)
    for m in members:
        assert m.peer_urls == (f"https://{m.name}:2380",)
        assert m.client_urls == (f"https://{m.name}:2379",)
        assert m.id > 0
    # The first endpoint that answers: a dead one first is skipped.
    dead = f"https://{PREFIX}.99:2379"
    assert run(adapter.member_list((dead, *ENDPOINTS))) == members


def test_status_of_a_healthy_cluster(adapter: EtcdCluster) -> None:
    status, warnings = run(adapter.cluster_status(ENDPOINTS))
    assert warnings == []
    assert status.is_healthy
    assert set(status.members) == set(ADDRESSES)
    assert all(status.members[a].name == a for a in ADDRESSES)
    assert dict(status.in_sync_members) == dict.fromkeys(ADDRESSES, True)


def test_wait_sync_on_a_healthy_cluster(adapter: EtcdCluster) -> None:
    run(adapter.wait_sync(ENDPOINTS, redundancy=False))
    run(adapter.wait_sync(ENDPOINTS, redundancy=True))
    # One endpoint is never redundant (CKE: healthy <= (n+1)/2 fails).
    with pytest.raises(EtcdCommandError, match="1 of 1 endpoints answer Status"):
        run(adapter.wait_sync(ENDPOINTS[:1], redundancy=True))


def test_the_credentials_are_private_and_removed_on_close(etcd: TLSEtcd) -> None:
    async def scenario() -> Path:
        async with EtcdCluster(etcd_client_credentials(etcd.ca)) as client:
            directory = client.credentials_directory
            assert directory.stat().st_mode & 0o777 == 0o700
            assert (directory / "client.key").stat().st_mode & 0o777 == 0o600
            assert len(await client.member_list(ENDPOINTS)) == 3
        return directory

    directory = run(scenario())
    assert not directory.exists()


def test_unreachable_endpoints_are_one_line_errors(adapter: EtcdCluster) -> None:
    dead = (f"https://{PREFIX}.98:2379", f"https://{PREFIX}.99:2379")
    with pytest.raises(EtcdCommandError) as info:
        run(adapter.member_list(dead))
    message = str(info.value)
    assert "\n" not in message
    assert "no etcd endpoint answered" in message
    assert all(d in message for d in dead)
    status, warnings = run(adapter.cluster_status(dead))
    assert not status.is_healthy
    assert status.members == {}
    assert len(warnings) == 1
    assert "\n" not in warnings[0]
    with pytest.raises(EtcdCommandError, match="not in sync after 2 tries") as info:
        run(adapter.wait_sync(dead, redundancy=False))
    assert "\n" not in str(info.value)


def test_a_server_it_does_not_trust_is_refused(etcd: TLSEtcd) -> None:
    """Trusting the wrong CA (etcd-client instead of server) fails the TLS handshake."""
    good = etcd_client_credentials(etcd.ca)
    wrong = TLSCredentials(
        ca_certificate=etcd.ca.ca_certificate(files.CA_ETCD_CLIENT),
        certificate=good.certificate,
        private_key=good.private_key,
    )

    async def scenario() -> None:
        async with EtcdCluster(wrong, timeout=2.0) as client:
            await client.member_list(ENDPOINTS[:1])

    with pytest.raises(EtcdCommandError, match=ENDPOINTS[0]) as info:
        run(scenario())
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------


def test_setup_auth(etcd: TLSEtcd, adapter: EtcdCluster) -> None:
    run(adapter.setup_auth(ENDPOINTS))
    run(adapter.setup_auth(ENDPOINTS))  # idempotent, now with authentication enabled

    root = raw_client(etcd, etcd_client_credentials(etcd.ca), "root", ADDRESSES[1])
    try:
        auth = root.authstub
        assert auth.UserGet(etcdrpc.AuthUserGetRequest(name="root"), 3).roles == ["root"]
        assert sorted(auth.UserGet(etcdrpc.AuthUserGetRequest(name="kube-apiserver"), 3).roles) == [
            "kube-apiserver",
            "root",
        ]
        (perm,) = auth.RoleGet(etcdrpc.AuthRoleGetRequest(role="kube-apiserver"), 3).perm
        assert (perm.key, perm.range_end, perm.permType) == (
            b"/registry/",
            b"/registry0",
            etcdrpc.Permission.READWRITE,
        )
        # Reads and writes still work with the root certificate ...
        root.put("/cke/test", "value")
        assert root.get("/cke/test")[0] == b"value"
    finally:
        root.close()

    # ... and the adapter's own calls too.
    status, warnings = run(adapter.cluster_status(ENDPOINTS))
    assert warnings == []
    assert status.is_healthy
    assert all(status.in_sync_members.values())
    run(adapter.wait_sync(ENDPOINTS, redundancy=True))

    apiserver = raw_client(
        etcd, etcd_client_credentials(etcd.ca, "kube-apiserver"), "apiserver", ADDRESSES[0]
    )
    try:
        apiserver.put("/registry/pods/x", "pod")
        assert apiserver.get("/registry/pods/x")[0] == b"pod"
    finally:
        apiserver.close()

    intruder = raw_client(etcd, etcd_client_credentials(etcd.ca, "intruder"), "x", ADDRESSES[0])
    try:
        with pytest.raises((grpc.RpcError, pyetcd.Etcd3Exception)):
            intruder.put("/cke/test", "overwritten")
        with pytest.raises((grpc.RpcError, pyetcd.Etcd3Exception)):
            intruder.get("/cke/test")
    finally:
        intruder.close()
    root = raw_client(etcd, etcd_client_credentials(etcd.ca), "root2", ADDRESSES[2])
    try:
        assert root.get("/cke/test")[0] == b"value"
    finally:
        root.close()


# ---------------------------------------------------------------------------
# Membership
# ---------------------------------------------------------------------------


def wait_for_status(
    adapter: EtcdCluster, endpoints: Sequence[str], predicate: Any, limit: float = 15.0
) -> Any:
    """Poll ``cluster_status`` until ``predicate(status)``; the last status either way."""
    deadline = time.monotonic() + limit
    while True:
        status, _ = run(adapter.cluster_status(endpoints))
        if predicate(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def test_add_and_remove_a_member(etcd: TLSEtcd, adapter: EtcdCluster) -> None:
    settle = etcd.started_at + RECONFIG_SETTLE - time.monotonic()
    if settle > 0:
        time.sleep(settle)

    members = run(adapter.add_member(ENDPOINTS, NEW_MEMBER))
    assert len(members) == 4
    (added,) = [m for m in members if m.name == ""]
    assert added.peer_urls == (f"https://{NEW_MEMBER}:2380",)
    assert added.client_urls == ()

    # Added, not started: keyed by its peer host, not in sync; the cluster is healthy.
    status, warnings = run(adapter.cluster_status(ENDPOINTS))
    assert warnings == []
    assert status.is_healthy
    assert set(status.members) == {*ADDRESSES, NEW_MEMBER}
    assert status.members[NEW_MEMBER] == added
    assert status.in_sync_members[NEW_MEMBER] is False

    # Re-entrant: a repeat (a leader that died after MemberAdd) adds nothing.
    assert sorted(m.id for m in run(adapter.add_member(ENDPOINTS, NEW_MEMBER))) == sorted(
        m.id for m in members
    )

    # Start it as etcd-add-member does: the initial cluster from the member list.
    initial = initial_cluster_from_members(members, NEW_MEMBER)
    etcd.start(NEW_MEMBER, initial, "existing")
    etcd.wait_healthy([NEW_MEMBER])
    everyone = (*ENDPOINTS, etcd_endpoint(NEW_MEMBER))
    status = wait_for_status(
        adapter,
        everyone,
        lambda s: (
            s.members.get(NEW_MEMBER, EtcdMember()).name == NEW_MEMBER
            and s.in_sync_members.get(NEW_MEMBER, False)
        ),
    )
    assert status.is_healthy
    assert status.members[NEW_MEMBER].client_urls == (etcd_endpoint(NEW_MEMBER),)
    assert dict(status.in_sync_members) == dict.fromkeys((*ADDRESSES, NEW_MEMBER), True)
    run(adapter.wait_sync([etcd_endpoint(NEW_MEMBER)], redundancy=False))

    run(adapter.remove_members(everyone, [added.id]))
    run(adapter.remove_members(everyone, [added.id]))  # already gone: not an error
    remaining = run(adapter.member_list(ENDPOINTS))
    assert sorted(m.name for m in remaining) == sorted(ADDRESSES)
    etcd.kill(NEW_MEMBER)
    status, warnings = run(adapter.cluster_status(ENDPOINTS))
    assert warnings == []
    assert status.is_healthy
    assert set(status.members) == set(ADDRESSES)


def test_remove_an_unknown_member_is_not_an_error(adapter: EtcdCluster) -> None:
    run(adapter.remove_members(ENDPOINTS, [0x1234]))
    assert len(run(adapter.member_list(ENDPOINTS))) == 3


# ---------------------------------------------------------------------------
# Losing members (destructive: last)
# ---------------------------------------------------------------------------


def test_losing_members(etcd: TLSEtcd, adapter: EtcdCluster) -> None:
    leader = leader_of(etcd)
    follower, other = [a for a in ADDRESSES if a != leader][:2]
    etcd.kill(follower)

    status, warnings = run(adapter.cluster_status(ENDPOINTS))
    assert warnings == []
    assert status.is_healthy
    assert set(status.members) == set(ADDRESSES)  # still members, from the others
    assert status.in_sync_members[follower] is False
    assert all(status.in_sync_members[a] for a in ADDRESSES if a != follower)

    run(adapter.wait_sync(ENDPOINTS, redundancy=False))
    with pytest.raises(EtcdCommandError, match="2 of 3 endpoints answer Status") as info:
        run(adapter.wait_sync(ENDPOINTS, redundancy=True))
    assert "\n" not in str(info.value)

    etcd.kill(other)  # one of three left: no quorum
    with pytest.raises(EtcdCommandError, match="not in sync after 2 tries") as info:
        run(adapter.wait_sync(ENDPOINTS, redundancy=False))
    message = str(info.value)
    assert "\n" not in message
    assert ",".join(ENDPOINTS) in message

    status, warnings = run(adapter.cluster_status(ENDPOINTS))
    assert not status.is_healthy
    assert set(status.members) == set(ADDRESSES)  # MemberList answers without quorum
    assert status.in_sync_members == {}
    assert len(warnings) == 1
    assert "LeaseGrant" in warnings[0]
    assert "\n" not in warnings[0]
