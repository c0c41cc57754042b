"""Decision provenance: what a decision needs to be re-derived exactly, stored
compactly.

A decision is a function of its inputs (``strategy.DecisionInputs``). A
``DecisionRecorded`` event keeps a reference to each input instead of a copy:

* the configuration version (``ClusterConfiguration``'s aggregate version:
  spec, constraints, user resources and engine settings as of then), with
  the version of each part for readers;
* the observed status, as an entry of the **observation chain** (below);
* ``now`` (the event's ``timestamp``), the ``seed``, the engine version and
  the leadership term;

and what was decided: the phase and each operation's name and targets (CKE's
record fields), which replay compares.

When to record (``should_record``): every decision that starts operations,
and every phase change. A steady cluster whose phase stays ``completed``
records nothing; ``DecisionRecorder.record(..., force=True)`` records a
decision anyway (an audit of every cycle).

Observation chain. Observations are numbered (``observation_seq``); a
recorded decision carries one of

* a **snapshot**: the whole status document (``status.status_to_json``),
* a **delta** against the previous observation of the chain, or
* nothing (``observation`` is null): the status is exactly the previous one,
  so the decision shares its ``observation_seq``. An unchanged status costs
  nothing but the sequence number.

Snapshot policy (``ObservationPolicy``): a snapshot is written when there is
no previous observation, when one more delta would exceed ``max_deltas``
deltas since the last snapshot, or when the deltas since the last snapshot
(this one included) would exceed ``max_delta_ratio`` times the size of that
snapshot (JSON bytes). So the bytes stored per snapshot period are at most
``(1 + max_delta_ratio)`` times a snapshot, and rebuilding any observation
applies at most ``max_deltas`` deltas to one snapshot. Unchanged observations
count toward neither limit. The defaults, 10,080 deltas (a week of one change
a minute) and 2.0, keep a 1,000-node cluster (4.6 MB snapshots) with one
change a minute to about 28 KB an hour of amortised snapshots (a snapshot a
week: the count limit comes first), and a busy small cluster's log small: a
period of deltas of d bytes each stores ``d * (1 + 1/ratio)`` bytes per
delta (1.5 d at 2.0, 3 d at 0.5), while rebuilding the latest observation
reads at most three snapshots' worth of bytes.

Delta format: a JSON list of operations applied in order, each a list whose
first item names it and whose second is a path (a list of object keys and
array indices from the root of the document)::

    ["set", path, value]                    create or replace the value at path
    ["del", path]                           remove the object key at path
    ["splice", path, start, count, items]   array at path: replace ``count``
                                            items from ``start`` with ``items``
    ["order", path, keys]                   object at path: reorder its keys

Objects are diffed key by key, arrays of equal length item by item, arrays of
different lengths by one splice between their common prefix and suffix. The
encoder checks that the delta rebuilds the new document byte for byte
(key order and JSON types included) and falls back to a snapshot if not.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import attrs
from eventsourcing.domain import DomainEvent, ProgrammingError

from cke_core.history.base import HistoryError, compact_json, event_time
from cke_core.history.configuration import ConfigurationVersions
from cke_core.history.ids import DECISION_LOG_ID
from cke_core.phases import Phase
from cke_core.status import ClusterStatus, status_to_json
from cke_core.strategy import Decision, DecisionInputs
from cke_core.timefmt import format_rfc3339

__all__ = [
    "DEL",
    "ORDER",
    "SET",
    "SPLICE",
    "DecisionRecorded",
    "DecisionRecorder",
    "ObservationCursor",
    "ObservationDelta",
    "ObservationEncoding",
    "ObservationPolicy",
    "ObservationSnapshot",
    "ObservationUnchanged",
    "apply_delta",
    "diff_json",
    "encode_observation",
    "encode_observation_doc",
    "observation_from_json",
    "observation_to_json",
    "observations",
    "operations_summary",
    "should_record",
]

SET: Final = "set"
DEL: Final = "del"
SPLICE: Final = "splice"
ORDER: Final = "order"

#: A delta operation (see the module docstring).
DeltaOp = list[Any]


# ---------------------------------------------------------------------------
# Deltas
# ---------------------------------------------------------------------------


def diff_json(old: Any, new: Any, *, strict: bool = False) -> list[DeltaOp]:
    """The delta that turns JSON document ``old`` into ``new``.

    Fast mode compares sub-documents with Python's ``==``, which ignores key
    order and takes ``1 == 1.0 == true``; ``strict`` mode walks everything and
    respects both. The encoder tries fast mode first and checks the result.
    """
    ops: list[DeltaOp] = []
    _diff(old, new, [], ops, strict)
    return ops


def _same(a: Any, b: Any, strict: bool) -> bool:
    if not strict:
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(v, b[k], True) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y, True) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _diff(old: Any, new: Any, path: list[Any], ops: list[DeltaOp], strict: bool) -> None:
    if old is new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        if not strict and old == new:
            return
        for key in old:
            if key not in new:
                ops.append([DEL, [*path, key]])
        for key, value in new.items():
            if key in old:
                _diff(old[key], value, [*path, key], ops, strict)
            else:
                ops.append([SET, [*path, key], value])
        order = [k for k in old if k in new] + [k for k in new if k not in old]
        if order != list(new):
            ops.append([ORDER, path, list(new)])
    elif isinstance(old, list) and isinstance(new, list):
        if not strict and old == new:
            return
        if len(old) == len(new):
            for index, (a, b) in enumerate(zip(old, new, strict=True)):
                _diff(a, b, [*path, index], ops, strict)
            return
        shortest = min(len(old), len(new))
        prefix = 0
        while prefix < shortest and _same(old[prefix], new[prefix], strict):
            prefix += 1
        suffix = 0
        while suffix < shortest - prefix and _same(old[-1 - suffix], new[-1 - suffix], strict):
            suffix += 1
        ops.append(
            [SPLICE, path, prefix, len(old) - prefix - suffix, new[prefix : len(new) - suffix]]
        )
    elif type(old) is not type(new) or old != new:
        ops.append([SET, path, new])


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    raise TypeError(f"cannot descend into {type(value).__name__}")


def apply_delta(doc: Any, ops: Sequence[DeltaOp]) -> Any:
    """The document ``doc`` with ``ops`` applied; ``doc`` is not modified (the
    containers on each path are copied, the rest is shared)."""
    holder: list[Any] = [doc]
    copied: set[int] = set()
    for number, op in enumerate(ops):
        try:
            kind, path = op[0], op[1]
            parent: Any = holder
            key: Any = 0
            for segment in path:
                child = parent[key]
                if id(child) not in copied:
                    child = _copy(child)
                    parent[key] = child
                    copied.add(id(child))
                parent, key = child, segment
            if kind == SET:
                if isinstance(parent, list) and not 0 <= key < len(parent):
                    raise IndexError(key)
                parent[key] = op[2]
            elif kind == DEL:
                del parent[key]
            elif kind in (SPLICE, ORDER):
                target = parent[key]
                if id(target) not in copied:
                    target = _copy(target)
                    parent[key] = target
                    copied.add(id(target))
                if kind == SPLICE:
                    start, count, items = op[2], op[3], op[4]
                    if not isinstance(target, list) or start + count > len(target):
                        raise IndexError(start)
                    target[start : start + count] = list(items)
                else:
                    keys = op[2]
                    if not isinstance(target, dict) or sorted(keys) != sorted(target):
                        raise KeyError(keys)
                    reordered = {k: target[k] for k in keys}
                    target.clear()
                    target.update(reordered)
            else:
                raise ValueError(f"unknown operation {kind!r}")
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise HistoryError(
                f"delta operation {number} {op!r:.200} does not apply: {exc!r}"
            ) from None
    return holder[0]


# ---------------------------------------------------------------------------
# The observation chain
# ---------------------------------------------------------------------------


@attrs.frozen
class ObservationPolicy:
    """When to write a snapshot instead of a delta (see the module docstring)."""

    max_deltas: int = 10_080
    max_delta_ratio: float = 2.0

    def __attrs_post_init__(self) -> None:
        if self.max_deltas < 0 or self.max_delta_ratio < 0:
            raise HistoryError("observation policy limits must be >= 0")


@attrs.frozen(eq=False)
class ObservationSnapshot:
    seq: int
    doc: dict[str, Any]


@attrs.frozen(eq=False)
class ObservationDelta:
    seq: int
    ops: list[DeltaOp]


@attrs.frozen
class ObservationUnchanged:
    seq: int


ObservationEncoding = ObservationSnapshot | ObservationDelta | ObservationUnchanged


@attrs.frozen(eq=False)
class ObservationCursor:
    """What the encoder remembers: the last observation of the chain and the
    bytes written since its last snapshot."""

    seq: int
    doc: dict[str, Any]
    text: str
    snapshot_bytes: int
    delta_bytes: int = 0
    deltas: int = 0


def _snapshot(
    seq: int, doc: dict[str, Any], text: str
) -> tuple[ObservationSnapshot, ObservationCursor]:
    return ObservationSnapshot(seq, doc), ObservationCursor(seq, doc, text, len(text))


def encode_observation(
    previous: ObservationCursor | None,
    status: ClusterStatus,
    policy: ObservationPolicy = ObservationPolicy(),
) -> tuple[ObservationEncoding, ObservationCursor]:
    """Encode ``status`` as the next observation of the chain after ``previous``."""
    return encode_observation_doc(previous, status_to_json(status), policy)


def encode_observation_doc(
    previous: ObservationCursor | None,
    doc: dict[str, Any],
    policy: ObservationPolicy = ObservationPolicy(),
) -> tuple[ObservationEncoding, ObservationCursor]:
    """``encode_observation`` for a JSON document (a dict with string keys)."""
    text = compact_json(doc)
    if previous is None:
        return _snapshot(1, doc, text)
    if text == previous.text:
        return ObservationUnchanged(previous.seq), previous
    seq = previous.seq + 1
    ops = _exact_delta(previous.doc, doc, text)
    if ops is None:
        return _snapshot(seq, doc, text)
    size = len(compact_json(ops))
    if (
        previous.deltas + 1 > policy.max_deltas
        or previous.delta_bytes + size > policy.max_delta_ratio * previous.snapshot_bytes
    ):
        return _snapshot(seq, doc, text)
    cursor = ObservationCursor(
        seq,
        doc,
        text,
        previous.snapshot_bytes,
        previous.delta_bytes + size,
        previous.deltas + 1,
    )
    return ObservationDelta(seq, ops), cursor


def _exact_delta(old: dict[str, Any], new: dict[str, Any], text: str) -> list[DeltaOp] | None:
    """A delta that rebuilds ``new`` byte for byte, or None."""
    for strict in (False, True):
        ops = diff_json(old, new, strict=strict)
        if ops and compact_json(apply_delta(old, ops)) == text:
            return ops
    return None


def observation_to_json(encoding: ObservationEncoding) -> dict[str, Any] | None:
    """The stored form: ``{"snapshot": doc}``, ``{"delta": ops}`` or null."""
    if isinstance(encoding, ObservationSnapshot):
        return {"snapshot": encoding.doc}
    if isinstance(encoding, ObservationDelta):
        return {"delta": encoding.ops}
    return None


def observation_from_json(seq: int, stored: dict[str, Any] | None) -> ObservationEncoding:
    if stored is None:
        return ObservationUnchanged(seq)
    if set(stored) == {"snapshot"} and isinstance(stored["snapshot"], dict):
        return ObservationSnapshot(seq, stored["snapshot"])
    if set(stored) == {"delta"} and isinstance(stored["delta"], list):
        return ObservationDelta(seq, stored["delta"])
    raise HistoryError(f"observation {seq}: not a snapshot, a delta or null: {stored!r:.200}")


# ---------------------------------------------------------------------------
# The decision event
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DecisionRecorded(DomainEvent):
    """One recorded decision, in the decision log (id ``DECISION_LOG_ID``,
    versions 1, 2, ...). ``timestamp`` is the decision's ``now``.

    ``operations``: ``[[name, [targets...]], ...]`` in order.
    ``observation``: the stored observation encoding (``observation_to_json``)
    of observation ``observation_seq``.
    """

    phase: str
    operations: list[list[Any]]
    configuration_version: int
    spec_version: int
    constraints_version: int
    resources_version: int
    settings_version: int
    observation_seq: int
    observation: dict[str, Any] | None
    seed: int
    engine_version: str
    term: int

    @staticmethod
    def create_timestamp() -> datetime.datetime:
        raise ProgrammingError("a decision's time is its now")

    @property
    def now(self) -> datetime.datetime:
        return self.timestamp

    @property
    def position(self) -> int:
        """The decision's place in the log (what operation records refer to)."""
        return self.originator_version

    def versions(self) -> ConfigurationVersions:
        return ConfigurationVersions(
            configuration=self.configuration_version,
            spec=self.spec_version,
            constraints=self.constraints_version,
            resources=self.resources_version,
            settings=self.settings_version,
        )

    def encoding(self) -> ObservationEncoding:
        return observation_from_json(self.observation_seq, self.observation)

    def etcd_keys(self) -> dict[str, str]:
        """CKE's ``status`` key: the phase and when it was decided (CKE rewrites it
        every cycle; here it is as of the last recorded decision)."""
        return {
            "status": compact_json({"phase": self.phase, "timestamp": format_rfc3339(self.now)})
        }


def operations_summary(decision: Decision) -> list[list[Any]]:
    """``[[name, [targets...]], ...]``: what records show of each operation."""
    return [[op.name, list(op.targets)] for op in decision.operations]


def should_record(previous_phase: Phase | str | None, decision: Decision) -> bool:
    """Record decisions that start operations, and every phase change."""
    return bool(decision.operations) or previous_phase != decision.phase


@attrs.frozen(eq=False)
class DecisionRecorder:
    """The decision log's writer: a value, advanced by ``record``.

    ``position`` is the version of the last ``DecisionRecorded``;
    ``last_phase`` the phase of the last decision; ``cursor`` the
    observation chain's state.
    """

    engine_version: str
    policy: ObservationPolicy = ObservationPolicy()
    position: int = 0
    last_phase: Phase | None = None
    cursor: ObservationCursor | None = None

    def record(
        self,
        inputs: DecisionInputs,
        decision: Decision,
        versions: ConfigurationVersions,
        *,
        term: int = 0,
        force: bool = False,
    ) -> tuple[DecisionRecorded | None, DecisionRecorder]:
        """The event for ``decision`` (None when it need not be recorded) and
        the recorder after it. ``versions`` must be those of the configuration
        the inputs were built from."""
        if not force and not should_record(self.last_phase, decision):
            return None, self
        encoding, cursor = encode_observation(self.cursor, inputs.status, self.policy)
        event = DecisionRecorded(
            originator_id=DECISION_LOG_ID,
            originator_version=self.position + 1,
            timestamp=event_time(inputs.now),
            phase=decision.phase.value,
            operations=operations_summary(decision),
            configuration_version=versions.configuration,
            spec_version=versions.spec,
            constraints_version=versions.constraints,
            resources_version=versions.resources,
            settings_version=versions.settings,
            observation_seq=encoding.seq,
            observation=observation_to_json(encoding),
            seed=inputs.seed,
            engine_version=self.engine_version,
            term=term,
        )
        after = attrs.evolve(
            self, position=event.originator_version, last_phase=decision.phase, cursor=cursor
        )
        return event, after

    @classmethod
    def resume(
        cls,
        events: Sequence[DecisionRecorded],
        engine_version: str,
        policy: ObservationPolicy = ObservationPolicy(),
    ) -> DecisionRecorder:
        """The recorder after ``events``: the end of the log, from the last
        event that carries a snapshot (or from the first event of the log)."""
        if not events:
            return cls(engine_version, policy)
        cursor: ObservationCursor | None = None
        for event, doc in observations(events):
            encoding = event.encoding()
            if cursor is not None and encoding.seq == cursor.seq:
                continue
            text = compact_json(doc)
            if isinstance(encoding, ObservationSnapshot):
                cursor = ObservationCursor(encoding.seq, doc, text, len(text))
            elif cursor is not None and isinstance(encoding, ObservationDelta):
                size = len(compact_json(encoding.ops))
                cursor = ObservationCursor(
                    encoding.seq,
                    doc,
                    text,
                    cursor.snapshot_bytes,
                    cursor.delta_bytes + size,
                    cursor.deltas + 1,
                )
        last = events[-1]
        return cls(engine_version, policy, last.originator_version, Phase(last.phase), cursor)


def observations(
    events: Iterable[DecisionRecorded],
) -> Iterator[tuple[DecisionRecorded, dict[str, Any]]]:
    """Each event with the status document it observed.

    The events must be consecutive and start at an event carrying a snapshot
    (any later snapshot restarts the chain). Raises ``HistoryError`` when the
    chain is broken (a delta or an unchanged observation with no base).
    """
    seq = 0
    doc: dict[str, Any] | None = None
    previous = 0
    for event in events:
        if previous and event.originator_version != previous + 1:
            raise HistoryError(
                f"decision {event.originator_version} does not follow decision {previous}"
            )
        previous = event.originator_version
        encoding = event.encoding()
        if isinstance(encoding, ObservationSnapshot):
            doc = encoding.doc
        elif doc is None:
            raise HistoryError(
                f"decision {event.originator_version}: observation {encoding.seq} needs the "
                "events from its last snapshot"
            )
        elif isinstance(encoding, ObservationDelta):
            if encoding.seq != seq + 1:
                raise HistoryError(
                    f"decision {event.originator_version}: delta {encoding.seq} does not "
                    f"follow observation {seq}"
                )
            doc = apply_delta(doc, encoding.ops)
        elif encoding.seq != seq:
            raise HistoryError(
                f"decision {event.originator_version}: observation {encoding.seq} is "
                f"unchanged but the last one was {seq}"
            )
        seq = encoding.seq
        yield event, doc
