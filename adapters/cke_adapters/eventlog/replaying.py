"""Re-deriving recorded decisions fast: the inputs of each decision rebuilt with
structural sharing, ``decide()`` run again, the results compared.

``cke_core.history.replay_log`` does the same thing from first principles: it
rebuilds every decision's status with ``status_from_json``, which structures
the whole document (about 7 ms for a six-node cluster, most of it the nodes).
Here each status is built from parts that are structured once:

* **by identity**: ``apply_delta`` shares every sub-document a delta does not
  touch, so a part (a node, etcd, Kubernetes, a queue; inside Kubernetes each
  field and each Node object) that is the very same object as in the previous
  document gets the previous value;
* **by content**: any other part is looked up by its exact content (the
  digest of its ``marshal`` version 2 form, which tells apart ``1``, ``1.0``,
  ``true`` and ``"1"``, key orders, lists and objects, and depends on nothing
  but the content), so a snapshot, or a node that returns to a state seen
  before, costs a digest instead of a structuring; and the value is then the
  same object as before, which ``decide``'s memory (``cke_core.nodefilter``)
  recognises.

Only what is new is structured, with the codec's converter; Kubernetes'
status field by field (``_FIELDWISE``), as the converter would (same keys,
same field values, same constructor). The result is the same
``DecisionInputs`` value as ``rebuild_inputs`` gives (unit and property tests
compare them); anything unusual (a part the converter refuses, an unknown
key, a dangling queue index) falls back to ``status_from_json``, which
reports it exactly. Likewise the configuration is structured once per
configuration version, and only the parts that changed.

``decide`` is looked up on ``cke_core.strategy`` at every call, so a test (or
an operator previewing a patched engine) can substitute it.
"""

from __future__ import annotations

import functools
import hashlib
import marshal
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import attrs

from cke_core import strategy
from cke_core.cluster import Cluster
from cke_core.codec import CONVERTER
from cke_core.constraints import Constraints
from cke_core.fields import INT_AS_STRING, wire_name
from cke_core.frozen import FrozenDict
from cke_core.history import (
    ClusterConfiguration,
    DecisionRecorded,
    HistoryError,
    compare,
    observations,
)
from cke_core.memo import trim
from cke_core.render.images import EngineSettings
from cke_core.status import (
    STATUS_FORMAT,
    STATUS_FORMAT_VERSION,
    ClusterStatus,
    EtcdClusterStatus,
    KubernetesStatus,
    NodeStatus,
    RebootQueueStatus,
    RepairQueueStatus,
    reference_problems,
    status_from_json,
)
from cke_core.strategy import Decision, DecisionInputs

__all__ = [
    "ENGINE_DECIDE",
    "ConfigurationFolder",
    "Rederived",
    "Rederiver",
    "StatusRebuilder",
    "content_key",
    "rederive",
]

#: This engine's ``decide``: a replay that finds another one on
#: ``cke_core.strategy`` (a test's or a patched engine) stays in its process.
ENGINE_DECIDE: Final = strategy.decide

#: The parts of a status document structured on their own, by key.
_PARTS: Final[tuple[tuple[str, type[Any]], ...]] = (
    ("etcd", EtcdClusterStatus),
    ("kubernetes", KubernetesStatus),
    ("reboot_queue", RebootQueueStatus),
    ("repair_queue", RepairQueueStatus),
)
_STATUS_KEYS: Final = frozenset({"config_version", "nodes", *(key for key, _ in _PARTS)})

#: Classes structured field by field, each field shared on its own, and the
#: result shared by its field values: those whose fields change independently.
_FIELDWISE: Final = frozenset({NodeStatus, KubernetesStatus})

#: Values remembered beyond those of the current document, per memo.
MEMO_SLACK: Final = 4096

#: ``marshal`` format 2: no back-references and no "interned" string marks,
#: so the bytes depend on the content only (format 3 and later do not).
_MARSHAL_FORMAT: Final = 2


def content_key(doc: Any) -> bytes | None:
    """A digest naming the JSON value ``doc`` exactly (None: not marshallable).

    ``marshal`` writes every value with its type (``True``, ``1``, ``1.0``
    and ``"1"`` differ; so do key orders), and equal bytes load as equal
    values, so equal keys mean equal documents (up to a BLAKE2b collision).
    """
    try:
        data = marshal.dumps(doc, _MARSHAL_FORMAT)
    except ValueError:
        return None
    return hashlib.blake2b(data, digest_size=16).digest()


class _Fallback(Exception):
    """The fast path does not apply: use ``status_from_json``."""


@functools.cache
def _fields(cls: type[Any]) -> Mapping[str, tuple[str, Any, type[Any] | None]]:
    """``cls``'s fields by wire name: (constructor argument, type, the item
    class of a tuple of attrs values or None)."""
    attrs.resolve_types(cls)
    fields: dict[str, tuple[str, Any, type[Any] | None]] = {}
    for field in attrs.fields(cls):
        if not field.init or field.metadata.get(INT_AS_STRING):
            raise TypeError(f"{cls.__name__}.{field.name} cannot be structured field by field")
        fields[wire_name(field)] = (field.alias, field.type, _attrs_items(field.type))
    return fields


def _attrs_items(t: Any) -> type[Any] | None:
    """``X`` for ``tuple[X, ...]`` where X is an attrs class, else None."""
    args: tuple[Any, ...] = tuple(getattr(t, "__args__", ()))
    if getattr(t, "__origin__", None) is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = args[0]
        if isinstance(item, type) and attrs.has(item):
            return item
    return None


_SCALARS: Final = (str, int, float, bool, type(None))


def _identity(value: Any) -> Any:
    """What names a structured field value in an interning key: a scalar by
    its type and value, a tuple by its items' identities, anything else (a
    remembered value, kept alive by the value interned under the key) by its
    identity."""
    if isinstance(value, _SCALARS):
        return (type(value), value)
    if type(value) is tuple:
        return tuple(map(_identity, value))
    return id(value)


class _Structurer:
    """The converter, remembering what it structured: by identity, by content
    and, for ``fieldwise`` classes, by field values (module docstring).

    Parts are remembered by identity as long as they are used (an unchanged
    node's components stay remembered while the node document is reused);
    the memories by content and by field values keep what the current
    document used and the ``slack`` most recently used others. A document is
    structured between ``begin()`` and ``end()``; ``_Fallback`` means the
    converter refused a part or a part is not JSON data.
    """

    def __init__(self, fieldwise: frozenset[type[Any]], slack: int) -> None:
        self._fieldwise_classes = fieldwise
        self._slack = slack
        #: id(part) -> [part, type, value, generation last used, memo, memo key,
        #: constructor arguments] (no memo for a list or object of parts:
        #: ``items``, ``mapping``; arguments only for ``fieldwise`` classes).
        self._seen: dict[int, list[Any]] = {}
        #: (type, content key) -> value, least recently used first.
        self._by_content: dict[tuple[Any, bytes], Any] = {}
        #: (type, field value identities) -> value, least recently used first.
        self._by_fields: dict[tuple[Any, Any], Any] = {}
        self._generation = 0
        self._visits = 0
        #: Parts structured, reused by identity, by content, by field values (benchmarks).
        self.structured = 0
        self.reused = 0
        self.shared = 0
        self.interned = 0

    def begin(self) -> None:
        self._generation += 1
        self._visits = 0

    def end(self) -> None:
        """Bound the memories (see the class docstring)."""
        keep = self._visits + self._slack
        trim(self._by_content, keep)
        trim(self._by_fields, keep)
        seen = self._seen
        if len(seen) > 2 * keep:
            generation = self._generation
            self._seen = {k: entry for k, entry in seen.items() if entry[3] == generation}

    def part(self, sub: Any, cls: Any, previous: Any = None) -> Any:
        """``sub`` structured as ``cls``: remembered, or structured now.
        ``previous``: the document this one replaces (a delta copied the path
        to a change and kept the rest), whose unchanged fields keep their
        values without a lookup."""
        kind = type(sub)
        if kind is not dict and kind is not list:
            try:
                return CONVERTER.structure(sub, cls)
            except Exception:
                raise _Fallback from None
        self._visits += 1
        entry = self._reuse(sub, cls)
        if entry is not None:
            value, memo, key = entry[2], entry[4], entry[5]
            if memo is not None:
                memo.pop(key, None)
                memo[key] = value  # the most recently used last
            return value
        arguments = None
        if kind is dict and cls in self._fieldwise_classes:
            memo, key, value, arguments = self._fieldwise(sub, cls, previous)
        else:
            memo = self._by_content
            digest = content_key(sub)
            if digest is None:
                raise _Fallback  # not JSON data
            key = (cls, digest)
            value = memo.pop(key, None)
            if value is not None:
                self.shared += 1
            else:
                value = self._structure(sub, cls)
            memo[key] = value  # the most recently used last
        self._seen[id(sub)] = [sub, cls, value, self._generation, memo, key, arguments]
        return value

    def _remembered(self, sub: Any, kind: Any) -> list[Any] | None:
        """The entry of ``sub`` structured as ``kind``, if remembered."""
        if sub is None:
            return None
        entry = self._seen.get(id(sub))
        if entry is not None and entry[0] is sub and entry[1] == kind:
            return entry
        return None

    def _reuse(self, sub: Any, kind: Any) -> list[Any] | None:
        """``_remembered``, counted and marked as used by this document."""
        entry = self._remembered(sub, kind)
        if entry is not None:
            self.reused += 1
            entry[3] = self._generation
        return entry

    def items(self, sub: list[Any], cls: Any) -> tuple[Any, ...]:
        """A list of ``cls`` documents as a tuple of values, each through
        ``part``; the same list object gives the same tuple."""
        self._visits += 1
        kind = (tuple, cls)
        entry = self._reuse(sub, kind)
        if entry is not None:
            value: tuple[Any, ...] = entry[2]
            return value
        value = tuple([self.part(item, cls) for item in sub])
        self._seen[id(sub)] = [sub, kind, value, self._generation, None, None, None]
        return value

    def mapping(
        self, sub: dict[str, Any], cls: Any, previous: dict[str, Any] | None = None
    ) -> FrozenDict[str, Any]:
        """An object of ``cls`` documents as a ``FrozenDict`` of values, each
        through ``part``; the same object gives the same mapping. An item that
        is the very same document as in ``previous`` keeps its value."""
        self._visits += 1
        kind = (FrozenDict, cls)
        entry = self._reuse(sub, kind)
        if entry is not None:
            value: FrozenDict[str, Any] = entry[2]
            return value
        before = self._remembered(previous, kind)
        old: dict[str, Any] = before[0] if before is not None else {}
        old_values: FrozenDict[str, Any] | None = before[2] if before is not None else None
        values = {}
        for key, item in sub.items():
            if type(key) is not str or type(item) is not dict:
                raise _Fallback
            was = old.get(key)
            if was is item and old_values is not None:
                values[key] = old_values[key]
            else:
                values[key] = self.part(item, cls, was)
        value = FrozenDict(values)
        self._seen[id(sub)] = [sub, kind, value, self._generation, None, None, None]
        return value

    def _structure(self, sub: Any, cls: Any) -> Any:
        self.structured += 1
        try:
            # The converter itself: ``codec.structure`` deep-copies its input
            # first (for repairs), which would cost as much as structuring.
            return CONVERTER.structure(sub, cls)
        except Exception:
            raise _Fallback from None

    def _fieldwise(
        self, sub: dict[str, Any], cls: Any, previous: Any
    ) -> tuple[dict[Any, Any], Any, Any, dict[str, Any]]:
        """What the converter does for an attrs class (``codec``: null values
        dropped, unknown keys refused, each field structured by its type, the
        constructor called with them), each field through ``part`` (a tuple
        of attrs values item by item), or, when it is the very same document
        as in ``previous``, with the value it had there; the same field
        values give the same object. Returns the memo, the key, the value and
        the constructor's arguments."""
        fields = _fields(cls)
        before = self._remembered(previous, cls)
        old: dict[str, Any] = before[0] if before is not None else {}
        old_kwargs: dict[str, Any] = (before[6] if before is not None else None) or {}
        kwargs: dict[str, Any] = {}
        for key, raw in sub.items():
            if raw is None:
                continue
            field = fields.get(key)
            if field is None:
                raise _Fallback
            name, field_type, items = field
            if old.get(key) is raw and name in old_kwargs:
                kwargs[name] = old_kwargs[name]  # the same document, the same value
            elif items is not None and type(raw) is list:
                kwargs[name] = self.items(raw, items)
            else:
                kwargs[name] = self.part(raw, field_type)
        interning = (cls, tuple([(name, _identity(value)) for name, value in kwargs.items()]))
        memo = self._by_fields
        value = memo.pop(interning, None)
        if value is not None:
            self.interned += 1
        else:
            self.structured += 1
            try:
                value = cls(**kwargs)
            except Exception:
                raise _Fallback from None
        memo[interning] = value  # the most recently used last
        return memo, interning, value, kwargs


class StatusRebuilder:
    """``status_from_json`` remembering the parts it structured (module docstring)."""

    def __init__(self, slack: int = MEMO_SLACK) -> None:
        self.parts = _Structurer(_FIELDWISE, slack)
        self._last: tuple[Any, ClusterStatus] | None = None
        #: The body of the last document structured the fast way.
        self._last_body: dict[str, Any] = {}
        self._checked: tuple[Any, Any] | None = None

    @property
    def structured(self) -> int:
        """Parts structured so far (for tests and benchmarks)."""
        return self.parts.structured

    @property
    def reused(self) -> int:
        """Parts reused so far: by identity, by content or by field values."""
        return self.parts.reused + self.parts.shared + self.parts.interned

    def status(self, doc: Mapping[str, Any]) -> ClusterStatus:
        if self._last is not None and self._last[0] is doc:
            return self._last[1]
        try:
            status = self._fast(doc)
        except _Fallback:
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
        if type(body) is not dict or body.keys() != _STATUS_KEYS:
            raise _Fallback
        nodes_doc = body["nodes"]
        config_version = body["config_version"]
        if type(nodes_doc) is not dict or type(config_version) is not str:
            raise _Fallback
        parts = self.parts
        last = self._last_body
        parts.begin()
        try:
            nodes = parts.mapping(nodes_doc, NodeStatus, last.get("nodes"))
            values = {}
            for key, cls in _PARTS:
                sub = body[key]
                if type(sub) is not dict:
                    raise _Fallback
                values[key] = parts.part(sub, cls, last.get(key))
        finally:
            parts.end()
        status = ClusterStatus(config_version=config_version, nodes=nodes, **values)
        queues = (status.reboot_queue, status.repair_queue)
        if self._checked is None or any(map(_is_not, self._checked, queues)):
            if reference_problems(status):
                raise _Fallback
            self._checked = queues
        self._last_body = body
        return status


def _is_not(a: Any, b: Any) -> bool:
    return a is not b


@attrs.frozen
class _Configured:
    configuration: ClusterConfiguration
    cluster: Any
    constraints: Constraints
    resources: tuple[Any, ...]
    settings: EngineSettings
    #: The documents the values were structured from (reused while the same).
    docs: tuple[Any, Any, Any, Any]


class ConfigurationFolder:
    """The configuration at a version, folded forward from its events, with its
    values structured once per version and a part's value reused while its
    document is the same object (an event that changes one part leaves the
    others' documents in place).

    ``events`` may be a list that grows while the folder is used (a replay
    that reads the log as it goes): only appending is allowed.
    """

    def __init__(self, events: Sequence[Any]) -> None:
        self._events = events if isinstance(events, list) else list(events)
        self._clusters = _Structurer(frozenset({Cluster}), MEMO_SLACK)
        self._next = 0
        self._aggregate: Any = None
        self._values: dict[int, _Configured] = {}
        self._previous: _Configured | None = None

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
        docs = (
            aggregate.cluster_doc,
            aggregate.constraints_doc,
            aggregate.resource_docs,
            aggregate.settings_doc,
        )
        before = self._previous
        same = [False] * 4 if before is None else list(map(operator.is_, docs, before.docs))
        values = _Configured(
            configuration=aggregate,
            cluster=before.cluster if before and same[0] else self._cluster(aggregate),
            constraints=(
                before.constraints
                if before and same[1]
                else aggregate.constraints() or Constraints()
            ),
            resources=before.resources if before and same[2] else aggregate.resources(),
            settings=before.settings if before and same[3] else aggregate.settings(),
            docs=docs,
        )
        self._values = {version: values}
        self._previous = values
        return values

    def _cluster(self, aggregate: ClusterConfiguration) -> Cluster | None:
        """``aggregate.cluster()``, its parts (nodes, options ...) remembered by
        content; a document the converter refuses goes the slow way, which
        reports it."""
        doc = aggregate.cluster_doc
        if doc is None:
            return None
        clusters = self._clusters
        clusters.begin()
        try:
            cluster: Cluster = clusters.part(doc, Cluster)
        except _Fallback:
            return aggregate.cluster()
        finally:
            clusters.end()
        return cluster

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


class Rederiver:
    """Re-runs ``decide`` on recorded decisions and compares, remembering the
    configuration values and status parts it structured across calls of
    ``run`` (a replay worker re-derives several ranges of one log)."""

    def __init__(self, configuration_events: Sequence[Any]) -> None:
        self.folder = ConfigurationFolder(configuration_events)
        self.rebuilder = StatusRebuilder()

    def run(self, decision_events: Iterable[DecisionRecorded]) -> Iterator[Rederived]:
        """Each decision of ``decision_events`` (consecutive, from one that
        carries an observation snapshot), re-derived."""
        folder, rebuilder = self.folder, self.rebuilder
        for event, doc in observations(decision_events):
            inputs = folder.inputs(event, rebuilder.status(doc))
            decision = strategy.decide(inputs)
            yield Rederived(event, inputs, decision, tuple(compare(event, decision)))


def rederive(
    decision_events: Iterable[DecisionRecorded], configuration_events: Sequence[Any]
) -> Iterator[Rederived]:
    """Re-run ``decide`` on every decision of ``decision_events`` (consecutive,
    from one that carries an observation snapshot) and compare.

    Both may be fed while this runs (``EventLog.replay`` reads the log once):
    ``decision_events`` lazily, ``configuration_events`` as a list appended to
    before each decision that needs the new events is drawn.
    """
    return Rederiver(configuration_events).run(decision_events)
