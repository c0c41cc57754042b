"""Operations as pure command plans.

An operation (CKE's ``cke.Operator``) is a frozen value: its name, its targets
and enough data to produce its commands. It never performs I/O. The executor
asks ``next_command(results)`` with the results of the commands run so far and
runs what comes back, until the answer is ``None``. Because the plan sees
earlier results, a later command can depend on an earlier answer (the etcd
member list, a created member's id, which evictions failed) while the plan
stays a pure function of (operation, results).

Contract for every operation:

* ``next_command(())`` is the first command; ``next_command(results)`` with
  ``len(results) == n`` is the (n+1)-th, or ``None`` when done;
* it is called only with results of commands it returned, in order; the
  executor stops the operation at the first failed result unless the
  operation says it handles failures itself (``tolerates_failures``);
* given successful results, every plan finishes within 100 commands
  (``MAX_COMMANDS``), whatever its number of targets: a node step is one
  command for all the nodes (``commands.node``), and the operations that
  issue commands per queue entry take a bounded batch of entries.

``ScriptedOperation`` writes a plan as a generator that yields commands and
receives their results, replayed from the start on every call: the plan stays
a pure function of (operation, results) while reading like CKE's loops.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final

import attrs

#: Every plan finishes within this many commands when they succeed.
MAX_COMMANDS: Final = 100


@attrs.frozen
class Command:
    """A command as data. ``name`` is CKE's ``command.name``; ``target`` its target.

    Subclasses set ``NAME``; a command whose name depends on its data overrides
    the ``name`` property instead.
    """

    NAME: ClassVar[str] = ""

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def target(self) -> str:
        """What the operation record shows as ``command.target``."""
        return ""


@attrs.frozen
class CommandResult:
    """What the shell reports back for one command.

    A command over several nodes (or Nodes) is ``ok`` only if it succeeded on
    every one; when it failed, ``value`` may map each failed node to its error
    (``failed_nodes``).
    """

    ok: bool = True
    value: Any = None
    error: str = ""


SUCCESS = CommandResult()


def failed_nodes(nodes: Iterable[str], result: CommandResult) -> tuple[str, ...]:
    """The nodes a multi-node command failed on, in the order of ``nodes``: none if
    it succeeded; those its ``value`` maps to an error when the result gives that
    detail; otherwise all of them."""
    if result.ok:
        return ()
    nodes = tuple(nodes)
    if isinstance(result.value, Mapping) and result.value:
        return tuple(n for n in nodes if n in result.value)
    return nodes


@attrs.frozen
class Operation:
    """Base of all operations: ``name`` and ``targets`` as CKE records them.

    Subclasses set ``NAME``; an operation whose name depends on its data (the
    endpoints ops, the stop-* ops) overrides the ``name`` property instead.
    """

    NAME: ClassVar[str] = ""
    #: True for CKE's InfoOperators, whose per-node failures go to ``info``.
    tolerates_failures: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def targets(self) -> tuple[str, ...]:
        return ()

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        raise NotImplementedError

    def info(self, results: Sequence[CommandResult]) -> str:
        """CKE's ``info`` field for InfoOperators; empty for the others."""
        return ""

    def fatal_error(self, results: Sequence[CommandResult]) -> str:
        """Why an operation that handles failures itself stopped early; "" if it did not.

        The executor treats a non-empty answer like a failed command.
        """
        return ""


def nth(commands: Sequence[Command], results: Sequence[CommandResult]) -> Command | None:
    """The next command of a fixed sequence."""
    return commands[len(results)] if len(results) < len(commands) else None


@attrs.define
class Trace:
    """What a script noted on its way: failed nodes (for ``info``) and a fatal error."""

    failed: list[str] = attrs.field(factory=list)
    fatal: str = ""


#: A script yields commands, receives their results and returns when done.
Script = Generator[Command, CommandResult, None]


@attrs.frozen
class ScriptedOperation(Operation):
    """An operation whose plan is a generator (``script``), replayed on every call.

    Subclasses are frozen attrs classes and implement ``script(trace)``. A
    result that arrives after the script finished is ignored.
    """

    #: Format of ``info`` with the failed nodes (Go's ``%v`` of a []string).
    INFO_FORMAT: ClassVar[str] = ""

    def script(self, trace: Trace) -> Script:
        raise NotImplementedError

    def replay(self, results: Sequence[CommandResult]) -> tuple[Command | None, Trace]:
        """The next command after ``results`` (None when done) and the trace so far."""
        trace = Trace()
        script = self.script(trace)
        try:
            command = next(script)
            for result in results:
                command = script.send(result)
        except StopIteration:
            return None, trace
        finally:
            script.close()
        return command, trace

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return self.replay(results)[0]

    def failed_nodes(self, results: Sequence[CommandResult]) -> tuple[str, ...]:
        return tuple(self.replay(results)[1].failed)

    def fatal_error(self, results: Sequence[CommandResult]) -> str:
        """Why the operation stopped early (a failed queue read or write); "" if it did not."""
        return self.replay(results)[1].fatal

    def info(self, results: Sequence[CommandResult]) -> str:
        failed = self.failed_nodes(results)
        if not failed or not self.INFO_FORMAT:
            return ""
        return self.INFO_FORMAT.format(go_list(failed))


def go_list(items: Sequence[str]) -> str:
    """A list of strings as Go's ``fmt`` prints a ``[]string`` with ``%v``."""
    return "[" + " ".join(items) + "]"
