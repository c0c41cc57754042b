"""The event log application (``cke_adapters.eventlog``) on SQLite files, and
the ``ckecli`` commands that use it (history, status, replay, plan, events,
cluster set/get, constraints)."""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from cke_adapters.eventlog import (
    ConflictError,
    EventLog,
    EventLogError,
    EventStoreUnavailableError,
    ImportRejected,
    NotFoundError,
    open_event_log,
    parse_store_url,
)
from cke_adapters.eventlog.jsonl import FORMAT, encode_line
from cke_adapters.eventlog.replaying import ConfigurationFolder, StatusRebuilder, rederive
from cke_adapters.eventlog.simulated import initial_status, run_engine
from cke_adapters.eventlog.store import StoreURLError
from ckecli_runner import Cli, inproc_cli
from eventsourcing.persistence import IntegrityError

from cke_core import strategy
from cke_core.history import (
    CLUSTER_CONFIGURATION_ID,
    DECISION_LOG_ID,
    HistoryError,
    RemovalReason,
    TransitionError,
    observations,
    rebuild_inputs,
)
from cke_core.phases import Phase
from cke_core.problems import ConfigError
from cke_core.queues import RepairStatus
from cke_core.strategy import Decision
from cke_core.testing import FIXTURE_REPAIR, fixture_cluster
from cke_core.timefmt import UTC

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ADDRESSES = [n.address for n in fixture_cluster().nodes]


def at(minutes: int) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def fresh(path: Path) -> EventLog:
    return open_event_log(f"sqlite:///{path}")


def configured(log: EventLog) -> EventLog:
    """The six-node test cluster (3 control planes) and its constraint."""
    log.set_constraint("control-plane-count", "3", at=T0)
    log.set_spec(fixture_cluster(), at=T0)
    log.start_term("host-1", at=T0)
    return log


@pytest.fixture(scope="session")
def converged_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log of a bootstrap to ``completed`` (closed, so the file is complete)."""
    path = tmp_path_factory.mktemp("golden") / "cke.db"
    log = configured(fresh(path))
    run = run_engine(log, initial_status(ADDRESSES), T0)
    assert run.decisions[-1].phase is Phase.COMPLETED
    log.close()
    return path


@pytest.fixture
def db(converged_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "cke.db"
    shutil.copyfile(converged_db, path)
    return path


@pytest.fixture
def log(db: Path) -> Iterator[EventLog]:
    opened = open_event_log(str(db), create=False)
    yield opened
    opened.close()


@pytest.fixture
def empty(tmp_path: Path) -> Iterator[EventLog]:
    opened = fresh(tmp_path / "empty.db")
    yield opened
    opened.close()


def export_text(log: EventLog) -> str:
    buffer = io.StringIO()
    log.export_jsonl(buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------------------
# Store URLs and opening
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/cke/events.db", "/var/lib/cke/events.db"),
        ("sqlite:////var/lib/cke/events.db", "/var/lib/cke/events.db"),
        ("sqlite:var/cke.db", "var/cke.db"),
        ("./var/cke-events.db", "./var/cke-events.db"),
        ("/abs/x.db", "/abs/x.db"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    parsed = parse_store_url(url)
    assert (parsed.kind, parsed.path) == ("sqlite", path)
    assert parsed.environment()["PERSISTENCE_MODULE"] == "eventsourcing.sqlite"


def test_etcd_urls() -> None:
    parsed = parse_store_url("etcd://10.0.0.1:2379,10.0.0.2:2379/cke/ev?leader-key=/cke/leader/1")
    assert parsed.endpoints == ("10.0.0.1:2379", "10.0.0.2:2379")
    env = parsed.environment({"CKE_EVENTS_ETCD_USER": "root", "CKE_EVENTS_LEADER_KEY": "x"})
    assert env["CKE_EVENTS_ETCD_ENDPOINTS"] == "http://10.0.0.1:2379,http://10.0.0.2:2379"
    assert env["CKE_EVENTS_KEY_PREFIX"] == "/cke/ev/"
    assert env["CKE_EVENTS_LEADER_KEY"] == "/cke/leader/1"  # the URL wins
    assert env["CKE_EVENTS_ETCD_USER"] == "root"
    assert parse_store_url("etcds://h:1").environment({})["CKE_EVENTS_KEY_PREFIX"] == "/cke/events/"
    assert parse_store_url("etcds://h:1").environment({})["CKE_EVENTS_ETCD_ENDPOINTS"] == (
        "https://h:1"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("mysql://x/y", "unknown store URL scheme"),
        ("etcd://", "no etcd endpoint"),
        ("etcd://host/prefix", "is not HOST:PORT"),
        ("etcd://user:pw@host:2379/", "credentials"),
        ("etcd://h:1/?frob=1", "unknown etcd store option"),
        ("etcd://h:1/?timeout=-2", "positive number"),
        ("sqlite://", "no file"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(StoreURLError, match=message):
        parse_store_url(url)


def test_open_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(EventStoreUnavailableError, match="no event log at"):
        open_event_log(str(missing), create=False)
    assert not missing.exists()
    with pytest.raises(EventStoreUnavailableError, match=r"cannot reach the event store at /proc"):
        open_event_log("/proc/no-such-dir/cke.db")
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some text " * 10)
    with pytest.raises(EventStoreUnavailableError, match="not a database"):
        open_event_log(str(text))
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE t (x)")
    with pytest.raises(EventStoreUnavailableError, match="not an event log"):
        open_event_log(str(other))
    with pytest.raises(EventLogError, match="invalid store URL"):
        open_event_log("ftp://x/y")


def test_open_etcd_with_nothing_listening() -> None:
    from cke_adapters.local_etcd import free_port

    url = f"etcd://127.0.0.1:{free_port()}/cke/events?timeout=3"
    with pytest.raises(EventStoreUnavailableError) as caught:
        open_event_log(url)
    assert str(caught.value).startswith(f"cannot reach the event store at {url}: ")
    assert "\n" not in str(caught.value)


def test_default_store_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CKE_EVENT_LOG", str(tmp_path / "env.db"))
    log = open_event_log()
    assert log.url == str(tmp_path / "env.db")
    log.close()
    assert (tmp_path / "env.db").exists()


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def test_set_cluster_from_text_validates_and_records_changes_only(empty: EventLog) -> None:
    text = (EXAMPLES / "cluster.yml").read_text()
    with pytest.raises(ConfigError, match="control-plane-count is 1"):
        empty.set_cluster(text, at=T0)
    assert empty.count_events() == 0
    empty.set_constraints((EXAMPLES / "constraints.yml").read_text(), at=T0)
    result = empty.set_cluster(text, at=at(1))
    assert result.changed
    before = empty.count_events()
    assert not empty.set_cluster(text, at=at(2)).changed
    assert empty.count_events() == before
    cluster = empty.cluster()
    assert cluster is not None
    assert cluster.name == "stage0"
    config = empty.configuration()
    assert config is not None
    assert (config.spec_version, config.constraints_version) == (1, 1)


def test_set_cluster_reports_every_problem_and_writes_nothing(empty: EventLog) -> None:
    bad = "name: x\nnodes:\n  - address: 10.0.0.1\n    control-plane: true\n"
    with pytest.raises(ConfigError) as caught:
        empty.set_cluster(bad, at=T0)
    paths = [p.path for p in caught.value.problems]
    assert "nodes[0].control-plane" in paths
    assert empty.count_events() == 0


def test_set_constraint(empty: EventLog) -> None:
    assert empty.set_constraint("maximum-repair-queue-entries", "+5", at=T0).changed
    constraints = empty.constraints()
    assert constraints is not None
    assert constraints.maximum_repair_queue_entries == 5
    with pytest.raises(EventLogError, match="no such constraint: frob"):
        empty.set_constraint("frob", "1")
    with pytest.raises(EventLogError, match="must be an integer"):
        empty.set_constraint("control-plane-count", "three")
    with pytest.raises(ConfigError):
        empty.set_constraint("control-plane-count", "0")
    empty.set_cluster((EXAMPLES / "cluster-minimal.yml").read_text(), at=T0)
    with pytest.raises(ConfigError, match="control-plane-count is 3"):
        empty.set_constraint("control-plane-count", "3")
    assert empty.constraints() == constraints


def test_resources(empty: EventLog) -> None:
    manifest = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n"
    result = empty.set_resource(manifest, at=T0)
    assert result.keys == ("Namespace/team-a",)
    assert not empty.set_resource(manifest, at=at(1)).changed
    config = empty.configuration()
    assert config is not None
    assert [r.key for r in config.resources()] == ["Namespace/team-a"]
    with pytest.raises(ConfigError):
        empty.set_resource("kind: Namespace\n")
    assert empty.delete_resource(manifest, at=at(2)).keys == ("Namespace/team-a",)
    assert not empty.delete_resource_keys(["Namespace/team-a"]).changed


# ---------------------------------------------------------------------------
# Decisions and records
# ---------------------------------------------------------------------------


def test_engine_loop_records_decisions_and_records(log: EventLog) -> None:
    last = log.last_decision()
    assert last is not None
    assert last.phase == "completed"
    assert log.status() == {"phase": "completed", "timestamp": "2024-05-01T12:08:00Z"}
    history = log.history()
    assert [int(r["id"]) for r in history] == list(range(len(history), 0, -1))
    assert all(r["status"] == "completed" for r in history)
    first = log.record(1)
    assert first.decision == 1
    assert first.operation in {"rivers-bootstrap", "etcd-rivers-bootstrap"}


def test_record_decision_needs_inputs_from_the_log(log: EventLog) -> None:
    inputs = log.decision_inputs(initial_status(ADDRESSES), at(60), seed=1)
    decision = strategy.decide(inputs)
    foreign = attrs.evolve(inputs, cluster=attrs.evolve(inputs.cluster, name="other"))
    with pytest.raises(EventLogError, match="not the configuration in the event log"):
        log.record_decision(foreign, decision, "e", 1)
    # equal values built elsewhere are accepted
    rebuilt = attrs.evolve(inputs)
    recorded = log.record_decision(rebuilt, decision, "e", 1)
    assert recorded.position == 9
    assert recorded.event is not None
    # a decision without operations and without a phase change is not recorded
    quiet = Decision(Phase(decision.phase))
    assert log.record_decision(inputs, quiet, "e", 1).position == 0


def test_decision_recorder_resumes_from_the_log(db: Path) -> None:
    first = open_event_log(str(db), create=False)
    inputs = first.decision_inputs(initial_status(ADDRESSES), at(60), seed=1)
    decision = strategy.decide(inputs)
    first.close()
    second = open_event_log(str(db), create=False)
    recorded = second.record_decision(inputs, decision, "e2", 2)
    assert recorded.event is not None
    assert recorded.event.observation is not None  # the status changed: a delta
    assert recorded.event.observation_seq == 9
    chain = second._decision_tail()
    *_, (event, _doc) = observations(chain)
    assert event.position == recorded.position
    second.close()


def test_register_saves_the_counter_and_the_record_together(
    empty: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    insert = empty.recorder.insert_events

    def spy(events: Any, **kwargs: Any) -> Any:
        calls.append([e.topic.rsplit(".", 1)[-1] for e in events])
        return insert(events, **kwargs)

    monkeypatch.setattr(empty.recorder, "insert_events", spy)
    assert empty.register("etcd-start", ["10.0.0.11"], at=T0) == 1
    assert empty.register("etcd-start", ["10.0.0.12"], at=T0) == 2
    assert calls == [["Created", "Allocated", "Registered"], ["Allocated", "Registered"]]


def test_record_lifecycle_and_refusals(empty: EventLog) -> None:
    number = empty.register("kubelet-restart", ["10.0.0.12"], at=T0, decision=0)
    with pytest.raises(TransitionError, match="cannot complete a new record"):
        empty.completed(number, at=at(1))
    before = empty.count_events()
    empty.command_started(number, "run-container", "10.0.0.12", at=at(1))
    empty.completed(number, "ok", at=at(2))
    with pytest.raises(TransitionError):
        empty.cancelled(number, "late", at=at(3))
    assert empty.count_events() == before + 2
    view = empty.history(1)[0]
    assert (view["status"], view["info"], view["end-at"]) == (
        "completed",
        "ok",
        "2024-05-01T12:02:00Z",
    )
    with pytest.raises(NotFoundError, match="no record 7"):
        empty.command_started(7, "x")
    with pytest.raises(HistoryError):
        empty.register("", [], at=T0)


def test_conflicts_are_retried_then_reported(
    empty: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    save = empty.save
    failures = {"left": 2}

    def flaky(*objs: Any, **kwargs: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise IntegrityError("UNIQUE constraint failed")
        return save(*objs, **kwargs)

    monkeypatch.setattr(empty, "save", flaky)
    assert empty.register("etcd-start", ["10.0.0.11"], at=T0) == 1
    failures["left"] = 10
    with pytest.raises(ConflictError, match="kept changing while register ran"):
        empty.register("etcd-start", ["10.0.0.11"], at=T0)
    assert empty.last_record_id() == 1


# ---------------------------------------------------------------------------
# Queues
# ---------------------------------------------------------------------------


def test_reboot_queue_commands(log: EventLog) -> None:
    assert log.reboot_queue_is_enabled()
    with pytest.raises(HistoryError, match=r"10\.9\.9\.9 is not a node"):
        log.reboot_queue_add(["10.9.9.9"], at=T0)
    assert log.reboot_queue_add(["10.0.0.14", "10.0.0.15"], at=T0) == [0, 1]
    assert log.reboot_queue_cancel(0, at=at(1))
    assert not log.reboot_queue_cancel(0, at=at(1))
    assert log.reboot_queue_cancel_all(at=at(2)) == [1]
    assert log.reboot_queue_reset_backoff(at=at(2)) == []
    with pytest.raises(TransitionError, match="cannot be removed as dequeued"):
        log.reboot_queue_remove(0, RemovalReason.DEQUEUED, at=at(3))
    log.reboot_queue_remove(0, RemovalReason.CANCELLED, at=at(3))
    queue = log.reboot_queue()
    assert queue is not None
    assert [e.index for e in queue.entries()] == [1]
    assert log.reboot_queue_enable(False, at=at(4))
    assert not log.reboot_queue_is_enabled()
    assert not log.reboot_queue_enable(False, at=at(4))


def test_repair_queue_commands(log: EventLog) -> None:
    log.set_spec(fixture_cluster(repair=FIXTURE_REPAIR), at=T0)
    with pytest.raises(HistoryError, match="no repair operation"):
        log.repair_queue_add("op9", "type1", "10.0.0.14", at=T0)
    assert log.repair_queue_add("op1", "type1", "10.0.0.14", "S1", at=T0) == 0
    assert log.repair_queue_add("op1", "type1", "10.0.0.15", at=T0) == 1
    queue = log.repair_queue()
    assert queue is not None
    entry = queue.entry(0)
    jump = attrs.evolve(entry, status=RepairStatus.SUCCEEDED, step=3)
    with pytest.raises(TransitionError, match="cannot move from step"):
        log.repair_queue_update(jump)
    assert log.repair_queue_delete(0, at=at(1))
    assert log.repair_queue_delete_unfinished(at=at(2)) == [1]
    assert log.repair_queue_delete_finished(at=at(2)) == []
    log.repair_queue_remove(0, at=at(3))
    with pytest.raises(HistoryError, match="no entry 0"):
        log.repair_queue_remove(0, at=at(3))
    assert log.repair_queue_enable(False, at=at(4))
    assert not log.repair_queue_is_enabled()


# ---------------------------------------------------------------------------
# Leadership and crashes
# ---------------------------------------------------------------------------


def test_crash_between_command_and_result_is_cancelled_by_the_next_leader(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crash.db"
    log = configured(fresh(path))
    run = run_engine(log, initial_status(ADDRESSES), T0, interrupt=lambda op: True)
    number = run.records[-1]
    view = log.history(1)[0]
    assert (view["id"], view["status"]) == (str(number), "running")
    events = log.count_events()
    del log  # the process dies: nothing more is written
    reopened = open_event_log(str(path), create=False)
    assert reopened.count_events() == events
    assert reopened.history(1)[0]["status"] == "running"
    started = reopened.start_term("host-2", at=at(30))
    assert (started.term, started.cancelled_record) == (2, number)
    view = reopened.history(1)[0]
    assert view["status"] == "cancelled"
    assert view["end-at"] == "2024-05-01T12:30:00Z"
    assert view["error"].startswith("interrupted: the leader stopped while it ran ")
    assert "cancelled by the new leader host-2 (term 2)" in view["error"]
    leadership = reopened.leadership()
    assert leadership is not None
    assert [t.end_reason for t in leadership.history()] == ["superseded", ""]
    # the log is consistent: it replays, and a later term cancels nothing
    assert reopened.replay().identical
    assert reopened.start_term("host-1", at=at(40)).cancelled_record is None
    reopened.end_term(3, "resigned", at=at(41))
    reopened.close()


def test_a_new_record_that_never_ran_is_cancelled_too(empty: EventLog) -> None:
    number = empty.register("etcd-start", ["10.0.0.11"], at=T0)
    started = empty.start_term("h", at=at(1))
    assert started.cancelled_record == number
    assert "before it ran any command" in empty.record(number).error


def test_set_leader_key_is_harmless_on_sqlite(empty: EventLog) -> None:
    empty.set_leader_key("/cke/leader/1")
    assert empty.register("x", [], at=T0) == 1


# ---------------------------------------------------------------------------
# History and follow
# ---------------------------------------------------------------------------


def test_history_newest_first_and_count(log: EventLog) -> None:
    last = log.last_record_id()
    assert last == 26
    assert [r["id"] for r in log.history(3)] == ["26", "25", "24"]
    assert len(log.history()) == 26
    assert log.history(100)[-1]["id"] == "1"


def test_follow_replays_the_last_records_then_watches(log: EventLog, db: Path) -> None:
    stop = threading.Event()
    seen: list[dict[str, Any]] = []

    def write() -> None:
        writer = open_event_log(str(db), create=False)
        number = writer.register("etcd-start", ["10.0.0.11"], at=at(50))
        writer.command_started(number, "run-container", "10.0.0.11", at=at(50))
        writer.completed(number, at=at(51))
        writer.close()

    thread = threading.Thread(target=write)
    for view in log.follow(3, poll_interval=0.05, idle_timeout=20, stop=stop):
        seen.append(view)
        if len(seen) == 3:
            thread.start()
        if len(seen) == 6:
            stop.set()
    thread.join()
    assert [(v["id"], v["status"]) for v in seen] == [
        ("24", "completed"),
        ("25", "completed"),
        ("26", "completed"),
        ("27", "new"),
        ("27", "running"),
        ("27", "completed"),
    ]


def test_follow_stops_when_idle(log: EventLog) -> None:
    views = list(log.follow(2, poll_interval=0.01, idle_timeout=0.05))
    assert [v["id"] for v in views] == ["25", "26"]


# ---------------------------------------------------------------------------
# Replay, explain, plan
# ---------------------------------------------------------------------------


def test_replay_reports_no_difference_for_the_same_engine(log: EventLog) -> None:
    report = log.replay()
    assert report.identical
    assert (report.decisions, report.events) == (8, log.count_events())
    assert report.recorded_engines == {"cke-py/test": 8}
    assert json.loads(report.state["status"])["phase"] == "completed"
    assert report.state["records"] == "27"


def test_replay_reports_a_decision_that_differs(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = strategy.decide

    def patched(inputs: Any) -> Decision:
        decision = original(inputs)
        if decision.phase is Phase.ETCD_BOOT:
            return Decision(Phase.ETCD_BOOT_ABORTED)
        return decision

    monkeypatch.setattr(strategy, "decide", patched)
    report = log.replay()
    assert len(report.differences) == 1
    diff = report.differences[0]
    assert (diff.position, diff.phase, diff.records) == (2, "etcd-boot", (3,))
    assert diff.differences[0] == "phase: recorded etcd-boot, re-derived etcd-boot-aborted"


def test_replay_until_a_record_or_a_time(log: EventLog) -> None:
    by_record = log.replay(3)
    assert by_record.point == "record 3"
    assert by_record.decisions == 2
    assert by_record.state["records"] == "4"
    assert json.loads(by_record.state["records/0000000000000003"])["status"] == "completed"
    by_time = log.replay(at(2))
    assert by_time.decisions == 2
    assert by_time.last_event_at == at(2)
    assert log.replay(at(-60)).decisions == 0
    with pytest.raises(NotFoundError):
        log.replay(999)


def test_fast_status_rebuild_equals_the_core(log: EventLog) -> None:
    chain: list[Any] = list(log.events.get(DECISION_LOG_ID))
    assert chain[0].position == 1
    configuration = list(log.events.get(CLUSTER_CONFIGURATION_ID))
    folder = ConfigurationFolder(configuration)
    rebuilder = StatusRebuilder()
    for event, doc in observations(chain):
        config = folder.aggregate(event.configuration_version)
        assert folder.inputs(event, rebuilder.status(doc)) == rebuild_inputs(event, config, doc)
    assert rebuilder.reused > 0
    assert [r.differences for r in rederive(chain, configuration)] == [()] * len(chain)


def test_explain_a_record(log: EventLog) -> None:
    text = log.explain(3)
    lines = text.splitlines()
    assert lines[0].startswith("Record 3: etcd-boot")
    assert "started by decision 2 (engine cke-py/test, term 1" in lines[0]
    assert lines[1].startswith("Decision at 2024-05-01T12:02:00Z (seed 1): phase etcd-boot")
    empty_record = log.register("manual", [], at=at(90))
    with pytest.raises(NotFoundError, match="not started by a recorded decision"):
        log.explain(empty_record)


def test_plan_converged_and_with_a_proposed_change(log: EventLog) -> None:
    converged = log.plan(now=at(20))
    assert (converged.phase, converged.would_act, converged.observed_by) == (
        "completed",
        False,
        8,
    )
    before = log.count_events()
    cluster = fixture_cluster()
    cp = cluster.nodes[0]
    from cke_core import codec
    from cke_core.documents import dump_yaml
    from cke_core.frozen import FrozenDict

    labelled = attrs.evolve(cp, labels=FrozenDict({"zone": "a"}))
    proposed = attrs.evolve(cluster, nodes=(labelled, *cluster.nodes[1:]))
    doc = codec.unstructure(proposed)
    doc["options"]["kube-scheduler"]["config"] = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "parallelism": 999,
    }
    changed = log.plan(dump_yaml(doc), now=at(20))
    assert changed.would_act
    assert changed.proposed_spec
    names = [op.name for op in changed.operations]
    assert "update-node" in names
    update = changed.operations[names.index("update-node")]
    assert update.commands[0].name == "update-node"
    assert log.count_events() == before
    with pytest.raises(ConfigError):
        log.plan("name: x\n")
    with pytest.raises(ConfigError, match="control-plane-count is 1"):
        log.plan(constraints_text="control-plane-count: 1\n")


def test_plan_needs_an_observation(empty: EventLog) -> None:
    with pytest.raises(NotFoundError, match="no observation recorded yet"):
        empty.plan()


# ---------------------------------------------------------------------------
# Export and import
# ---------------------------------------------------------------------------


def test_export_then_import_reproduces_the_log(log: EventLog, tmp_path: Path) -> None:
    text = export_text(log)
    lines = text.split("\n")
    assert lines[0] == '{"format":"cke-py/event-log","version":1}'
    assert json.loads(lines[-2]) == {"end": FORMAT, "events": log.count_events()}
    assert lines[-1] == ""
    target = fresh(tmp_path / "copy.db")
    assert target.import_jsonl(io.StringIO(text)) == log.count_events()
    assert export_text(target) == text
    for a, b in zip(
        log.recorder.select_notifications(1, 10_000),
        target.recorder.select_notifications(1, 10_000),
        strict=True,
    ):
        assert a == b  # ids, originators, versions, topics and state bytes
    assert target.history() == log.history()
    assert target.replay().identical
    target.close()


def test_state_that_is_not_canonical_json_is_exported_in_base64(log: EventLog) -> None:
    notification = log.recorder.select_notifications(1, 1)[0]
    spaced = dataclasses.replace(notification, state=notification.state.replace(b":", b": ", 1))
    line = json.loads(encode_line(spaced))
    assert "state" not in line
    assert "state_b64" in line


def test_import_appends_to_a_log_when_versions_follow(tmp_path: Path) -> None:
    source = fresh(tmp_path / "a.db")
    source.set_constraint("control-plane-count", "3", at=T0)
    head = export_text(source)
    source.set_constraint("control-plane-count", "1", at=at(1))
    full = export_text(source).split("\n")
    target = fresh(tmp_path / "b.db")
    target.import_jsonl(io.StringIO(head))
    tail = [full[0], full[3], json.dumps({"end": FORMAT, "events": 1}), ""]
    assert target.import_jsonl(io.StringIO("\n".join(tail))) == 1
    constraints = target.constraints()
    assert constraints is not None
    assert constraints.control_plane_count == 1


def _event_lines(text: str) -> list[str]:
    return text.split("\n")


def _mutate(index: int, change: Callable[[dict[str, Any]], Any]) -> Callable[[list[str]], None]:
    def apply(lines: list[str]) -> None:
        value = json.loads(lines[index])
        change(value)
        lines[index] = json.dumps(value)

    return apply


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda d: d.__setitem__(key, value)


def _state(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda d: d["state"].__setitem__(key, value)


CORRUPTIONS: list[tuple[str, Callable[[list[str]], None], str]] = [
    ("foreign", lambda ls: ls.__setitem__(0, '{"kind":"List"}'), "line 1: not a cke-py event"),
    (
        "newer format",
        lambda ls: ls.__setitem__(0, json.dumps({"format": FORMAT, "version": 9})),
        "line 1: export format version 9",
    ),
    ("not json", lambda ls: ls.__setitem__(5, "{oops"), "line 6: not JSON"),
    ("not an object", lambda ls: ls.__setitem__(5, "[1, 2]"), "line 6: expected a JSON object"),
    ("empty line", lambda ls: ls.__setitem__(5, ""), "line 6: empty line"),
    ("missing field", _mutate(4, lambda d: d.pop("topic")), "line 5: missing field 'topic'"),
    ("extra field", _mutate(4, _set("x", 1)), "line 5: unknown field 'x'"),
    ("bad id", _mutate(4, _set("id", 1)), "line 5: id 1 does not follow id 3"),
    ("bad uuid", _mutate(4, _set("originator_id", "nope")), "line 5: originator_id must be a UUID"),
    (
        "unknown topic",
        _mutate(4, _set("topic", "os:system")),
        "line 5: unknown event topic 'os:system'",
    ),
    ("gap", _mutate(4, _set("originator_version", 7)), "line 5: aggregate .* does not follow"),
    (
        "bad base64",
        _mutate(4, lambda d: d.update(state_b64="!!", state=None) or d.pop("state")),
        "line 5: state_b64 is not base64",
    ),
    (
        "missing state field",
        _mutate(4, lambda d: d["state"].pop("timestamp")),
        "missing 'timestamp'",
    ),
    ("wrong type", _mutate(4, _state("timestamp", "yesterday")), "timestamp: 'yesterday' is not"),
    (
        "foreign aggregate topic",
        _mutate(1, _state("originator_topic", "os:system")),
        "line 2: creates a 'os:system'",
    ),
    ("truncated", lambda ls: ls.__delitem__(slice(-2, None)), "ends without its last line"),
    (
        "count",
        lambda ls: ls.__setitem__(-2, json.dumps({"end": FORMAT, "events": 3})),
        "the last line says 3 events",
    ),
    ("after the end", lambda ls: ls.append('{"x": 1}'), "data after the end"),
]


@pytest.mark.parametrize(
    ("name", "corrupt", "message"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS]
)
def test_corrupt_or_foreign_import_changes_nothing(
    log: EventLog, tmp_path: Path, name: str, corrupt: Callable[[list[str]], None], message: str
) -> None:
    lines = _event_lines(export_text(log))
    corrupt(lines)
    target = fresh(tmp_path / "target.db")
    target.reboot_queue_enable(False, at=T0)  # an aggregate the export does not have
    before = export_text(target)
    with pytest.raises(ImportRejected, match=message) as caught:
        target.import_jsonl(io.StringIO("\n".join(lines)))
    assert str(caught.value).startswith("line ")
    assert "\n" not in str(caught.value)
    assert export_text(target) == before


def test_semantic_corruption_is_caught_by_folding(log: EventLog, tmp_path: Path) -> None:
    lines = _event_lines(export_text(log))
    # a record completed before it ran anything: the state machine refuses it
    index = next(i for i, line in enumerate(lines) if "OperationRecord.CommandStarted" in line)
    value = json.loads(lines[index])
    value["topic"] = value["topic"].replace("CommandStarted", "Completed")
    value["state"] = {"timestamp": value["state"]["timestamp"], "info": ""}
    lines[index] = json.dumps(value)
    target = fresh(tmp_path / "t.db")
    with pytest.raises(ImportRejected, match=rf"line {index + 1}: .*Completed"):
        target.import_jsonl(io.StringIO("\n".join(lines)))
    assert target.count_events() == 0
    # a decision whose observation chain is broken
    lines = _event_lines(export_text(log))
    index = [i for i, line in enumerate(lines) if "DecisionRecorded" in line][3]
    value = json.loads(lines[index])
    value["state"]["observation_seq"] = 40
    lines[index] = json.dumps(value)
    with pytest.raises(ImportRejected, match=rf"line {index + 1}: decision 4: delta 40"):
        target.import_jsonl(io.StringIO("\n".join(lines)))
    assert target.count_events() == 0


def test_import_version_conflict_changes_nothing(log: EventLog, db: Path) -> None:
    text = export_text(log)
    before = log.count_events()
    with pytest.raises(ImportRejected, match=r"line 2: version conflict: aggregate .* version 1"):
        log.import_jsonl(io.StringIO(text))
    assert log.count_events() == before
    assert DECISION_LOG_ID  # the decision log too is checked (covered by the chain test)


# ---------------------------------------------------------------------------
# ckecli
# ---------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.delenv("CKE_EVENT_LOG", raising=False)
    return inproc_cli(monkeypatch, capsys)


def test_cli_history_table_and_json(cli: Cli, db: Path) -> None:
    table = cli("--store", db, "history", "-n", "2")
    assert table.code == 0
    rows = table.out.splitlines()
    assert rows[0].split() == ["ID", "STATUS", "START-AT", "END-AT", "OPERATION", "TARGETS"]
    assert [r.split()[0] for r in rows[1:]] == ["26", "25"]
    full = cli("--store", f"sqlite:///{db}", "history", "-o", "json")
    records = [json.loads(chunk) for chunk in full.out.replace("}\n{", "}\x00{").split("\x00")]
    assert [r["id"] for r in records] == [str(n) for n in range(26, 0, -1)]
    assert full.out.startswith('{\n    "id": "26",\n    "status": "completed",')


def test_cli_status(cli: Cli, db: Path, tmp_path: Path) -> None:
    assert cli("--store", db, "status").out == (
        '{"phase":"completed","timestamp":"2024-05-01T12:08:00Z"}\n'
    )
    empty = fresh(tmp_path / "e.db")
    empty.close()
    result = cli("--store", tmp_path / "e.db", "status")
    assert (result.code, result.err) == (4, "no status\n")


def test_cli_store_errors_are_one_line(cli: Cli, tmp_path: Path) -> None:
    result = cli("--store", "/proc/nowhere/x.db", "cluster", "set", EXAMPLES / "cluster.yml")
    assert result.code == 1
    assert result.err.startswith("ckecli: cannot reach the event store at /proc/nowhere/x.db: ")
    assert result.err.count("\n") == 1
    missing = cli("--store", tmp_path / "none.db", "history")
    assert missing.code == 1
    assert "no event log at" in missing.err


def test_cli_cluster_and_constraints(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CKE_EVENT_LOG", str(tmp_path / "c.db"))
    refused = cli("cluster", "set", EXAMPLES / "cluster.yml")
    assert (refused.code, refused.err) == (
        1,
        "nodes: 3 control plane(s), but the constraint control-plane-count is 1\n",
    )
    assert cli("constraints", "set", "control-plane-count", "3").code == 0
    assert cli("cstr", "set", "frob", "3").err.startswith("ckecli: no such constraint: frob")
    assert cli("cluster", "set", "-", stdin=(EXAMPLES / "cluster.yml").read_text()).code == 0
    got = cli("cluster", "get", "-o", "json")
    assert json.loads(got.out)["name"] == "stage0"
    shown = cli("constraints", "show")
    assert json.loads(shown.out)["control-plane-count"] == 3
    assert cli("status").code == 4


def test_cli_events_export_import(cli: Cli, db: Path, tmp_path: Path) -> None:
    exported = cli("--store", db, "events", "export")
    assert exported.code == 0
    out = tmp_path / "events.jsonl"
    assert cli("--store", db, "events", "export", "-o", out).err.startswith("exported ")
    assert out.read_text() == exported.out
    target = tmp_path / "t.db"
    imported = cli("--store", target, "events", "import", "-", stdin=exported.out)
    assert imported.code == 0
    assert imported.out.startswith("imported ")
    assert cli("--store", target, "events", "export").out == exported.out
    again = cli("--store", target, "events", "import", out)
    assert again.code == 1
    assert again.err.startswith("ckecli: line 2: version conflict")
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b'{"format":"cke-py/event-log","version":1}\n\xff\n')
    bad = cli("--store", tmp_path / "u.db", "events", "import", broken)
    assert (bad.code, bad.err.count("\n")) == (1, 1)
    assert "not UTF-8" in bad.err


def test_cli_replay(cli: Cli, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    same = cli("--store", db, "replay")
    assert same.code == 0
    assert "No decision differs." in same.out
    assert "phase completed" in same.out
    until = cli("--store", db, "replay", "--until", "2024-05-01T12:02:00Z", "-o", "json")
    assert json.loads(until.out)["decisions"] == 2
    explained = cli("--store", db, "replay", "--explain", "3")
    assert explained.out.startswith("Record 3: etcd-boot")
    bad = cli("--store", db, "replay", "--until", "yesterday")
    assert bad.code == 2
    assert cli("--store", db, "replay", "--jobs", "2").out == same.out
    no_jobs = cli("--store", db, "replay", "-j", "0")
    assert no_jobs.code == 2
    assert no_jobs.err.count("\n") == 1  # one line, naming the command and the option
    assert no_jobs.err.startswith("ckecli replay: Invalid value for '-j' / '--jobs'")
    original = strategy.decide
    monkeypatch.setattr(strategy, "decide", lambda i: attrs.evolve(original(i), operations=()))
    differs = cli("--store", db, "replay")
    assert differs.code == 2
    assert "decisions differ:" in differs.out


def test_cli_plan_exit_codes(cli: Cli, db: Path, tmp_path: Path) -> None:
    converged = cli("--store", db, "plan")
    assert converged.code == 0
    assert "Phase: completed" in converged.out
    log = open_event_log(str(db), create=False)
    log.set_constraint("maximum-unreachable-nodes-for-reboot", "1")
    inputs = log.decision_inputs(initial_status(ADDRESSES), at(100), seed=0)
    log.record_decision(inputs, strategy.decide(inputs), "e", 1)
    log.close()
    acting = cli("--store", db, "plan")
    assert acting.code == 2
    assert "Phase: rivers" in acting.out
    assert "The engine would run" in acting.out
    invalid = tmp_path / "bad.yml"
    invalid.write_text("name: x\nnodes: []\nservice_subnet: 1\n")
    failed = cli("--store", db, "plan", "-f", invalid)
    assert failed.code == 1


def test_config_version_defaults_to_1_and_is_set_once(tmp_path: Path) -> None:
    log = fresh(tmp_path / "v.db")
    assert log.config_version() == "1"
    assert log.set_config_version("2", at=at(1)) is True
    assert log.set_config_version("2", at=at(2)) is False
    assert log.config_version() == "2"
    with pytest.raises(Exception, match="decimal string"):
        log.set_config_version("two", at=at(3))
    assert log.config_version() == "2"
    text = export_text(log)
    target = fresh(tmp_path / "copy.db")
    target.import_jsonl(io.StringIO(text))
    assert target.config_version() == "2"
    assert log.replay().state["config-version"] == "2"


def test_cluster_and_constraints_change_together(tmp_path: Path) -> None:
    from cke_core.constraints import Constraints

    def cluster_yml(control_planes: int) -> str:
        nodes = "".join(
            f"- address: 10.0.0.{i}\n  user: root\n"
            f"  control_plane: {str(i <= control_planes).lower()}\n"
            for i in range(1, 6)
        )
        return f"name: t\nservice_subnet: 10.68.0.0/16\nnodes:\n{nodes}"

    log = fresh(tmp_path / "both.db")
    log.set_constraint("control-plane-count", "3", at=T0)
    log.set_cluster(cluster_yml(3), at=T0)
    text = cluster_yml(4)
    with pytest.raises(ConfigError, match="control-plane-count is 3"):
        log.set_cluster(text, at=at(1))
    with pytest.raises(ConfigError, match="3 control plane"):
        log.set_constraint("control-plane-count", "4", at=at(1))
    before = log.count_events()
    with pytest.raises(ConfigError, match="control-plane-count is 5"):
        log.set_cluster_and_constraints(text, Constraints(control_plane_count=5), at=at(1))
    assert log.count_events() == before
    result = log.set_cluster_and_constraints(text, Constraints(control_plane_count=4), at=at(2))
    assert result.changed
    cluster = log.cluster()
    constraints = log.constraints()
    assert cluster is not None
    assert constraints is not None
    assert len(cluster.control_planes) == 4
    assert constraints.control_plane_count == 4
    again = log.set_cluster_and_constraints(text, Constraints(control_plane_count=4), at=at(3))
    assert not again.changed
