"""rivers and etcd-rivers: the node-local TCP proxies to the apiservers and etcd (§C.2, §C.5).

``rivers`` runs on every node and listens on 127.0.0.1:16443; ``etcd-rivers``
runs on CPs and listens on 127.0.0.1:12379. Both come from the tools image.
Each operation pulls the image on every node, then (re)starts the container
on every node: one command per step, for all the nodes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import ClassVar

import attrs

from cke_core.cluster import Cluster, Node, ServiceParams
from cke_core.commands.node import ImagePull, RunContainer
from cke_core.fields import tuple_field
from cke_core.ops.base import Command, CommandResult, Operation, nth
from cke_core.render import components
from cke_core.render.images import Images


@attrs.frozen
class _ProxyOp(Operation):
    """image-pull(tools) on every node, then run-container on every node."""

    CONTAINER: ClassVar[str] = ""
    RESTART: ClassVar[bool] = False

    cluster: Cluster
    images: Images
    nodes: tuple[Node, ...] = tuple_field()

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(n.address for n in self.nodes)

    def _builtin(self) -> ServiceParams:
        raise NotImplementedError

    @functools.cached_property
    def _plan(self) -> tuple[Command, ...]:
        image = self.images.tools
        builtin = self._builtin()
        extra = components.extra_params(self.cluster, self.CONTAINER)
        options = components.container_options(self.CONTAINER, self.cluster)
        targets = self.targets
        params = dict.fromkeys(targets, builtin)
        return (
            ImagePull(targets, image),
            RunContainer(targets, self.CONTAINER, image, options, params, extra, self.RESTART),
        )

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth(self._plan, results)


@attrs.frozen
class _RiversOp(_ProxyOp):
    CONTAINER: ClassVar[str] = components.RIVERS

    def _builtin(self) -> ServiceParams:
        return components.rivers_params(self.cluster)


@attrs.frozen
class RiversBootstrapOp(_RiversOp):
    NAME: ClassVar[str] = "rivers-bootstrap"


@attrs.frozen
class RiversRestartOp(_RiversOp):
    """Kills the running rivers first: its upstreams or parameters changed."""

    NAME: ClassVar[str] = "rivers-restart"
    RESTART: ClassVar[bool] = True


@attrs.frozen
class _EtcdRiversOp(_ProxyOp):
    CONTAINER: ClassVar[str] = components.ETCD_RIVERS

    def _builtin(self) -> ServiceParams:
        return components.etcd_rivers_params(self.cluster)


@attrs.frozen
class EtcdRiversBootstrapOp(_EtcdRiversOp):
    NAME: ClassVar[str] = "etcd-rivers-bootstrap"


@attrs.frozen
class EtcdRiversRestartOp(_EtcdRiversOp):
    """Kills the running etcd-rivers first: its upstreams or parameters changed."""

    NAME: ClassVar[str] = "etcd-rivers-restart"
    RESTART: ClassVar[bool] = True
