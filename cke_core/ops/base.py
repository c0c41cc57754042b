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
* given successful results, every plan finishes within 100 commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs


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
    """What the shell reports back for one command."""

    ok: bool = True
    value: Any = None
    error: str = ""


SUCCESS = CommandResult()


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


def nth(commands: Sequence[Command], results: Sequence[CommandResult]) -> Command | None:
    """The next command of a fixed sequence."""
    return commands[len(results)] if len(results) < len(commands) else None
