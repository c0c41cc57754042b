"""The service layer: one round of CKE's loop (§B.0) as a library call.

``Engine.reconcile_once()`` observes the cluster, decides with
``cke_core.strategy.decide``, records the decision, and runs each operation
as an operation record (register, one ``command_started`` per command,
``completed`` or ``cancelled``), exactly as ``runOp`` does (§E.3): the first
failed command cancels its record and ends the round (§L.2).
``Engine.run_until(goal, timeout)`` repeats rounds until the goal is met.

The engine depends only on the ``Observer``, the ``Executor`` and the
``EventLog``; which adapters stand behind them is the composition root's
choice (``cke_daemon.wiring``). Time and the random seed come from the
``clock`` and ``seeds`` callables, so a test can fix them; both are recorded
with the decision, which is what makes it replayable.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from typing import Final, Protocol

import attrs

from cke_adapters.eventlog.application import EventLog, new_seed, utcnow
from cke_adapters.eventlog.application import engine_version as running_engine_version
from cke_adapters.executor import Executor, Staging
from cke_adapters.observe import Observation, ObservationError, Observer, QueueState
from cke_core import strategy
from cke_core.ops.base import MAX_COMMANDS, CommandResult, Operation
from cke_core.render.images import EngineSettings
from cke_core.status import ClusterStatus

__all__ = [
    "Engine",
    "Goal",
    "OperationOutcome",
    "Progress",
    "RoundReport",
    "RunUntilTimeout",
    "phase_is",
]

#: A plan that has not finished after this many commands is cut short (a bug in a plan).
COMMAND_LIMIT: Final = MAX_COMMANDS * 2


@attrs.frozen
class OperationOutcome:
    """One operation a round ran, as its record ended."""

    record: int
    name: str
    targets: tuple[str, ...]
    commands: int
    completed: bool
    error: str = ""
    info: str = ""


@attrs.frozen
class RoundReport:
    """What one ``reconcile_once`` saw and did."""

    phase: str = ""
    operations: tuple[OperationOutcome, ...] = ()
    #: Why the round decided nothing (no cluster, a failed observation); "" otherwise.
    error: str = ""
    warnings: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()
    status: ClusterStatus | None = None

    @property
    def acted(self) -> bool:
        return bool(self.operations)

    @property
    def failed(self) -> bool:
        return bool(self.error) or any(not o.completed for o in self.operations)


class Progress(Protocol):
    """Receives what the engine does, as it does it (a CLI prints it)."""

    def __call__(self, event: str, **details: object) -> None: ...


def _quiet(event: str, **details: object) -> None:
    del event, details


#: A goal for ``run_until``: a phase name or a predicate over the round's report.
Goal = str | Callable[[RoundReport], bool]


def phase_is(phase: str) -> Callable[[RoundReport], bool]:
    """The goal "a round decided ``phase`` without failing"."""

    def reached(report: RoundReport) -> bool:
        return report.phase == phase and not report.failed

    return reached


class RunUntilTimeout(TimeoutError):
    """``run_until`` gave up; ``last`` is the last round's report."""

    def __init__(self, goal: str, timeout: float, last: RoundReport | None) -> None:
        phase = last.phase if last is not None else "none"
        why = f" ({last.error})" if last is not None and last.error else ""
        super().__init__(f"not reached within {timeout:g} s: {goal}; last phase {phase}{why}")
        self.last = last


class Engine:
    """Observe, decide, execute, record: the engine's loop around the pure core."""

    def __init__(
        self,
        log: EventLog,
        observer: Observer,
        executor: Executor,
        *,
        settings: EngineSettings | None = None,
        engine_version: str = "",
        term: int = 0,
        clock: Callable[[], datetime.datetime] = utcnow,
        seeds: Callable[[], int] = new_seed,
        progress: Progress = _quiet,
    ) -> None:
        self.log = log
        self.observer = observer
        self.executor = executor
        self.settings = settings
        self.engine_version = engine_version or running_engine_version()
        self.term = term
        self.clock = clock
        self.seeds = seeds
        self.progress = progress

    async def observe(self) -> Observation:
        """One observation of the cluster in the event log (``ObservationError``
        when none can be made)."""
        cluster = await asyncio.to_thread(self.log.cluster)
        if cluster is None:
            raise ObservationError("no cluster configuration: run `ckecli cluster set` first")
        reboot = await asyncio.to_thread(self.log.reboot_queue)
        repair = await asyncio.to_thread(self.log.repair_queue)
        return await self.observer.observe(
            cluster,
            config_version=await asyncio.to_thread(self.log.config_version),
            now=self.clock(),
            reboot_queue=QueueState(
                enabled=reboot is None or bool(reboot.enabled),
                entries=() if reboot is None else reboot.entries(),
            ),
            repair_queue=QueueState(
                enabled=repair is None or bool(repair.enabled),
                entries=() if repair is None else repair.entries(cluster),
            ),
        )

    async def reconcile_once(self) -> RoundReport:
        """One round: observe, decide, record, run the operations in order."""
        started = time.monotonic()
        try:
            observation = await self.observe()
        except ObservationError as exc:
            self.progress("observation-failed", error=str(exc))
            return RoundReport(error=str(exc))
        self.progress(
            "observed",
            seconds=time.monotonic() - started,
            unreachable=tuple(observation.unreachable),
            warnings=observation.warnings,
        )
        now = self.clock()
        inputs = self.log.decision_inputs(
            observation.status, now, seed=self.seeds(), settings=self.settings
        )
        decision = strategy.decide(inputs)
        recorded = self.log.record_decision(inputs, decision, self.engine_version, self.term)
        self.progress(
            "decided", phase=str(decision.phase), operations=[o.name for o in decision.operations]
        )
        outcomes: list[OperationOutcome] = []
        for op in decision.operations:
            outcome = await self._run_operation(op, inputs, recorded.position)
            outcomes.append(outcome)
            if not outcome.completed:
                break
        return RoundReport(
            phase=str(decision.phase),
            operations=tuple(outcomes),
            warnings=observation.warnings,
            unreachable=tuple(observation.unreachable),
            status=observation.status,
        )

    async def _run_operation(
        self, op: Operation, inputs: strategy.DecisionInputs, decision: int
    ) -> OperationOutcome:
        """CKE's ``runOp``: register, run each command, complete or cancel."""
        number = self.log.register(op, at=self.clock(), decision=decision)
        self.progress("operation-started", record=number, name=op.name, targets=op.targets)
        results: list[CommandResult] = []
        staging = Staging()
        error = ""
        while (command := op.next_command(results)) is not None:
            if len(results) >= COMMAND_LIMIT:
                error = f"the plan of {op.name} did not finish within {COMMAND_LIMIT} commands"
                break
            self.log.command_started(number, command.name, command.target, at=self.clock())
            self.progress(
                "command-started", record=number, name=command.name, target=command.target
            )
            result = await self.executor.run(inputs.cluster, command, staging, inputs.status.nodes)
            results.append(result)
            self.progress(
                "command-finished",
                record=number,
                name=command.name,
                ok=result.ok,
                error=result.error,
            )
            if not result.ok and not op.tolerates_failures:
                error = result.error or f"{command.name} failed"
                break
            if fatal := op.fatal_error(results):
                error = fatal
                break
        if error:
            self.log.cancelled(number, error, at=self.clock())
            self.progress("operation-cancelled", record=number, name=op.name, error=error)
            return OperationOutcome(number, op.name, op.targets, len(results), False, error)
        info = op.info(results)
        self.log.completed(number, info, at=self.clock())
        self.progress("operation-completed", record=number, name=op.name, info=info)
        return OperationOutcome(number, op.name, op.targets, len(results), True, info=info)

    async def run_until(
        self,
        goal: Goal,
        timeout: float,
        *,
        interval: float = 1.0,
    ) -> RoundReport:
        """Run rounds until ``goal`` holds (a phase name: a round decided it without
        failing); ``RunUntilTimeout`` after ``timeout`` seconds.

        As CKE's loop: after a round that ran operations successfully the next
        starts at once; otherwise it waits ``interval`` seconds. A round in
        progress is finished before the deadline is checked.
        """
        reached = phase_is(goal) if isinstance(goal, str) else goal
        label = f"phase {goal}" if isinstance(goal, str) else "goal"
        deadline = time.monotonic() + timeout
        last: RoundReport | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunUntilTimeout(label, timeout, last)
            # A round is never cut short: cancelling it mid-operation would leave a
            # running record behind (as a crash does); the deadline is checked between rounds.
            last = await self.reconcile_once()
            if reached(last):
                return last
            if not last.acted or last.failed:
                await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
