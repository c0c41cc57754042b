"""``ckecli`` commands that read the event log: ``history``, ``status``,
``replay`` and ``plan``."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

import click
from cke_adapters.eventlog import Plan, ReplayReport, utcnow

from cke_core.timefmt import ZERO_TIME, format_rfc3339, parse_rfc3339
from cke_daemon.cli.inputs import read_text
from cke_daemon.cli.log import open_log

__all__ = ["history", "plan", "replay", "status"]

#: Exit codes: plan would act / replay found differences; no status (CKE).
EXIT_CHANGES: Final = 2
EXIT_NO_STATUS: Final = 4

_ZERO: Final = format_rfc3339(ZERO_TIME)


class ExitCode(click.ClickException):
    """Ends the command with ``code`` (and ``message`` on stderr, if any)."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]

    def show(self, file: object = None) -> None:
        if self.message:
            click.echo(self.message, err=True)


_TARGETS_SHOWN: Final = 3


# ---------------------------------------------------------------------------
# history
# ---------------------------------------------------------------------------


def go_json(value: Any, indent: int | None = None) -> str:
    """JSON as Go's encoding/json writes it (HTML characters escaped)."""
    if indent is None:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        text = json.dumps(value, indent=indent, ensure_ascii=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


HEADER: Final = (
    f"{'ID':>6}  {'STATUS':<9}  {'START-AT':<20}  {'END-AT':<20}  {'OPERATION':<34}  TARGETS"
)


def table_row(view: Mapping[str, Any]) -> str:
    """One record as a table row (and a second line for a command or an error)."""
    targets = list(view["targets"])
    shown = ",".join(targets[:_TARGETS_SHOWN])
    if len(targets) > _TARGETS_SHOWN:
        shown += f" (+{len(targets) - _TARGETS_SHOWN} more)"
    end = view["end-at"] if view["end-at"] != _ZERO else "-"
    line = (
        f"{view['id']:>6}  {view['status']:<9}  {view['start-at']:<20}  {end:<20}  "
        f"{view['operation']:<34}  {shown or '-'}"
    )
    detail = ""
    if view["error"]:
        detail = f"error: {view['error']}"
    elif view["status"] == "running":
        command = view["command"]
        detail = f"running: {command['name']} {command['target']}".rstrip()
    elif view["info"]:
        detail = f"info: {view['info']}"
    return f"{line}\n{'':>6}  {detail}" if detail else line


def _print(views: Iterable[Mapping[str, Any]], output: str) -> None:
    for view in views:
        click.echo(go_json(view, indent=4) if output == "json" else table_row(view))


@click.command()
@click.option(
    "-n",
    "--count",
    type=click.IntRange(min=0),
    default=0,
    help="How many records (default: all CKE keeps, the newest 1000; 20 with -f).",
)
@click.option("-f", "--follow", is_flag=True, help="Then print every record change as it happens.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="json: CKE's record JSON, one indented object per record.",
)
def history(count: int, follow: bool, output: str) -> None:
    """Show operation records, newest first.

    With -f, the last N records are shown oldest first, then each change of
    a record as the engine stores it, until interrupted.
    """
    with open_log() as log:
        if output == "table":
            click.echo(HEADER)
        if not follow:
            _print(log.history(count), output)
            return
        try:
            _print(log.follow(count), output)
        except KeyboardInterrupt:
            return


# ---------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------


@click.command()
def status() -> None:
    """Print CKE's status ({phase, timestamp} of the last decision); exit 4 if none."""
    with open_log() as log:
        found = log.status()
    if found is None:
        raise ExitCode(EXIT_NO_STATUS, "no status")
    click.echo(go_json(found))


# ---------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------


def _until(text: str | None) -> int | datetime.datetime | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise click.BadParameter(f"a record id or an RFC 3339 time: {exc}") from None


def _state_summary(state: Mapping[str, str]) -> list[str]:
    lines = []
    if "status" in state:
        decided = json.loads(state["status"])
        lines.append(f"phase {decided['phase']} (decided {decided['timestamp']})")
    records = int(state.get("records", "1")) - 1
    if records:
        newest = json.loads(state[f"records/{records:016x}"])
        lines.append(f"{records} records, the newest {newest['status']} {newest['operation']}")
    else:
        lines.append("no records")
    config = [k for k in ("cluster", "constraints") if k in state]
    resources = sum(1 for k in state if k.startswith("resource/"))
    lines.append(
        f"configuration: {', '.join(config) or 'nothing stored'}, {resources} user resources"
    )
    for queue, prefix in (("reboot", "reboots"), ("repair", "repairs")):
        entries = sum(1 for k in state if k.startswith(f"{prefix}/data/"))
        disabled = state.get(f"{prefix}/disabled") == "true"
        lines.append(f"{queue} queue {'disabled' if disabled else 'enabled'}, {entries} entries")
    leaders = [v for k, v in state.items() if k.startswith("leader/")]
    if leaders:
        lines.append(f"leader {leaders[0]}")
    return lines


def _report_json(report: ReplayReport) -> str:
    return json.dumps(
        {
            "until": report.point,
            "events": report.events,
            "decisions": report.decisions,
            "engine_version": report.engine_version,
            "recorded_engines": dict(report.recorded_engines),
            "last_event_at": format_rfc3339(report.last_event_at) if report.last_event_at else None,
            "differences": [
                {
                    "decision": d.position,
                    "at": format_rfc3339(d.at),
                    "engine_version": d.engine_version,
                    "phase": d.phase,
                    "records": list(d.records),
                    "differences": list(d.differences),
                }
                for d in report.differences
            ],
            "state": dict(report.state),
        },
        indent=2,
        ensure_ascii=False,
    )


@click.command()
@click.option(
    "--until",
    metavar="RECORD|TIME",
    help="Stop at this record (its last event) or time (RFC 3339); default: the end.",
)
@click.option(
    "--explain",
    "explain_record",
    type=click.IntRange(min=1),
    metavar="RECORD",
    help="Instead: print the inputs that led to this record's operation.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    metavar="N",
    help="Processes to re-derive decisions in (default: one per CPU, at most 4; "
    "logs under 4,000 decisions and time cuts use one).",
)
@click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def replay(until: str | None, explain_record: int | None, jobs: int | None, output: str) -> None:
    """Rebuild the state as of a point and re-derive every recorded decision.

    Every recorded decision up to the point is re-run through this engine's
    decide() on its recorded inputs; each one whose result differs (phase,
    operations, targets) is reported, so running a new engine over an old log
    previews how it would have behaved. Exit code 2 when some decision
    differs, 0 when none does.
    """
    point = _until(until)
    with open_log() as log:
        if explain_record is not None:
            click.echo(log.explain(explain_record))
            return
        report = log.replay(point, jobs=jobs)
    if output == "json":
        click.echo(_report_json(report))
    else:
        engines = ", ".join(f"{k} x{v}" for k, v in sorted(report.recorded_engines.items()))
        last = format_rfc3339(report.last_event_at) if report.last_event_at else "-"
        click.echo(
            f"Replayed {report.decisions} decisions ({report.events} events) up to "
            f"{report.point} (last event {last}) with engine {report.engine_version}"
            + (f"; recorded by {engines}." if engines else ".")
        )
        if report.identical:
            click.echo("No decision differs.")
        else:
            click.echo(f"{len(report.differences)} decisions differ:")
            for diff in report.differences:
                records = ", ".join(map(str, diff.records)) or "none"
                click.echo(
                    f"  decision {diff.position} at {format_rfc3339(diff.at)} (phase "
                    f"{diff.phase}, engine {diff.engine_version}, records {records}):"
                )
                for line in diff.differences:
                    click.echo(f"    {line}")
        click.echo(f"State as of {report.point}:")
        for line in _state_summary(report.state):
            click.echo(f"  {line}")
    if not report.identical:
        raise ExitCode(EXIT_CHANGES)


# ---------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------


def _print_plan(result: Plan) -> None:
    spec = "the proposed cluster.yml" if result.proposed_spec else "the stored cluster.yml"
    cstr = "the proposed constraints" if result.proposed_constraints else "the stored constraints"
    click.echo(
        f"Plan at {format_rfc3339(result.now)} from the observation of decision "
        f"{result.observed_by} ({format_rfc3339(result.observed_at)}), with {spec} and {cstr}."
    )
    click.echo(f"Phase: {result.phase}")
    commands = 0
    for number, op in enumerate(result.operations, start=1):
        click.echo(f"{number}. {op.name} [{', '.join(op.targets) or 'no targets'}]")
        for command in op.commands:
            click.echo(f"     {command.name} {command.target}".rstrip())
        if op.note:
            click.echo(f"     ({op.note})")
        commands += len(op.commands)
    if result.would_act:
        count = len(result.operations)
        click.echo(
            f"The engine would run {count} operation{'' if count == 1 else 's'} "
            f"({commands} command{'' if commands == 1 else 's'}, every one succeeding)."
        )
    else:
        click.echo("No operations: nothing would change.")


@click.command()
@click.option("-f", "--file", "cluster_file", metavar="FILE|-", help="A proposed cluster.yml.")
@click.option("--constraints", "constraints_file", metavar="FILE", help="Proposed constraints.")
@click.option("--seed", type=int, default=0, show_default=True, help="The decision's seed.")
def plan(cluster_file: str | None, constraints_file: str | None, seed: int) -> None:
    """Show what the engine would do now, changing nothing.

    Starts from the latest recorded observation with the stored (or the
    proposed) cluster.yml and constraints: the phase, each operation with its
    targets and the commands it would run. Exit code 2 when it would act, 0
    when there is nothing to do, 1 on error.
    """
    cluster_text = read_text(cluster_file) if cluster_file is not None else None
    constraints_text = read_text(constraints_file) if constraints_file is not None else None
    with open_log() as log:
        result = log.plan(cluster_text, constraints_text, now=utcnow(), seed=seed)
    for problem in result.warnings:
        click.echo(str(problem), err=True)
    _print_plan(result)
    if result.would_act:
        raise ExitCode(EXIT_CHANGES)
