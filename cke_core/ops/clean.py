"""``stop-<container>``: kill a system container where it must no longer run (§B.2 Clean, §C.2).

CKE stops the apiserver, controller manager and scheduler on nodes that are
not CPs any more, etcd on them after their member is gone, etcd-rivers on
them, and kube-proxy everywhere when ``options.kube-proxy.disable`` is set.
One command kills and removes the container on all the nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import attrs

from cke_core.cluster import Node
from cke_core.commands.node import KillContainers
from cke_core.fields import tuple_field
from cke_core.ops.base import Command, CommandResult, Operation, nth
from cke_core.render import components

#: The containers CKE has a stop operation for.
STOPPABLE_CONTAINERS: Final = (
    components.KUBE_APISERVER,
    components.KUBE_CONTROLLER_MANAGER,
    components.KUBE_SCHEDULER,
    components.ETCD,
    components.ETCD_RIVERS,
    components.KUBE_PROXY,
)


@attrs.frozen
class StopOp(Operation):
    """``stop-<container>`` on ``nodes``: ``kill-containers``."""

    container: str = attrs.field(validator=attrs.validators.in_(STOPPABLE_CONTAINERS))
    nodes: tuple[Node, ...] = tuple_field()

    @property
    def name(self) -> str:
        return f"stop-{self.container}"

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(n.address for n in self.nodes)

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth((KillContainers(self.targets, self.container),), results)
