"""The event log as JSON Lines: export, and an import that checks everything
before it writes anything.

Format (UTF-8, one JSON object per line, ``\\n`` after each)::

    {"format":"cke-py/event-log","version":1}
    {"id":1,"originator_id":"<uuid>","originator_version":1,"topic":"<module:Class>","state":{...}}
    ...
    {"end":"cke-py/event-log","events":<number of event lines>}

* The first line says what the file is; the last one how many events it
  holds, so a truncated copy is refused.
* One line per stored event, in notification order: ``id`` is its position in
  the source log (increasing), ``originator_id`` the aggregate's UUID,
  ``originator_version`` its version, ``topic`` eventsourcing's topic of the
  event class, and ``state`` the stored state. eventsourcing's JSON transcoder
  writes the state as compact JSON (``separators=(",", ":")``,
  ``ensure_ascii=False``); it is embedded as a JSON value when re-encoding it
  that way gives back exactly the stored bytes, otherwise (a compressed or
  encrypted store, or unusual JSON) it is ``state_b64``: the bytes in base64.
  An import therefore stores byte for byte the state that was exported.
* Snapshots are not exported: they are a cache of the events and are taken
  again as the log grows.

Import checks, in order, and stops at the first problem with
``line N: <reason>``: the header; that every line is a JSON object with
exactly these fields and types; that ``id`` increases; that the topic is one
of the event classes of this log's aggregates (no other topic is ever
resolved, since resolving imports modules); that the state decodes into that
event (its fields and their types); that each aggregate's versions follow on
from what the store already holds (1, 2, 3 ... for a new one), with no
conflict with an existing event; that the events fold into their aggregates
(the state machines accept every transition) and that each aggregate has the
id its kind requires; that the decision log's observation chain is whole;
and the trailer. Only then are the events written.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import json
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, TextIO
from uuid import UUID

import attrs
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import ApplicationRecorder, Mapper, Notification, StoredEvent
from eventsourcing.utils import get_topic

from cke_adapters.eventlog.errors import EventLogError
from cke_core.history import (
    CLUSTER_CONFIGURATION_ID,
    DECISION_LOG_ID,
    LEADERSHIP_ID,
    REBOOT_QUEUE_ID,
    REBOOT_TRANSITIONS,
    RECORD_COUNTER_ID,
    REPAIR_QUEUE_ID,
    REPAIR_TRANSITIONS,
    STORAGE_VERSION_ID,
    ClusterConfiguration,
    DecisionRecorded,
    HistoryAggregate,
    Leadership,
    OperationRecord,
    RebootQueue,
    RecordCounter,
    RecordStatus,
    RepairQueue,
    RepairState,
    StorageVersion,
    observations,
    record_id,
    repair_state,
)
from cke_core.history.provenance import observation_from_json
from cke_core.phases import Phase
from cke_core.queues import RebootStatus

__all__ = [
    "AGGREGATE_CLASSES",
    "FORMAT",
    "FORMAT_VERSION",
    "ExistingLog",
    "ImportRejected",
    "Imported",
    "batches",
    "encode_line",
    "event_topics",
    "export_lines",
    "export_to",
    "header_line",
    "trailer_line",
    "validate_import",
]

FORMAT: Final = "cke-py/event-log"
FORMAT_VERSION: Final = 1
_HEADER: Final = {"format": FORMAT, "version": FORMAT_VERSION}
_EVENT_FIELDS: Final = ("id", "originator_id", "originator_version", "topic")

#: The aggregates of the log, and the id each singleton has.
AGGREGATE_CLASSES: Final[tuple[type[HistoryAggregate], ...]] = (
    ClusterConfiguration,
    RecordCounter,
    OperationRecord,
    RebootQueue,
    RepairQueue,
    Leadership,
    StorageVersion,
)
SINGLETON_IDS: Final[Mapping[type[HistoryAggregate], UUID]] = {
    ClusterConfiguration: CLUSTER_CONFIGURATION_ID,
    RecordCounter: RECORD_COUNTER_ID,
    RebootQueue: REBOOT_QUEUE_ID,
    RepairQueue: REPAIR_QUEUE_ID,
    Leadership: LEADERSHIP_ID,
    StorageVersion: STORAGE_VERSION_ID,
}


class ImportRejected(EventLogError):
    """An import refused: ``line N: reason``. Nothing was written."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------


@attrs.frozen
class _EventKind:
    cls: type[Any]
    #: The aggregate class whose events these are; None for DecisionRecorded.
    aggregate: type[HistoryAggregate] | None
    creates: bool
    #: Field name -> type hint (originator id and version excluded).
    fields: Mapping[str, Any]


def _event_kind(cls: type[Any], aggregate: type[HistoryAggregate] | None) -> _EventKind:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    own = [n for n in names if n not in ("originator_id", "originator_version")]
    fields = {n: hints.get(n, Any) for n in own}
    creates = aggregate is not None and issubclass(cls, HistoryAggregate.Created)
    return _EventKind(cls, aggregate, creates, fields)


_KINDS: dict[str, _EventKind] = {}


def event_topics() -> Mapping[str, _EventKind]:
    """Every event topic this log may hold, with what it belongs to."""
    if not _KINDS:
        for aggregate in AGGREGATE_CLASSES:
            for name in dir(aggregate):
                value = getattr(aggregate, name)
                if (
                    isinstance(value, type)
                    and issubclass(value, HistoryAggregate.Event)
                    and issubclass(value, CanMutateAggregate)
                    and value.__qualname__ == f"{aggregate.__name__}.{name}"
                ):
                    _KINDS[get_topic(value)] = _event_kind(value, aggregate)
        _KINDS[get_topic(DecisionRecorded)] = _event_kind(DecisionRecorded, None)
    return _KINDS


_AGGREGATE_TOPICS: Final = {get_topic(cls): cls for cls in AGGREGATE_CLASSES}


def _conforms(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_conforms(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is datetime.datetime:
        return isinstance(value, datetime.datetime) and value.tzinfo is not None
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------


def header_line() -> str:
    return _compact(_HEADER)


def trailer_line(count: int) -> str:
    return _compact({"end": FORMAT, "events": count})


def _state_field(state: bytes) -> tuple[str, Any]:
    try:
        value = json.loads(state)
    except (UnicodeDecodeError, ValueError):
        value = None
    else:
        if _compact(value).encode("utf-8") == state:
            return "state", value
    return "state_b64", base64.b64encode(state).decode("ascii")


def encode_line(notification: Notification) -> str:
    """One event as a line (without the newline)."""
    name, value = _state_field(notification.state)
    return _compact(
        {
            "id": notification.id,
            "originator_id": str(notification.originator_id),
            "originator_version": notification.originator_version,
            "topic": notification.topic,
            name: value,
        }
    )


def export_lines(recorder: ApplicationRecorder, page: int = 1000) -> Iterator[str]:
    """The whole log as lines (each without its newline): header, events, trailer."""
    yield header_line()
    count = 0
    start = 1
    while True:
        notifications = recorder.select_notifications(start, page)
        for notification in notifications:
            yield encode_line(notification)
            count += 1
        if len(notifications) < page:
            break
        start = notifications[-1].id + 1
    yield trailer_line(count)


def export_to(recorder: ApplicationRecorder, stream: TextIO) -> int:
    """Write the export to ``stream``; the number of events."""
    lines = 0
    for line in export_lines(recorder):
        stream.write(line + "\n")
        lines += 1
    return lines - 2  # the header and the trailer


# ---------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------


@attrs.frozen
class Imported:
    """Validated events, ready to be written in this order."""

    events: tuple[StoredEvent, ...]
    lines: tuple[int, ...]


@attrs.define
class _Aggregate:
    """An aggregate being folded during validation."""

    value: Any
    version: int
    line: int


class ExistingLog(typing.Protocol):
    """What the import needs to know about the store it writes into."""

    def version_of(self, originator_id: UUID) -> int: ...

    def aggregate(self, originator_id: UUID) -> Any: ...

    def decision_tail(self) -> list[DecisionRecorded]: ...


def _json_line(text: str, number: int) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ImportRejected(number, f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ImportRejected(number, f"expected a JSON object, got {type(value).__name__}")
    return value


def _check_header(text: str | None) -> None:
    if text is None:
        raise ImportRejected(1, "empty input: not an event log export")
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise ImportRejected(
            1, f"not a cke-py event log export (the first line must be {header_line()})"
        )
    if value != _HEADER:
        raise ImportRejected(
            1,
            f"export format version {value.get('version')!r} is not supported "
            f"(this reader understands version {FORMAT_VERSION})",
        )


def _stored_event(value: dict[str, Any], number: int) -> tuple[int, StoredEvent]:
    missing = [f for f in _EVENT_FIELDS if f not in value]
    states = [k for k in ("state", "state_b64") if k in value]
    extra = sorted(set(value) - {*_EVENT_FIELDS, "state", "state_b64"})
    if missing:
        raise ImportRejected(number, f"missing field {missing[0]!r}")
    if extra:
        raise ImportRejected(number, f"unknown field {extra[0]!r}")
    if len(states) != 1:
        raise ImportRejected(number, "needs exactly one of 'state' and 'state_b64'")
    nid, oid, version, topic = (value[f] for f in _EVENT_FIELDS)
    for name, item in (("id", nid), ("originator_version", version)):
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ImportRejected(number, f"{name} must be an integer >= 1, got {item!r}")
    if not isinstance(topic, str):
        raise ImportRejected(number, f"topic must be a string, got {topic!r}")
    try:
        originator = UUID(oid) if isinstance(oid, str) else None
    except ValueError:
        originator = None
    if originator is None:
        raise ImportRejected(number, f"originator_id must be a UUID, got {oid!r}")
    if "state" in value:
        if not isinstance(value["state"], dict):
            raise ImportRejected(number, "state must be a JSON object")
        state = _compact(value["state"]).encode("utf-8")
    else:
        encoded = value["state_b64"]
        try:
            state = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
        except (binascii.Error, ValueError):
            state = b""
        if not state:
            raise ImportRejected(number, "state_b64 is not base64")
    return nid, StoredEvent(originator, version, topic, state)


def _decode(mapper: Mapper[UUID], stored: StoredEvent, kind: _EventKind, number: int) -> Any:
    try:
        event = mapper.to_domain_event(stored)
    except Exception as exc:
        raise ImportRejected(number, f"the state cannot be read: {exc}") from None
    state = vars(event)
    wanted = set(kind.fields) | {"originator_id", "originator_version"}
    if set(state) != wanted:
        missing = sorted(wanted - set(state))
        extra = sorted(set(state) - wanted)
        detail = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise ImportRejected(number, f"the state does not fit {kind.cls.__qualname__}: {detail}")
    for name, hint in kind.fields.items():
        if not _conforms(state[name], hint):
            raise ImportRejected(
                number,
                f"{kind.cls.__qualname__}.{name}: {state[name]!r:.80} is not a {hint}",
            )
    return event


def _check_decision(event: DecisionRecorded, number: int) -> None:
    try:
        Phase(event.phase)
    except ValueError:
        raise ImportRejected(number, f"unknown phase {event.phase!r}") from None
    for op in event.operations:
        if not (
            isinstance(op, list)
            and len(op) == 2
            and isinstance(op[0], str)
            and isinstance(op[1], list)
            and all(isinstance(t, str) for t in op[1])
        ):
            raise ImportRejected(number, f"operation {op!r:.80} is not [name, [targets...]]")
    try:
        observation_from_json(event.observation_seq, event.observation)
    except Exception as exc:
        raise ImportRejected(number, str(exc)) from None


def _fold(
    folded: dict[UUID, _Aggregate], event: Any, kind: _EventKind, number: int, existing: ExistingLog
) -> None:
    oid = event.originator_id
    current = folded.get(oid)
    if current is None:
        base = event.originator_version - 1
        value = existing.aggregate(oid) if base else None
        current = folded[oid] = _Aggregate(value, base, number)
    if kind.creates:
        if event.originator_version != 1:
            raise ImportRejected(number, f"{kind.cls.__qualname__} must be version 1")
        topic = str(getattr(event, "originator_topic", ""))
        if _AGGREGATE_TOPICS.get(topic) is not kind.aggregate:
            wanted = kind.aggregate.__name__ if kind.aggregate else "decision"
            raise ImportRejected(number, f"creates a {topic!r:.80}, not a {wanted}")
    elif current.value is None or type(current.value) is not kind.aggregate:
        what = "nothing" if current.value is None else type(current.value).__name__
        raise ImportRejected(
            number,
            f"{kind.cls.__qualname__} does not apply to {what} "
            f"(aggregate {oid}, version {event.originator_version})",
        )
    if not kind.creates:
        refusal = _refusal(current.value, event)
        if refusal:
            raise ImportRejected(number, f"{kind.cls.__qualname__}: {refusal}")
    try:
        current.value = event.mutate(current.value)
    except Exception as exc:
        raise ImportRejected(number, f"{kind.cls.__qualname__} cannot be applied: {exc}") from None
    current.version = event.originator_version
    current.line = number


_OPEN: Final = frozenset({RecordStatus.NEW.value, RecordStatus.RUNNING.value})
_RECORD_MOVES: Final[Mapping[str, frozenset[str]]] = {
    "CommandStarted": _OPEN,
    "Completed": frozenset({RecordStatus.RUNNING.value}),
    "Cancelled": _OPEN,
}


def _refusal(aggregate: Any, event: Any) -> str:
    """Why the domain would not have produced ``event`` for ``aggregate`` (the
    transitions its commands check; ``apply`` alone does not check them)."""
    name = type(event).__name__
    if isinstance(aggregate, OperationRecord):
        allowed = _RECORD_MOVES.get(name)
        if allowed is not None and aggregate.status not in allowed:
            return f"record {aggregate.record_id} is {aggregate.status}"
    elif isinstance(aggregate, RecordCounter) and name == "Allocated":
        if event.record_id != aggregate.next_id:
            return f"allocates record {event.record_id}, the next id is {aggregate.next_id}"
    elif isinstance(aggregate, Leadership) and name == "TermEnded":
        current = aggregate.current()
        if current is None or current.term != event.term:
            return f"term {event.term} is not the open term"
    elif isinstance(aggregate, RebootQueue | RepairQueue):
        index = getattr(event, "index", None)
        if name == "EntryAdded":
            if index != aggregate.write_index:
                return f"adds entry {index}, the write index is {aggregate.write_index}"
        elif index is not None and str(index) not in aggregate.entry_docs:
            return f"{aggregate.NAME} has no entry {index}"
        elif name == "EntryTransitioned":
            return _queue_refusal(aggregate, event)
    return ""


def _queue_refusal(queue: RebootQueue | RepairQueue, event: Any) -> str:
    move = f"{event.from_state} -> {event.to_state}"
    try:
        if isinstance(queue, RebootQueue):
            state: str = queue.entry(event.index).status.value
            allowed = (RebootStatus(event.from_state), RebootStatus(event.to_state))
            known = allowed in REBOOT_TRANSITIONS
        else:
            state = repair_state(queue.entry(event.index)).value
            known = (RepairState(event.from_state), RepairState(event.to_state)) in (
                REPAIR_TRANSITIONS
            )
    except ValueError as exc:
        return str(exc)
    if state != event.from_state:
        return f"entry {event.index} is {state}, not {event.from_state}"
    return "" if known else f"{move} is not allowed"


def _check_aggregate(oid: UUID, item: _Aggregate) -> None:
    value = item.value
    cls = type(value)
    expected = SINGLETON_IDS.get(cls)
    if isinstance(value, OperationRecord):
        expected = record_id(value.record_id)
    if expected is not None and oid != expected:
        raise ImportRejected(item.line, f"a {cls.__name__} must have the id {expected}, not {oid}")


def _check_chain(
    decisions: list[tuple[DecisionRecorded, int]], tail: list[DecisionRecorded]
) -> None:
    if not decisions:
        return
    chain = [*tail, *(d for d, _ in decisions)]
    lines = {id(d): n for d, n in decisions}
    done = 0
    try:
        for _ in observations(chain):
            done += 1
    except Exception as exc:
        failed = chain[done] if done < len(chain) else chain[-1]
        raise ImportRejected(lines.get(id(failed), decisions[0][1]), str(exc)) from None


def validate_import(lines: Iterable[str], mapper: Mapper[UUID], existing: ExistingLog) -> Imported:
    """Check an export (its lines, with or without newlines) against the store
    described by ``existing``; ``ImportRejected`` at the first problem."""
    kinds = event_topics()
    iterator = iter(lines)
    first = next(iterator, None)
    _check_header(None if first is None else first.rstrip("\n"))
    events: list[StoredEvent] = []
    numbers: list[int] = []
    versions: dict[UUID, int] = {}
    folded: dict[UUID, _Aggregate] = {}
    decisions: list[tuple[DecisionRecorded, int]] = []
    last_id = 0
    trailer: tuple[int, dict[str, Any]] | None = None
    number = 1
    for raw in iterator:
        number += 1
        text = raw.rstrip("\n").rstrip("\r")
        if trailer is not None:
            if text.strip():
                raise ImportRejected(number, "data after the end of the export")
            continue
        if not text.strip():
            raise ImportRejected(number, "empty line")
        value = _json_line(text, number)
        if "end" in value:
            trailer = (number, value)
            continue
        nid, stored = _stored_event(value, number)
        if nid <= last_id:
            raise ImportRejected(number, f"id {nid} does not follow id {last_id}")
        last_id = nid
        kind = kinds.get(stored.topic)
        if kind is None:
            raise ImportRejected(number, f"unknown event topic {stored.topic!r:.120}")
        oid = typing.cast(UUID, stored.originator_id)
        previous = versions.get(oid)
        if previous is None:
            previous = existing.version_of(oid)
        if stored.originator_version != previous + 1:
            if stored.originator_version <= previous:
                raise ImportRejected(
                    number,
                    f"version conflict: aggregate {oid} version {stored.originator_version} "
                    "is already in the log",
                )
            raise ImportRejected(
                number,
                f"aggregate {oid}: version {stored.originator_version} does not follow "
                f"version {previous}",
            )
        versions[oid] = stored.originator_version
        event = _decode(mapper, stored, kind, number)
        if kind.aggregate is None:
            if oid != DECISION_LOG_ID:
                raise ImportRejected(number, f"a decision belongs to the log {DECISION_LOG_ID}")
            _check_decision(event, number)
            decisions.append((event, number))
        else:
            _fold(folded, event, kind, number, existing)
        events.append(stored)
        numbers.append(number)
    if trailer is None:
        raise ImportRejected(number + 1, "the export ends without its last line (truncated?)")
    end_line, end = trailer
    if end != {"end": FORMAT, "events": len(events)}:
        raise ImportRejected(
            end_line,
            f"the last line says {end.get('events')!r} events, the file holds {len(events)}",
        )
    for oid, item in folded.items():
        _check_aggregate(oid, item)
    tail = existing.decision_tail() if decisions and decisions[0][0].originator_version > 1 else []
    _check_chain(decisions, tail)
    return Imported(tuple(events), tuple(numbers))


def batches(
    events: Sequence[StoredEvent], max_events: int, max_bytes: int
) -> Iterator[Sequence[StoredEvent]]:
    """``events`` in consecutive batches of at most ``max_events`` events and
    ``max_bytes`` bytes of state (a single larger event is a batch of its own)."""
    start = 0
    while start < len(events):
        end, size = start, 0
        while end < len(events) and end - start < max_events:
            size += len(events[end].state) + 200
            if end > start and size > max_bytes:
                break
            end += 1
        yield events[start:end]
        start = end
