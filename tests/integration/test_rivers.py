"""rivers against real sockets on 127.0.0.1: backends, rivers and clients share one event loop.

Every test runs under a wall-clock bound (``run``); health checks use short intervals.
The CLI tests start ``python -m cke_daemon.rivers`` as a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from cke_daemon.rivers import (
    WRITE_BUFFER_HIGH,
    Rivers,
    parse_duration,
    parse_hostport,
)
from cke_daemon.rivers import main as rivers_main

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
SLOW = 1.5  # seconds a backend takes to answer a "slow" request


def run(factory: Callable[[], Awaitable[None]], timeout: float = 10.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(factory(), timeout)

    asyncio.run(bounded())


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Backend:
    """An upstream: greets with its name, echoes (``slow…`` requests after a delay),
    answers EOF with ``EOF-ACK``. ``mode="stall"``: greets, then never reads;
    ``mode="halfclose"``: greets, sends a line and EOF, then records what the client sends."""

    def __init__(self, name: str, mode: str = "echo") -> None:
        self.name = name
        self.mode = mode
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.received: list[bytes] = []
        self.connections = 0

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._handle, HOST, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def stop_listening(self) -> None:
        """Close the listener only: established connections stay up."""
        if self.server is not None:
            self.server.close()
            self.server = None

    def kill(self) -> None:
        """Close the listener and reset every connection."""
        self.stop_listening()
        for writer in list(self.writers):
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        self.connections += 1
        try:
            writer.write(f"{self.name}\n".encode())
            if self.mode == "stall":
                await asyncio.sleep(3600)
            if self.mode == "halfclose":
                writer.write(b"early\n")
                writer.write_eof()
                self.received.append(await reader.read())
                return
            while data := await reader.read(1 << 20):
                if data.startswith(b"slow"):
                    await asyncio.sleep(SLOW)
                writer.write(data)
                await writer.drain()
            writer.write(b"EOF-ACK\n")
            await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


@contextlib.asynccontextmanager
async def setup(
    *backends: Backend,
    extra: tuple[str, ...] = (),
    check_interval: float = 60.0,
    shutdown_timeout: float = 1.0,
    dial_timeout: float = 1.0,
    seed: int | None = 1,
) -> AsyncIterator[Rivers]:
    """Start the backends and a rivers in front of them (plus ``extra`` upstreams)."""
    for backend in backends:
        if backend.server is None:
            await backend.start()
    rivers = Rivers(
        f"{HOST}:0",
        [b.address for b in backends] + list(extra),
        dial_timeout=dial_timeout,
        check_interval=check_interval,
        shutdown_timeout=shutdown_timeout,
        rng=random.Random(seed) if seed is not None else None,
    )
    await rivers.start()
    try:
        yield rivers
    finally:
        for backend in backends:
            backend.kill()
        rivers.shutdown_timeout = 0.01
        await rivers.close()


async def connect(rivers: Rivers) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """Open a client connection; return it with the greeting (the backend's name, or '')."""
    reader, writer = await asyncio.open_connection(*rivers.address)
    try:
        line = await asyncio.wait_for(reader.readline(), 2.0)
    except ConnectionError:
        line = b""
    return reader, writer, line.decode().strip()


async def read_to_end(reader: asyncio.StreamReader, timeout: float = 2.0) -> bytes:
    """Everything until EOF; a reset counts as the end too."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionError:
        return b""


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, msg: bytes) -> bytes:
    writer.write(msg)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(msg)), 2.0)


async def wait_until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    fields = (r.__dict__.get("fields", {}) for r in caplog.records if r.name == "cke.rivers")
    return [f for f in fields if f.get("type") == "access"]


# --------------------------------------------------------------------------- proxying


def test_large_payload_both_ways_intact(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cke.rivers")
    payload = os.urandom(24 << 20)

    async def scenario() -> None:
        async with setup(Backend("a")) as rivers:
            reader, writer, name = await connect(rivers)
            assert name == "a"

            async def send() -> None:
                for i in range(0, len(payload), 1 << 20):
                    writer.write(payload[i : i + (1 << 20)])
                    await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            got = await read_to_end(reader, 8.0)
            await sender
            assert len(got) == len(payload) + len(b"EOF-ACK\n")
            assert got == payload + b"EOF-ACK\n"
            writer.close()
            await wait_until(lambda: rivers.active_connections == 0)

    run(scenario, 15.0)
    (line,) = access_lines(caplog)
    assert line["bytes_from_client"] == len(payload)
    assert line["bytes_from_upstream"] == len(payload) + len(b"a\nEOF-ACK\n")
    assert line["upstream"].startswith(f"{HOST}:")
    assert line["client_addr"].startswith(f"{HOST}:")
    assert "error" not in line


def test_random_distribution_over_healthy_upstreams() -> None:
    async def scenario() -> None:
        backends = [Backend(n) for n in "abc"]
        async with setup(*backends, seed=None) as rivers:
            counts: Counter[str] = Counter()
            for _ in range(300):
                _, writer, name = await connect(rivers)
                counts[name] += 1
                writer.close()
            # Expected 100 each (sd ~8): bounds at about ±5 sd.
            assert set(counts) == {"a", "b", "c"}
            assert all(60 <= n <= 140 for n in counts.values()), counts

    run(scenario)


def test_next_upstream_on_dial_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cke.rivers")

    async def scenario() -> None:
        a, b = Backend("a"), Backend("b")
        async with setup(a, b) as rivers:
            a.stop_listening()  # still healthy for rivers: the next check is a minute away
            names = []
            for _ in range(20):
                _, writer, name = await connect(rivers)
                names.append(name)
                writer.close()
            assert names == ["b"] * 20
            # As in CKE, a failed dial does not change the health (the checker does).
            assert all(u.healthy for u in rivers.upstreams)

    run(scenario)
    warnings = [r for r in caplog.records if "failed to connect to upstream" in r.getMessage()]
    assert warnings
    assert all(r.levelno == logging.WARNING for r in warnings)


@contextlib.contextmanager
def hanging_listener() -> Iterator[str]:
    """A listener that completes one handshake, then lets every other dial hang: its
    accept queue (backlog 0) is full and nothing accepts, so SYNs are dropped."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(0)
        yield f"{HOST}:{listener.getsockname()[1]}"


def test_dial_timeout_moves_to_the_next_upstream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cke.rivers")

    async def scenario() -> None:
        with hanging_listener() as hanging:
            # The first check fills the accept queue (healthy); later dials hang.
            async with setup(Backend("b"), extra=(hanging,), dial_timeout=0.3) as rivers:
                assert all(u.healthy for u in rivers.upstreams)
                start = time.monotonic()
                for _ in range(6):
                    _, writer, name = await connect(rivers)
                    assert name == "b"
                    writer.close()
                assert time.monotonic() - start < 6 * 0.3 + 1
                await rivers.check_health()
                assert not rivers.upstreams[1].healthy

        with (
            hanging_listener() as hanging,
            socket.create_connection((HOST, int(hanging.rsplit(":", 1)[1]))),
        ):
            # Already hanging at the start: serving begins once one upstream is healthy.
            start = time.monotonic()
            async with setup(Backend("b"), extra=(hanging,), dial_timeout=2.0) as rivers:
                assert time.monotonic() - start < 1.0
                _, writer, name = await connect(rivers)
                assert name == "b"
                writer.close()
                await wait_until(lambda: not rivers.upstreams[1].healthy, 3.0)

    run(scenario)
    timeouts = [r for r in caplog.records if "dial timeout" in r.getMessage()]
    assert timeouts


def test_all_upstreams_down_closes_the_client_promptly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cke.rivers")

    async def scenario() -> None:
        # Never healthy: nothing listens there.
        async with setup(extra=(f"{HOST}:{free_port()}", f"{HOST}:{free_port()}")) as rivers:
            assert not any(u.healthy for u in rivers.upstreams)
            start = time.monotonic()
            reader, writer, name = await connect(rivers)
            assert name == ""
            assert await read_to_end(reader) == b""
            assert time.monotonic() - start < 0.5
            writer.close()
        # Healthy, but every dial fails.
        a, b = Backend("a"), Backend("b")
        async with setup(a, b) as rivers:
            a.stop_listening()
            b.stop_listening()
            start = time.monotonic()
            reader, writer, name = await connect(rivers)
            assert name == ""
            assert time.monotonic() - start < 0.5
            writer.close()

    run(scenario)
    errors = [f.get("error") for f in access_lines(caplog)]
    assert errors == ["no available upstream servers"] * 2


def test_upstream_killed_mid_stream() -> None:
    async def scenario() -> None:
        backends = {"a": Backend("a"), "b": Backend("b")}
        async with setup(*backends.values()) as rivers:
            reader, writer, name = await connect(rivers)
            assert await echo(reader, writer, b"x" * 100_000) == b"x" * 100_000
            backends[name].kill()
            start = time.monotonic()
            assert await read_to_end(reader) == b""
            assert time.monotonic() - start < 0.5
            writer.close()
            other = "b" if name == "a" else "a"
            for _ in range(10):
                r, w, n = await connect(rivers)
                assert n == other
                assert await echo(r, w, b"ping") == b"ping"
                w.close()

    run(scenario)


def test_unhealthy_upstream_loses_its_connections_then_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cke.rivers")

    async def scenario() -> None:
        a, b = Backend("a"), Backend("b")
        async with setup(a, b, check_interval=0.1) as rivers:
            conns = [await connect(rivers) for _ in range(12)]
            on_a = [c for c in conns if c[2] == "a"]
            on_b = [c for c in conns if c[2] == "b"]
            assert on_a
            assert on_b
            a.stop_listening()  # its established connections are still fine on its side
            for reader, _, _ in on_a:
                assert await read_to_end(reader, 1.0) == b""
            assert not rivers.upstreams[0].healthy
            for reader, writer, _ in on_b:  # the others are untouched
                assert await echo(reader, writer, b"still here") == b"still here"
            names = set()
            for _ in range(10):
                _, writer, name = await connect(rivers)
                names.add(name)
                writer.close()
            assert names == {"b"}
            await a.start()  # the same port again
            await wait_until(lambda: rivers.upstreams[0].healthy, 1.0)
            for _ in range(50):
                _, writer, name = await connect(rivers)
                writer.close()
                if name == "a":
                    break
            else:
                raise AssertionError("the recovered upstream is never used")
            for _, writer, _ in conns:
                writer.close()

    run(scenario)
    messages = [r.getMessage() for r in caplog.records]
    assert any("an upstream becomes unhealthy" in m for m in messages)
    errors = [f.get("error", "") for f in access_lines(caplog)]
    assert any("became unhealthy" in e for e in errors)


def test_slow_or_stalled_upstream_does_not_block_others() -> None:
    async def scenario() -> None:
        async with setup(Backend("a")) as rivers:
            # A request the backend answers after SLOW seconds; meanwhile others are served.
            slow_reader, slow_writer, _ = await connect(rivers)
            slow_writer.write(b"slow request")
            slow_task = asyncio.create_task(slow_reader.readexactly(len(b"slow request")))
            for _ in range(20):
                reader, writer, _ = await connect(rivers)
                assert await echo(reader, writer, b"quick") == b"quick"
                writer.close()
            assert not slow_task.done()
            assert await asyncio.wait_for(slow_task, SLOW + 1) == b"slow request"
            slow_writer.close()

        stalled = Backend("s", mode="stall")
        async with setup(stalled, Backend("q")) as rivers:
            # A connection to the upstream that never reads; push data into it.
            while True:
                reader, writer, name = await connect(rivers)
                if name == "s":
                    break
                writer.close()
            writer.transport.set_write_buffer_limits(1 << 20)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_flood(writer), 0.5)
            # rivers stopped reading that client: its buffer to the upstream stays bounded.
            for proxy in list(rivers._proxies):
                up = proxy.upstream_end.transport
                assert up is not None
                assert up.get_write_buffer_size() <= WRITE_BUFFER_HIGH + (256 << 10)
            done = 0
            while done < 5:  # (each echo is bounded by 2 s)
                r, w, name = await connect(rivers)
                if name == "q":
                    assert await echo(r, w, b"quick") == b"quick"
                    done += 1
                w.close()
            writer.transport.abort()

    run(scenario)


async def _flood(writer: asyncio.StreamWriter) -> None:
    chunk = b"z" * (1 << 20)
    while True:
        writer.write(chunk)
        await writer.drain()


def test_half_close_in_both_directions() -> None:
    async def scenario() -> None:
        async with setup(Backend("a")) as rivers:
            # The client stops writing and still gets the upstream's reply.
            reader, writer, _ = await connect(rivers)
            writer.write(b"hello")
            writer.write_eof()
            assert await read_to_end(reader) == b"helloEOF-ACK\n"
            writer.close()

        half = Backend("h", mode="halfclose")
        async with setup(half) as rivers:
            # The upstream stops writing first; the client's bytes still reach it.
            reader, writer, name = await connect(rivers)
            assert name == "h"
            assert await read_to_end(reader) == b"early\n"
            writer.write(b"late data")
            writer.write_eof()
            await wait_until(lambda: half.received == [b"late data"], 2.0)
            writer.close()

    run(scenario)


# --------------------------------------------------------------------------- shutdown


def test_graceful_shutdown_waits_for_an_active_connection() -> None:
    async def scenario() -> None:
        a = Backend("a")
        async with setup(a, shutdown_timeout=3.0) as rivers:
            reader, writer, _ = await connect(rivers)
            address = rivers.address
            start = time.monotonic()
            closing = asyncio.create_task(rivers.close())
            await asyncio.sleep(0.2)
            assert not closing.done()
            with pytest.raises(ConnectionRefusedError):  # the listener is closed
                await asyncio.open_connection(*address)
            assert await echo(reader, writer, b"still served") == b"still served"
            writer.write_eof()
            assert await read_to_end(reader) == b"EOF-ACK\n"
            writer.close()
            await asyncio.wait_for(closing, 1.0)
            assert time.monotonic() - start < 1.5

    run(scenario)


def test_graceful_shutdown_closes_connections_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cke.rivers")

    async def scenario() -> None:
        async with setup(Backend("a"), shutdown_timeout=0.5) as rivers:
            reader, writer, _ = await connect(rivers)
            start = time.monotonic()
            await rivers.close()
            elapsed = time.monotonic() - start
            assert 0.45 <= elapsed < 1.0
            assert await read_to_end(reader, 1.0) == b""
            assert rivers.active_connections == 0
            writer.close()

    run(scenario)
    assert [f.get("error") for f in access_lines(caplog)] == ["shutdown timed out"]


# --------------------------------------------------------------------------- command line


def rivers_cli(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cke_daemon.rivers", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen=127.0.0.1:0"], "--upstreams is blank"),
        (["--upstreams=127.0.0.1:1"], "--listen is blank"),
        (["--upstreams=a:1", "--listen=:1", "--dial-timeout=3"], "missing unit in duration"),
        (["--upstreams=a:1", "--listen=:1", "--check-interval=1x"], "unknown unit"),
        (["--upstreams=a:1", "--listen=:1", "--check-interval=0s"], "must be positive"),
        (["--upstreams=a", "--listen=:1"], "missing port"),
        (["--upstreams=a:1", "--listen=nohost"], "missing port"),
        (["--upstreams=a:99999", "--listen=:1"], "bad port"),
        (["--upstreams=a:1", "--listen=:1", "--bogus"], "unrecognized arguments"),
    ],
)
def test_cli_flag_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        rivers_main(args)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("rivers: error: ")
    assert message in err


def test_cli_flag_error_as_a_process() -> None:
    proc = rivers_cli("--listen=127.0.0.1:0", "--upstreams=h:1", "--shutdown-timeout=-1s")
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert out == ""
    assert err == "rivers: error: the shutdown timeout must not be negative\n"


def test_cli_listen_failure_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = rivers_cli(
            f"--listen={HOST}:{port}", f"--upstreams={HOST}:{free_port()}", "--dial-timeout=200ms"
        )
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert err.splitlines()[-1].startswith("rivers: ")
    assert "Traceback" not in err


@contextlib.contextmanager
def thread_echo_server() -> Iterator[int]:
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]

    def handle(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield port
    finally:
        listener.close()


def test_cli_serves_and_stops_on_sigterm() -> None:
    with thread_echo_server() as upstream:
        port = free_port()
        proc = rivers_cli(
            f"--listen={HOST}:{port}",
            f"--upstreams={HOST}:{upstream}",
            "--check-interval=100ms",
            "--shutdown-timeout=300ms",
        )
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    client = socket.create_connection((HOST, port), timeout=2)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "rivers did not start"
                    time.sleep(0.02)
            with client:
                client.sendall(b"through the CLI")
                assert client.recv(100) == b"through the CLI"
                start = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=5)
                # The open connection held the shutdown for its timeout, then was closed.
                assert 0.25 <= time.monotonic() - start < 3
                assert client.recv(100) == b""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
    assert "an upstream becomes healthy" in err
    assert 'msg="proxy ends" type=access' in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- parsing


def test_go_durations() -> None:
    assert parse_duration("10s") == 10
    assert parse_duration("1m") == 60
    assert parse_duration("500ms") == pytest.approx(0.5)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("0") == 0
    assert parse_duration("-1.5s") == pytest.approx(-1.5)
    assert parse_duration("300us") == pytest.approx(0.0003)
    for bad in ["", "1", "s", "1x", "1.2.3s", "--1s", "1s2"]:
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_host_port() -> None:
    assert parse_hostport("10.0.0.1:6443") == ("10.0.0.1", 6443)
    assert parse_hostport("[::1]:2379") == ("::1", 2379)
    assert parse_hostport(":16443", allow_empty_host=True) == ("", 16443)
    for bad in ["10.0.0.1", "::1:80", ":80", "h:x", "[::1]80"]:
        with pytest.raises(ValueError, match="invalid address"):
            parse_hostport(bad)
