"""Benchmark the event store: append throughput of SQLite and of etcd.

Two recorders behind eventsourcing's ``ApplicationRecorder`` API:

* SQLite: ``eventsourcing.sqlite`` (``SQLiteApplicationRecorder``), a database file
  in a temporary directory;
* etcd: ``cke_adapters.eventstore.etcd`` against a single etcd member started here
  (``cke_adapters.local_etcd``, ``--max-txn-ops 1024``), data directory in a
  temporary directory, with and without leader fencing.

Each is measured appending single events (one ``insert_events`` call, i.e. one
transaction, per event) and batches of 100 events (one transaction per batch),
plus reading the notification log back in pages of 500. Every figure is the
median over ``--repeat`` rounds; the backends alternate within a round.

Usage::

    .venv/bin/python benchmarks/eventstore.py            # print the table
    .venv/bin/python benchmarks/eventstore.py --write    # and update docs/benchmarks.md
    .venv/bin/python benchmarks/eventstore.py --shm      # data on /dev/shm (no disk fsync)

``--write`` replaces the text between ``<!-- eventstore:begin -->`` and
``<!-- eventstore:end -->`` in ``docs/benchmarks.md`` (appends the section if
missing) and keeps everything else.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

from cke_adapters.eventstore.etcd import EtcdApplicationRecorder, EtcdDatastore
from cke_adapters.local_etcd import LocalEtcd
from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- eventstore:begin -->", "<!-- eventstore:end -->"
STATE = b'{"payload":"' + b"x" * 180 + b'"}'  # ~200-byte events
BATCH = 100
TARGET_BATCHED = 1000.0  # events/s, the goal for etcd with batches


def _appender(rec: ApplicationRecorder, batch: int) -> Callable[[int], int]:
    """A function appending ``n`` transactions of ``batch`` events to fresh aggregates."""

    def append(n: int) -> int:
        for _ in range(n):
            oid = uuid4()
            rec.insert_events(
                [
                    StoredEvent(originator_id=oid, originator_version=v, topic="t", state=STATE)
                    for v in range(batch)
                ]
            )
        return n * batch

    return append


def _reader(rec: ApplicationRecorder) -> Callable[[int], int]:
    def read(_n: int) -> int:
        count, start = 0, 1
        while True:
            page = rec.select_notifications(start, 500)
            count += len(page)
            if len(page) < 500:
                return count
            start = page[-1].id + 1

    return read


def _rate(fn: Callable[[int], int], n: int) -> float:
    t0 = time.perf_counter()
    events = fn(n)
    return events / (time.perf_counter() - t0)


def run(args: argparse.Namespace) -> str:
    base = "/dev/shm" if args.shm else None
    tmp = Path(tempfile.mkdtemp(prefix="cke-bench-", dir=base))
    etcd = LocalEtcd(
        max_txn_ops=1024,
        quota_backend_bytes=2 * 1024**3,
        data_dir=tmp / "etcd",
        use_shm=args.shm,
    )
    etcd.start()
    try:
        sqlite_ds = SQLiteDatastore(db_name=str(tmp / "events.sqlite"))
        sqlite_rec = SQLiteApplicationRecorder(sqlite_ds)
        sqlite_rec.create_table()
        etcd_ds = EtcdDatastore.connect(etcd.endpoints, max_txn_ops=1024, prefix="/bench/plain/")
        fenced_ds = EtcdDatastore.connect(etcd.endpoints, max_txn_ops=1024, prefix="/bench/fenced/")
        leader_key = b"/bench/leader/1"
        fenced_ds.client.put(leader_key, b"bench")
        fenced_ds.leader_key = leader_key
        recorders: dict[str, ApplicationRecorder] = {
            "SQLite (eventsourcing.sqlite)": sqlite_rec,
            "etcd": EtcdApplicationRecorder(etcd_ds),
            "etcd, fenced on a leader key": EtcdApplicationRecorder(fenced_ds),
        }
        measures: list[tuple[str, int, Callable[[ApplicationRecorder], Callable[[int], int]]]] = [
            ("append, 1 event per transaction", args.singles, lambda r: _appender(r, 1)),
            (
                f"append, {BATCH} events per transaction",
                args.batches,
                lambda r: _appender(r, BATCH),
            ),
            ("read the log, pages of 500", 1, _reader),
        ]
        results: dict[tuple[str, str], list[float]] = {}
        for rec in recorders.values():  # warm up
            _appender(rec, 1)(5)
            _appender(rec, BATCH)(2)
        for _ in range(args.repeat):
            for label, n, make in measures:
                for name, rec in recorders.items():
                    results.setdefault((label, name), []).append(_rate(make(rec), n))
        total = {name: rec.max_notification_id() or 0 for name, rec in recorders.items()}
        size = etcd_size(etcd_ds)
        etcd_ds.close()
        fenced_ds.close()
        sqlite_ds.close()
    finally:
        etcd.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return render(args, measures, recorders, results, total, size)


def etcd_size(ds: EtcdDatastore) -> int:
    from pyetcd import etcdrpc  # type: ignore[import-untyped]

    client = ds.client
    status = client.maintenancestub.Status(
        etcdrpc.StatusRequest(),
        10,
        credentials=client.call_credentials,
        metadata=client.metadata,
    )
    return int(status.dbSize)


def render(
    args: argparse.Namespace,
    measures: list[tuple[str, int, Any]],
    recorders: dict[str, ApplicationRecorder],
    results: dict[tuple[str, str], list[float]],
    total: dict[str, int],
    etcd_db_size: int,
) -> str:
    names = list(recorders)
    m = {
        "date": datetime.date.today().isoformat(),
        "nproc": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": f"CPython {platform.python_version()}",
        "os": platform.platform(terse=True),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    rows = []
    for label, _n, _make in measures:
        med = {name: statistics.median(results[(label, name)]) for name in names}
        ratio = med[names[1]] / med[names[0]]
        rows.append((label, *(f"{med[name]:,.0f}" for name in names), f"{ratio:.2f}x"))
    batched = statistics.median(results[(measures[1][0], names[1])])
    verdict = "met" if batched >= TARGET_BATCHED else "NOT met"
    storage = "/dev/shm (tmpfs: fsync is free)" if args.shm else "a temporary directory on disk"
    header = ("measure (events/s, median)", *names, "etcd / SQLite")
    lines = [
        "## Event store",
        "",
        f"Measured {m['date']} on {m['nproc']} CPUs ({m['cpu']}), {m['python']}, {m['os']}, "
        f"load average {m['load']} at the start (the machine is shared), with "
        f"`.venv/bin/python benchmarks/eventstore.py{' --shm' if args.shm else ''} --write`.",
        "",
        f"One process appends ~200-byte events to fresh aggregates through eventsourcing's "
        f"`ApplicationRecorder.insert_events`; data in {storage}. etcd 3.4 is one member "
        "on 127.0.0.1 (`--max-txn-ops 1024`), written through "
        "`cke_adapters.eventstore.etcd` (one transaction per call: counter "
        'compare-and-swap, notification and index keys); "fenced" adds the leader-key '
        f"compare to every transaction. Medians of {args.repeat} rounds of "
        f"{args.singles} single-event and {args.batches} {BATCH}-event transactions; "
        "the backends alternate within a round.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"Target for etcd, batched: >= {TARGET_BATCHED:,.0f} events/s: **{verdict}** "
        f"({batched:,.0f} events/s). Events written per backend: "
        + ", ".join(f"{name} {total[name]:,}" for name in names)
        + f"; etcd backend size at the end {etcd_db_size / 1024**2:.1f} MiB (both etcd "
        "prefixes, uncompacted).",
    ]
    return "\n".join(lines) + "\n"


def write(section: str) -> None:
    block = f"{BEGIN}\n{section}{END}\n"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        _, after = rest.split(END, 1)
        text = before + block + after.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--singles", type=int, default=300, help="1-event appends per round")
    parser.add_argument("--batches", type=int, default=30, help="100-event appends per round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (5)")
    parser.add_argument("--shm", action="store_true", help="data on /dev/shm instead of disk")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    section = run(args)
    print(section)
    if args.write:
        write(section)
        print(f"updated {DOC.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
