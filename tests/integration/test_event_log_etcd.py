"""The event log's flows against a real etcd (``cke_adapters.local_etcd``):
the engine loop, history, replay, plan, a crash and the next leader, export and
import (etcd <-> SQLite, byte for byte), refused imports, fencing on a leader
key, follow, and ``ckecli`` with an ``etcd://`` store. Each test uses a fresh
key prefix."""

from __future__ import annotations

import datetime
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from cke_adapters.eventlog import (
    EventLog,
    FencedError,
    ImportRejected,
    open_event_log,
)
from cke_adapters.eventlog.simulated import initial_status, run_engine
from cke_adapters.local_etcd import EtcdNotFoundError, LocalEtcd
from ckecli_runner import inproc_cli
from missing import component_missing

from cke_core.phases import Phase
from cke_core.testing import fixture_cluster
from cke_core.timefmt import UTC

pytestmark = pytest.mark.integration

T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ADDRESSES = [n.address for n in fixture_cluster().nodes]


def at(minutes: int) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


@pytest.fixture(scope="module")
def etcd() -> Iterator[LocalEtcd]:
    server = LocalEtcd(max_txn_ops=1024)
    try:
        server.start()
    except EtcdNotFoundError as exc:
        component_missing(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def url(etcd: LocalEtcd) -> str:
    return f"etcd://{etcd.endpoints_env}/test/{uuid4().hex}/"


def configured(log: EventLog) -> EventLog:
    log.set_constraint("control-plane-count", "3", at=T0)
    log.set_spec(fixture_cluster(), at=T0)
    log.start_term("host-1", at=T0)
    return log


def converge(log: EventLog) -> EventLog:
    run = run_engine(configured(log), initial_status(ADDRESSES), T0)
    assert run.decisions[-1].phase is Phase.COMPLETED
    return log


def export_text(log: EventLog) -> str:
    buffer = io.StringIO()
    log.export_jsonl(buffer)
    return buffer.getvalue()


def test_engine_flow_history_replay_plan(url: str) -> None:
    log = converge(open_event_log(url))
    assert log.status() == {"phase": "completed", "timestamp": "2024-05-01T12:08:00Z"}
    assert [r["id"] for r in log.history(3)] == ["26", "25", "24"]
    report = log.replay()
    assert report.identical
    assert (report.decisions, report.events) == (8, log.count_events())
    assert log.replay(3).decisions == 2
    plan = log.plan(now=at(20))
    assert (plan.phase, plan.would_act) == ("completed", False)
    assert log.explain(3).startswith("Record 3: etcd-boot")
    log.close()


def test_the_same_history_exports_the_same_bytes_from_etcd_and_sqlite(
    url: str, tmp_path: Path
) -> None:
    on_etcd = converge(open_event_log(url))
    on_sqlite = converge(open_event_log(f"sqlite:///{tmp_path}/cke.db"))
    text = export_text(on_etcd)
    assert text == export_text(on_sqlite)
    on_etcd.close()
    on_sqlite.close()


def test_export_import_round_trips_through_etcd(url: str, etcd: LocalEtcd, tmp_path: Path) -> None:
    source = converge(open_event_log(f"sqlite:///{tmp_path}/source.db"))
    text = export_text(source)
    # etcd's default --max-txn-ops (128): the import is written in batches
    target = open_event_log(url + "?max-txn-ops=128")
    assert target.import_jsonl(io.StringIO(text)) == source.count_events()
    assert export_text(target) == text
    assert target.history() == source.history()
    assert target.replay().identical
    back = open_event_log(f"sqlite:///{tmp_path}/back.db")
    back.import_jsonl(io.StringIO(export_text(target)))
    assert export_text(back) == text
    for log in (source, target, back):
        log.close()


def test_refused_imports_leave_etcd_unchanged(url: str, tmp_path: Path) -> None:
    source = converge(open_event_log(f"sqlite:///{tmp_path}/source.db"))
    lines = export_text(source).split("\n")
    target = open_event_log(url)
    target.reboot_queue_enable(False, at=T0)
    before = export_text(target)
    corrupt = [*lines]
    corrupt[7] = corrupt[7][:-5]
    with pytest.raises(ImportRejected, match="line 8: not JSON"):
        target.import_jsonl(io.StringIO("\n".join(corrupt)))
    assert export_text(target) == before
    target.import_jsonl(io.StringIO("\n".join(lines)))
    after = export_text(target)
    with pytest.raises(ImportRejected, match="line 2: version conflict"):
        target.import_jsonl(io.StringIO("\n".join(lines)))
    assert export_text(target) == after
    source.close()
    target.close()


def test_crash_then_the_next_leader_cancels_the_orphaned_record(url: str) -> None:
    log = configured(open_event_log(url))
    run = run_engine(log, initial_status(ADDRESSES), T0, interrupt=lambda op: True)
    number = run.records[-1]
    del log
    reopened = open_event_log(url)
    assert reopened.history(1)[0]["status"] == "running"
    assert reopened.start_term("host-2", at=at(30)).cancelled_record == number
    view = reopened.history(1)[0]
    assert view["status"] == "cancelled"
    assert "cancelled by the new leader host-2 (term 2)" in view["error"]
    assert reopened.replay().identical
    reopened.close()


def test_writes_are_fenced_on_the_leader_key(url: str, etcd: LocalEtcd) -> None:
    leader_key = f"/test/leader/{uuid4().hex}"
    log = open_event_log(f"{url}?leader-key={leader_key}")
    with pytest.raises(FencedError, match="not the leader"):
        log.set_constraint("control-plane-count", "3", at=T0)
    assert log.count_events() == 0
    client: Any = etcd.client()
    client.put(leader_key, "host-1")
    log.set_constraint("control-plane-count", "3", at=T0)
    assert log.count_events() == 2
    log.set_leader_key(f"{leader_key}-gone")
    with pytest.raises(FencedError):
        log.register("etcd-start", ["10.0.0.11"], at=T0)
    log.set_leader_key(None)
    assert log.register("etcd-start", ["10.0.0.11"], at=T0) == 1
    client.close()
    log.close()


def test_follow_sees_another_writer(url: str) -> None:
    log = converge(open_event_log(url))
    stop = threading.Event()
    seen: list[dict[str, Any]] = []

    def write() -> None:
        writer = open_event_log(url)
        number = writer.register("etcd-start", ["10.0.0.11"], at=at(50))
        writer.cancelled(number, "no", at=at(51))
        writer.close()

    thread = threading.Thread(target=write)
    for view in log.follow(1, poll_interval=0.05, idle_timeout=30, stop=stop):
        seen.append(view)
        if len(seen) == 1:
            thread.start()
        if len(seen) == 3:
            stop.set()
    thread.join()
    assert [(v["id"], v["status"]) for v in seen] == [
        ("26", "completed"),
        ("27", "new"),
        ("27", "cancelled"),
    ]
    log.close()


def test_ckecli_with_an_etcd_store(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    converge(open_event_log(url)).close()

    cli = inproc_cli(monkeypatch, capsys, prefix=("--store", url))
    result = cli("history", "-n", "1", "-o", "json")
    assert (result.code, json.loads(result.out)["id"]) == (0, "26")
    assert cli("status").out.startswith('{"phase":"completed"')
    assert cli("plan").code == 0
    assert cli("replay").code == 0
    result = cli("events", "export")
    assert result.code == 0
    assert result.out.splitlines()[0] == '{"format":"cke-py/event-log","version":1}'
    monkeypatch.setenv("CKE_EVENT_LOG", url)
    assert inproc_cli(monkeypatch, capsys)("status").code == 0
