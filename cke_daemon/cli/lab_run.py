"""``ckecli lab run``: run the engine on a lab until a phase, showing progress.

The engine is the library's (``cke_adapters.service.Engine``) wired by
``cke_daemon.wiring.lab_engine``: every decision and operation goes to the
lab's event log (``<lab>/events.db`` unless ``--store`` names another), so
``ckecli --store sqlite:///<lab>/events.db history`` shows what it did.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import click
from cke_adapters.eventlog.errors import EventLogError
from cke_adapters.lab.info import LabInfoError, load_lab
from cke_adapters.oneline import error_line
from cke_adapters.pki import PKIError
from cke_adapters.service import RunUntilTimeout

from cke_core.phases import Phase
from cke_core.problems import ConfigError
from cke_daemon.cli.lab_common import DIR_OPTION, LabCommandError, lab_errors
from cke_daemon.wiring import lab_engine

PHASES = tuple(str(p) for p in Phase)


class ProgressPrinter:
    """One line per step of the engine, for a person watching."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout
        self.started = time.monotonic()

    def _line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {text}", file=self.out, flush=True)

    def __call__(self, event: str, **d: Any) -> None:
        if event == "observed":
            line = f"observed in {d['seconds']:.2f} s"
            if d["unreachable"]:
                line += f"; unreachable: {', '.join(d['unreachable'])}"
            for warning in d["warnings"]:
                line += f"; warning: {warning}"
            self._line(line)
        elif event == "observation-failed":
            self._line(f"observation failed: {d['error']}")
        elif event == "decided":
            ops = ", ".join(d["operations"]) or "nothing to do"
            self._line(f"phase {d['phase']}: {ops}")
        elif event == "operation-started":
            targets = ",".join(d["targets"])
            self._line(f"  record {d['record']} {d['name']} {targets}".rstrip())
        elif event == "command-finished":
            state = "ok" if d["ok"] else f"FAILED: {d['error']}"
            self._line(f"    {d['name']}: {state}")
        elif event == "operation-cancelled":
            self._line(f"  record {d['record']} cancelled: {d['error']}")
        elif event == "record-cancelled":
            self._line(f"record {d['record']} was left by an interrupted engine: cancelled")


@click.command(name="run", short_help="Run the engine on the lab until a phase is reached.")
@DIR_OPTION
@click.option(
    "--until",
    "goal",
    type=click.Choice(PHASES),
    default="completed",
    show_default=True,
    help="Stop after a round that decided this phase and succeeded.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="Give up after this many seconds (exit 1).",
)
@click.option(
    "--store",
    default=None,
    help="Event log URL (default: sqlite:///<dir>/events.db).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the final line.")
@lab_errors
def run(directory: Path, goal: str, timeout: float, store: str | None, quiet: bool) -> None:
    """Run the engine on the lab in DIR: observe the nodes over SSH, decide,
    run the operations, record everything in the event log; repeat until a
    round decides the phase of --until and succeeds.

    The lab's cluster.yml is stored in the event log first (a changed file is a
    new configuration version). Root only, as the lab is.
    """
    printer = ProgressPrinter()
    started = time.monotonic()

    async def go() -> str:
        async with lab_engine(
            load_lab(directory), store=store, progress=None if quiet else printer
        ) as engine:
            report = await engine.run_until(goal, timeout)
            return report.phase

    try:
        phase = asyncio.run(go())
    except RunUntilTimeout as exc:
        raise LabCommandError(str(exc)) from None
    except ConfigError as exc:
        raise LabCommandError("cluster.yml: " + "; ".join(str(p) for p in exc.problems)) from None
    except (LabInfoError, EventLogError, PKIError, OSError) as exc:
        raise LabCommandError(error_line(exc)) from None
    click.echo(f"reached phase {phase} in {time.monotonic() - started:.1f} s")
