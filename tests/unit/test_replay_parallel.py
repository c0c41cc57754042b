"""``EventLog.replay`` over several processes gives the report one process gives.

The log (SQLite, real worker processes): the six-node test cluster
bootstrapped, then cluster.yml changes, each followed by the engine loop,
with an observation snapshot every few decisions (so workers start from a
snapshot in the middle of the log), and a few decisions recorded with a
result the engine does not give (so differences come from every range).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from cke_adapters.eventlog import EventLog, open_event_log
from cke_adapters.eventlog import application as application_module
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
def answers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What the worker processes answered, in order."""
    seen: list[Any] = []
    original = application_module._Worker.result

    def result(self: Any) -> Any:
        answer = original(self)
        seen.append(answer)
        return answer

    monkeypatch.setattr(application_module._Worker, "result", result)
    return seen


@pytest.mark.parametrize("jobs", [2, 3])
def test_several_processes_give_the_same_report(
    log: EventLog, jobs: int, answers: list[Any]
) -> None:
    single = log.replay(jobs=1)
    plan = log._replay_plan(None, jobs)
    assert plan is not None
    assert len(plan.ranges) == jobs - 1
    assert plan.ranges[-1][1] == single.decisions
    assert log.replay(jobs=jobs) == single
    # The workers did their ranges (no fallback to one process).
    assert [[r[0] for r in a] for a in answers] == [
        list(range(first, last + 1)) for first, last in plan.ranges
    ]


def test_until_a_record_with_several_processes(log: EventLog) -> None:
    middle = log.last_record_id() // 2
    single = log.replay(middle, jobs=1)
    assert single.decisions < log.replay(jobs=1).decisions
    assert log.replay(middle, jobs=2) == single


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
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    single = log.replay(jobs=1)
    monkeypatch.setattr(application_module, "_WORKER_MODULE", "cke_adapters.eventlog.no_such")
    assert log.replay(jobs=2) == single


def test_a_worker_reports_a_broken_log_as_one_line(tmp_path: Path, db: Path) -> None:
    """A range whose decisions cannot be re-derived: the worker's error is the
    replay's error."""
    result = application_module.replay_range(str(tmp_path / "none.db"), 1, 5)
    assert isinstance(result, tuple)
    assert result[0] == "log"
    assert "no event log at" in result[1]
    rederived = application_module.replay_range(str(db), 1, 5)
    assert isinstance(rederived, list)
    assert [r[0] for r in rederived] == [1, 2, 3, 4, 5]
