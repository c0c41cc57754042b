"""Benchmark rivers against a direct connection: throughput and added latency.

Three processes, as in production: a test server (threads, blocking sockets), ``rivers``
(``python -m cke_daemon.rivers``, access log on) and this client. Every measurement runs
direct and through rivers in one run, alternating, so the ratios compare like with like.

* upload: the client sends ``--size`` MiB, half-closes, the server answers with the count
  (so the half-close path is measured too);
* download: the server sends ``--size`` MiB and closes;
* round trip: ``--pings`` 64-byte request/response exchanges on one connection;
* connect: ``--connects`` new connections, each with one 64-byte exchange (rivers dials the
  upstream for each one).

Usage::

    .venv/bin/python benchmarks/rivers.py            # print the table
    .venv/bin/python benchmarks/rivers.py --write    # and update docs/benchmarks.md

``--write`` replaces the text between ``<!-- rivers:begin -->`` and ``<!-- rivers:end -->``
in ``docs/benchmarks.md`` (appends the section if missing) and keeps everything else.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- rivers:begin -->", "<!-- rivers:end -->"
CHUNK = 1 << 20
MIB = 1 << 20
PING = 64


# --------------------------------------------------------------------------- server


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise ConnectionError("unexpected EOF")
        buf += data
    return bytes(buf)


def _handle(conn: socket.socket) -> None:
    with conn, contextlib.suppress(OSError):  # rivers' health checks connect and close
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = _recv_exact(conn, 1)
        if mode == b"S":  # sink: count until EOF, answer the count
            buf = bytearray(CHUNK)
            total = 0
            while n := conn.recv_into(buf):
                total += n
            conn.sendall(struct.pack("!Q", total))
        elif mode == b"D":  # download: send the requested number of bytes
            (total,) = struct.unpack("!Q", _recv_exact(conn, 8))
            view = memoryview(bytes(CHUNK))
            while total > 0:
                n = min(total, CHUNK)
                conn.sendall(view[:n])
                total -= n
        elif mode == b"E":  # echo until EOF
            while data := conn.recv(65536):
                conn.sendall(data)


def serve() -> None:
    """The test server: prints its port, serves until stdin closes.

    A fixed pool of threads blocks in ``accept`` (starting a thread per connection
    costs milliseconds now and then, which would swamp the connect measurement).
    """
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    print(listener.getsockname()[1], flush=True)

    def worker() -> None:
        while True:
            conn, _ = listener.accept()
            _handle(conn)

    for _ in range(8):
        threading.Thread(target=worker, daemon=True).start()
    sys.stdin.read()


# --------------------------------------------------------------------------- client


def upload(port: int, size: int) -> float:
    """Seconds to send ``size`` bytes and get the server's count back."""
    view = memoryview(bytes(CHUNK))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.perf_counter()
        sock.sendall(b"S")
        left = size
        while left > 0:
            n = min(left, CHUNK)
            sock.sendall(view[:n])
            left -= n
        sock.shutdown(socket.SHUT_WR)
        (count,) = struct.unpack("!Q", _recv_exact(sock, 8))
        elapsed = time.perf_counter() - start
    if count != size:
        raise RuntimeError(f"sink counted {count} bytes, sent {size}")
    return elapsed


def download(port: int, size: int) -> float:
    """Seconds to receive ``size`` bytes."""
    buf = bytearray(CHUNK)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.perf_counter()
        sock.sendall(b"D" + struct.pack("!Q", size))
        total = 0
        while n := sock.recv_into(buf):
            total += n
        elapsed = time.perf_counter() - start
    if total != size:
        raise RuntimeError(f"received {total} bytes, expected {size}")
    return elapsed


def pings(port: int, count: int) -> list[float]:
    """Round-trip times (seconds) of ``count`` 64-byte exchanges on one connection."""
    msg = b"p" * PING
    times: list[float] = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"E")
        for i in range(count + count // 10):  # the first 10% warm up
            start = time.perf_counter()
            sock.sendall(msg)
            _recv_exact(sock, PING)
            if i >= count // 10:
                times.append(time.perf_counter() - start)
    return times


def connects(port: int, count: int) -> list[float]:
    """Times (seconds) of ``count`` connect + one 64-byte exchange + close."""
    msg = b"E" + b"c" * PING
    times: list[float] = []
    for _ in range(count):
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(msg)
            _recv_exact(sock, PING)
        times.append(time.perf_counter() - start)
    return times


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_echo(port: int, deadline: float) -> None:
    while True:
        try:
            connects(port, 1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


C_RELAY = r"""
/* Reference relay: fork per connection, poll, read/write with a 256 KiB buffer. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
static char buf[262144];
static int put(int fd, const char *p, ssize_t n) {
    while (n > 0) { ssize_t w = write(fd, p, n); if (w <= 0) return -1; p += w; n -= w; }
    return 0;
}
int main(int argc, char **argv) {
    int one = 1, ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    if (argc != 3) return 2;
    signal(SIGCHLD, SIG_IGN);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    a.sin_family = AF_INET; a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(atoi(argv[1]));
    if (bind(ls, (void *)&a, sizeof a) || listen(ls, 1024)) return 1;
    a.sin_port = htons(atoi(argv[2]));
    for (;;) {
        int c = accept(ls, 0, 0), u, open_ = 2;
        if (c < 0) continue;
        if (fork()) { close(c); continue; }
        close(ls);
        u = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(u, (void *)&a, sizeof a)) _exit(1);
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct pollfd p[2] = {{c, POLLIN, 0}, {u, POLLIN, 0}};
        int to[2] = {u, c};
        while (open_ > 0 && poll(p, 2, -1) > 0) {
            for (int i = 0; i < 2; i++) {
                if (p[i].fd < 0 || !p[i].revents) continue;
                ssize_t n = read(p[i].fd, buf, sizeof buf);
                if (n <= 0) { shutdown(to[i], SHUT_WR); p[i].fd = -1; open_--; }
                else if (put(to[i], buf, n)) _exit(0);
            }
        }
        _exit(0);
    }
}
"""


def build_c_relay(workdir: Path) -> Path | None:
    """Compile the reference C relay when a C compiler is at hand."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = workdir / "relay.c"
    binary = workdir / "relay"
    source.write_text(C_RELAY)
    done = subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=False)
    return binary if done.returncode == 0 else None


def start_processes(
    workdir: Path, with_c_relay: bool
) -> tuple[list[subprocess.Popen[Any]], dict[str, int]]:
    """Start the test server, rivers and (maybe) the C relay; return them and their ports."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    server_port = int(server.stdout.readline())
    procs: list[subprocess.Popen[Any]] = [server]
    ports = {"direct": server_port, "rivers": _free_port()}
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cke_daemon.rivers",
                f"--listen=127.0.0.1:{ports['rivers']}",
                f"--upstreams=127.0.0.1:{server_port}",
            ],
            cwd=ROOT,
            stderr=subprocess.DEVNULL,  # the access log is written (its cost is measured)
        )
    )
    relay = build_c_relay(workdir) if with_c_relay else None
    if relay is not None:
        ports["C relay"] = _free_port()
        procs.append(subprocess.Popen([str(relay), str(ports["C relay"]), str(server_port)]))
    for port in ports.values():
        _wait_echo(port, time.monotonic() + 10)
    return procs, ports


def stop_processes(procs: list[subprocess.Popen[Any]]) -> None:
    server, *others = procs
    for proc in others:
        proc.terminate()
        proc.wait(15)
    assert server.stdin is not None
    server.stdin.close()
    server.wait(5)


# --------------------------------------------------------------------------- report


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> dict[str, str]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        load = "?"
    return {
        "load": load,
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run(args: argparse.Namespace) -> str:
    m = machine()  # the load average before the run
    size: int = args.size * MIB
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="rivers-bench-") as tmp:
        procs, ports = start_processes(Path(tmp), not args.no_c_relay)
        try:
            jobs: list[tuple[str, Callable[[int], list[float]]]] = [
                ("upload", lambda p: [upload(p, size)]),
                ("download", lambda p: [download(p, size)]),
                ("pings", lambda p: pings(p, args.pings)),
                ("connects", lambda p: connects(p, args.connects)),
            ]
            names = list(ports)
            for rep in range(args.repeat):
                order = names if rep % 2 == 0 else names[::-1]
                for job_name, measure in jobs:
                    for target in order:
                        got = measure(ports[target])
                        results.setdefault(target, {}).setdefault(job_name, []).extend(got)
                print(f"round {rep + 1}/{args.repeat} done", file=sys.stderr)
        finally:
            stop_processes(procs)

    targets = list(results)  # direct, rivers[, C relay]

    def mibps(target: str, job: str) -> float:
        return size / MIB / statistics.median(results[target][job])

    rows: list[list[str]] = []
    for job, label in (("upload", "upload"), ("download", "download")):
        values = [mibps(t, job) for t in targets]
        row = [f"{label} throughput (MiB/s)", *(f"{v:,.0f}" for v in values)]
        rows.append([*row, f"{values[1] / values[0]:.2f}x"])
    for job, label in (("pings", "round trip"), ("connects", "connect + round trip")):
        for q, qlabel in ((0.5, "median"), (0.99, "p99")):
            values = [_pct(results[t][job], q) * 1e6 for t in targets]
            d, r = values[0], values[1]
            row = [f"{label} {qlabel} (µs)", *(f"{v:,.0f}" for v in values)]
            rows.append([*row, f"{r - d:+,.0f} ({r / d:.2f}x)"])

    header = ["measure", "direct", "through rivers"]
    if "C relay" in targets:
        header.append("through a C relay")
    header.append("rivers vs direct")
    lines = [
        "## rivers",
        "",
        f"Measured {m['date']} on {m['nproc']} CPUs ({m['cpu']}), {m['python']}, {m['os']}, "
        f"load average {m['load']} at the start (the machine is shared), "
        "with `.venv/bin/python benchmarks/rivers.py --write`.",
        "",
        "Client, test server and proxy are separate processes on 127.0.0.1; rivers logs "
        f"its access lines. Throughput: the median of {args.repeat} transfers of "
        f"{args.size} MiB each way (upload ends with a half-close). Round trip: "
        f"{args.pings * args.repeat:,} 64-byte exchanges on one connection; connect: "
        f"{args.connects * args.repeat:,} new connections with one exchange each "
        "(the proxy dials the upstream for every one). The targets alternate in every round.",
    ]
    if "C relay" in targets:
        lines += [
            "",
            "The C relay (compiled by the benchmark: fork per connection, poll, read/write "
            "with a 256 KiB buffer) shows what any user-space relay costs on this machine: "
            "the extra process and the second trip through the TCP stack take throughput "
            "and latency whatever the language.",
        ]
    lines += [
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    return "\n".join(lines) + "\n"


def write(section: str) -> None:
    block = f"{BEGIN}\n{section}{END}\n"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        _, after = rest.split(END, 1)
        after = after.lstrip("\n")
        text = before + block + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="MiB per transfer (256)")
    parser.add_argument("--pings", type=int, default=2000, help="round trips per round (2000)")
    parser.add_argument("--connects", type=int, default=500, help="connections per round (500)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (3)")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument(
        "--no-c-relay", action="store_true", help="skip the reference C relay (needs cc)"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    section = run(args)
    print(section)
    if args.write:
        write(section)
        print(f"updated {DOC.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
