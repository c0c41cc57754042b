"""``ckecli reboot-queue|rq`` and ``ckecli repair-queue`` on a real SQLite event log.

Each test runs the commands in this process (``run_cli`` with argv and stdin
patched: the same error handling as ``main()``), against a log holding the
six-node test cluster with its repair procedure. Refused input must leave the
log byte for byte as it was (compared through the export).
"""

from __future__ import annotations

import datetime
import io
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from cke_adapters.eventlog import EventLog, open_event_log
from ckecli_runner import CKECLI, Cli, inproc_cli

from cke_core.queues import RebootQueueEntry, RebootStatus, RepairStatus
from cke_core.testing import FIXTURE_REPAIR, fixture_cluster
from cke_core.timefmt import UTC
from cke_daemon.cli.queues import simple_table

T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A log with the test cluster (workers 10.0.0.14-16; repair type1/op1)."""
    path = tmp_path / "cke.db"
    log = open_event_log(f"sqlite:///{path}")
    log.set_constraint("control-plane-count", "3", at=T0)
    log.set_spec(fixture_cluster(repair=FIXTURE_REPAIR), at=T0)
    log.close()
    return path


@pytest.fixture
def cli(db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("CKE_EVENT_LOG", str(db))
    return inproc_cli(monkeypatch, capsys)


@pytest.fixture
def reader(db: Path) -> Iterator[Callable[[], EventLog]]:
    opened: list[EventLog] = []

    def open_() -> EventLog:
        log = open_event_log(str(db), create=False)
        opened.append(log)
        return log

    yield open_
    for log in opened:
        log.close()


def exported(db: Path) -> str:
    log = open_event_log(str(db), create=False)
    try:
        buffer = io.StringIO()
        log.export_jsonl(buffer)
        return buffer.getvalue()
    finally:
        log.close()


def refused(cli: Cli, db: Path, *args: str, stdin: str = "") -> str:
    """Run a command that must fail: exit 1, one line on stderr, log unchanged."""
    before = exported(db)
    result = cli(*args, stdin=stdin)
    assert result.code == 1, result
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith("ckecli: ")
    assert result.out == ""
    assert exported(db) == before
    return result.err.removeprefix("ckecli: ").rstrip("\n")


# ---------------------------------------------------------------------------
# reboot-queue
# ---------------------------------------------------------------------------


def test_reboot_queue_add_and_list(cli: Cli, tmp_path: Path) -> None:
    assert cli("reboot-queue", "list").out == "[]\n"
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("10.0.0.14\n  10.0.0.15\t\n")
    added = cli("reboot-queue", "add", nodes)
    assert (added.code, added.out) == (0, "")
    assert added.err == "reboot queue: added entries 0, 1\n"
    assert cli("rq", "add", "-", stdin="10.0.0.16").err == "reboot queue: added entry 2\n"
    listed = cli("rq", "list")
    entries = json.loads(listed.out)
    assert [(e["index"], e["node"], e["status"]) for e in entries] == [
        ("0", "10.0.0.14", "queued"),
        ("1", "10.0.0.15", "queued"),
        ("2", "10.0.0.16", "queued"),
    ]
    assert entries[0] == {
        "index": "0",
        "node": "10.0.0.14",
        "status": "queued",
        "last_transition_time": "0001-01-01T00:00:00Z",
        "drain_backoff_count": 0,
        "drain_backoff_expire": "0001-01-01T00:00:00Z",
    }
    # Go's encoder with a four-space indent, as CKE prints it.
    assert listed.out.startswith('[\n    {\n        "index": "0",\n        "node": "10.0.0.14",')
    assert listed.out.endswith("    }\n]\n")


def test_reboot_queue_add_refuses_unknown_nodes_and_adds_nothing(
    cli: Cli, db: Path, tmp_path: Path
) -> None:
    message = refused(cli, db, "rq", "add", "-", stdin="10.0.0.14 10.9.9.9 10.0.0.15")
    assert message == "10.9.9.9 is not a node of the cluster"
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xff\xfe\x00")
    assert "not UTF-8" in refused(cli, db, "rq", "add", str(garbage))
    assert refused(cli, db, "rq", "add", str(tmp_path / "none")).endswith("no such file")
    assert cli("rq", "list").out == "[]\n"


def test_reboot_queue_add_of_an_empty_file_adds_nothing(cli: Cli, db: Path) -> None:
    before = exported(db)
    result = cli("rq", "add", "-", stdin=" \n")
    assert result.code == 0
    assert result.err == "ckecli: standard input names no node; nothing added\n"
    assert exported(db) == before


def test_reboot_queue_add_needs_a_cluster(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty.db"
    open_event_log(f"sqlite:///{empty}").close()
    monkeypatch.setenv("CKE_EVENT_LOG", str(empty))
    message = refused(cli, empty, "rq", "add", "-", stdin="10.0.0.14")
    assert message.startswith("no cluster configuration in the event log")


def test_reboot_queue_cancel(cli: Cli, db: Path, reader: Callable[[], EventLog]) -> None:
    cli("rq", "add", "-", stdin="10.0.0.14 10.0.0.15 10.0.0.16")
    assert cli("rq", "cancel", "1").err == "reboot queue: cancelled entry 1\n"
    again = cli("rq", "cancel", "1")
    assert (again.code, again.err) == (0, "reboot queue: entry 1 was already cancelled\n")
    assert refused(cli, db, "rq", "cancel", "7") == "reboot queue has no entry 7"
    assert refused(cli, db, "rq", "cancel", "x") == "INDEX must be an integer, got 'x'"
    assert refused(cli, db, "rq", "cancel", "--", "-1") == (
        "INDEX must be an integer >= 0, got '-1'"
    )
    assert cli("rq", "cancel-all").err == "reboot queue: cancelled entries 0, 2\n"
    assert cli("rq", "cancel-all").err == "reboot queue: cancelled no entries\n"
    queue = reader().reboot_queue()
    assert queue is not None
    assert {e.status for e in queue.entries()} == {RebootStatus.CANCELLED}


def test_reboot_queue_reset_backoff(cli: Cli, db: Path, reader: Callable[[], EventLog]) -> None:
    cli("rq", "add", "-", stdin="10.0.0.14 10.0.0.15")
    log = reader()
    expire = T0 + datetime.timedelta(minutes=10)
    queue = log.reboot_queue()
    assert queue is not None
    entry = queue.entry(1)
    draining = attrs.evolve(entry, status=RebootStatus.DRAINING, last_transition_time=T0)
    log.reboot_queue_update(draining, at=T0)
    log.reboot_queue_update(
        attrs.evolve(
            draining,
            status=RebootStatus.QUEUED,
            drain_backoff_count=1,
            drain_backoff_expire=expire,
        ),
        at=T0,
    )
    listed = json.loads(cli("rq", "list").out)
    assert listed[1]["drain_backoff_count"] == 1
    assert listed[1]["drain_backoff_expire"] == "2024-05-01T12:10:00Z"
    assert cli("rq", "reset-backoff").err == "reboot queue: reset the drain backoff of entry 1\n"
    after = json.loads(cli("rq", "list").out)[1]
    assert (after["drain_backoff_count"], after["drain_backoff_expire"]) == (
        0,
        "0001-01-01T00:00:00Z",
    )
    assert after["status"] == "queued"


def test_reboot_queue_enable_disable(cli: Cli) -> None:
    assert cli("rq", "is-enabled").out == "true\n"
    assert cli("rq", "disable").err == "reboot queue disabled\n"
    assert cli("rq", "disable").err == "reboot queue was already disabled\n"
    assert cli("reboot-queue", "is-enabled").out == "false\n"
    assert cli("rq", "enable").err == "reboot queue enabled\n"
    assert cli("rq", "is-enabled").out == "true\n"


def test_reboot_queue_list_simple(cli: Cli) -> None:
    cli("rq", "add", "-", stdin="10.0.0.14 10.0.0.15")
    cli("rq", "cancel", "1")
    assert cli("rq", "list", "-o", "simple").out == (
        "Index Node      Status    LastTransitionTime   DrainBackOffCount DrainBackOffExpire\n"
        "0     10.0.0.14 queued    0001-01-01T00:00:00Z 0                 0001-01-01T00:00:00Z \n"
        "1     10.0.0.15 cancelled 0001-01-01T00:00:00Z 0                 0001-01-01T00:00:00Z \n"
    )


def test_simple_table_pads_like_go_tabwriter() -> None:
    assert simple_table([]) == (
        "Index Node Status LastTransitionTime DrainBackOffCount DrainBackOffExpire\n"
    )
    entry = RebootQueueEntry(
        index=12,
        node="10.0.0.100",
        status=RebootStatus.DRAINING,
        last_transition_time=datetime.datetime(2024, 5, 1, 12, 0, 1, 500, tzinfo=UTC),
        drain_backoff_count=3,
    )
    lines = simple_table([entry]).splitlines()
    assert lines[1] == (
        "12    10.0.0.100 draining 2024-05-01T12:00:01Z 3                 0001-01-01T00:00:00Z "
    )
    assert lines[0].index("Node") == lines[1].index("10.0.0.100")
    assert lines[0].index("DrainBackOffExpire") == lines[1].index("0001")


# ---------------------------------------------------------------------------
# repair-queue
# ---------------------------------------------------------------------------


def test_repair_queue_add_list_delete(cli: Cli, db: Path) -> None:
    assert cli("repair-queue", "list").out == "[]\n"
    first = cli("repair-queue", "add", "op1", "type1", "10.0.0.14", "SN-1")
    assert (first.code, first.err) == (0, "repair queue: added entry 0\n")
    # A machine outside the cluster may be repaired (without a drain).
    assert cli("repair-queue", "add", "op1", "type1", "10.1.1.1").err == (
        "repair queue: added entry 1\n"
    )
    entries = json.loads(cli("repair-queue", "list").out)
    assert entries[0] == {
        "index": "0",
        "address": "10.0.0.14",
        "nodename": "",
        "serial": "SN-1",
        "machine_type": "type1",
        "operation": "op1",
        "status": "queued",
        "step": 0,
        "step_status": "waiting",
        "deleted": False,
        "last_transition_time": "0001-01-01T00:00:00Z",
        "drain_backoff_count": 0,
        "drain_backoff_expire": "0001-01-01T00:00:00Z",
    }
    assert (entries[1]["address"], entries[1]["serial"]) == ("10.1.1.1", "")
    assert cli("repair-queue", "delete", "1").err == "repair queue: deleted entry 1\n"
    assert cli("repair-queue", "delete", "1").err == "repair queue: entry 1 was already deleted\n"
    assert [e["deleted"] for e in json.loads(cli("repair-queue", "list").out)] == [False, True]
    assert refused(cli, db, "repair-queue", "delete", "5") == "repair queue has no entry 5"
    assert refused(cli, db, "repair-queue", "delete", "1x") == "INDEX must be an integer, got '1x'"


def test_repair_queue_add_refuses_unknown_operations(cli: Cli, db: Path) -> None:
    assert refused(cli, db, "repair-queue", "add", "op9", "type1", "10.0.0.14") == (
        "no repair operation 'op9' for machine type 'type1' in cluster.yml"
    )
    assert refused(cli, db, "repair-queue", "add", "op1", "type9", "10.0.0.14") == (
        "no repair operation 'op1' for machine type 'type9' in cluster.yml"
    )
    assert refused(cli, db, "repair-queue", "add", "op1", "type1", "") == (
        "a repair queue entry needs an address, got ''"
    )
    assert cli("repair-queue", "list").out == "[]\n"


def test_repair_queue_missing_argument_is_a_usage_error(cli: Cli, db: Path) -> None:
    before = exported(db)
    result = cli("repair-queue", "add", "op1", "type1")
    assert result.code == 2
    assert "Missing argument 'ADDRESS'" in result.err
    assert exported(db) == before


def test_repair_queue_delete_finished_and_unfinished(
    cli: Cli, reader: Callable[[], EventLog]
) -> None:
    for address in ("10.0.0.14", "10.0.0.15", "10.0.0.16"):
        cli("repair-queue", "add", "op1", "type1", address)
    log = reader()
    queue = log.repair_queue()
    assert queue is not None
    log.repair_queue_update(attrs.evolve(queue.entry(1), status=RepairStatus.SUCCEEDED), at=T0)
    log.repair_queue_update(attrs.evolve(queue.entry(2), status=RepairStatus.FAILED), at=T0)
    assert cli("repair-queue", "delete-finished").err == "repair queue: deleted entries 1, 2\n"
    assert cli("repair-queue", "delete-finished").err == "repair queue: deleted no entries\n"
    assert cli("repair-queue", "delete-unfinished").err == "repair queue: deleted entry 0\n"
    assert [e["deleted"] for e in json.loads(cli("repair-queue", "list").out)] == [True] * 3


def test_repair_queue_enable_disable_reset_backoff(cli: Cli) -> None:
    assert cli("repair-queue", "is-enabled").out == "true\n"
    assert cli("repair-queue", "disable").err == "repair queue disabled\n"
    assert cli("repair-queue", "is-enabled").out == "false\n"
    assert cli("repair-queue", "enable").err == "repair queue enabled\n"
    cli("repair-queue", "add", "op1", "type1", "10.0.0.14")
    assert cli("repair-queue", "reset-backoff").err == (
        "repair queue: reset the drain backoff of no entries\n"
    )


def test_repair_queue_wait(cli: Cli, db: Path, reader: Callable[[], EventLog]) -> None:
    assert cli("repair-queue", "wait").out == "repair queue is empty\n"
    cli("repair-queue", "add", "op1", "type1", "10.0.0.14")
    assert refused(cli, db, "repair-queue", "wait", "--timeout-seconds", "0") == (
        "repair queue is not empty"
    )
    bad = cli("repair-queue", "wait", "--interval-seconds", "0")
    assert (bad.code, bad.err) == (1, "ckecli: --interval-seconds must be greater than zero\n")
    log = reader()
    log.repair_queue_delete(0, at=T0)
    log.repair_queue_remove(0, at=T0)
    assert cli("repair-queue", "wait", "--timeout-seconds", "0").out == "repair queue is empty\n"


def test_repair_queue_wait_returns_when_another_process_empties_the_queue(
    db: Path, reader: Callable[[], EventLog]
) -> None:
    """The real command in a subprocess polls the store until the engine (here:
    this process) has dequeued the last entry."""
    log = reader()
    log.repair_queue_add("op1", "type1", "10.0.0.14", at=T0)
    waiting = subprocess.Popen(
        [CKECLI, "--store", str(db), "repair-queue", "wait", "--interval-seconds", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiting.stdout is not None
        assert waiting.stdout.readline() == "repair queue entries: 1\n"
        log.repair_queue_delete(0, at=T0)
        log.repair_queue_remove(0, at=T0)
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, err
    assert out.endswith("repair queue is empty\n")


def test_read_only_verbs_need_an_existing_log(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CKE_EVENT_LOG", str(tmp_path / "none.db"))
    for verb in (("rq", "list"), ("repair-queue", "is-enabled")):
        result = cli(*verb)
        assert result.code == 1
        assert "no event log at" in result.err
    assert not (tmp_path / "none.db").exists()
