"""The event log's errors: each message is one line an operator can act on."""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "EventLogError",
    "EventStoreUnavailableError",
    "FencedError",
    "NotFoundError",
]


class EventLogError(Exception):
    """Something the event log refuses or cannot do (one line; nothing written)."""


class EventStoreUnavailableError(EventLogError):
    """The store cannot be reached or opened."""

    def __init__(self, url: str, reason: str) -> None:
        reason = " ".join(str(reason).split()) or "unknown reason"
        super().__init__(f"cannot reach the event store at {url}: {reason}")
        self.url = url
        self.reason = reason


class ConflictError(EventLogError):
    """Another writer changed the log first (an optimistic-concurrency conflict)."""


class FencedError(EventLogError):
    """The store refused a write because this process is not the leader."""


class NotFoundError(EventLogError):
    """What was asked for is not in the log (no cluster, no such record ...)."""
