"""Driving an ``EventLog`` as the engine would, against the simulated cluster of
``cke_core.simulation`` (tests, benchmarks and demonstrations).

``run_engine`` plays CKE's loop (§B.0) one decision a minute: build the
inputs from the log, decide, record the decision, and run each operation as
an operation record (register, one ``command_started`` per command,
``completed``), then observe the simulated cluster again.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import attrs

from cke_adapters.eventlog.application import EventLog
from cke_core import strategy
from cke_core.frozen import FrozenDict
from cke_core.ops.base import Operation
from cke_core.simulation import execute, health
from cke_core.status import ClusterStatus, NodeStatus
from cke_core.strategy import Decision

__all__ = ["EngineRun", "initial_status", "run_engine"]

MINUTE = datetime.timedelta(minutes=1)


def initial_status(addresses: list[str]) -> ClusterStatus:
    """Every node reachable, nothing running (the start of a bootstrap)."""
    return ClusterStatus(
        config_version="2",
        nodes=FrozenDict({a: NodeStatus(ssh_connected=True) for a in addresses}),
    )


@attrs.define
class EngineRun:
    """What ``run_engine`` did, and where it stopped."""

    status: ClusterStatus
    now: datetime.datetime
    decisions: list[Decision] = attrs.field(factory=list)
    records: list[int] = attrs.field(factory=list)


def run_engine(
    log: EventLog,
    status: ClusterStatus,
    start: datetime.datetime,
    *,
    cycles: int = 30,
    engine: str = "cke-py/test",
    term: int = 1,
    interrupt: Callable[[Operation], bool] | None = None,
) -> EngineRun:
    """Decide and run until a decision has no operations (or ``cycles`` ran).

    ``interrupt(op)`` true: the process "crashes" right after starting the
    first command of ``op``: the record stays ``running`` and the run stops.
    """
    run = EngineRun(status, start)
    for cycle in range(cycles):
        run.now += MINUTE
        inputs = log.decision_inputs(run.status, run.now, seed=cycle)
        decision = strategy.decide(inputs)
        run.decisions.append(decision)
        recorded = log.record_decision(inputs, decision, engine, term)
        status = inputs.status
        for op in decision.operations:
            number = log.register(op, at=run.now, decision=recorded.position)
            run.records.append(number)
            executed = execute(status, inputs.cluster, inputs.settings, op, run.now)
            for command in executed.commands:
                log.command_started(number, command.name, command.target, at=run.now)
                if interrupt is not None and interrupt(op):
                    return run
            log.completed(number, op.info(list(executed.results)), at=run.now)
            status = executed.status
        run.status = health(status, inputs.cluster)
        if not decision.operations:
            break
    return run
