"""What every aggregate of the history shares: explicit times, explicit ids,
JSON-able state, and the domain errors.

eventsourcing stamps an event with ``create_timestamp()`` (the wall clock)
when no ``timestamp`` is given, and makes a new aggregate id with ``uuid4()``.
Neither may happen in the core, so here both raise ``ProgrammingError``: every
command method takes the time of its event as an argument (``at``) and passes
it as ``timestamp``, and every aggregate is created with its id (a name-based
id of ``cke_core.history.ids``). Folding the same events therefore always
gives the same aggregate, and exporting them gives the same bytes.

State kept on aggregates is plain JSON data (str, int, bool, None, lists and
dicts with string keys) plus the library's own datetimes, so eventsourcing's
JSON transcoder can store events and snapshots without extra transcodings
(other than its standard UUID and datetime ones). Lists, never tuples: JSON
gives lists back.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from typing import Any, Protocol, Self, TypeVar

from eventsourcing.domain import Aggregate, MutableOrImmutableAggregate, ProgrammingError
from eventsourcing.domain import Snapshot as LibrarySnapshot
from eventsourcing.utils import get_topic

from cke_core.history.ids import UUID
from cke_core.timefmt import to_utc

__all__ = [
    "HistoryAggregate",
    "HistoryError",
    "TransitionError",
    "compact_json",
    "etcd_view",
    "event_time",
    "fold",
]


class HistoryError(Exception):
    """A command the domain does not allow (a bad value, an unknown entry ...)."""


class TransitionError(HistoryError):
    """A lifecycle or state-machine transition the domain does not allow."""


def event_time(at: datetime.datetime) -> datetime.datetime:
    """The time of an event: an aware datetime, normalised to UTC."""
    if not isinstance(at, datetime.datetime):
        raise HistoryError(f"the time of an event must be a datetime, got {at!r}")
    try:
        return to_utc(at)
    except ValueError as exc:
        raise HistoryError(str(exc)) from None


def compact_json(value: Any) -> str:
    """JSON without spaces (the size measure of the event log, and etcd values)."""
    return json.dumps(value, separators=(",", ":"))


def _no_clock() -> datetime.datetime:
    raise ProgrammingError(
        "events of the history take their time explicitly (timestamp=at); "
        "the core never reads the clock"
    )


class HistoryAggregate(Aggregate):
    """Base of the history's aggregates: no clock, no random ids."""

    class Event(Aggregate.Event):
        @staticmethod
        def create_timestamp() -> datetime.datetime:
            return _no_clock()

    class Created(Event, Aggregate.Created):
        pass

    class Snapshot(LibrarySnapshot):
        """A snapshot stamped with the time of the aggregate's last event."""

        @staticmethod
        def create_timestamp() -> datetime.datetime:
            return _no_clock()

        @classmethod
        def take(cls, aggregate: MutableOrImmutableAggregate[UUID]) -> Self:
            state = dict(vars(aggregate))
            class_version = getattr(type(aggregate), "class_version", 1)
            if class_version > 1:
                state["class_version"] = class_version
            for private in ("_id", "_version", "_pending_events"):
                state.pop(private, None)
            return cls(
                originator_id=aggregate.id,
                originator_version=aggregate.version,
                timestamp=aggregate.modified_on,  # type: ignore[union-attr]
                topic=get_topic(type(aggregate)),
                state=state,
            )

    @staticmethod
    def create_id(*_: Any, **__: Any) -> UUID:
        raise ProgrammingError("aggregates of the history are created with an explicit id")


A = TypeVar("A", bound=HistoryAggregate)


def fold(events: Iterable[Any], cls: type[A], version: int | None = None) -> A:
    """The aggregate ``cls`` from its events in order, up to ``version`` (all when None).

    The first item may be a snapshot (``Snapshot.mutate(None)`` starts the fold).
    Raises ``HistoryError`` when there is nothing to fold, the events are of
    another aggregate, or ``version`` is not reached.
    """
    aggregate: Any = None
    for event in events:
        if version is not None and event.originator_version > version:
            break
        aggregate = event.mutate(aggregate)
    if aggregate is None:
        raise HistoryError(f"no {cls.__name__} events to fold")
    if not isinstance(aggregate, cls):
        raise HistoryError(f"the events fold to a {type(aggregate).__name__}, not a {cls.__name__}")
    if version is not None and aggregate.version != version:
        raise HistoryError(
            f"{cls.__name__} version {version} is not in the events "
            f"(they end at {aggregate.version})"
        )
    return aggregate


class HasEtcdKeys(Protocol):
    def etcd_keys(self) -> dict[str, str]: ...


def etcd_view(*sources: HasEtcdKeys) -> dict[str, str]:
    """What CKE would read from its etcd keys (§E.1, relative to ``/cke/``),
    derived from aggregates and the last decision; sorted by key."""
    keys: dict[str, str] = {}
    for source in sources:
        keys.update(source.etcd_keys())
    return dict(sorted(keys.items()))
