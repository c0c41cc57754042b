"""A local certificate authority (the :class:`~cke_adapters.ports.Issuer` of labs and tests).

CKE keeps its PKI in Vault (§H): six root CAs, a service-account pair and the
Secret encryption keys. :class:`LocalCA` keeps the same things in one local
directory, so a lab or a test can run the real engine without a Vault
server, and a second ``LocalCA`` on the same directory issues from the same
CAs (what a restarted engine needs: the nodes keep trusting it)::

    <directory>/                     0700
        ca-<name>.crt  ca-<name>.key  one pair per CA of render.files.CA_*
        service-account.crt / .key   the service-account signing pair
        encryption-keys.json         [{"name", "secret"}], the current key first
        .lock                        serialises creation between processes

Everything is created on first use; keys are 0600; every file is written
atomically (temporary file, fsync, rename). A directory that cannot be read,
or holds a half-written or corrupt CA, is a :class:`PKIError` (one line): a
CA is never silently replaced, since every node trusts the old one.

Certificates follow Vault's PKI ``issue`` as CKE calls it (§H.2): CN,
organization, DNS and IP SANs, the CN also a DNS SAN unless
``exclude_cn_from_sans`` (and only when it is a host name, as in Vault), a
Vault TTL string ("87600h", "1h30m", "3600"), ``serverAuth`` / ``clientAuth``
extended key usages from the request's flags, backdated 30 s as Vault does.
Keys are ECDSA P-256 (etcd, Kubernetes and gRPC accept them); the
service-account key is RSA 2048, as Kubernetes expects by default.

Also here: :func:`etcd_client_credentials` (the engine's client certificate
for the managed etcd) and :func:`stage_files` (what one ``prepare-*`` command
asks for on one node, as files).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import errno
import fcntl
import ipaddress
import json
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cke_adapters.ports import IssuedCertificate, Issuer, TLSCredentials
from cke_adapters.runtime import NodeFile
from cke_core.cluster import Cluster
from cke_core.commands.node import PrepareFiles
from cke_core.render import files
from cke_core.render.files import CertificateRequest

__all__ = [
    "CA_COMMON_NAMES",
    "LocalCA",
    "PKIError",
    "etcd_client_credentials",
    "parse_ttl",
    "stage_files",
]

#: The six CAs of §H.1 and the common names ``ckecli vault init`` gives their roots.
CA_COMMON_NAMES: Final[Mapping[str, str]] = {
    files.CA_SERVER: "server CA",
    files.CA_ETCD_PEER: "etcd peer CA",
    files.CA_ETCD_CLIENT: "etcd client CA",
    files.CA_KUBERNETES: "kubernetes CA",
    files.CA_KUBERNETES_AGGREGATION: "kubernetes aggregation CA",
    files.CA_KUBERNETES_WEBHOOK: "kubernetes webhook CA",
}

#: Root certificates live as long as Vault's (876000h, §H.3).
CA_TTL: Final = datetime.timedelta(hours=876000)
#: Vault backdates ``notBefore`` by 30 s against clock skew between hosts.
BACKDATE: Final = datetime.timedelta(seconds=30)
SERVICE_ACCOUNT_TTL: Final = files.DEFAULT_CERT_TTL

_SA_CERT = "service-account.crt"
_SA_KEY = "service-account.key"
_ENC_KEYS = "encryption-keys.json"
_LOCK = ".lock"


class PKIError(RuntimeError):
    """The local PKI cannot do what was asked; the message is one line."""


# ---------------------------------------------------------------------------
# TTLs
# ---------------------------------------------------------------------------

_UNITS: Final[dict[str, float]] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts both micro signs
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_TTL_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h|d)")


def parse_ttl(text: str) -> datetime.timedelta:
    """A TTL as Vault reads it: a Go duration ("87600h", "1h30m", "90s", "1.5h"),
    with Vault's "d" for days, or a plain number of seconds ("3600")."""
    value = text.strip()
    if re.fullmatch(r"[0-9]+", value):
        seconds = float(value)
    else:
        seconds, pos = 0.0, 0
        for match in _TTL_PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if not value or pos != len(value):
            raise PKIError(f"invalid TTL {text!r}: expected e.g. '8760h', '1h30m' or seconds")
    if seconds < 1:
        raise PKIError(f"invalid TTL {text!r}: must be at least one second")
    return datetime.timedelta(seconds=seconds)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` so a reader sees the old content or the new, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if isinstance(key, rsa.RSAPrivateKey)
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _public_bytes(key: object) -> bytes:
    public_bytes = getattr(key, "public_bytes", None)
    assert public_bytes is not None
    data: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _is_hostname(name: str) -> bool:
    """Vault's rule for adding the CN to the DNS SANs: a host name, not an IP address."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return False
    return bool(
        re.fullmatch(
            r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)*"
            r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.?",
            name,
        )
    )


@attrs.frozen(repr=False)
class _CA:
    """A loaded CA: its certificate (object and PEM) and its key."""

    certificate: x509.Certificate
    pem: str
    key: CertificateIssuerPrivateKeyTypes


# ---------------------------------------------------------------------------
# LocalCA
# ---------------------------------------------------------------------------


class LocalCA:
    """The six CAs of §H, the service-account pair and the encryption keys in ``directory``.

    Thread-safe, and safe with other ``LocalCA`` instances (in this or other
    processes) on the same directory: creation happens under a file lock and
    what one instance created, the others load.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._lock = threading.RLock()
        self._cas: dict[str, _CA] = {}
        self._service_account: tuple[str, str] | None = None
        self._encryption_keys: tuple[tuple[str, str], ...] | None = None

    def __repr__(self) -> str:
        return f"LocalCA({str(self.directory)!r})"

    # -- the Issuer protocol

    def ca_certificate(self, ca: str) -> str:
        """The PEM certificate of CA ``ca`` (created on first use)."""
        return self._ca(ca).pem

    def issue(self, request: CertificateRequest) -> IssuedCertificate:
        """Issue a certificate and a new ECDSA P-256 key as ``request`` describes."""
        ca = self._ca(request.ca)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign(ca, request, key)
        return IssuedCertificate(
            certificate=_pem_cert(cert), private_key=_pem_key(key), ca_certificate=ca.pem
        )

    def service_account(self) -> tuple[str, str]:
        """The service-account signing pair ``(certificate, key)``: RSA 2048, from the
        Kubernetes CA, created once and the same ever after."""
        with self._lock:
            if self._service_account is None:
                self._service_account = self._load_or_create_service_account()
            return self._service_account

    def encryption_keys(self) -> Sequence[tuple[str, str]]:
        """The Secret encryption keys ``(name, base64 of 32 random bytes)``: one key
        (``key-1``) generated on first use, the current key first."""
        with self._lock:
            if self._encryption_keys is None:
                self._encryption_keys = self._load_or_create_encryption_keys()
            return self._encryption_keys

    # -- directory and locking

    def _error(self, message: str) -> PKIError:
        return PKIError(f"PKI directory {self.directory}: {message}")

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            if not self.directory.is_dir():
                raise self._error("exists and is not a directory") from None
        except OSError as e:
            raise self._error(f"cannot create it: {e.strerror}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise creation with other threads and other processes."""
        with self._lock:
            self._ensure_directory()
            try:
                fd = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as e:
                raise self._error(f"cannot open {_LOCK}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the lock

    def _read(self, name: str) -> bytes | None:
        """The bytes of ``name``, or None when it does not exist."""
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            reason = e.strerror or str(e)
            if e.errno == errno.EISDIR:
                reason = "is a directory"
            raise self._error(f"cannot read {name}: {reason}") from None

    def _write(self, name: str, data: str | bytes, mode: int) -> None:
        raw = data.encode() if isinstance(data, str) else data
        try:
            _write_atomic(self.directory / name, raw, mode)
        except OSError as e:
            raise self._error(f"cannot write {name}: {e.strerror or e}") from None

    def _load_pair(
        self, cert_name: str, key_name: str
    ) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes, str, str] | None:
        """A certificate and its key; None when neither exists; PKIError when one is
        missing, either is not valid PEM, or they do not belong together."""
        cert_data, key_data = self._read(cert_name), self._read(key_name)
        if cert_data is None and key_data is None:
            return None
        if cert_data is None or key_data is None:
            missing = cert_name if cert_data is None else key_name
            raise self._error(f"{missing} is missing (incomplete or damaged; not replacing it)")
        try:
            cert = x509.load_pem_x509_certificate(cert_data)
        except ValueError:
            raise self._error(f"{cert_name} is not a PEM certificate (corrupt?)") from None
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise self._error(f"{key_name} is not a PEM private key (corrupt?)") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise self._error(f"{key_name}: unsupported key type {type(key).__name__}")
        if _public_bytes(key.public_key()) != _public_bytes(cert.public_key()):
            raise self._error(f"{key_name} does not match {cert_name}")
        return cert, key, cert_data.decode(), key_data.decode()

    # -- CAs

    def _ca(self, name: str) -> _CA:
        if name not in CA_COMMON_NAMES:
            raise PKIError(f"unknown CA {name!r}; known: {', '.join(CA_COMMON_NAMES)}")
        with self._lock:
            ca = self._cas.get(name)
            if ca is None:
                ca = self._cas[name] = self._load_or_create_ca(name)
            return ca

    def _load_or_create_ca(self, name: str) -> _CA:
        cert_name, key_name = f"ca-{name}.crt", f"ca-{name}.key"
        with self._locked():
            pair = self._load_pair(cert_name, key_name)
            if pair is not None:
                cert, key, pem, _ = pair
                try:
                    is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
                except (x509.ExtensionNotFound, ValueError):
                    is_ca = False
                if not is_ca:
                    raise self._error(f"{cert_name} is not a CA certificate")
                return _CA(cert, pem, key)
            key = ec.generate_private_key(ec.SECP256R1())
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAMES[name])])
            now = datetime.datetime.now(datetime.UTC)
            public = key.public_key()
            cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE)
                .not_valid_after(now + CA_TTL)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
                .sign(key, hashes.SHA256())
            )
            pem = _pem_cert(cert)
            # The key first: a crash in between leaves a key without a certificate,
            # which the next load reports instead of creating a second CA.
            self._write(key_name, _pem_key(key), 0o600)
            self._write(cert_name, pem, 0o644)
            return _CA(cert, pem, key)

    # -- issuing

    def _sign(
        self,
        ca: _CA,
        request: CertificateRequest,
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
        *,
        key_usage: x509.KeyUsage | None = None,
    ) -> x509.Certificate:
        if not request.common_name:
            raise PKIError(f"certificate request to CA {request.ca!r}: empty common name")
        ttl = parse_ttl(request.ttl)
        dns = list(request.alt_names)
        if not request.exclude_cn_from_sans and _is_hostname(request.common_name):
            dns.insert(0, request.common_name)
        try:
            attributes = [x509.NameAttribute(NameOID.COMMON_NAME, request.common_name)]
            if request.organization:
                attributes.append(
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, request.organization)
                )
            subject = x509.Name(attributes)
            ips = [ipaddress.ip_address(ip) for ip in request.ip_sans]
            sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns)]
        except ValueError as e:
            raise PKIError(f"certificate for {request.common_name!r}: {e}") from None
        sans += [x509.IPAddress(ip) for ip in dict.fromkeys(ips)]
        now = datetime.datetime.now(datetime.UTC)
        # Vault would refuse a TTL beyond the CA's expiry; the local CA truncates.
        not_after = min(now + ttl, ca.certificate.not_valid_after_utc)
        public = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                key_usage
                or x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                    data_encipherment=False,
                    key_agreement=isinstance(key, ec.EllipticCurvePrivateKey),
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.certificate.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        usages = [
            oid
            for oid, wanted in (
                (ExtendedKeyUsageOID.SERVER_AUTH, request.server),
                (ExtendedKeyUsageOID.CLIENT_AUTH, request.client),
            )
            if wanted
        ]
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca.key, hashes.SHA256())

    # -- service account and encryption keys

    def _load_or_create_service_account(self) -> tuple[str, str]:
        ca = self._ca(files.CA_KUBERNETES)
        with self._locked():
            pair = self._load_pair(_SA_CERT, _SA_KEY)
            if pair is not None:
                return pair[2], pair[3]
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            request = CertificateRequest(
                ca=files.CA_KUBERNETES,
                role="service-account",
                common_name="service-account",
                ttl=SERVICE_ACCOUNT_TTL,
                server=False,
                client=False,
            )
            usage = x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            )
            cert = self._sign(ca, request, key, key_usage=usage)
            cert_pem, key_pem = _pem_cert(cert), _pem_key(key)
            self._write(_SA_KEY, key_pem, 0o600)
            self._write(_SA_CERT, cert_pem, 0o644)
            return cert_pem, key_pem

    def _load_or_create_encryption_keys(self) -> tuple[tuple[str, str], ...]:
        with self._locked():
            data = self._read(_ENC_KEYS)
            if data is not None:
                return self._parse_encryption_keys(data)
            keys = (("key-1", base64.b64encode(secrets.token_bytes(32)).decode("ascii")),)
            doc = {"keys": [{"name": n, "secret": s} for n, s in keys]}
            self._write(_ENC_KEYS, json.dumps(doc, indent=2) + "\n", 0o600)
            return keys

    def _parse_encryption_keys(self, data: bytes) -> tuple[tuple[str, str], ...]:
        bad = self._error(
            f'{_ENC_KEYS} is not {{"keys": [{{"name", "secret"}}, ...]}} with base64 '
            "32-byte secrets (corrupt?)"
        )
        try:
            doc = json.loads(data)
            keys = tuple((str(k["name"]), str(k["secret"])) for k in doc["keys"])
            if not keys or any(
                not n or len(base64.b64decode(s, validate=True)) != 32 for n, s in keys
            ):
                raise bad
        except (ValueError, KeyError, TypeError):
            raise bad from None
        return keys


# ---------------------------------------------------------------------------
# What the engine and the executor ask of an issuer
# ---------------------------------------------------------------------------


def etcd_client_credentials(
    issuer: Issuer, common_name: str = "root", *, ttl: str = "1h"
) -> TLSCredentials:
    """The engine's client certificate for the managed etcd (§D.2 step 3, §H.2).

    A client certificate from the etcd-client CA (the CA etcd's
    ``--trusted-ca-file`` names; with authentication enabled the CN is the
    user), trusting the *server* CA, which issues etcd's serving
    certificates. CKE issues ``root`` with a 1 h TTL for each round; issue a
    new one at least as often.
    """
    issued = issuer.issue(
        CertificateRequest(
            ca=files.CA_ETCD_CLIENT,
            role="admin",
            common_name=common_name,
            ttl=ttl,
            server=False,
            client=True,
        )
    )
    return TLSCredentials(
        ca_certificate=issuer.ca_certificate(files.CA_SERVER),
        certificate=issued.certificate,
        private_key=issued.private_key,
    )


def stage_files(
    issuer: Issuer, command: PrepareFiles, address: str, cluster: Cluster
) -> list[NodeFile]:
    """The files a ``prepare-*`` command asks for on the node ``address``.

    Certificates with both paths (certificate 0644, key 0600), CA copies
    (0644), the service-account parts (certificate 0644, key 0600),
    kubeconfigs (0600; credentials embedded, or the certificate files and CA
    referenced by path) and the encryption configuration (0600). ``make-files``
    writes them with the command's non-secret files. ``cluster`` is part of the
    executor's signature; the requests already carry everything a certificate
    needs.
    """
    del cluster
    pki = command.pki_of(address)
    out: list[NodeFile] = []
    for request in pki.certificates:
        if not request.cert_path and not request.key_path:
            continue
        if not (request.cert_path and request.key_path):
            raise PKIError(
                f"{command.name} on {address}: certificate {request.common_name!r} has "
                "only one of its certificate and key paths"
            )
        issued = issuer.issue(request)
        out.append(NodeFile(request.cert_path, issued.certificate, 0o644))
        out.append(NodeFile(request.key_path, issued.private_key, 0o600))
    for copy in pki.ca_copies:
        out.append(NodeFile(copy.path, issuer.ca_certificate(copy.ca), 0o644))
    if pki.service_account:
        sa_cert, sa_key = issuer.service_account()
        for part in pki.service_account:
            if part.part == "certificate":
                out.append(NodeFile(part.path, sa_cert, 0o644))
            else:
                out.append(NodeFile(part.path, sa_key, 0o600))
    for kubeconfig in command.kubeconfigs_of(address):
        out.append(
            NodeFile(kubeconfig.path, _kubeconfig(issuer, kubeconfig, command, address), 0o600)
        )
    if command.encryption_config:
        content = files.render_encryption_config(issuer.encryption_keys())
        out.append(NodeFile(command.encryption_config, content, 0o600))
    return out


def _kubeconfig(
    issuer: Issuer, request: files.KubeconfigRequest, command: PrepareFiles, address: str
) -> str:
    if request.embed:
        issued = issuer.issue(request.certificate)
        return files.render_kubeconfig(
            request.cluster_name,
            request.server,
            request.user,
            issued.ca_certificate,
            issued.certificate,
            issued.private_key,
            ca_path=request.ca_path or None,
        )
    cert = request.certificate
    if not (cert.cert_path and cert.key_path):
        raise PKIError(
            f"{command.name} on {address}: kubeconfig {request.path} references a "
            "certificate without paths"
        )
    ca_pem = None if request.ca_path else issuer.ca_certificate(cert.ca)
    return files.render_kubeconfig(
        request.cluster_name,
        request.server,
        request.user,
        ca_pem,
        cert_path=cert.cert_path,
        key_path=cert.key_path,
        ca_path=request.ca_path or None,
    )
