"""``rivers``: a TCP reverse proxy with upstream health checks (CKE's ``tools/rivers``).

CKE runs it on every node as the ``rivers`` container (``--listen=127.0.0.1:16443``, the
API servers as upstreams) and on control planes as ``etcd-rivers`` (``127.0.0.1:12379``,
the etcd members). Its rules, the same as CKE's:

* **Health.** Every ``--check-interval`` each upstream is TCP-dialled (``--dial-timeout``);
  success makes it healthy, failure unhealthy. Upstreams start unhealthy; the first round
  runs before the listener accepts (serving starts as soon as one upstream is healthy or the
  round is over). A transition to unhealthy closes every proxied connection to that upstream.
* **Choice.** Per client connection the upstreams are shuffled and the healthy ones are
  dialled in that order; the first that answers is used. A failed dial is logged and the
  next one is tried; it does *not* change the upstream's health (CKE's ``randomUpstream``
  only warns: marking it unhealthy would close all its other connections over one failed
  dial; the health checker decides). When none answers the client connection is closed.
* **Copying.** Bytes are copied both ways. EOF from one side half-closes the other
  (``shutdown(SHUT_WR)`` once its pending bytes are written) and the other direction goes
  on until it ends too. An error or reset on one side ends the connection: the other side
  gets what is already buffered for it, then is closed (aborted after ``CLOSE_LINGER``).
* **Log.** One access line per client connection (client, upstream, bytes each way,
  elapsed seconds, error) in logfmt, through :mod:`logging` (logger ``cke.rivers``).
* **Shutdown.** SIGTERM/SIGINT stop the listener, wait up to ``--shutdown-timeout`` for
  the open connections (``0``: wait for ever, as in CKE), then close what is left.
* **Sockets.** Upstream sockets get TCP keep-alive every ``--dial-keep-alive`` (negative:
  off), accepted ones every 15 s (Go's listener default); asyncio sets ``TCP_NODELAY``.

Design: one :class:`asyncio.Protocol` per socket, both wired to a :class:`_Proxy`.
``data_received`` hands the received ``bytes`` (reads of up to 256 KiB) straight to the
other transport's ``write``, which sends at once when the kernel buffer has room: no
coroutine or task switch per chunk and no copy in Python on the fast path. Back-pressure
is the transports' flow control: a peer's ``pause_writing`` pauses reading on this side.

Durations on the command line use Go's syntax (``10s``, ``1m30s``, ``500ms``). Beyond
CKE's flags there is ``--loglevel`` (CKE's rivers gets ``-loglevel`` from cybozu-go/well).
Bad flags: one ``rivers: error: …`` line, exit 2; a runtime failure (bind): one line, exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import math
import random
import re
import resource
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import NoReturn, cast

__all__ = [
    "CLOSE_LINGER",
    "Rivers",
    "Upstream",
    "main",
    "parse_duration",
    "parse_hostport",
]

logger = logging.getLogger("cke.rivers")

#: Keep-alive period of accepted client sockets (Go's ``net.Listen`` default).
ACCEPTED_KEEP_ALIVE = 15.0
#: Seconds a side may take to drain its pending bytes once the other side is gone.
CLOSE_LINGER = 10.0
#: Transport write-buffer limits (bytes) for proxied sockets: reading from the other side
#: pauses above HIGH and resumes below LOW. Reads are up to 256 KiB (asyncio's max_size).
WRITE_BUFFER_HIGH = 1024 * 1024
WRITE_BUFFER_LOW = 256 * 1024


# --------------------------------------------------------------------------- parsing

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([a-z\u00b5\u03bc]*)")


def parse_duration(text: str) -> float:
    """Parse a Go duration (``1h2m3.5s``, ``500ms``, ``-1s``, ``0``) into seconds."""
    s = text[1:] if text[:1] in ("-", "+") else text
    sign = -1.0 if text[:1] == "-" else 1.0
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        match = _DURATION_PART.match(s, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        number, unit = match.groups()
        if not unit:
            raise ValueError(f"missing unit in duration {text!r}")
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r}")
        total += float(number) * _UNITS[unit]
        pos = match.end()
    return sign * total


def parse_hostport(text: str, *, allow_empty_host: bool = False) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` like Go's ``net.SplitHostPort``; the port is numeric."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"invalid address {text!r}: want [host]:port")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ValueError(f"invalid address {text!r}: missing port")
        if ":" in host:
            raise ValueError(f"invalid address {text!r}: too many colons (use [v6]:port)")
    if not host and not allow_empty_host:
        raise ValueError(f"invalid address {text!r}: missing host")
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"invalid address {text!r}: bad port {port_text!r}")
    return host, int(port_text)


_BARE = re.compile(r"[\w.:/@+,\[\]-]+", re.ASCII)


def _logfmt_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6f}"
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _log(level: int, msg: str, **fields: object) -> None:
    """One logfmt line: ``msg`` then ``key=value`` pairs; the dict is also ``record.fields``."""
    if logger.isEnabledFor(level):
        pairs = " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())
        logger.log(level, "%s %s", _logfmt_value(msg), pairs, extra={"fields": fields})


def _set_keepalive(sock: socket.socket, period: float) -> None:
    """Enable TCP keep-alive probes every ``period`` seconds, as Go's dialer does:
    rounded up to whole seconds, 0 means 15 s, a negative period disables them."""
    if period < 0:
        return
    secs = max(1, math.ceil(period)) if period > 0 else 15
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, secs)
    if hasattr(socket, "TCP_KEEPINTVL"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, secs)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- upstreams


class Upstream:
    """One upstream server: its address, its health and its proxied connections."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.host, self.port = parse_hostport(address)
        if self.port == 0:
            raise ValueError(f"invalid address {address!r}: port 0")
        self.healthy = False
        self._connections: set[_Proxy] = set()
        # IP literals skip getaddrinfo (which would run in a thread for every dial).
        self._sockaddrs: list[tuple[int, tuple[str, int]]] | None = None
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(self.host)
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            self._sockaddrs = [(family, (self.host, self.port))]

    def __repr__(self) -> str:
        state = "healthy" if self.healthy else "unhealthy"
        return f"<Upstream {self.address} {state} connections={len(self._connections)}>"

    @property
    def connections(self) -> int:
        """The number of proxied connections to this upstream."""
        return len(self._connections)

    def set_healthy(self, healthy: bool) -> None:
        """Record the health; becoming (or staying) unhealthy closes its connections."""
        self.healthy = healthy
        if not healthy:
            for proxy in list(self._connections):
                proxy.abort(f"upstream {self.address} became unhealthy")

    async def dial(self, timeout: float, keep_alive: float) -> socket.socket:
        """Open a TCP connection; ``timeout`` (0: none) covers name resolution and connect."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout if timeout > 0 else None):
            addrs = self._sockaddrs
            if addrs is None:
                infos = await loop.getaddrinfo(
                    self.host, self.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
                addrs = [(info[0], (str(info[4][0]), int(info[4][1]))) for info in infos]
            error: OSError = OSError(f"no address for {self.host}")
            for family, sockaddr in addrs:
                sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
                try:
                    sock.setblocking(False)
                    _set_keepalive(sock, keep_alive)
                    await loop.sock_connect(sock, sockaddr)
                except OSError as exc:
                    sock.close()
                    error = exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                return sock
            raise error


# --------------------------------------------------------------------------- proxying


class _End(asyncio.Protocol):
    """One socket of a proxied connection; everything it receives goes to ``peer``."""

    __slots__ = ("early", "eof", "lost", "nbytes", "peer", "proxy", "transport")

    def __init__(self, proxy: _Proxy) -> None:
        self.proxy = proxy
        self.peer: _End = self
        self.transport: asyncio.Transport | None = None
        self.nbytes = 0
        self.eof = False
        self.lost = False
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_BUFFER_HIGH, WRITE_BUFFER_LOW)
        self.proxy.end_made(self)

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        peer = self.peer.transport
        if peer is not None:
            peer.write(data)
        else:  # the client spoke before the upstream was dialled (uvloop ignores the pause)
            self.early.append(data)
            if self.transport is not None:
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        # Called again if reading resumes after EOF; only the first one counts.
        if not self.eof:
            self.eof = True
            self.proxy.end_eof(self)
        return True  # keep the transport open: the other direction goes on

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.proxy.end_lost(self, exc)

    def pause_writing(self) -> None:
        peer = self.peer
        if peer.transport is not None and not peer.eof:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer.transport is not None and not peer.eof:
            peer.transport.resume_reading()


class _Proxy:
    """One client connection and, once dialled, its upstream connection."""

    __slots__ = (
        "client",
        "client_addr",
        "closed",
        "dialer",
        "error",
        "linger",
        "rivers",
        "started",
        "upstream",
        "upstream_end",
    )

    def __init__(self, rivers: Rivers) -> None:
        self.rivers = rivers
        self.client = _End(self)
        self.upstream_end = _End(self)
        self.client.peer = self.upstream_end
        self.upstream_end.peer = self.client
        self.client_addr = ""
        self.upstream: Upstream | None = None
        self.error: str | None = None
        self.started = time.monotonic()
        self.dialer: asyncio.Task[None] | None = None
        self.linger: asyncio.TimerHandle | None = None
        self.closed = False

    # Events from the two ends.

    def end_made(self, end: _End) -> None:
        if end is not self.client:
            return
        transport = end.transport
        assert transport is not None
        transport.pause_reading()  # nothing to do with the client's bytes before the dial
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
            self.client_addr = f"{host}:{peer[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                _set_keepalive(sock, ACCEPTED_KEEP_ALIVE)
        self.rivers._accepted(self)

    def end_eof(self, end: _End) -> None:
        peer = end.peer
        if peer.transport is not None and not peer.lost:
            try:
                peer.transport.write_eof()  # shutdown(SHUT_WR) once its buffer is written
            except OSError as exc:  # the peer was reset meanwhile (ENOTCONN)
                self._record(peer, exc)
                peer.transport.abort()
                return
        if self.client.eof and self.upstream_end.eof:
            self._close_ends()

    def end_lost(self, end: _End, exc: Exception | None) -> None:
        if exc is not None:
            self._record(end, exc)
        peer = end.peer
        if peer.transport is None or peer.lost:
            self._finish()
        else:
            self._close_ends()

    def _record(self, end: _End, exc: BaseException) -> None:
        if self.error is None:
            side = "client" if end is self.client else "upstream"
            self.error = f"{side}: {_describe(exc)}"

    # Actions.

    async def dial(self) -> None:
        """Connect to a random healthy upstream, then let the bytes flow."""
        rivers = self.rivers
        candidates = list(rivers.upstreams)
        rivers._rng.shuffle(candidates)
        loop = asyncio.get_running_loop()
        for upstream in candidates:
            if not upstream.healthy:
                continue
            try:
                sock = await upstream.dial(rivers.dial_timeout, rivers.dial_keep_alive)
            except (OSError, TimeoutError) as exc:
                _log(
                    logging.WARNING,
                    "failed to connect to upstream",
                    upstream=upstream.address,
                    client_addr=self.client_addr,
                    error=str(exc) or "dial timeout",
                )
                continue
            if not upstream.healthy:  # it turned unhealthy during the dial
                sock.close()
                continue
            # From here an unhealthy transition aborts this connection (and cancels us).
            self.upstream = upstream
            upstream._connections.add(self)
            try:
                transport, _ = await loop.create_connection(lambda: self.upstream_end, sock=sock)
            except BaseException:
                sock.close()
                raise
            if self.client.early:
                transport.writelines(self.client.early)
                self.client.early.clear()
            if self.client.eof:
                transport.write_eof()
            client = self.client.transport
            assert client is not None
            if not self.client.eof:
                client.resume_reading()
            return
        self.error = "no available upstream servers"
        self._close_ends()

    def _close_ends(self) -> None:
        """Close both sides once their pending bytes are written (bounded by CLOSE_LINGER)."""
        closing = False
        for end in (self.client, self.upstream_end):
            if end.transport is not None and not end.lost:
                end.transport.close()
                closing = True
        if closing and self.linger is None:
            self.linger = asyncio.get_running_loop().call_later(
                CLOSE_LINGER, self.abort, "close timed out"
            )

    def abort(self, reason: str) -> None:
        """Close both sides at once, dropping pending bytes (unhealthy upstream, shutdown)."""
        if self.error is None:
            self.error = reason
        if self.dialer is not None and not self.dialer.done():
            self.dialer.cancel()
        for end in (self.client, self.upstream_end):
            if end.transport is not None and not end.lost:
                end.transport.abort()

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.linger is not None:
            self.linger.cancel()
        if self.dialer is not None and not self.dialer.done():
            self.dialer.cancel()
        if self.upstream is not None:
            self.upstream._connections.discard(self)
        fields: dict[str, object] = {
            "type": "access",
            "client_addr": self.client_addr,
            "upstream": self.upstream.address if self.upstream is not None else "",
            "bytes_from_client": self.client.nbytes,
            "bytes_from_upstream": self.upstream_end.nbytes,
            "elapsed": time.monotonic() - self.started,
        }
        if self.error is not None:
            _log(logging.ERROR, "proxy ends", **fields, error=self.error)
        else:
            _log(logging.INFO, "proxy ends", **fields)
        self.rivers._finished(self)


# --------------------------------------------------------------------------- server


class Rivers:
    """The proxy: ``await start()``, then ``await serve()`` until ``await close()``.

    ``listen`` is ``host:port`` (port 0: any free port, see :attr:`address`); ``upstreams``
    are ``host:port`` strings. Durations are seconds. ``rng`` picks the upstream order
    (default: seeded from the OS's entropy).
    """

    def __init__(
        self,
        listen: str,
        upstreams: Sequence[str],
        *,
        dial_timeout: float = 10.0,
        dial_keep_alive: float = 15.0,
        check_interval: float = 20.0,
        shutdown_timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.listen_host, self.listen_port = parse_hostport(listen, allow_empty_host=True)
        if not upstreams:
            raise ValueError("no upstreams")
        self.upstreams = tuple(Upstream(a) for a in upstreams)
        if check_interval <= 0:
            raise ValueError("the check interval must be positive")
        if dial_timeout < 0:
            raise ValueError("the dial timeout must not be negative")
        if shutdown_timeout < 0:
            raise ValueError("the shutdown timeout must not be negative")
        self.dial_timeout = dial_timeout
        self.dial_keep_alive = dial_keep_alive
        self.check_interval = check_interval
        self.shutdown_timeout = shutdown_timeout
        self._rng = rng if rng is not None else random.Random()
        self._server: asyncio.Server | None = None
        self._checker: asyncio.Task[None] | None = None
        self._proxies: set[_Proxy] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._closed = asyncio.Event()

    # Public API.

    @property
    def address(self) -> tuple[str, int]:
        """The bound listening address (after :meth:`start`)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("rivers is not listening")
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    @property
    def active_connections(self) -> int:
        return len(self._proxies)

    async def start(self) -> None:
        """Bind, run the first health-check round, start accepting and the periodic checks."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Proxy(self).client,
            self.listen_host or None,
            self.listen_port,
            backlog=socket.SOMAXCONN,
            start_serving=False,
        )
        try:
            await self._first_check()
            await self._server.start_serving()
        except BaseException:
            self._server.close()
            raise
        self._checker = asyncio.create_task(self._check_loop(), name="rivers-health")
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        _log(logging.INFO, "rivers started", listen=f"{shown}:{port}")

    async def serve(self) -> None:
        """Start if needed, then wait until :meth:`close` has finished."""
        await self.start()
        await self._closed.wait()

    async def check_health(self) -> None:
        """Run one health-check round now (the periodic checker does this every interval)."""
        await asyncio.gather(*(self._check(u, first=False) for u in self.upstreams))

    async def close(self) -> None:
        """Graceful shutdown: stop accepting, wait ``shutdown_timeout`` (0: for ever), abort."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            if self._server is not None:
                self._server.close()
            if self._proxies:
                _log(logging.INFO, "shutting down", connections=len(self._proxies))
                timeout = self.shutdown_timeout if self.shutdown_timeout > 0 else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), timeout)
                for proxy in list(self._proxies):
                    proxy.abort("shutdown timed out")
                await self._idle.wait()
            if self._checker is not None:
                self._checker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._checker
            if self._server is not None:
                await self._server.wait_closed()
        finally:
            self._closed.set()

    # Connections.

    def _accepted(self, proxy: _Proxy) -> None:
        self._proxies.add(proxy)
        self._idle.clear()
        proxy.dialer = asyncio.get_running_loop().create_task(proxy.dial())

    def _finished(self, proxy: _Proxy) -> None:
        self._proxies.discard(proxy)
        if not self._proxies:
            self._idle.set()

    # Health checks.

    async def _check(self, upstream: Upstream, *, first: bool) -> None:
        try:
            sock = await upstream.dial(self.dial_timeout, self.dial_keep_alive)
        except (OSError, TimeoutError) as exc:
            if first or upstream.healthy:
                _log(
                    logging.ERROR,
                    "an upstream becomes unhealthy",
                    address=upstream.address,
                    error=str(exc) or "dial timeout",
                )
                upstream.set_healthy(False)
            return
        sock.close()
        if first or not upstream.healthy:
            _log(logging.INFO, "an upstream becomes healthy", address=upstream.address)
            upstream.set_healthy(True)

    async def _first_check(self) -> None:
        """The first round; return once an upstream is healthy or all have answered."""
        pending = {asyncio.create_task(self._check(u, first=True)) for u in self.upstreams}
        try:
            while pending and not any(u.healthy for u in self.upstreams):
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pending:  # the rest finish in the background
                task.add_done_callback(_ignore_result)

    async def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += self.check_interval
            now = loop.time()
            if deadline < now:  # a round took longer than the interval: skip missed ticks
                deadline = now
            await asyncio.sleep(deadline - now)
            try:
                await self.check_health()
            except Exception as exc:  # keep checking whatever happened to one round
                _log(logging.ERROR, "health check failed", error=_describe(exc))


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


# --------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rivers",
        description="TCP reverse proxy to the healthy one of several upstream servers.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--listen", default="", help="listen address and port (address:port)")
    add("--upstreams", default="", help="comma-separated upstreams (addr1:port1,addr2:port2)")
    add("--dial-timeout", type=_duration, default="10s", help="timeout of a dial to an upstream")
    add("--dial-keep-alive", type=_duration, default="15s", help="TCP keep-alive period")
    add("--check-interval", type=_duration, default="20s", help="interval of health checks")
    add(
        "--shutdown-timeout",
        type=_duration,
        default="10s",
        help='time to wait for connections on shutdown ("0": no limit)',
    )
    add("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    return parser


class _Formatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = time.gmtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


def _build(args: argparse.Namespace) -> Rivers:
    if not args.upstreams:
        raise ValueError("--upstreams is blank")
    if not args.listen:
        raise ValueError("--listen is blank")
    upstreams = [a.strip() for a in args.upstreams.split(",")]
    return Rivers(
        args.listen,
        upstreams,
        dial_timeout=args.dial_timeout,
        dial_keep_alive=args.dial_keep_alive,
        check_interval=args.check_interval,
        shutdown_timeout=args.shutdown_timeout,
    )


async def _run(rivers: Rivers) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await rivers.start()
    await stop.wait()
    _log(logging.INFO, "signal received, shutting down")
    await rivers.close()


def _raise_nofile_limit() -> None:
    """Raise the soft open-files limit to the hard one, as Go's runtime does at start."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> int:
    """The ``rivers`` command: 0 after a signal, 1 on a runtime error, 2 on bad flags."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        rivers = _build(args)
    except ValueError as exc:
        parser.error(str(exc))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("time=%(asctime)s level=%(levelname)s msg=%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(args.loglevel.upper())
    logger.propagate = False
    _raise_nofile_limit()
    try:
        asyncio.run(_run(rivers))
    except OSError as exc:
        print(f"rivers: {_describe(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
