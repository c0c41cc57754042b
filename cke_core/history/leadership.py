"""Leadership terms (§E.2): who led, from when to when.

CKE elects its leader with an etcd election under ``leader/``; the leader is
the holder of the earliest created key, whose value is its hostname. Here each
term is a pair of events on the ``Leadership`` singleton: ``TermStarted``
(term number, leader, the election key's lease) and ``TermEnded`` (why).
Term numbers increase by one from 1. A leader that vanished without resigning
(a crash, an expired lease) has its term ended as ``superseded`` when the next
term starts, so at most one term is open.
"""

from __future__ import annotations

import datetime
from typing import Any, Final

import attrs

from cke_core.history.base import HistoryAggregate, HistoryError, TransitionError, event_time
from cke_core.history.ids import LEADERSHIP_ID
from cke_core.timefmt import format_rfc3339, parse_rfc3339

__all__ = ["SUPERSEDED", "Leadership", "LeadershipTerm"]

#: The end reason recorded when a new term starts while one is open.
SUPERSEDED: Final = "superseded"


@attrs.frozen
class LeadershipTerm:
    term: int
    leader: str
    lease: str
    started_at: datetime.datetime
    ended_at: datetime.datetime | None = None
    end_reason: str = ""

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


class Leadership(HistoryAggregate):
    """The leadership singleton (id ``LEADERSHIP_ID``)."""

    class Created(HistoryAggregate.Created):
        pass

    class TermStarted(HistoryAggregate.Event):
        term: int
        leader: str
        lease: str

        def apply(self, aggregate: Leadership) -> None:
            started = {
                "term": self.term,
                "leader": self.leader,
                "lease": self.lease,
                "started_at": format_rfc3339(self.timestamp),
                "ended_at": None,
                "end_reason": "",
            }
            aggregate.terms = [*aggregate.terms, started]

    class TermEnded(HistoryAggregate.Event):
        term: int
        reason: str

        def apply(self, aggregate: Leadership) -> None:
            ended = {
                **aggregate.terms[-1],
                "ended_at": format_rfc3339(self.timestamp),
                "end_reason": self.reason,
            }
            aggregate.terms = [*aggregate.terms[:-1], ended]

    def __init__(self) -> None:
        #: Every term, oldest first, as JSON dicts.
        self.terms: list[dict[str, Any]] = []

    @classmethod
    def create(cls, at: datetime.datetime) -> Leadership:
        return cls._create(cls.Created, id=LEADERSHIP_ID, timestamp=event_time(at))

    def start_term(self, leader: str, at: datetime.datetime, *, lease: str = "") -> int:
        """``leader`` (a hostname) won the election; returns the new term number.

        An open term is ended first (reason ``superseded``).
        """
        if not isinstance(leader, str) or not leader:
            raise HistoryError(f"a term needs the leader's name, got {leader!r}")
        when = event_time(at)
        current = self.current()
        if current is not None:
            self.trigger_event(self.TermEnded, timestamp=when, term=current.term, reason=SUPERSEDED)
        term = len(self.terms) + 1
        self.trigger_event(self.TermStarted, timestamp=when, term=term, leader=leader, lease=lease)
        return term

    def end_term(self, term: int, reason: str, at: datetime.datetime) -> None:
        """Term ``term`` ended (resigned, lease lost, key deleted ...)."""
        current = self.current()
        if current is None or current.term != term:
            open_term = f"term {current.term} is open" if current else "no term is open"
            raise TransitionError(f"cannot end term {term}: {open_term}")
        if not reason:
            raise HistoryError("say why the term ended")
        self.trigger_event(self.TermEnded, timestamp=event_time(at), term=term, reason=reason)

    # --- views -----------------------------------------------------------------------

    def history(self) -> tuple[LeadershipTerm, ...]:
        return tuple(_term(t) for t in self.terms)

    def current(self) -> LeadershipTerm | None:
        """The open term, if any."""
        if self.terms and self.terms[-1]["ended_at"] is None:
            return _term(self.terms[-1])
        return None

    def term_at(self, when: datetime.datetime) -> LeadershipTerm | None:
        """The term during which ``when`` falls (a start counts, an end does not)."""
        when = event_time(when)
        for t in reversed(self.history()):
            if t.started_at <= when and (t.ended_at is None or when < t.ended_at):
                return t
        return None

    def etcd_keys(self) -> dict[str, str]:
        """``leader/<lease>`` = hostname while a term with a lease is open (§E.1)."""
        current = self.current()
        if current is None or not current.lease:
            return {}
        return {f"leader/{current.lease}": current.leader}


def _term(doc: dict[str, Any]) -> LeadershipTerm:
    ended = doc["ended_at"]
    return LeadershipTerm(
        term=doc["term"],
        leader=doc["leader"],
        lease=doc["lease"],
        started_at=parse_rfc3339(doc["started_at"]),
        ended_at=parse_rfc3339(ended) if ended is not None else None,
        end_reason=doc["end_reason"],
    )
