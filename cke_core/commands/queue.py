"""Reboot/repair queue commands and commands run on the engine's host (§E.1, §F).

Queue entries live under ``reboots/data/<%016x index>`` and
``repairs/data/<%016x index>``. The shell writes them conditioned on the
leader key (§L.1); an update of an entry that no longer exists fails, as
CKE's ``UpdateRebootsEntry`` / ``UpdateRepairsEntry`` do.

``RunLocalCommand`` is CKE's ``exec`` on the CKE host (op/exec.go
``runCommand``), never over SSH: the reboot, repair and success commands of
cluster.yml, with the operation appending the node address.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import attrs

from cke_core.ops.base import Command
from cke_core.queues import RebootQueueEntry, RepairQueueEntry


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


# ---------------------------------------------------------------------------
# Reboot queue
# ---------------------------------------------------------------------------


@attrs.frozen
class GetRebootQueueEntry(Command):
    """Read the entry ``index`` as stored now.

    Result ``value``: the ``RebootQueueEntry``, or ``None`` when it no longer
    exists (``ok`` stays true). A storage error is ``ok=False``.
    """

    NAME: ClassVar[str] = "get-reboot-queue-entry"

    index: int
    node: str = ""

    @property
    def target(self) -> str:
        return self.node or str(self.index)


@attrs.frozen
class UpdateRebootQueueEntry(Command):
    """Write ``entry`` (it must still exist)."""

    NAME: ClassVar[str] = "update-reboot-queue-entry"

    entry: RebootQueueEntry

    @property
    def target(self) -> str:
        return self.entry.node


@attrs.frozen
class DeleteRebootQueueEntry(Command):
    """Delete the entry ``index`` (leader-conditioned). ``node`` is for the record."""

    NAME: ClassVar[str] = "delete-reboot-queue-entry"

    index: int
    node: str = ""

    @property
    def target(self) -> str:
        return self.node or str(self.index)


# ---------------------------------------------------------------------------
# Repair queue
# ---------------------------------------------------------------------------


@attrs.frozen
class UpdateRepairQueueEntry(Command):
    """Write ``entry`` (it must still exist)."""

    NAME: ClassVar[str] = "update-repair-queue-entry"

    entry: RepairQueueEntry

    @property
    def target(self) -> str:
        return self.entry.address


@attrs.frozen
class DeleteRepairQueueEntry(Command):
    """Delete the entry ``index`` (leader-conditioned). ``address`` is for the record."""

    NAME: ClassVar[str] = "delete-repair-queue-entry"

    index: int
    address: str = ""

    @property
    def target(self) -> str:
        return self.address or str(self.index)


# ---------------------------------------------------------------------------
# Commands on the engine's host
# ---------------------------------------------------------------------------


@attrs.frozen
class RunLocalCommand(Command):
    """Run ``argv`` on the engine's host (no shell), up to ``retries + 1`` times.

    Each try is killed after ``timeout_seconds`` (0 = no timeout); a failed
    try is followed by ``interval`` seconds of sleep (0 = none) before the
    next. ``ok``: some try exited 0; ``value``: that try's stdout (str).
    ``address`` names the node for the record (the operations append it to
    ``argv`` as CKE does).
    """

    NAME: ClassVar[str] = "run-local-command"

    argv: tuple[str, ...] = attrs.field(converter=_strings)
    timeout_seconds: int = 0
    retries: int = 0
    interval: int = 0
    address: str = ""

    @property
    def target(self) -> str:
        if self.address:
            return self.address
        return self.argv[0] if self.argv else ""
