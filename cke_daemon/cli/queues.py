"""``ckecli reboot-queue`` (alias ``rq``) and ``ckecli repair-queue``: CKE's verbs
for the two queues (§F), on the event log.

As in CKE, ``list`` prints the entries as a JSON list in CKE's entry form
(Go's indented JSON), ``is-enabled`` prints ``true`` or ``false``, and the
other verbs print nothing on stdout; what they changed is said on stderr.
Every change is one event-log command, checked against the queue's state
machine: bad input (an unknown node, an index that is not an entry, an
operation cluster.yml does not define) is one line on stderr, exit code 1,
and nothing is written. Where CKE would silently do nothing (cancelling an
entry already cancelled, deleting one already marked deleted), so does this.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import click
from cke_adapters.eventlog import EventLog

from cke_core.codec import unstructure
from cke_core.queues import RebootQueueEntry
from cke_daemon.cli.errors import CLIError
from cke_daemon.cli.history import go_json
from cke_daemon.cli.inputs import read_text
from cke_daemon.cli.log import open_log

__all__ = ["reboot_queue", "repair_queue"]

#: ``repair-queue wait`` defaults, as CKE's.
WAIT_TIMEOUT_SECONDS: Final = 30
WAIT_INTERVAL_SECONDS: Final = 1


def _index(text: str) -> int:
    """An entry index as CKE parses it (a decimal integer), or a one-line error."""
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise CLIError(f"INDEX must be an integer, got {text!r}") from None
    if value < 0:
        raise CLIError(f"INDEX must be an integer >= 0, got {text!r}")
    return value


def _print_entries(entries: Sequence[Any]) -> None:
    click.echo(go_json([unstructure(e) for e in entries], indent=4))


def _said(what: str, indices: Sequence[int]) -> None:
    """What a verb changed, on stderr (stdout stays for data)."""
    if indices:
        listed = ", ".join(str(i) for i in indices)
        click.echo(f"{what} entr{'y' if len(indices) == 1 else 'ies'} {listed}", err=True)
    else:
        click.echo(f"{what} no entries", err=True)


def _enable(change: Callable[[EventLog, bool], bool], enabled: bool, name: str) -> None:
    with open_log(create=True) as log:
        changed = change(log, enabled)
    state = "enabled" if enabled else "disabled"
    click.echo(f"{name} {state}" if changed else f"{name} was already {state}", err=True)


def _print_enabled(enabled: Callable[[EventLog], bool]) -> None:
    with open_log() as log:
        answer = enabled(log)
    click.echo("true" if answer else "false")


def _change_all(change: Callable[[EventLog], Sequence[int]], what: str) -> None:
    """A verb that changes every entry it applies to, and says which."""
    with open_log(create=True) as log:
        indices = change(log)
    _said(what, indices)


def _change_one(change: Callable[[EventLog, int], bool], index: str, queue: str, done: str) -> None:
    """A verb on entry INDEX; says so when it was already done (as CKE, no error)."""
    number = _index(index)
    with open_log(create=True) as log:
        changed = change(log, number)
    if changed:
        _said(f"{queue}: {done}", [number])
    else:
        click.echo(f"{queue}: entry {number} was already {done}", err=True)


# ---------------------------------------------------------------------------
# reboot-queue
# ---------------------------------------------------------------------------


@click.group("reboot-queue")
def reboot_queue() -> None:
    """The reboot queue (alias: rq): nodes to drain and reboot one by one."""


@reboot_queue.command("enable")
def reboot_queue_enable() -> None:
    """Enable processing of the reboot queue."""
    _enable(EventLog.reboot_queue_enable, True, "reboot queue")


@reboot_queue.command("disable")
def reboot_queue_disable() -> None:
    """Disable processing of the reboot queue.

    No new drains start; nodes are uncordoned. Cancellations and dequeues
    still run.
    """
    _enable(EventLog.reboot_queue_enable, False, "reboot queue")


@reboot_queue.command("is-enabled")
def reboot_queue_is_enabled() -> None:
    """Print true if the reboot queue is enabled, false if not."""
    _print_enabled(EventLog.reboot_queue_is_enabled)


@reboot_queue.command("add")
@click.argument("file", metavar="FILE|-")
def reboot_queue_add(file: str) -> None:
    """Append the nodes written in FILE to the reboot queue, one entry each.

    The nodes are IP addresses of cluster.yml's nodes, separated by
    whitespace. If FILE is -, the contents are read from stdin. Every
    address is checked before any entry is added.
    """
    text = read_text(file)
    nodes = text.split()
    if not nodes:
        where = "standard input" if file == "-" else file
        click.echo(f"ckecli: {where} names no node; nothing added", err=True)
        return
    with open_log(create=True) as log:
        indices = log.reboot_queue_add(nodes)
    _said("reboot queue: added", indices)


@reboot_queue.command("list")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["json", "simple"]),
    default="json",
    show_default=True,
    help="json: CKE's entries as a JSON list; simple: a table.",
)
def reboot_queue_list(output: str) -> None:
    """List the entries in the reboot queue (a JSON list of entries)."""
    with open_log() as log:
        queue = log.reboot_queue()
        entries = queue.entries() if queue is not None else ()
    if output == "simple":
        click.echo(simple_table(entries), nl=False)
    else:
        _print_entries(entries)


@reboot_queue.command("cancel")
@click.argument("index", metavar="INDEX")
def reboot_queue_cancel(index: str) -> None:
    """Cancel the reboot queue entry INDEX."""
    _change_one(EventLog.reboot_queue_cancel, index, "reboot queue", "cancelled")


@reboot_queue.command("cancel-all")
def reboot_queue_cancel_all() -> None:
    """Cancel every entry of the reboot queue."""
    _change_all(EventLog.reboot_queue_cancel_all, "reboot queue: cancelled")


@reboot_queue.command("reset-backoff")
def reboot_queue_reset_backoff() -> None:
    """Reset drain_backoff_count and drain_backoff_expire of every entry."""
    _change_all(EventLog.reboot_queue_reset_backoff, "reboot queue: reset the drain backoff of")


def _go_time(value: datetime.datetime) -> str:
    """Go's ``time.RFC3339`` (whole seconds; year with four digits)."""
    value = value.astimezone(datetime.UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z"
    )


_SIMPLE_HEADER: Final = (
    "Index",
    "Node",
    "Status",
    "LastTransitionTime",
    "DrainBackOffCount",
    "DrainBackOffExpire",
)


def simple_table(entries: Sequence[RebootQueueEntry]) -> str:
    """``list -o simple`` as CKE prints it with Go's tabwriter (padding 1):
    every row's cells end with a tab, the header's last cell does not."""
    rows = [
        [
            str(e.index),
            e.node,
            e.status.value,
            _go_time(e.last_transition_time),
            str(e.drain_backoff_count),
            _go_time(e.drain_backoff_expire),
        ]
        for e in entries
    ]
    # Widths of the tab-terminated cells: the header's first five and every
    # row's six (the header's last cell is trailing text, not in a column).
    widths = [len(name) for name in _SIMPLE_HEADER[:-1]] + [0]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    header = "".join(
        name.ljust(width + 1) for name, width in zip(_SIMPLE_HEADER[:-1], widths, strict=False)
    )
    lines = [header + _SIMPLE_HEADER[-1]]
    lines += [
        "".join(cell.ljust(w + 1) for cell, w in zip(row, widths, strict=True)) for row in rows
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# repair-queue
# ---------------------------------------------------------------------------


@click.group("repair-queue")
def repair_queue() -> None:
    """The repair queue: machines to drain and repair by cluster.yml's procedures."""


@repair_queue.command("enable")
def repair_queue_enable() -> None:
    """Enable processing of the repair queue."""
    _enable(EventLog.repair_queue_enable, True, "repair queue")


@repair_queue.command("disable")
def repair_queue_disable() -> None:
    """Disable processing of the repair queue.

    No new drains or repair commands start; health checks, finishing and
    dequeueing continue.
    """
    _enable(EventLog.repair_queue_enable, False, "repair queue")


@repair_queue.command("is-enabled")
def repair_queue_is_enabled() -> None:
    """Print true if the repair queue is enabled, false if not."""
    _print_enabled(EventLog.repair_queue_is_enabled)


@repair_queue.command("add")
@click.argument("operation")
@click.argument("machine_type")
@click.argument("address")
@click.argument("serial", required=False, default="")
def repair_queue_add(operation: str, machine_type: str, address: str, serial: str) -> None:
    """Append a repair request to the repair queue.

    The target is the machine at ADDRESS, of machine type MACHINE_TYPE, to be
    processed with OPERATION; cluster.yml's repair procedures must define that
    operation for that machine type. SERIAL (optional) is the machine's serial
    number. The machine need not be a node of the cluster.
    """
    with open_log(create=True) as log:
        index = log.repair_queue_add(operation, machine_type, address, serial)
    _said("repair queue: added", [index])


@repair_queue.command("list")
def repair_queue_list() -> None:
    """List the entries in the repair queue (a JSON list of entries)."""
    with open_log() as log:
        queue = log.repair_queue()
        entries = queue.entries() if queue is not None else ()
    _print_entries(entries)


@repair_queue.command("delete")
@click.argument("index", metavar="INDEX")
def repair_queue_delete(index: str) -> None:
    """Delete the repair queue entry INDEX.

    The entry is marked deleted; the engine dequeues it (and stops a repair
    in progress).
    """
    _change_one(EventLog.repair_queue_delete, index, "repair queue", "deleted")


@repair_queue.command("delete-finished")
def repair_queue_delete_finished() -> None:
    """Delete every finished (succeeded or failed) entry."""
    _change_all(EventLog.repair_queue_delete_finished, "repair queue: deleted")


@repair_queue.command("delete-unfinished")
def repair_queue_delete_unfinished() -> None:
    """Delete every unfinished (queued or processing) entry."""
    _change_all(EventLog.repair_queue_delete_unfinished, "repair queue: deleted")


@repair_queue.command("reset-backoff")
def repair_queue_reset_backoff() -> None:
    """Reset drain_backoff_count and drain_backoff_expire of every entry."""
    _change_all(EventLog.repair_queue_reset_backoff, "repair queue: reset the drain backoff of")


@repair_queue.command("wait")
@click.option(
    "--timeout-seconds",
    type=int,
    default=WAIT_TIMEOUT_SECONDS,
    show_default=True,
    help="Give up after this many seconds; 0: check once and do not wait.",
)
@click.option(
    "--interval-seconds",
    type=int,
    default=WAIT_INTERVAL_SECONDS,
    show_default=True,
    help="Seconds between checks.",
)
def repair_queue_wait(timeout_seconds: int, interval_seconds: int) -> None:
    """Wait until the repair queue is empty.

    Prints the number of entries at every check; exits 0 when no entry
    remains, 1 on timeout.
    """
    if timeout_seconds < 0:
        raise CLIError("--timeout-seconds must not be negative")
    if interval_seconds <= 0:
        raise CLIError("--interval-seconds must be greater than zero")
    with open_log() as log:
        wait_until_empty(log, timeout_seconds, interval_seconds)


def wait_until_empty(log: EventLog, timeout_seconds: float, interval_seconds: float) -> None:
    """CKE's ``repair-queue wait`` loop on ``log``: check, then every interval
    until the queue is empty or the timeout has passed."""

    def count() -> int:
        queue = log.repair_queue()
        return len(queue.entry_docs) if queue is not None else 0

    remaining = count()
    if remaining == 0:
        click.echo("repair queue is empty")
        return
    if timeout_seconds == 0:
        raise CLIError("repair queue is not empty")
    click.echo(f"repair queue entries: {remaining}")
    deadline = time.monotonic() + timeout_seconds
    while True:
        time.sleep(max(0.0, min(interval_seconds, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            raise CLIError(
                f"timed out waiting for repair queue to become empty after {timeout_seconds}s"
            )
        remaining = count()
        if remaining == 0:
            click.echo("repair queue is empty")
            return
        click.echo(f"repair queue entries: {remaining}")
