"""Start and stop a real etcd on 127.0.0.1, for tests, benchmarks and embedded mode.

``LocalEtcd`` runs one member (or a cluster of several) as child processes:

* every member gets two free 127.0.0.1 ports (client, peer) and its own data
  directory under one temporary directory (or a directory you give);
* ``start()`` returns once every member answers ``GET /health`` with
  ``{"health":"true"}`` (which needs an elected raft leader), or raises
  :class:`EtcdStartError` with the tail of the member's log;
* ``stop()`` sends SIGTERM to every member at once, waits, then SIGKILLs what is
  left, and removes the temporary directory it created;
* it is a context manager (``with LocalEtcd() as etcd: etcd.endpoints``).

The server limits that matter to the event store are options:
``max_txn_ops`` (etcd's ``--max-txn-ops``, 128 by default: batched event writes
need more), ``quota_backend_bytes`` (``--quota-backend-bytes``) and
``max_request_bytes``. A missing binary is reported by :class:`EtcdNotFoundError`
naming what was searched and how to install it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "EtcdError",
    "EtcdMember",
    "EtcdNotFoundError",
    "EtcdStartError",
    "LocalEtcd",
    "find_etcd_binary",
    "free_port",
]

ETCD_BINARY_ENV = "CKE_ETCD_BINARY"
"""Environment variable naming the etcd binary to run (else ``etcd`` on PATH)."""

_LOG_TAIL_BYTES = 4000


class EtcdError(RuntimeError):
    """Base class for errors of the local etcd launcher."""


class EtcdNotFoundError(EtcdError):
    """The etcd server binary cannot be found."""


class EtcdStartError(EtcdError):
    """An etcd member exited or did not become healthy in time."""


def find_etcd_binary(explicit: str | os.PathLike[str] | None = None) -> str:
    """Return the path of the etcd server binary.

    Order: the ``explicit`` argument, ``$CKE_ETCD_BINARY``, ``etcd`` on ``PATH``,
    then ``/usr/bin/etcd`` and ``/usr/local/bin/etcd``.
    """
    candidates: list[str] = []
    if explicit is not None:
        candidates.append(os.fspath(explicit))
    elif os.environ.get(ETCD_BINARY_ENV):
        candidates.append(os.environ[ETCD_BINARY_ENV])
    else:
        on_path = shutil.which("etcd")
        if on_path:
            candidates.append(on_path)
        candidates += ["/usr/bin/etcd", "/usr/local/bin/etcd"]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise EtcdNotFoundError(
        "etcd server binary not found (searched: "
        + ", ".join(candidates or ["<nothing>"])
        + f"). Install it (Debian: apt-get install etcd-server etcd-client) or set "
        f"${ETCD_BINARY_ENV} to its path."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the usual small race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdMember:
    """One running etcd process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def log_tail(self) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "<no log>"
        return data[-_LOG_TAIL_BYTES:].decode("utf-8", "replace")

    def is_healthy(self, timeout: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=timeout) as r:
                body = r.read()
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return b'"health":"true"' in body.replace(b" ", b"")


@dataclass
class LocalEtcd:
    """A single-member or multi-member etcd cluster on 127.0.0.1 ports.

    ``members``: 1 (default) or an odd number such as 3.
    ``data_dir``: where the members' directories go; default a new temporary
    directory (under /dev/shm when it exists, which makes fsync cheap), removed
    on ``stop()``. A given directory is left in place: give one (on disk) whenever
    the data must survive, e.g. in the daemon's embedded mode.
    """

    members: int = 1
    max_txn_ops: int | None = None
    quota_backend_bytes: int | None = None
    max_request_bytes: int | None = None
    auto_compaction_retention: str | None = None
    auto_compaction_mode: str | None = None
    extra_args: Sequence[str] = ()
    data_dir: str | os.PathLike[str] | None = None
    etcd_binary: str | os.PathLike[str] | None = None
    startup_timeout: float = 20.0
    stop_timeout: float = 10.0
    name_prefix: str = "cke"
    use_shm: bool = True
    start_attempts: int = 3

    _members: list[EtcdMember] = field(default_factory=list, init=False, repr=False)
    _owned_dir: Path | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    # ------------------------------------------------------------------ access

    @property
    def running_members(self) -> list[EtcdMember]:
        return list(self._members)

    @property
    def endpoints(self) -> list[str]:
        """Client URLs (``http://127.0.0.1:PORT``) of all members."""
        self._require_started()
        return [m.client_url for m in self._members]

    @property
    def host_ports(self) -> list[tuple[str, int]]:
        self._require_started()
        return [("127.0.0.1", m.client_port) for m in self._members]

    @property
    def endpoints_env(self) -> str:
        """Endpoints as a comma-separated ``host:port`` list (for env variables)."""
        return ",".join(f"{h}:{p}" for h, p in self.host_ports)

    def client(self, member: int = 0, timeout: float | None = 10.0) -> object:
        """A ``pyetcd`` client connected to one member (imported lazily)."""
        import pyetcd  # type: ignore[import-untyped]

        host, port = self.host_ports[member]
        return pyetcd.client(host=host, port=port, timeout=timeout)

    def _require_started(self) -> None:
        if not self._members:
            raise EtcdError("etcd is not running: call start() or use it as a context manager")

    # --------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        with self._lock:
            if self._members:
                raise EtcdError("etcd is already running")
            if self.members < 1:
                raise ValueError("members must be >= 1")
            binary = find_etcd_binary(self.etcd_binary)
            base = self._base_dir()
            last_error: EtcdStartError | None = None
            for attempt in range(self.start_attempts):
                try:
                    self._start_once(binary, base / f"run{attempt}")
                except EtcdStartError as e:
                    last_error = e
                    self._stop_members()
                    # A port taken between free_port() and etcd's bind: try new ports.
                    if "address already in use" not in str(e):
                        break
                else:
                    return self
            self._cleanup_dir()
            assert last_error is not None
            raise last_error

    def _base_dir(self) -> Path:
        if self.data_dir is not None:
            path = Path(self.data_dir)
            path.mkdir(parents=True, exist_ok=True)
            return path
        parent = "/dev/shm" if self.use_shm and os.path.isdir("/dev/shm") else None
        self._owned_dir = Path(tempfile.mkdtemp(prefix="cke-etcd-", dir=parent))
        return self._owned_dir

    def _start_once(self, binary: str, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        members = []
        for i in range(self.members):
            name = f"{self.name_prefix}{i}"
            members.append(
                EtcdMember(
                    name=name,
                    client_port=free_port(),
                    peer_port=free_port(),
                    data_dir=run_dir / f"{name}.etcd",
                    log_path=run_dir / f"{name}.log",
                )
            )
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
        token = f"{self.name_prefix}-{os.getpid()}-{members[0].client_port}"
        # etcd reads ETCD_* variables as flags: do not let the caller's leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        self._members = members
        for m in members:
            args = [
                binary,
                "--name",
                m.name,
                "--data-dir",
                str(m.data_dir),
                "--listen-client-urls",
                m.client_url,
                "--advertise-client-urls",
                m.client_url,
                "--listen-peer-urls",
                m.peer_url,
                "--initial-advertise-peer-urls",
                m.peer_url,
                "--initial-cluster",
                initial_cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                token,
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
            ]
            if self.max_txn_ops is not None:
                args += ["--max-txn-ops", str(self.max_txn_ops)]
            if self.quota_backend_bytes is not None:
                args += ["--quota-backend-bytes", str(self.quota_backend_bytes)]
            if self.max_request_bytes is not None:
                args += ["--max-request-bytes", str(self.max_request_bytes)]
            if self.auto_compaction_retention is not None:
                args += ["--auto-compaction-retention", self.auto_compaction_retention]
            if self.auto_compaction_mode is not None:
                args += ["--auto-compaction-mode", self.auto_compaction_mode]
            args += list(self.extra_args)
            with open(m.log_path, "wb") as log:
                m.process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        pending = list(self._members)
        while pending:
            for m in list(pending):
                assert m.process is not None
                code = m.process.poll()
                if code is not None:
                    raise EtcdStartError(
                        f"etcd member {m.name} exited with status {code} during startup "
                        f"(log {m.log_path}):\n{m.log_tail()}"
                    )
                if m.is_healthy():
                    pending.remove(m)
            if not pending:
                return
            if time.monotonic() > deadline:
                m = pending[0]
                raise EtcdStartError(
                    f"etcd member {m.name} not healthy after {self.startup_timeout:.0f} s "
                    f"(log {m.log_path}):\n{m.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL after ``stop_timeout``)."""
        with self._lock:
            self._stop_members()
            self._cleanup_dir()

    def _stop_members(self) -> None:
        procs = [m.process for m in self._members if m.process is not None]
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait()
        self._members = []

    def _cleanup_dir(self) -> None:
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    def kill_member(self, index: int) -> None:
        """SIGKILL one member (failure injection); it stays in ``running_members``."""
        self._require_started()
        proc = self._members[index].process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
