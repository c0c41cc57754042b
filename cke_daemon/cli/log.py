"""``ckecli`` commands that write or move the event log: ``cluster set|get``,
``constraints set|show``, ``events export|import``; and ``open_log``, which
every event-log command uses to reach the store named by ``--store`` /
``$CKE_EVENT_LOG``."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import click
from cke_adapters.eventlog import EventLog, EventLogError, default_store_url, open_event_log

from cke_core import codec
from cke_core.constraints import Constraints
from cke_core.documents import dump_json, dump_yaml
from cke_core.history import HistoryError
from cke_daemon.cli.errors import CLIError
from cke_daemon.cli.inputs import read_text

__all__ = [
    "cluster_get",
    "cluster_set",
    "constraints",
    "events",
    "open_log",
    "store_url",
]


def store_url() -> str:
    """The store of this invocation: ``--store``, else ``$CKE_EVENT_LOG``, else
    ``./var/cke-events.db``."""
    ctx = click.get_current_context(silent=True)
    url = ctx.find_root().params.get("store") if ctx is not None else None
    return str(url) if url else default_store_url()


@contextlib.contextmanager
def open_log(*, create: bool = False) -> Iterator[EventLog]:
    """The event log, closed afterwards; its errors become one-line ``CLIError``s.

    ``create``: a command that writes may create a new SQLite log; read-only
    commands refuse a log that does not exist.
    """
    try:
        log = open_event_log(store_url(), create=create)
    except EventLogError as exc:
        raise CLIError(str(exc)) from None
    try:
        yield log
    except (EventLogError, HistoryError) as exc:
        raise CLIError(str(exc)) from None
    finally:
        log.close()


# ---------------------------------------------------------------------------
# cluster set / get (added to the `cluster` group)
# ---------------------------------------------------------------------------


@click.command("set")
@click.argument("file", metavar="FILE|-")
def cluster_set(file: str) -> None:
    """Validate FILE (cluster.yml) and store it in the event log.

    As CKE's `ckecli cluster set`: CKE's defaults are applied, the
    configuration is validated and checked against the stored constraints.
    Problems are printed as `path: message`; nothing is stored unless there
    is no error. Storing the same configuration again records nothing.
    """
    text = read_text(file)
    with open_log(create=True) as log:
        result = log.set_cluster(text)
    for problem in result.warnings:
        click.echo(str(problem), err=True)


@click.command("get")
@click.option(
    "-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
def cluster_get(output: str) -> None:
    """Print the stored cluster configuration (normalised)."""
    with open_log() as log:
        cluster = log.cluster()
    if cluster is None:
        raise CLIError("no cluster configuration in the event log (ckecli cluster set FILE)")
    data = codec.unstructure(cluster)
    click.echo(dump_json(data) if output == "json" else dump_yaml(data), nl=False)


# ---------------------------------------------------------------------------
# constraints
# ---------------------------------------------------------------------------


@click.group()
def constraints() -> None:
    """Cluster constraints (alias: cstr)."""


@constraints.command("set")
@click.argument("name")
@click.argument("value")
def constraints_set(name: str, value: str) -> None:
    """Set the constraint NAME to the integer VALUE.

    NAME is one of control-plane-count, minimum-workers-rate,
    maximum-unreachable-nodes-for-reboot, maximum-repair-queue-entries,
    wait-seconds-to-repair-rebooting. The stored cluster.yml must satisfy
    the new constraints.
    """
    with open_log(create=True) as log:
        log.set_constraint(name, value)


@constraints.command("show")
def constraints_show() -> None:
    """Print the constraints as JSON (the defaults when none were set)."""
    with open_log() as log:
        stored = log.constraints()
    if stored is None:
        click.echo("ckecli: no constraints set; these are the defaults", err=True)
    click.echo(dump_json(codec.unstructure(stored or Constraints())), nl=False)


# ---------------------------------------------------------------------------
# events export / import
# ---------------------------------------------------------------------------


@click.group()
def events() -> None:
    """Move the whole event log as JSON Lines (to investigate elsewhere)."""


@events.command("export")
@click.option(
    "-o", "--output", "output", metavar="FILE", default="-", help="Write here (default: stdout)."
)
def events_export(output: str) -> None:
    """Write every event of the log as JSON Lines.

    The first line names the format, the last one counts the events; each
    line between is one stored event (id, originator_id, originator_version,
    topic, state). `ckecli events import` reads it back.
    """
    with open_log() as log:
        if output == "-":
            sys.stdout.flush()
            binary = getattr(sys.stdout, "buffer", None)
            if binary is None:  # stdout replaced by a text stream
                log.export_jsonl(sys.stdout)
                return
            stream = io.TextIOWrapper(binary, encoding="utf-8", newline="\n")
            try:
                log.export_jsonl(stream)
            finally:
                stream.flush()
                stream.detach()
            return
        try:
            with Path(output).open("w", encoding="utf-8", newline="\n") as file:
                count = log.export_jsonl(file)
        except OSError as exc:
            raise CLIError(f"{output}: {exc.strerror or exc}") from None
    click.echo(f"exported {count} events to {output}", err=True)


@events.command("import")
@click.argument("file", metavar="FILE|-")
def events_import(file: str) -> None:
    """Append an export to the log, after checking all of it.

    Every line is checked (JSON, fields, known event topics, contiguous
    versions, no conflict with events already in the log, every event
    applicable) before anything is written; the first problem is reported as
    `line N: reason` and the log is left unchanged.
    """
    stream: IO[str]
    wrapped = False
    try:
        if file == "-":
            binary = getattr(sys.stdin, "buffer", None)
            wrapped = binary is not None
            stream = sys.stdin
            if binary is not None:
                stream = io.TextIOWrapper(binary, encoding="utf-8", newline="\n")
        else:
            stream = Path(file).open(encoding="utf-8", newline="\n")  # noqa: SIM115
    except OSError as exc:
        raise CLIError(f"{file}: {exc.strerror or exc}") from None
    try:
        with open_log(create=True) as log:
            count = log.import_jsonl(stream)
    except UnicodeDecodeError as exc:
        where = "standard input" if file == "-" else file
        raise CLIError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    finally:
        if wrapped:
            assert isinstance(stream, io.TextIOWrapper)
            stream.detach()
        elif file != "-":
            stream.close()
    click.echo(f"imported {count} events into {store_url()}")
