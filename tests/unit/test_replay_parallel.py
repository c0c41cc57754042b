"""``EventLog.replay`` over several processes gives the report one process gives.

The log (SQLite, real worker processes): the six-node test cluster
bootstrapped, then cluster.yml changes, each followed by the engine loop,
with an observation snapshot every few decisions (so workers start from a
snapshot in the middle of the log), and a few decisions recorded with a
result the engine does not give (so differences come from every range).
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from cke_adapters.eventlog import EventLog, open_event_log
from cke_adapters.eventlog import application as application_module
from cke_adapters.eventlog.application import serve_replay
from cke_adapters.eventlog.parallel import WorkerLink, read_frame, write_frame
from cke_adapters.eventlog.simulated import initial_status, run_engine

from cke_core import strategy
from cke_core.history import ObservationPolicy
from cke_core.phases import Phase
from cke_core.strategy import Decision
from cke_core.testing import fixture_cluster
from cke_core.timefmt import UTC

T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
#: After these cluster.yml changes a decision is recorded with a result the
#: engine does not give.
WRONG = (1, 9, 17)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("parallel") / "cke.db"
    log = open_event_log(f"sqlite:///{path}", policy=ObservationPolicy(max_deltas=3))
    cluster = fixture_cluster()
    log.set_constraint("control-plane-count", "3", at=T0)
    log.set_spec(cluster, at=T0)
    log.start_term("host-1", at=T0)
    run = run_engine(log, initial_status([n.address for n in cluster.nodes]), T0)
    now, status = run.now, run.status
    for generation in range(20):
        node = cluster.nodes[generation % len(cluster.nodes)]
        labels = node.labels.set("test/generation", str(generation))
        nodes = list(cluster.nodes)
        nodes[generation % len(nodes)] = attrs.evolve(node, labels=labels)
        cluster = attrs.evolve(cluster, nodes=tuple(nodes))
        log.set_spec(cluster, at=now)
        run = run_engine(log, status, now)
        now, status = run.now, run.status
        if generation in WRONG:
            # A decision recorded wrongly: no operations, another phase.
            now += datetime.timedelta(minutes=1)
            inputs = log.decision_inputs(status, now, seed=generation)
            log.record_decision(inputs, Decision(Phase.ETCD_WAIT), "cke-py/other", 1)
    log.close()
    return path


@pytest.fixture
def log(db: Path) -> Iterator[EventLog]:
    opened = open_event_log(str(db), create=False)
    yield opened
    opened.close()


def test_the_log_is_worth_splitting(log: EventLog) -> None:
    single = log.replay(jobs=1)
    assert single.decisions >= 40
    assert len(single.differences) >= 2
    positions = [d.position for d in single.differences]
    assert min(positions) < single.decisions / 3 < max(positions)


@pytest.fixture
def shared_rows(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    """The rows each shared replay gathered (from this process and the workers),
    with chunks small enough that the processes steal from each other."""
    monkeypatch.setattr(application_module, "_CHUNK_BOUNDS", (3, 500))
    seen: list[list[Any]] = []
    original = EventLog._rederive_shared

    def gathered(self: EventLog, *args: Any) -> list[Any]:
        rows = original(self, *args)
        seen.append(rows)
        return rows

    monkeypatch.setattr(EventLog, "_rederive_shared", gathered)
    return seen


@pytest.fixture
def links(monkeypatch: pytest.MonkeyPatch) -> list[WorkerLink]:
    """The worker links of the replays, in order."""
    started: list[WorkerLink] = []

    class Recorded(WorkerLink):
        def start(self) -> None:
            started.append(self)
            super().start()

    monkeypatch.setattr(application_module, "WorkerLink", Recorded)
    return started


@pytest.mark.parametrize("jobs", [2, 3])
def test_several_processes_give_the_same_report(
    log: EventLog, jobs: int, shared_rows: list[list[Any]], links: list[WorkerLink]
) -> None:
    single = log.replay(jobs=1)
    plan = log._replay_plan(None, jobs)
    assert plan is not None
    assert len(plan.regions) == jobs - 1
    assert plan.regions[-1][2] == single.decisions
    assert log.replay(jobs=jobs) == single
    # Every decision re-derived exactly once, the workers doing their part.
    (rows,) = shared_rows
    assert sorted(r[0] for r in rows) == list(range(1, single.decisions + 1))
    assert len(links) == jobs - 1
    assert all(link.rows and link.error is None for link in links)


def test_until_a_record_with_several_processes(log: EventLog, shared_rows: list[list[Any]]) -> None:
    middle = log.last_record_id() // 2
    single = log.replay(middle, jobs=1)
    assert single.decisions < log.replay(jobs=1).decisions
    assert log.replay(middle, jobs=2) == single
    assert shared_rows


def test_a_time_cut_or_a_substituted_engine_stays_in_one_process(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert log._replay_plan(T0 + datetime.timedelta(minutes=30), 2) is None
    assert log._replay_plan(None, 1) is None
    assert log._replay_plan(None, None) is None  # fewer decisions than PARALLEL_MIN_DECISIONS
    original = strategy.decide
    monkeypatch.setattr(strategy, "decide", lambda inputs: original(inputs))
    assert log._replay_plan(None, 2) is None


def test_a_worker_that_cannot_run_leaves_the_work_to_this_process(
    log: EventLog, monkeypatch: pytest.MonkeyPatch, shared_rows: list[list[Any]]
) -> None:
    single = log.replay(jobs=1)
    monkeypatch.setattr(application_module, "_WORKER_MODULE", "cke_adapters.eventlog.no_such")
    assert log.replay(jobs=3) == single
    (rows,) = shared_rows
    assert sorted(r[0] for r in rows) == list(range(1, single.decisions + 1))


def test_a_worker_that_dies_mid_way_leaves_its_work_to_the_others(
    log: EventLog,
    monkeypatch: pytest.MonkeyPatch,
    shared_rows: list[list[Any]],
    links: list[WorkerLink],
) -> None:
    """``replay_worker_dies`` (tests/) does its first chunk, then exits in the
    middle of the second: that chunk and the rest of its region are re-derived
    by the other processes, once."""
    single = log.replay(jobs=1)
    monkeypatch.setattr(application_module, "_WORKER_MODULE", "replay_worker_dies")
    assert log.replay(jobs=2) == single
    assert [r[0] for r in links[0].rows] == [1, 2, 3]  # its first chunk, then nothing
    (rows,) = shared_rows
    assert sorted(r[0] for r in rows) == list(range(1, single.decisions + 1))


def test_a_worker_reports_a_broken_log_as_one_line(tmp_path: Path, db: Path) -> None:
    """A log whose decisions cannot be re-derived: the worker's error frame
    (the replay raises it); a good log: rows for the chunk it was given."""
    answers = io.BytesIO()
    serve_replay(str(tmp_path / "none.db"), io.BytesIO(), answers)
    answers.seek(0)
    kind, where, message = read_frame(answers)
    assert (kind, where) == ("error", "log")
    assert "no event log at" in message

    requests = io.BytesIO()
    write_frame(requests, (1, 5))
    write_frame(requests, None)
    requests.seek(0)
    answers = io.BytesIO()
    serve_replay(str(db), requests, answers)
    answers.seek(0)
    assert read_frame(answers) == ("rows", [])
    kind, rows = read_frame(answers)
    assert kind == "rows"
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert read_frame(answers) == ("done",)
