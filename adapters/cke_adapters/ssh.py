"""SSH to the nodes: one persistent connection per node, bounded, with timeouts.

``SSHPool`` is the adapter every node-side command goes through (CKE's
``cke.Agent``, behaviour reference §C.1 and §D.1):

* **One persistent connection per node address**, opened on first use and
  reused by every later command, across reconciliation loops, until it drops.
  A dropped connection is forgotten as soon as asyncssh notices (the client's
  ``connection_lost`` callback); the next command reconnects.
* **Bounded concurrency**: one ``asyncio.Semaphore`` over the whole pool
  (``max_concurrency`` commands at once) and one per node
  (``max_sessions_per_node`` SSH sessions at once on one connection, below
  OpenSSH's default ``MaxSessions 10``).
* **Timeouts**: ``connect_timeout`` bounds TCP connect + handshake + login;
  ``command_timeout`` (default 10 minutes, CKE's value) bounds each command and
  can be overridden per call. On a timeout the channel is closed, the
  command's remote process group is sent SIGKILL from a second session (OpenSSH
  refuses "signal" requests in root sessions, so a channel signal would not do),
  and :class:`CommandTimeout` is raised.
* **Reconnect, but never re-run**: if the session cannot be *opened* because the
  cached connection turned out to be dead, the pool reconnects once and opens
  the session again. Once the session channel is open the command may have
  started, so a failure after that point is never retried: it is
  :class:`CommandInterrupted` and the caller decides.
* **Unreachable is status, not a crash**: connect, authentication and host-key
  failures raise :class:`NodeUnreachable`; :meth:`SSHPool.check` turns that
  into ``False`` (``ssh_connected=false`` in the node status, §D.1).

Host keys
---------
CKE ignores host keys. We do not silently trust them: the operator configures a
known-hosts file (OpenSSH format; ``[host]:port`` entries for other ports) and
every connection verifies the node's host key against it. The file is re-read
on every connect, so adding a node's key takes effect without a restart. An
unknown key or a mismatch is :class:`HostKeyRejected` (a
:class:`NodeUnreachable`) whose message is one line naming the host and the
file. Nothing else is consulted: no ``~/.ssh/config``, no ``~/.ssh/known_hosts``,
no SSH agent.

Private keys
------------
Keys come from a :class:`KeySource` (``private_key(address) -> bytes``, an
OpenSSH or PEM private key without passphrase). :class:`FileKeySource` reads a
file; a Vault-backed source (CKE keeps node keys in Vault) implements the same
one-method protocol. The source is called in a worker thread on every
connect, so a blocking client (``hvac``) does not stall the event loop and a
rotated key is picked up at the next reconnect.

Arguments are never interpreted by a shell
------------------------------------------
SSH has no argv: the client sends one command *string* and sshd always runs it
through the remote user's login shell (``$SHELL -c STRING``). :meth:`SSHPool.run`
therefore takes an argument vector and joins it with :func:`shlex.join`, which
single-quotes every argument that is not a plain word, so the remote POSIX shell
(sh, dash, bash, zsh) sees each argument as exactly one literal word: quotes,
``;``, ``$()``, backticks, globs, spaces and newlines reach the program
unchanged. NUL bytes cannot travel in an argument and are rejected. The
remote account's login shell must be POSIX-compatible (csh and fish quote
differently); on CKE nodes it is root's ``/bin/bash``.

The string actually sent is ``echo cke-pid:$$; exec 'arg0' 'arg1' ...``: a
constant prefix announces the shell's pid (the session's process group, used
to kill a timed-out command; the line is stripped from stdout), then ``exec``
replaces the shell by the program. Note that bash still reads ``~/.bashrc``
for commands run by sshd: a slow rc file on a node (the lab measured 175 ms of
``pyenv init`` per command) costs that much on every command.

A pool belongs to the event loop that uses it first; call :meth:`SSHPool.close`
on that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import posixpath
import secrets
import shlex
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import asyncssh

from cke_adapters.oneline import one_line

__all__ = [
    "DEFAULT_COMMAND_TIMEOUT",
    "CommandFailed",
    "CommandInterrupted",
    "CommandOutput",
    "CommandTimeout",
    "FileKeySource",
    "FileTransferFailed",
    "HostKeyRejected",
    "KeySource",
    "NodeUnreachable",
    "SSHError",
    "SSHPool",
    "command_line",
]

DEFAULT_COMMAND_TIMEOUT = 600.0
"""Seconds one remote command may take (CKE: 10 minutes per command)."""


# --------------------------------------------------------------------------- errors


class SSHError(Exception):
    """Base class of every error of this adapter."""


class NodeUnreachable(SSHError):
    """No usable connection to the node: connect, authentication or host-key failure.

    This is node *status* (``ssh_connected=false``), not a programming error.
    """

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = one_line(reason)
        super().__init__(f"{address}: unreachable over SSH: {self.reason}")


class HostKeyRejected(NodeUnreachable):
    """The node's host key is unknown to, or differs from, the known-hosts file."""

    def __init__(self, address: str, known_hosts: Path, detail: str) -> None:
        self.known_hosts = known_hosts
        self.detail = one_line(detail)
        super().__init__(
            address,
            f"host key not trusted by known-hosts file {known_hosts} ({self.detail})",
        )


class CommandFailed(SSHError):
    """The command ran and exited with a non-zero status (or died of a signal)."""

    def __init__(self, address: str, argv: Sequence[str], exit_status: int, stderr: bytes) -> None:
        self.address = address
        self.argv = tuple(argv)
        self.exit_status = exit_status
        self.stderr = stderr
        tail = one_line(stderr.decode("utf-8", "replace"))[-500:]
        super().__init__(
            f"{address}: {shlex.join(self.argv)!r} exited with status {exit_status}"
            + (f": {tail}" if tail else "")
        )


class CommandTimeout(SSHError):
    """The command did not finish in time; it was sent KILL and its channel closed."""

    def __init__(self, address: str, argv: Sequence[str], timeout: float) -> None:
        self.address = address
        self.argv = tuple(argv)
        self.timeout = timeout
        super().__init__(
            f"{address}: {shlex.join(self.argv)!r} did not finish within {timeout:g} s"
        )


class CommandInterrupted(SSHError):
    """The connection dropped after the session opened: the command may have run.

    Never retried by the pool; the caller decides (the next reconciliation loop
    observes the node again).
    """

    def __init__(self, address: str, argv: Sequence[str], reason: str) -> None:
        self.address = address
        self.argv = tuple(argv)
        self.reason = one_line(reason)
        super().__init__(
            f"{address}: connection lost while {shlex.join(self.argv)!r} ran "
            f"(it may or may not have taken effect): {self.reason}"
        )


class FileTransferFailed(SSHError):
    """An SFTP read or write of ``path`` failed on a connected node."""

    def __init__(self, address: str, path: str, reason: str) -> None:
        self.address = address
        self.path = path
        self.reason = one_line(reason)
        super().__init__(f"{address}: SFTP {path}: {self.reason}")


# --------------------------------------------------------------------------- keys


class KeySource(Protocol):
    """Where the SSH private key for a node comes from (a file now, Vault later)."""

    def private_key(self, address: str) -> bytes:
        """The private key (OpenSSH or PEM, no passphrase) to log in to ``address``."""
        ...


@dataclass(frozen=True)
class FileKeySource:
    """The same private key for every node, read from a file at every connect."""

    path: Path

    def private_key(self, address: str) -> bytes:
        return Path(self.path).read_bytes()


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class CommandOutput:
    """What a remote command produced. ``exit_signal`` is set if it died of a signal
    (``exit_status`` is then -1)."""

    exit_status: int
    stdout: bytes
    stderr: bytes
    exit_signal: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def command_line(argv: Sequence[str]) -> str:
    """The command string sent to sshd: every argument one literal shell word.

    Raises ``ValueError`` for an empty argv or an argument containing NUL (which
    no remote program could receive).
    """
    if isinstance(argv, str):
        raise TypeError("argv must be a sequence of arguments, not one string")
    if not argv:
        raise ValueError("argv must not be empty")
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(f"argument {arg!r} is not a str")
        if "\0" in arg:
            raise ValueError(f"argument {arg!r} contains a NUL byte")
    return shlex.join(argv)


# --------------------------------------------------------------------------- internals


_PID_MARKER = b"cke-pid:"
_PID_PREFIX = "echo cke-pid:$$; exec "
"""Prepended to every command line: the remote shell prints its pid (which is
also the process group id: sshd runs each session's shell after setsid()) and
then execs the command in its place. On a timeout the pool kills that process
group from a second session, because OpenSSH refuses "signal" channel requests
for root sessions ("session signalling requires privilege separation")."""


class _Session(asyncssh.SSHClientSession[bytes]):
    """Collects one command's output; records whether the channel ever opened
    and the remote process group announced by ``_PID_PREFIX``."""

    def __init__(self) -> None:
        self.opened = False
        self.pid: int | None = None
        self._head: bytearray | None = bytearray()
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.done: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        # Called when the channel-open is confirmed, before the exec request is
        # sent: until then the command cannot have started.
        self.opened = True

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self.stderr.extend(data)
        elif self._head is None:
            self.stdout.extend(data)
        else:
            # The first stdout line is the pid marker; strip it. If something
            # else came first (a noisy login shell rc file), pass it through.
            self._head.extend(data)
            end = self._head.find(b"\n")
            if end < 0 and len(self._head) < 64:
                return
            line = bytes(self._head[:end]) if end >= 0 else b""
            digits = line.removeprefix(_PID_MARKER)
            if line.startswith(_PID_MARKER) and digits.isdigit():
                self.pid = int(digits)
                self.stdout.extend(self._head[end + 1 :])
            else:
                self.stdout.extend(self._head)
            self._head = None

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head is not None:
            self.stdout.extend(self._head)
            self._head = None
        if not self.done.done():
            self.done.set_result(exc)


class _Client(asyncssh.SSHClient):
    """Tells the pool to forget its connection as soon as asyncssh sees it drop."""

    def __init__(self, pool: SSHPool, address: str) -> None:
        self._pool = pool
        self._address = address
        self._conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._pool._forget(self._address, self._conn)


class _NotOpened(Exception):
    """The session could not be opened on a connection that turned out dead."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class _Node:
    sessions: asyncio.Semaphore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: asyncssh.SSHClientConnection | None = None


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncssh.DisconnectError,
    asyncssh.ChannelOpenError,
    OSError,
    EOFError,
)
_SFTP_OPEN_ERRORS: tuple[type[BaseException], ...] = (
    *_CONNECTION_ERRORS,
    asyncssh.SFTPError,
    TimeoutError,
)


_OPEN_CONNECT_FAILED = 2  # RFC 4254 SSH_OPEN_CONNECT_FAILED


def _connection_dead(conn: asyncssh.SSHClientConnection, exc: BaseException) -> bool:
    """Whether a failed session open means the connection itself is gone.

    asyncssh fails the open of every pending channel with ``ChannelOpenError(
    OPEN_CONNECT_FAILED, "SSH connection closed")`` when the connection drops,
    possibly before ``is_closed()`` turns true; a server's refusal of a session
    on a live connection (``MaxSessions``) comes with another code.
    """
    if conn.is_closed() or not isinstance(exc, asyncssh.ChannelOpenError):
        return True
    return exc.code == _OPEN_CONNECT_FAILED


# --------------------------------------------------------------------------- the pool


class SSHPool:
    """Persistent SSH connections to the nodes, keyed by node address.

    ``run`` executes an argument vector on a node; ``write_file``/``read_file``
    and ``sftp`` give file access; ``check`` says whether the node is reachable.
    """

    def __init__(
        self,
        keys: KeySource,
        known_hosts: str | Path,
        *,
        username: str = "root",
        port: int = 22,
        connect_timeout: float = 10.0,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        max_concurrency: int = 32,
        max_sessions_per_node: int = 8,
        keepalive_interval: float = 30.0,
        keepalive_count_max: int = 3,
    ) -> None:
        known_hosts = Path(known_hosts)
        if not known_hosts.is_file():
            raise FileNotFoundError(f"known-hosts file {known_hosts} does not exist")
        if max_concurrency < 1 or max_sessions_per_node < 1:
            raise ValueError("concurrency bounds must be at least 1")
        self._keys = keys
        self._known_hosts = known_hosts
        self._username = username
        self._port = port
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._max_sessions_per_node = max_sessions_per_node
        self._keepalive_interval = keepalive_interval
        self._keepalive_count_max = keepalive_count_max
        self._limit = asyncio.Semaphore(max_concurrency)
        self._nodes: dict[str, _Node] = {}
        self._connects: Counter[str] = Counter()
        self._closed = False

    # ----------------------------------------------------------- introspection

    @property
    def known_hosts(self) -> Path:
        return self._known_hosts

    @property
    def connects(self) -> Mapping[str, int]:
        """How many SSH connections were opened per address (reuse keeps this at 1)."""
        return dict(self._connects)

    def connected(self, address: str) -> bool:
        """Whether a connection to ``address`` is open now (no I/O)."""
        node = self._nodes.get(address)
        return node is not None and node.conn is not None and not node.conn.is_closed()

    # ----------------------------------------------------------- connections

    def _node(self, address: str) -> _Node:
        node = self._nodes.get(address)
        if node is None:
            node = _Node(sessions=asyncio.Semaphore(self._max_sessions_per_node))
            self._nodes[address] = node
        return node

    def _forget(self, address: str, conn: asyncssh.SSHClientConnection) -> None:
        node = self._nodes.get(address)
        if node is not None and node.conn is conn:
            node.conn = None

    async def _connection(self, address: str) -> asyncssh.SSHClientConnection:
        """The open connection to ``address``, connecting if there is none."""
        if self._closed:
            raise RuntimeError("SSHPool is closed")
        node = self._node(address)
        async with node.lock:
            if node.conn is not None and not node.conn.is_closed():
                return node.conn
            node.conn = None
            try:
                key_data = await asyncio.to_thread(self._keys.private_key, address)
                key = asyncssh.import_private_key(key_data)
            except (OSError, asyncssh.KeyImportError, ValueError) as exc:
                raise NodeUnreachable(address, f"no usable private key: {exc}") from exc
            try:
                conn = await asyncio.wait_for(
                    asyncssh.connect(
                        address,
                        port=self._port,
                        username=self._username,
                        client_keys=[key],
                        known_hosts=str(self._known_hosts),
                        client_factory=functools.partial(_Client, self, address),
                        config=None,
                        agent_path=None,
                        preferred_auth="publickey",
                        connect_timeout=self._connect_timeout,
                        login_timeout=self._connect_timeout,
                        keepalive_interval=self._keepalive_interval,
                        keepalive_count_max=self._keepalive_count_max,
                    ),
                    self._connect_timeout,
                )
            except asyncssh.HostKeyNotVerifiable as exc:
                raise HostKeyRejected(address, self._known_hosts, exc.reason) from exc
            except asyncssh.PermissionDenied as exc:
                raise NodeUnreachable(
                    address, f"login as {self._username} refused: {exc.reason}"
                ) from exc
            except asyncssh.DisconnectError as exc:
                raise NodeUnreachable(address, exc.reason) from exc
            except TimeoutError as exc:
                raise NodeUnreachable(
                    address, f"no SSH connection within {self._connect_timeout:g} s"
                ) from exc
            except (OSError, asyncssh.Error) as exc:
                raise NodeUnreachable(address, str(exc) or type(exc).__name__) from exc
            node.conn = conn
            self._connects[address] += 1
            return conn

    # ----------------------------------------------------------- commands

    async def run(
        self,
        address: str,
        argv: Sequence[str],
        stdin: bytes | None = None,
        *,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandOutput:
        """Run ``argv`` on ``address`` and return its exit status and output.

        ``argv[0]`` is a program (looked up in the remote ``PATH``); the remote
        shell ``exec``s it, so shell builtins, functions and aliases are not
        available (run ``["sh", "-c", script, ...]`` for a script, passing
        values as further arguments, never inside ``script``).

        ``stdin`` is written to the command's standard input, which is then
        closed (also when ``stdin`` is None). With ``check`` (the default) a
        non-zero exit raises :class:`CommandFailed`; pass ``check=False`` to
        get the status back. ``timeout`` overrides the pool's command timeout.

        Raises :class:`NodeUnreachable`, :class:`CommandFailed`,
        :class:`CommandTimeout` or :class:`CommandInterrupted`.
        """
        command = _PID_PREFIX + command_line(argv)
        limit = self._command_timeout if timeout is None else timeout
        node = self._node(address)
        async with self._limit, node.sessions:
            for attempt in (1, 2):
                conn = await self._connection(address)
                try:
                    output = await self._execute(conn, address, argv, command, stdin, limit)
                except _NotOpened as exc:
                    self._forget(address, conn)
                    conn.abort()
                    if attempt == 2:
                        raise NodeUnreachable(address, f"session refused: {exc}") from exc
                    continue
                break
        if check and not output.ok:
            raise CommandFailed(address, argv, output.exit_status, output.stderr)
        return output

    async def _execute(
        self,
        conn: asyncssh.SSHClientConnection,
        address: str,
        argv: Sequence[str],
        command: str,
        stdin: bytes | None,
        timeout: float,
    ) -> CommandOutput:
        session: _Session | None = None
        chan: asyncssh.SSHClientChannel[bytes] | None = None

        def factory() -> _Session:
            nonlocal session
            session = _Session()
            return session

        try:
            async with asyncio.timeout(timeout):
                try:
                    chan, _ = await conn.create_session(
                        factory, command, encoding=None, request_pty=False
                    )
                except _CONNECTION_ERRORS as exc:
                    if session is None or not session.opened:
                        if _connection_dead(conn, exc):
                            raise _NotOpened(exc) from exc
                        # The server refused a session on a live connection
                        # (e.g. MaxSessions): nothing ran; not a dead node.
                        raise SSHError(f"{address}: SSH session refused: {exc}") from exc
                    raise CommandInterrupted(address, argv, str(exc)) from exc
                assert session is not None
                if stdin:
                    chan.write(stdin)
                chan.write_eof()
                lost = await session.done
        except TimeoutError as exc:
            if chan is not None:
                chan.close()
            if session is not None and session.pid is not None:
                await self._kill_group(conn, session.pid)
            raise CommandTimeout(address, argv, timeout) from exc
        except asyncio.CancelledError:
            if chan is not None:
                chan.close()
            raise
        if session.exit_status is None and session.exit_signal is None:
            reason = str(lost) if lost is not None else "channel closed without an exit status"
            raise CommandInterrupted(address, argv, reason)
        return CommandOutput(
            exit_status=session.exit_status if session.exit_status is not None else -1,
            stdout=bytes(session.stdout),
            stderr=bytes(session.stderr),
            exit_signal=session.exit_signal,
        )

    async def _kill_group(self, conn: asyncssh.SSHClientConnection, pgid: int) -> None:
        """Best effort: SIGKILL a timed-out command's process group. Runs outside
        the concurrency bounds (it frees a slot) and within the connect timeout."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._connect_timeout):
                await conn.run(
                    command_line(["kill", "-KILL", "--", f"-{pgid}"]),
                    encoding=None,
                    check=False,
                )

    async def check(self, address: str) -> bool:
        """Whether ``address`` is reachable: connect (or reuse) and run ``true``.

        Never raises for an unreachable node; that is status (``ssh_connected``).
        """
        try:
            await self.run(address, ["true"], timeout=self._connect_timeout)
        except SSHError:
            return False
        return True

    # ----------------------------------------------------------- files

    @contextlib.asynccontextmanager
    async def sftp(self, address: str) -> AsyncIterator[asyncssh.SFTPClient]:
        """An SFTP client on the node's persistent connection (one session slot).

        Opening SFTP has no side effect, so a dead cached connection is replaced
        and the open retried once.
        """
        node = self._node(address)
        async with self._limit, node.sessions:
            client: asyncssh.SFTPClient | None = None
            for attempt in (1, 2):
                conn = await self._connection(address)
                try:
                    client = await asyncio.wait_for(conn.start_sftp_client(), self._connect_timeout)
                except _SFTP_OPEN_ERRORS as exc:
                    self._forget(address, conn)
                    conn.abort()
                    if attempt == 2:
                        raise NodeUnreachable(address, f"SFTP refused: {exc}") from exc
                    continue
                break
            assert client is not None
            try:
                yield client
            finally:
                client.exit()

    async def write_file(
        self,
        address: str,
        path: str,
        data: bytes,
        mode: int = 0o644,
        *,
        make_parents: bool = False,
    ) -> None:
        """Replace ``path`` on the node with ``data`` atomically.

        Writes a temporary file in the same directory, fsyncs it
        (``fsync@openssh.com``), sets ``mode``, then renames it over ``path``
        (``posix-rename@openssh.com``), so readers see the old or the new
        content, never a mix. The temporary file is removed on failure.
        """
        if not posixpath.isabs(path) or path.endswith("/"):
            raise ValueError(f"{path!r} is not an absolute file path")
        directory, name = posixpath.split(path)
        tmp = posixpath.join(directory, f".{name}.cke-{secrets.token_hex(6)}")
        async with self.sftp(address) as sftp:
            try:
                if make_parents:
                    await sftp.makedirs(directory, exist_ok=True)
                async with sftp.open(tmp, "wb", asyncssh.SFTPAttrs(permissions=mode)) as handle:
                    await handle.write(data)
                    await handle.fsync()
                await sftp.chmod(tmp, mode)
                await sftp.posix_rename(tmp, path)
            except (asyncssh.SFTPError, OSError) as exc:
                with contextlib.suppress(asyncssh.SFTPError, OSError):
                    await sftp.remove(tmp)
                raise FileTransferFailed(address, path, str(exc)) from exc

    async def read_file(self, address: str, path: str) -> bytes:
        """The content of ``path`` on the node."""
        async with self.sftp(address) as sftp:
            try:
                async with sftp.open(path, "rb") as handle:
                    return await handle.read()
            except (asyncssh.SFTPError, OSError) as exc:
                raise FileTransferFailed(address, path, str(exc)) from exc

    # ----------------------------------------------------------- lifecycle

    async def disconnect(self, address: str) -> None:
        """Close the connection to ``address`` (the next command reconnects)."""
        node = self._nodes.get(address)
        if node is None or node.conn is None:
            return
        conn, node.conn = node.conn, None
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()

    async def close(self) -> None:
        """Close every connection; the pool cannot be used afterwards."""
        self._closed = True
        await asyncio.gather(
            *(self.disconnect(address) for address in list(self._nodes)),
            return_exceptions=True,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
