"""Re-deriving recorded decisions fast: the inputs of each decision rebuilt with
structural sharing, ``decide()`` run again, the results compared.

``cke_core.history.replay_log`` does the same thing from first principles: it
rebuilds every decision's status with ``status_from_json``, which structures
the whole document (about 7 ms for a six-node cluster, most of it the nodes).
Consecutive observations differ in a few places, and ``apply_delta`` shares
every sub-document a delta does not touch, so ``StatusRebuilder`` structures
only the sub-documents (a node, etcd, Kubernetes, a queue) that are new
objects and reuses the values of the others. Likewise the configuration is
structured once per configuration version. The result is the same
``DecisionInputs`` value as ``rebuild_inputs`` gives (the unit tests compare
them decision by decision); anything unexpected falls back to
``status_from_json``.

``decide`` is looked up on ``cke_core.strategy`` at every call, so a test (or
an operator previewing a patched engine) can substitute it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import attrs

from cke_core import strategy
from cke_core.codec import CONVERTER
from cke_core.constraints import Constraints
from cke_core.frozen import FrozenDict
from cke_core.history import (
    ClusterConfiguration,
    DecisionRecorded,
    HistoryError,
    compare,
    observations,
)
from cke_core.status import (
    STATUS_FORMAT,
    STATUS_FORMAT_VERSION,
    ClusterStatus,
    EtcdClusterStatus,
    KubernetesStatus,
    NodeStatus,
    RebootQueueStatus,
    RepairQueueStatus,
    status_from_json,
)
from cke_core.strategy import Decision, DecisionInputs

__all__ = [
    "ConfigurationFolder",
    "Rederived",
    "StatusRebuilder",
    "rederive",
]

#: The parts of a status document structured on their own, by key.
_PARTS: Final[tuple[tuple[str, type[Any]], ...]] = (
    ("etcd", EtcdClusterStatus),
    ("kubernetes", KubernetesStatus),
    ("reboot_queue", RebootQueueStatus),
    ("repair_queue", RepairQueueStatus),
)
_STATUS_KEYS: Final = frozenset({"config_version", "nodes", *(key for key, _ in _PARTS)})


class _Fallback(Exception):
    """The fast path does not apply: use ``status_from_json``."""


class StatusRebuilder:
    """``status_from_json`` with a memory of the previous document's parts.

    A part is reused when it is the very same object as in the previous
    document (``apply_delta`` shares what a delta does not touch); any other
    part is structured again.
    """

    def __init__(self) -> None:
        self._parts: dict[int, tuple[Any, Any]] = {}
        self._last: tuple[Any, ClusterStatus] | None = None
        #: Parts structured and reused (for benchmarks).
        self.structured = 0
        self.reused = 0

    def status(self, doc: Mapping[str, Any]) -> ClusterStatus:
        if self._last is not None and self._last[0] is doc:
            return self._last[1]
        try:
            status = self._fast(doc)
        except _Fallback:
            self._parts = {}
            status = status_from_json(dict(doc))
        self._last = (doc, status)
        return status

    def _fast(self, doc: Mapping[str, Any]) -> ClusterStatus:
        if (
            doc.get("format") != STATUS_FORMAT
            or doc.get("version") != STATUS_FORMAT_VERSION
            or len(doc) != 3
        ):
            raise _Fallback
        body = doc.get("status")
        if not isinstance(body, dict) or set(body) != _STATUS_KEYS:
            raise _Fallback
        nodes_doc = body["nodes"]
        config_version = body["config_version"]
        if not isinstance(nodes_doc, dict) or not isinstance(config_version, str):
            raise _Fallback
        parts: dict[int, tuple[Any, Any]] = {}
        nodes = FrozenDict(
            {address: self._part(parts, sub, NodeStatus) for address, sub in nodes_doc.items()}
        )
        values = {key: self._part(parts, body[key], cls) for key, cls in _PARTS}
        self._parts = parts
        return ClusterStatus(config_version=config_version, nodes=nodes, **values)

    def _part(self, parts: dict[int, tuple[Any, Any]], sub: Any, cls: type[Any]) -> Any:
        known = self._parts.get(id(sub))
        if known is not None and known[0] is sub:
            value = known[1]
            self.reused += 1
        else:
            try:
                # The converter itself: ``codec.structure`` deep-copies its input
                # first (for repairs), which would cost as much as structuring.
                value = CONVERTER.structure(sub, cls)
            except Exception:
                raise _Fallback from None
            self.structured += 1
        parts[id(sub)] = (sub, value)
        return value


@attrs.frozen
class _Configured:
    configuration: ClusterConfiguration
    cluster: Any
    constraints: Constraints
    resources: tuple[Any, ...]
    settings: Any


class ConfigurationFolder:
    """The configuration at a version, folded forward from its events, with its
    values structured once per version."""

    def __init__(self, events: Sequence[Any]) -> None:
        self._events = list(events)
        self._next = 0
        self._aggregate: Any = None
        self._values: dict[int, _Configured] = {}

    def aggregate(self, version: int) -> ClusterConfiguration:
        return self._at(version).configuration

    def _at(self, version: int) -> _Configured:
        known = self._values.get(version)
        if known is not None:
            return known
        if self._aggregate is not None and self._aggregate.version > version:
            self._next, self._aggregate = 0, None
        while self._next < len(self._events) and (
            self._events[self._next].originator_version <= version
        ):
            self._aggregate = self._events[self._next].mutate(self._aggregate)
            self._next += 1
        aggregate = self._aggregate
        if not isinstance(aggregate, ClusterConfiguration) or aggregate.version != version:
            raise HistoryError(f"configuration version {version} is not in the log")
        values = _Configured(
            configuration=aggregate,
            cluster=aggregate.cluster(),
            constraints=aggregate.constraints() or Constraints(),
            resources=aggregate.resources(),
            settings=aggregate.settings(),
        )
        self._values = {version: values}
        return values

    def inputs(self, event: DecisionRecorded, status: ClusterStatus) -> DecisionInputs:
        """``cke_core.history.rebuild_inputs`` for ``event`` and its status."""
        values = self._at(event.configuration_version)
        if values.cluster is None:
            raise HistoryError(
                f"decision {event.position}: no cluster spec at configuration version "
                f"{event.configuration_version}"
            )
        return DecisionInputs(
            cluster=values.cluster,
            status=status,
            constraints=values.constraints,
            resources=values.resources,
            settings=values.settings,
            now=event.now,
            seed=event.seed,
        )


@attrs.frozen(eq=False)
class Rederived:
    """One recorded decision, re-derived."""

    event: DecisionRecorded
    inputs: DecisionInputs
    decision: Decision
    differences: tuple[str, ...]


def rederive(
    decision_events: Iterable[DecisionRecorded], configuration_events: Sequence[Any]
) -> Iterator[Rederived]:
    """Re-run ``decide`` on every decision of ``decision_events`` (consecutive,
    from one that carries an observation snapshot) and compare."""
    folder = ConfigurationFolder(configuration_events)
    rebuilder = StatusRebuilder()
    for event, doc in observations(decision_events):
        inputs = folder.inputs(event, rebuilder.status(doc))
        decision = strategy.decide(inputs)
        yield Rederived(event, inputs, decision, tuple(compare(event, decision)))
