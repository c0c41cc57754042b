"""``upgrade``: bring CKE's stored configuration to the current version (§C.2, §E.1).

Only version "1" → "2" exists: it marks every CP as an added etcd member
(volume ``etcd-added-member``) and then writes ``config-version=2`` under the
leader key, so the marker and the version are consistent even if the leader
dies half-way (the volume is created only if absent; §L.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Final

import attrs

from cke_core.cluster import Node
from cke_core.commands.etcd import UpgradeVersionFrom1To2
from cke_core.fields import tuple_field
from cke_core.ops.base import Command, CommandResult, Operation, nth

#: The configuration version this engine writes and expects.
CURRENT_CONFIG_VERSION: Final = "2"


@attrs.frozen
class UpgradeOp(Operation):
    """Upgrade from ``current_version``; no command when there is nothing to do."""

    NAME: ClassVar[str] = "upgrade"
    current_version: str = ""
    control_planes: tuple[Node, ...] = tuple_field()

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(n.address for n in self.control_planes)

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        commands: tuple[Command, ...] = ()
        if self.current_version == "1":
            commands = (UpgradeVersionFrom1To2(self.targets),)
        return nth(commands, results)
