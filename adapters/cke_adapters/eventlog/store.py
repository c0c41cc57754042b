"""Where the event log lives: a store URL, parsed into eventsourcing settings.

Two stores, chosen by the URL:

``sqlite:///ABSOLUTE/PATH.db``, ``sqlite:RELATIVE/PATH.db`` or a plain path
    eventsourcing's SQLite module (``PERSISTENCE_MODULE=eventsourcing.sqlite``):
    one file, no set-up; the embedded default. ``sqlite:////abs`` (SQLAlchemy's
    spelling) is accepted too. Missing parent directories are created when the
    log may be created.

``etcd://HOST:PORT[,HOST:PORT...][/PREFIX][?OPTIONS]`` (``etcds://`` for TLS)
    this project's etcd module (``cke_adapters.eventstore.etcd``, ADR 0006):
    the log survives the loss of a CKE host. ``PREFIX`` is the key prefix
    (default ``/cke/events/``; a trailing ``/`` is added). Options:
    ``leader-key=KEY`` (fence every write on that key, as CKE's leader does),
    ``timeout=SECONDS``, ``max-txn-ops=N`` (the servers' ``--max-txn-ops``),
    ``archive=PATH`` (the SQLite archive of old events), ``cacert=``,
    ``cert=``, ``key=`` (TLS files). Credentials are never taken from the URL:
    ``CKE_EVENTS_ETCD_USER`` / ``CKE_EVENTS_ETCD_PASSWORD`` and the other
    ``CKE_EVENTS_*`` variables of the etcd module apply when the URL does not
    set the same thing.

Without a URL the log is ``$CKE_EVENT_LOG``, else ``./var/cke-events.db``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal
from urllib.parse import parse_qsl, unquote

import attrs

__all__ = [
    "DEFAULT_ETCD_PREFIX",
    "DEFAULT_SQLITE_PATH",
    "EVENT_LOG_ENV",
    "StoreURL",
    "default_store_url",
    "parse_store_url",
]

#: The environment variable naming the store when no URL is given.
EVENT_LOG_ENV: Final = "CKE_EVENT_LOG"
#: The store when neither a URL nor ``$CKE_EVENT_LOG`` is given.
DEFAULT_SQLITE_PATH: Final = "./var/cke-events.db"
DEFAULT_ETCD_PREFIX: Final = "/cke/events/"

SQLITE_MODULE: Final = "eventsourcing.sqlite"
ETCD_MODULE: Final = "cke_adapters.eventstore.etcd"

#: URL options of an etcd store -> the etcd module's settings.
_ETCD_OPTIONS: Final = {
    "leader-key": "CKE_EVENTS_LEADER_KEY",
    "timeout": "CKE_EVENTS_ETCD_TIMEOUT",
    "max-txn-ops": "CKE_EVENTS_MAX_TXN_OPS",
    "archive": "CKE_EVENTS_ARCHIVE_SQLITE",
    "cacert": "CKE_EVENTS_ETCD_CACERT",
    "cert": "CKE_EVENTS_ETCD_CERT",
    "key": "CKE_EVENTS_ETCD_KEY",
}

#: Settings of the etcd module taken from the environment when the URL is silent.
_ETCD_INHERITED: Final = (
    "CKE_EVENTS_LEADER_KEY",
    "CKE_EVENTS_ETCD_CACERT",
    "CKE_EVENTS_ETCD_CERT",
    "CKE_EVENTS_ETCD_KEY",
    "CKE_EVENTS_ETCD_USER",
    "CKE_EVENTS_ETCD_PASSWORD",
    "CKE_EVENTS_ETCD_TIMEOUT",
    "CKE_EVENTS_MAX_TXN_OPS",
    "CKE_EVENTS_ARCHIVE_SQLITE",
)


class StoreURLError(ValueError):
    """A store URL that cannot be understood (one line)."""


@attrs.frozen
class StoreURL:
    """A parsed store URL. ``text`` is the URL as given (for messages)."""

    kind: Literal["sqlite", "etcd"]
    text: str
    path: str = ""
    endpoints: tuple[str, ...] = ()
    prefix: str = DEFAULT_ETCD_PREFIX
    options: Mapping[str, str] = attrs.field(factory=dict)
    tls: bool = False

    def environment(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The eventsourcing settings of this store (``PERSISTENCE_MODULE`` ...)."""
        if self.kind == "sqlite":
            return {"PERSISTENCE_MODULE": SQLITE_MODULE, "SQLITE_DBNAME": self.path}
        environ = os.environ if environ is None else environ
        env = {key: environ[key] for key in _ETCD_INHERITED if environ.get(key)}
        scheme = "https://" if self.tls else "http://"
        env["PERSISTENCE_MODULE"] = ETCD_MODULE
        env["CKE_EVENTS_ETCD_ENDPOINTS"] = ",".join(scheme + e for e in self.endpoints)
        env["CKE_EVENTS_KEY_PREFIX"] = self.prefix
        for option, value in self.options.items():
            env[_ETCD_OPTIONS[option]] = value
        return env

    def check_sqlite(self, *, create: bool) -> None:
        """Raise OSError with a readable reason when the SQLite file cannot be
        used: missing (and ``create`` is false), not a database, not an event
        log, or its directory cannot be created."""
        path = Path(self.path)
        if not path.exists():
            if not create:
                raise OSError(f"no event log at {self.path} (nothing has been recorded there)")
            path.parent.mkdir(parents=True, exist_ok=True)
            return
        if path.is_dir():
            raise OSError(f"{self.path} is a directory")
        if path.stat().st_size == 0:
            return
        try:
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                query = "SELECT name FROM sqlite_master WHERE type='table'"
                tables = {row[0] for row in connection.execute(query)}
            finally:
                connection.close()
        except sqlite3.Error as exc:
            raise OSError(f"{self.path}: {exc}") from None
        if tables and "stored_events" not in tables:
            raise OSError(f"{self.path} is an SQLite database but not an event log")


def default_store_url(environ: Mapping[str, str] | None = None) -> str:
    """``$CKE_EVENT_LOG``, else ``./var/cke-events.db``."""
    environ = os.environ if environ is None else environ
    return environ.get(EVENT_LOG_ENV) or DEFAULT_SQLITE_PATH


def parse_store_url(text: str) -> StoreURL:
    """Parse a store URL (see the module docstring); ``StoreURLError`` if invalid."""
    if not text or not text.strip():
        raise StoreURLError("empty store URL")
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in ("sqlite", "etcd", "etcds"):
        if "://" in text:
            raise StoreURLError(
                f"unknown store URL scheme {scheme!r} in {text!r} (use sqlite:///PATH, "
                "etcd://HOST:PORT/PREFIX or etcds://...)"
            )
        return StoreURL("sqlite", text, path=text)
    if scheme == "sqlite":
        path = rest[2:] if rest.startswith("//") else rest
        if path.startswith("//"):
            path = path[1:]
        path = unquote(path)
        if not path:
            raise StoreURLError(f"no file in {text!r} (use sqlite:///ABSOLUTE/PATH)")
        return StoreURL("sqlite", text, path=path)
    if not rest.startswith("//"):
        raise StoreURLError(f"expected {scheme}://HOST:PORT[,HOST:PORT]/PREFIX, got {text!r}")
    rest, _, query = rest[2:].partition("?")
    hosts, slash, prefix = rest.partition("/")
    endpoints = tuple(h.strip() for h in hosts.split(",") if h.strip())
    if not endpoints:
        raise StoreURLError(f"no etcd endpoint in {text!r}")
    for endpoint in endpoints:
        host, colon, port = endpoint.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise StoreURLError(f"etcd endpoint {endpoint!r} is not HOST:PORT (in {text!r})")
        if "@" in host:
            raise StoreURLError(
                "credentials do not go in the store URL: set CKE_EVENTS_ETCD_USER and "
                "CKE_EVENTS_ETCD_PASSWORD"
            )
    prefix = "/" + unquote(prefix) if slash and prefix else DEFAULT_ETCD_PREFIX
    if not prefix.endswith("/"):
        prefix += "/"
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in _ETCD_OPTIONS:
            raise StoreURLError(
                f"unknown etcd store option {name!r} (known: {', '.join(sorted(_ETCD_OPTIONS))})"
            )
        options[name] = value
    for name in ("timeout", "max-txn-ops"):
        if name in options:
            try:
                number = float(options[name])
            except ValueError:
                number = -1.0
            if number <= 0 or (name == "max-txn-ops" and not options[name].isdigit()):
                raise StoreURLError(f"{name} must be a positive number, got {options[name]!r}")
    return StoreURL(
        "etcd",
        text,
        endpoints=endpoints,
        prefix=prefix,
        options=options,
        tls=scheme == "etcds",
    )
