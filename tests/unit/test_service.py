"""The service layer's loop (``Engine``) against the simulated cluster.

The observer and the executor here are the pure simulator
(``cke_core.simulation``) behind the same methods as the real adapters, so
these tests check the engine's own duties: record lifecycle as CKE's
``runOp`` (§E.3), a failed command cancelling its record and ending the round
(§L.2), rounds until a goal, and errors that decide nothing. The real
adapters are exercised in tests/integration/test_lab_engine.py.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
from pathlib import Path
from typing import Any

import attrs
import pytest
from cke_adapters.eventlog.application import EventLog, open_event_log
from cke_adapters.executor import Staging
from cke_adapters.observe import Observation, QueueState
from cke_adapters.service import Engine, RunUntilTimeout

from cke_core.cluster import Cluster
from cke_core.frozen import FrozenDict
from cke_core.ops.base import Command, CommandResult
from cke_core.simulation import apply_command, health
from cke_core.status import ClusterStatus, NodeStatus
from cke_core.testing import fixture_cluster

T0 = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)


class SimulatedWorld:
    """The observer and the executor of a simulated cluster."""

    def __init__(self, cluster: Cluster) -> None:
        self.status = ClusterStatus(
            nodes=FrozenDict({n.address: NodeStatus(ssh_connected=True) for n in cluster.nodes})
        )
        self.fail: dict[str, int] = {}
        self.ran: list[str] = []

    async def observe(
        self,
        cluster: Cluster,
        *,
        config_version: str,
        now: datetime.datetime,
        reboot_queue: QueueState | None = None,
        repair_queue: QueueState | None = None,
    ) -> Observation:
        del reboot_queue, repair_queue, now
        observed = health(self.status, cluster)
        return Observation(attrs.evolve(observed, config_version=config_version))

    async def run(
        self, cluster: Cluster, command: Command, staging: Staging, nodes: Any
    ) -> CommandResult:
        self.ran.append(command.name)
        if self.fail.get(command.name, 0) > 0:
            self.fail[command.name] -= 1
            return CommandResult(ok=False, error=f"{command.name}: injected failure")
        self.status, result = apply_command(self.status, cluster, command)
        if command.name == "upgrade-version-from-1-to-2":
            self.log.set_config_version("2")
        return result

    log: EventLog


def engine_for(tmp_path: Path, cluster: Cluster | None = None) -> tuple[Engine, SimulatedWorld]:
    log = open_event_log(f"sqlite:///{tmp_path / 'cke.db'}")
    cluster = cluster or fixture_cluster()
    log.set_constraint("control-plane-count", str(len(cluster.control_planes)), at=T0)
    log.set_spec(cluster, at=T0)
    world = SimulatedWorld(cluster)
    world.log = log
    ticks = itertools.count(1)
    seeds = itertools.count(1)
    engine = Engine(
        log,
        world,  # type: ignore[arg-type]
        world,  # type: ignore[arg-type]
        clock=lambda: T0 + datetime.timedelta(seconds=next(ticks)),
        seeds=lambda: next(seeds),
        term=1,
    )
    return engine, world


def test_rounds_converge_and_every_record_completes(tmp_path: Path) -> None:
    engine, world = engine_for(tmp_path)
    events: list[str] = []
    engine.progress = lambda event, **details: events.append(event)
    report = asyncio.run(engine.run_until("completed", timeout=60, interval=0))
    assert report.phase == "completed"
    assert not report.operations
    history = engine.log.history()
    assert history, "operations were recorded"
    assert {r["status"] for r in history} == {"completed"}
    names = [r["operation"] for r in reversed(history)]
    assert names[0] == "upgrade"
    assert "etcd-bootstrap" in names
    assert "rivers-bootstrap" in names
    assert events.count("operation-started") == len(history)
    assert world.ran.count("add-etcd-member") == 0
    assert engine.log.config_version() == "2"


def test_a_failed_command_cancels_its_record_and_ends_the_round(tmp_path: Path) -> None:
    engine, world = engine_for(tmp_path)
    asyncio.run(engine.run_until("rivers", timeout=30, interval=0))
    world.fail["volume-create"] = 1
    report = asyncio.run(engine.reconcile_once())
    assert report.failed
    assert len(report.operations) == 1
    outcome = report.operations[0]
    assert outcome.name == "etcd-bootstrap"
    assert not outcome.completed
    assert "injected failure" in outcome.error
    record = engine.log.history(1)[0]
    assert record["status"] == "cancelled"
    assert record["command"]["name"] == "volume-create"
    assert "injected failure" in record["error"]
    # the next round repeats the operation from its first command and completes it
    again = asyncio.run(engine.reconcile_once())
    assert again.operations[0].name == "etcd-bootstrap"
    assert again.operations[0].completed


def test_the_round_stops_after_the_first_failed_operation(tmp_path: Path) -> None:
    engine, world = engine_for(tmp_path)
    asyncio.run(engine.run_until("upgrade", timeout=30, interval=0))
    world.fail["image-pull"] = 1
    report = asyncio.run(engine.reconcile_once())
    assert report.phase == "rivers"
    assert [o.completed for o in report.operations] == [False]


def test_without_a_cluster_nothing_is_decided(tmp_path: Path) -> None:
    log = open_event_log(f"sqlite:///{tmp_path / 'empty.db'}")
    world = SimulatedWorld(fixture_cluster())
    world.log = log
    engine = Engine(log, world, world)  # type: ignore[arg-type]
    report = asyncio.run(engine.reconcile_once())
    assert report.error.startswith("no cluster configuration")
    assert report.phase == ""
    assert log.last_decision() is None
    assert log.history() == []


def test_run_until_gives_up_with_the_last_phase(tmp_path: Path) -> None:
    engine, world = engine_for(tmp_path)
    world.fail["image-pull"] = 10_000
    with pytest.raises(RunUntilTimeout, match="last phase rivers") as caught:
        asyncio.run(engine.run_until("completed", timeout=0.3, interval=0.05))
    assert caught.value.last is not None
    assert caught.value.last.failed
