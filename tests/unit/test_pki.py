"""The local CA (``cke_adapters.pki``): CAs, issuing, persistence, and staging the
files of every ``prepare-*`` command the core produces.

Certificates are checked with ``cryptography``: subject, SANs, key usages,
the issuer's signature, validity, and that each key matches its certificate.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from cke_adapters.pki import (
    CA_COMMON_NAMES,
    LocalCA,
    PKIError,
    etcd_client_credentials,
    parse_ttl,
    stage_files,
)
from cke_adapters.ports import Issuer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cke_core.cluster import Cluster, Node
from cke_core.commands import node as node_commands
from cke_core.commands.node import PrepareFiles
from cke_core.ops.base import Operation
from cke_core.ops.etcd import EtcdAddMemberOp, EtcdBootstrapOp, EtcdStartOp
from cke_core.ops.k8s import (
    KubeAPIServerRestartOp,
    KubeControllerManagerBootstrapOp,
    KubeletBootstrapOp,
    KubeletRestartOp,
    KubeProxyBootstrapOp,
    KubeProxyRestartOp,
    KubeSchedulerBootstrapOp,
    KubeSchedulerRestartOp,
)
from cke_core.render import files
from cke_core.render.files import CertificateRequest
from cke_core.render.images import Images
from cke_core.testing import fixture_cluster, step_ops

ALL_CAS = tuple(CA_COMMON_NAMES)


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    return LocalCA(tmp_path / "pki")


def load_cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def public_der(key: Any) -> bytes:
    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def key_matches(cert: x509.Certificate, key_pem: str) -> bool:
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    return public_der(key.public_key()) == public_der(cert.public_key())


def dns_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(x509.DNSName)


def ip_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress)]


def usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def name_value(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(oid)]


def check_issued(
    cert_pem: str, key_pem: str, request: CertificateRequest, issuer: Issuer
) -> x509.Certificate:
    """``cert_pem`` is what ``request`` asks for, signed by its CA, and ``key_pem`` its key."""
    cert = load_cert(cert_pem)
    ca_cert = load_cert(issuer.ca_certificate(request.ca))
    cert.verify_directly_issued_by(ca_cert)
    assert key_matches(cert, key_pem)
    assert name_value(cert.subject, NameOID.COMMON_NAME) == [request.common_name]
    assert name_value(cert.subject, NameOID.ORGANIZATION_NAME) == (
        [request.organization] if request.organization else []
    )
    expected_dns = list(request.alt_names)
    if not request.exclude_cn_from_sans and request.common_name not in expected_dns:
        try:
            ipaddress.ip_address(request.common_name)
        except ValueError:
            expected_dns.insert(0, request.common_name)
    assert sorted(dns_sans(cert)) == sorted(set(expected_dns))
    assert sorted(ip_sans(cert)) == sorted(set(request.ip_sans))
    wanted = set()
    if request.server:
        wanted.add(ExtendedKeyUsageOID.SERVER_AUTH)
    if request.client:
        wanted.add(ExtendedKeyUsageOID.CLIENT_AUTH)
    assert usages(cert) == wanted
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == parse_ttl(request.ttl) + datetime.timedelta(seconds=30)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
    return cert


# ---------------------------------------------------------------------------
# TTLs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("87600h", 87600 * 3600),
        ("8760h", 8760 * 3600),
        ("1h30m", 5400),
        ("2h", 7200),
        ("90s", 90),
        ("1.5h", 5400),
        ("3600", 3600),
        ("1d", 86400),
        ("1m0.5s", 60.5),
        ("1500ms", 1.5),
    ],
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert parse_ttl(text) == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "h", "1x", "1h 30m", "-1h", "0s", "500ms", "1h3", "²", "1.h."]
)
def test_parse_ttl_rejects(text: str) -> None:
    with pytest.raises(PKIError, match="invalid TTL") as info:
        parse_ttl(text)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# CAs and persistence
# ---------------------------------------------------------------------------


def test_local_ca_is_an_issuer(ca: LocalCA) -> None:
    assert isinstance(ca, Issuer)


def test_nothing_is_created_before_first_use(tmp_path: Path) -> None:
    LocalCA(tmp_path / "pki")
    assert not (tmp_path / "pki").exists()


def test_six_cas_created_on_first_use_with_private_modes(ca: LocalCA) -> None:
    for name in ALL_CAS:
        cert = load_cert(ca.ca_certificate(name))
        assert name_value(cert.subject, NameOID.COMMON_NAME) == [CA_COMMON_NAMES[name]]
        assert cert.issuer == cert.subject
        cert.verify_directly_issued_by(cert)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign
        assert usage.crl_sign
        assert cert.not_valid_after_utc - cert.not_valid_before_utc > datetime.timedelta(
            days=365 * 99
        )
    directory = ca.directory
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ALL_CAS:
        assert stat.S_IMODE((directory / f"ca-{name}.key").stat().st_mode) == 0o600
        assert stat.S_IMODE((directory / f"ca-{name}.crt").stat().st_mode) == 0o644
    assert not [p for p in os.listdir(directory) if p.startswith(".ca-")]  # no temporaries


def test_cas_are_distinct(ca: LocalCA) -> None:
    assert len({ca.ca_certificate(name) for name in ALL_CAS}) == len(ALL_CAS)


def test_unknown_ca(ca: LocalCA) -> None:
    with pytest.raises(PKIError, match="unknown CA 'vault'"):
        ca.ca_certificate("vault")
    with pytest.raises(PKIError, match="unknown CA"):
        ca.issue(CertificateRequest(ca="nope", role="r", common_name="x"))  # type: ignore[arg-type]


def test_second_instance_issues_from_the_same_cas(tmp_path: Path) -> None:
    first = LocalCA(tmp_path / "pki")
    cas = {name: first.ca_certificate(name) for name in ALL_CAS}
    sa = first.service_account()
    keys = first.encryption_keys()
    second = LocalCA(tmp_path / "pki")
    assert {name: second.ca_certificate(name) for name in ALL_CAS} == cas
    assert second.service_account() == sa
    assert second.encryption_keys() == keys
    request = CertificateRequest(ca=files.CA_SERVER, role="system", common_name="n")
    issued = second.issue(request)
    load_cert(issued.certificate).verify_directly_issued_by(load_cert(cas[files.CA_SERVER]))
    check_issued(issued.certificate, issued.private_key, request, first)


def test_concurrent_first_use_creates_one_ca(tmp_path: Path) -> None:
    """Threads of two instances race to create the CA; every certificate is from one CA."""
    instances = [LocalCA(tmp_path / "pki"), LocalCA(tmp_path / "pki")]
    request = CertificateRequest(ca=files.CA_KUBERNETES, role="system", common_name="k")
    issued: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(index: int) -> None:
        try:
            barrier.wait()
            issued.append(instances[index % 2].issue(request).certificate)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ca_cert = load_cert(LocalCA(tmp_path / "pki").ca_certificate(files.CA_KUBERNETES))
    for pem in issued:
        load_cert(pem).verify_directly_issued_by(ca_cert)
    assert instances[0].ca_certificate(files.CA_KUBERNETES) == instances[1].ca_certificate(
        files.CA_KUBERNETES
    )


# ---------------------------------------------------------------------------
# Issuing
# ---------------------------------------------------------------------------


def test_issue_server_certificate_like_etcd(ca: LocalCA) -> None:
    node = Node(address="10.0.0.11", user="u", hostname="cp-1", control_plane=True)
    request = files.etcd_certificate_requests(fixture_cluster(), node).certificates[0]
    assert request.exclude_cn_from_sans is False
    issued = ca.issue(request)
    cert = check_issued(issued.certificate, issued.private_key, request, ca)
    assert dns_sans(cert)[0] == "cp-1"  # the CN is a DNS SAN too
    assert "cke-etcd.kube-system.svc" in dns_sans(cert)
    assert sorted(ip_sans(cert)) == ["10.0.0.11", "127.0.0.1"]
    assert usages(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert issued.ca_certificate == ca.ca_certificate(files.CA_SERVER)
    assert isinstance(
        serialization.load_pem_private_key(issued.private_key.encode(), None),
        ec.EllipticCurvePrivateKey,
    )
    ca_cert = load_cert(issued.ca_certificate)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


@pytest.mark.parametrize(
    ("common_name", "exclude", "expected_dns"),
    [
        ("kubernetes", False, ["kubernetes"]),
        ("kubernetes", True, []),
        ("10.0.0.11", False, []),  # an IP is not a DNS name
        ("system:node:w1", False, []),  # not a host name (Vault skips it too)
        ("front-proxy-client", False, ["front-proxy-client"]),
    ],
)
def test_common_name_in_sans(
    ca: LocalCA, common_name: str, exclude: bool, expected_dns: list[str]
) -> None:
    request = CertificateRequest(
        ca=files.CA_KUBERNETES, role="r", common_name=common_name, exclude_cn_from_sans=exclude
    )
    issued = ca.issue(request)
    assert dns_sans(load_cert(issued.certificate)) == expected_dns


@pytest.mark.parametrize(
    ("server", "client", "expected"),
    [
        (True, True, {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}),
        (True, False, {ExtendedKeyUsageOID.SERVER_AUTH}),
        (False, True, {ExtendedKeyUsageOID.CLIENT_AUTH}),
        (False, False, set()),
    ],
)
def test_usage_flags(
    ca: LocalCA, server: bool, client: bool, expected: set[x509.ObjectIdentifier]
) -> None:
    request = CertificateRequest(
        ca=files.CA_ETCD_CLIENT, role="r", common_name="u", server=server, client=client
    )
    cert = load_cert(ca.issue(request).certificate)
    assert usages(cert) == expected


def test_issue_organization_ttl_and_fresh_keys(ca: LocalCA) -> None:
    request = CertificateRequest(
        ca=files.CA_KUBERNETES,
        role="admin",
        common_name="admin",
        organization="system:masters",
        ttl="1h30m",
        alt_names=("a.example", "a.example"),
        ip_sans=("192.0.2.1", "2001:db8::1"),
    )
    first, second = ca.issue(request), ca.issue(request)
    cert = check_issued(first.certificate, first.private_key, request, ca)
    assert name_value(cert.subject, NameOID.ORGANIZATION_NAME) == ["system:masters"]
    assert dns_sans(cert) == ["a.example"]  # duplicates collapse
    assert ip_sans(cert) == ["192.0.2.1", "2001:db8::1"]
    assert first.private_key != second.private_key
    assert load_cert(first.certificate).serial_number != load_cert(second.certificate).serial_number
    assert "PRIVATE" not in repr(first)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ip_sans": ("10.0.0.300",)}, "10.0.0.300"),
        ({"ttl": "forever"}, "invalid TTL 'forever'"),
        ({"common_name": ""}, "empty common name"),
        ({"common_name": "x" * 65}, "length must be"),
        ({"alt_names": ("ü.example",)}, "A-label"),
    ],
)
def test_issue_rejects_bad_requests(ca: LocalCA, changes: dict[str, Any], message: str) -> None:
    request = attrs.evolve(
        CertificateRequest(ca=files.CA_SERVER, role="r", common_name="x"), **changes
    )
    with pytest.raises(PKIError, match=message) as info:
        ca.issue(request)
    assert "\n" not in str(info.value)


def test_service_account_pair(ca: LocalCA) -> None:
    cert_pem, key_pem = ca.service_account()
    assert ca.service_account() == (cert_pem, key_pem)
    cert = load_cert(cert_pem)
    cert.verify_directly_issued_by(load_cert(ca.ca_certificate(files.CA_KUBERNETES)))
    assert key_matches(cert, key_pem)
    key = serialization.load_pem_private_key(key_pem.encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    assert name_value(cert.subject, NameOID.COMMON_NAME) == ["service-account"]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.key_cert_sign
    assert stat.S_IMODE((ca.directory / "service-account.key").stat().st_mode) == 0o600


def test_encryption_keys(ca: LocalCA) -> None:
    keys = ca.encryption_keys()
    assert len(keys) == 1
    name, secret = keys[0]
    assert name == "key-1"
    assert len(base64.b64decode(secret, validate=True)) == 32
    assert ca.encryption_keys() == keys
    assert stat.S_IMODE((ca.directory / "encryption-keys.json").stat().st_mode) == 0o600
    assert LocalCA(ca.directory).encryption_keys() == keys


def test_etcd_client_credentials(ca: LocalCA) -> None:
    creds = etcd_client_credentials(ca)
    assert creds.ca_certificate == ca.ca_certificate(files.CA_SERVER)
    cert = load_cert(creds.certificate)
    cert.verify_directly_issued_by(load_cert(ca.ca_certificate(files.CA_ETCD_CLIENT)))
    assert name_value(cert.subject, NameOID.COMMON_NAME) == ["root"]
    assert usages(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert key_matches(cert, creds.private_key)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(
        hours=1, seconds=30
    )
    other = load_cert(etcd_client_credentials(ca, "someone", ttl="2h").certificate)
    assert name_value(other.subject, NameOID.COMMON_NAME) == ["someone"]
    assert "PRIVATE" not in repr(creds)


# ---------------------------------------------------------------------------
# Damaged directories: one line, and nothing replaced
# ---------------------------------------------------------------------------


def corrupt_cert(directory: Path) -> str:
    (directory / "ca-server.crt").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
    return "ca-server.crt is not a PEM certificate"


def truncated_key(directory: Path) -> str:
    key = directory / "ca-server.key"
    key.write_bytes(key.read_bytes()[:60])
    return "ca-server.key is not a PEM private key"


def missing_key(directory: Path) -> str:
    (directory / "ca-server.key").unlink()
    return "ca-server.key is missing"


def missing_cert(directory: Path) -> str:
    (directory / "ca-server.crt").unlink()
    return "ca-server.crt is missing"


def swapped_key(directory: Path) -> str:
    (directory / "ca-server.key").write_bytes((directory / "ca-etcd-peer.key").read_bytes())
    return "ca-server.key does not match ca-server.crt"


def unreadable_cert(directory: Path) -> str:
    (directory / "ca-server.crt").unlink()
    (directory / "ca-server.crt").mkdir()
    return "cannot read ca-server.crt: is a directory"


def leaf_as_ca(directory: Path) -> str:
    issued = LocalCA(directory).issue(
        CertificateRequest(ca=files.CA_ETCD_PEER, role="r", common_name="leaf")
    )
    (directory / "ca-server.crt").write_text(issued.certificate)
    (directory / "ca-server.key").write_text(issued.private_key)
    return "ca-server.crt is not a CA certificate"


@pytest.mark.parametrize(
    "damage",
    [
        corrupt_cert,
        truncated_key,
        missing_key,
        missing_cert,
        swapped_key,
        unreadable_cert,
        leaf_as_ca,
    ],
)
def test_damaged_ca_is_reported_not_replaced(tmp_path: Path, damage: Any) -> None:
    directory = tmp_path / "pki"
    first = LocalCA(directory)
    first.ca_certificate(files.CA_SERVER)
    first.ca_certificate(files.CA_ETCD_PEER)
    message = damage(directory)
    before = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    with pytest.raises(PKIError) as info:
        LocalCA(directory).issue(CertificateRequest(ca=files.CA_SERVER, role="r", common_name="x"))
    text = str(info.value)
    assert message in text
    assert str(directory) in text
    assert "\n" not in text
    assert {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()} == before


def test_directory_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "pki"
    path.write_text("not a directory")
    with pytest.raises(PKIError, match=r"pki: exists and is not a directory$"):
        LocalCA(path).ca_certificate(files.CA_SERVER)


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"keys": []}',
        b'{"keys": [{"name": "k", "secret": "c2hvcnQ="}]}',
        b'{"keys": [{"name": "k"}]}',
        b"[]",
    ],
)
def test_corrupt_encryption_keys(tmp_path: Path, content: bytes) -> None:
    directory = tmp_path / "pki"
    directory.mkdir(mode=0o700)
    (directory / "encryption-keys.json").write_bytes(content)
    with pytest.raises(PKIError, match=r"encryption-keys\.json is not") as info:
        LocalCA(directory).encryption_keys()
    assert "\n" not in str(info.value)
    assert (directory / "encryption-keys.json").read_bytes() == content


def test_corrupt_service_account(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "pki")
    ca.service_account()
    (ca.directory / "service-account.key").write_text("junk")
    with pytest.raises(PKIError, match=r"service-account\.key is not a PEM private key"):
        LocalCA(ca.directory).service_account()


# ---------------------------------------------------------------------------
# stage_files: every prepare-* command the core produces
# ---------------------------------------------------------------------------

IMAGES = Images(etcd="etcd:t", kubernetes="k8s:t", tools="tools:t")


def staging_cluster() -> Cluster:
    """The fixture cluster with one worker that has a host name (its node name)."""
    cluster = fixture_cluster()
    nodes = list(cluster.nodes)
    nodes[4] = attrs.evolve(nodes[4], hostname="worker-2")
    return attrs.evolve(cluster, nodes=tuple(nodes))


def operations(cluster: Cluster) -> list[Operation]:
    cps, everyone = cluster.control_planes, cluster.nodes
    return [
        EtcdBootstrapOp(cluster, IMAGES, cps),
        EtcdStartOp(cluster, IMAGES, cps[:1]),
        EtcdAddMemberOp(cluster, IMAGES, cps, cps[2]),
        KubeAPIServerRestartOp(cluster, IMAGES, cps),
        KubeControllerManagerBootstrapOp(cluster, IMAGES, cps),
        KubeSchedulerBootstrapOp(cluster, IMAGES, cps),
        KubeSchedulerRestartOp(cluster, IMAGES, cps),
        KubeletBootstrapOp(cluster, IMAGES, everyone),
        KubeletRestartOp(cluster, IMAGES, everyone),
        KubeProxyBootstrapOp(cluster, IMAGES, everyone),
        KubeProxyRestartOp(cluster, IMAGES, everyone),
    ]


def prepare_commands(cluster: Cluster) -> list[PrepareFiles]:
    return [c for op in operations(cluster) for c in step_ops(op) if isinstance(c, PrepareFiles)]


def all_subclasses(cls: type[PrepareFiles]) -> Iterator[type[PrepareFiles]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from all_subclasses(sub)


def test_the_operations_cover_every_prepare_command() -> None:
    produced = {c.name for c in prepare_commands(staging_cluster())}
    # By name: attrs replaces each slotted class, and the replaced class may
    # linger among __subclasses__() until it is garbage collected.
    defined = {
        c.NAME for c in all_subclasses(PrepareFiles) if c.__module__ == node_commands.__name__
    }
    assert produced == defined
    assert len(defined) == 7


def check_kubeconfig(content: str, request: files.KubeconfigRequest, ca: LocalCA) -> None:
    doc = yaml.safe_load(content)
    assert doc["current-context"] == "default"
    (cluster_entry,) = doc["clusters"]
    (user_entry,) = doc["users"]
    assert cluster_entry["name"] == request.cluster_name
    assert cluster_entry["cluster"]["server"] == request.server
    assert user_entry["name"] == request.user
    auth = user_entry["user"]
    if request.embed:
        ca_pem = base64.b64decode(cluster_entry["cluster"]["certificate-authority-data"]).decode()
        assert ca_pem == ca.ca_certificate(files.CA_KUBERNETES)
        cert_pem = base64.b64decode(auth["client-certificate-data"]).decode()
        key_pem = base64.b64decode(auth["client-key-data"]).decode()
        check_issued(cert_pem, key_pem, request.certificate, ca)
    else:
        assert cluster_entry["cluster"]["certificate-authority"] == request.ca_path
        assert auth == {
            "client-certificate": request.certificate.cert_path,
            "client-key": request.certificate.key_path,
        }


def test_stage_files_for_every_prepare_command(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "pki")
    cluster = staging_cluster()
    checked_nodes = 0
    for command in prepare_commands(cluster):
        for address in command.nodes:
            staged = stage_files(ca, command, address, cluster)
            by_path = {f.path: f for f in staged}
            assert len(by_path) == len(staged), f"{command.name}: a path staged twice"
            pki = command.pki_of(address)
            kubeconfigs = command.kubeconfigs_of(address)
            expected = list(pki.paths()) + [k.path for k in kubeconfigs]
            if command.encryption_config:
                expected.append(command.encryption_config)
            assert [f.path for f in staged] == expected
            assert expected, f"{command.name} stages nothing on {address}"
            for request in pki.certificates:
                cert_file, key_file = by_path[request.cert_path], by_path[request.key_path]
                assert (cert_file.mode, key_file.mode) == (0o644, 0o600)
                assert isinstance(cert_file.content, str)
                assert isinstance(key_file.content, str)
                check_issued(cert_file.content, key_file.content, request, ca)
            for copy in pki.ca_copies:
                assert by_path[copy.path].content == ca.ca_certificate(copy.ca)
                assert by_path[copy.path].mode == 0o644
            sa_cert, sa_key = ca.service_account()
            for part in pki.service_account:
                want = (sa_cert, 0o644) if part.part == "certificate" else (sa_key, 0o600)
                assert (by_path[part.path].content, by_path[part.path].mode) == want
            for kubeconfig in kubeconfigs:
                staged_file = by_path[kubeconfig.path]
                assert staged_file.mode == 0o600
                assert isinstance(staged_file.content, str)
                check_kubeconfig(staged_file.content, kubeconfig, ca)
            if command.encryption_config:
                enc = by_path[command.encryption_config]
                assert enc.mode == 0o600
                assert isinstance(enc.content, str)
                doc = yaml.safe_load(enc.content)
                provider = doc["resources"][0]["providers"][0]["aescbc"]
                assert [(k["name"], k["secret"]) for k in provider["keys"]] == list(
                    ca.encryption_keys()
                )
            checked_nodes += 1
    assert checked_nodes > 30


def test_stage_files_etcd_on_a_control_plane(tmp_path: Path) -> None:
    """What etcd reads on 10.0.0.11: server and peer pairs, the peer and client CAs."""
    ca = LocalCA(tmp_path / "pki")
    cluster = staging_cluster()
    command = next(c for c in prepare_commands(cluster) if c.name == "prepare-etcd-certificates")
    staged = {f.path: f for f in stage_files(ca, command, "10.0.0.11", cluster)}
    assert sorted(staged) == [
        "/etc/etcd/pki/ca-client.crt",
        "/etc/etcd/pki/ca-peer.crt",
        "/etc/etcd/pki/peer.crt",
        "/etc/etcd/pki/peer.key",
        "/etc/etcd/pki/server.crt",
        "/etc/etcd/pki/server.key",
    ]
    server = load_cert(str(staged["/etc/etcd/pki/server.crt"].content))
    server.verify_directly_issued_by(load_cert(ca.ca_certificate(files.CA_SERVER)))
    assert sorted(ip_sans(server)) == ["10.0.0.11", "127.0.0.1"]
    peer = load_cert(str(staged["/etc/etcd/pki/peer.crt"].content))
    peer.verify_directly_issued_by(load_cert(ca.ca_certificate(files.CA_ETCD_PEER)))
    assert staged["/etc/etcd/pki/ca-client.crt"].content == ca.ca_certificate(files.CA_ETCD_CLIENT)


def test_stage_files_kubelet_kubeconfig_references_files(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "pki")
    cluster = staging_cluster()
    command = next(c for c in prepare_commands(cluster) if c.name == "prepare-kubelet-files")
    staged = {f.path: f for f in stage_files(ca, command, "10.0.0.15", cluster)}
    kubelet = load_cert(str(staged[files.k8s_pki_path("kubelet.crt")].content))
    assert name_value(kubelet.subject, NameOID.COMMON_NAME) == ["system:node:worker-2"]
    assert name_value(kubelet.subject, NameOID.ORGANIZATION_NAME) == ["system:nodes"]
    assert dns_sans(kubelet) == ["localhost", "worker-2"]
    doc = yaml.safe_load(str(staged[files.KUBELET_KUBECONFIG_PATH].content))
    assert doc["users"][0]["user"] == {
        "client-certificate": files.k8s_pki_path("kubelet.crt"),
        "client-key": files.k8s_pki_path("kubelet.key"),
    }
    assert doc["clusters"][0]["cluster"]["certificate-authority"] == files.k8s_pki_path("ca.crt")


def test_stage_files_node_without_requests(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "pki")
    command = node_commands.PrepareSchedulerFiles(nodes=("10.0.0.11", "10.0.0.12"))
    assert stage_files(ca, command, "10.0.0.12", staging_cluster()) == []
    assert not (tmp_path / "pki").exists()  # nothing issued, nothing created


def test_stage_files_rejects_half_a_pair(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "pki")
    request = CertificateRequest(
        ca=files.CA_KUBERNETES, role="r", common_name="c", cert_path="/x.crt"
    )
    command = node_commands.PrepareKubeletFiles(
        nodes=("10.0.0.11",), pki={"10.0.0.11": files.PKIRequests(certificates=(request,))}
    )
    with pytest.raises(PKIError, match="only one of its certificate and key paths"):
        stage_files(ca, command, "10.0.0.11", staging_cluster())
