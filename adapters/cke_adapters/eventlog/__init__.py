"""The event log of a cluster: an eventsourcing application over the pure
domain of ``cke_core.history``, stored in SQLite (embedded default) or etcd.

* ``application``: ``EventLog`` (the unit of work of the engine and
  ``ckecli``) and ``open_event_log(url)``;
* ``store``: store URLs (``sqlite:///PATH``, ``etcd://HOST:PORT/PREFIX``);
* ``jsonl``: the JSON Lines export format and the validating import;
* ``replaying``: fast re-derivation of recorded decisions.
"""

from cke_adapters.eventlog.application import (
    MAX_HISTORY,
    DecisionDifference,
    EventLog,
    Plan,
    PlannedCommand,
    PlannedOperation,
    RecordedDecision,
    ReplayReport,
    SetResult,
    TermStart,
    engine_version,
    new_seed,
    open_event_log,
    utcnow,
)
from cke_adapters.eventlog.errors import (
    ConflictError,
    EventLogError,
    EventStoreUnavailableError,
    FencedError,
    NotFoundError,
)
from cke_adapters.eventlog.jsonl import ImportRejected
from cke_adapters.eventlog.store import default_store_url, parse_store_url

__all__ = [
    "MAX_HISTORY",
    "ConflictError",
    "DecisionDifference",
    "EventLog",
    "EventLogError",
    "EventStoreUnavailableError",
    "FencedError",
    "ImportRejected",
    "NotFoundError",
    "Plan",
    "PlannedCommand",
    "PlannedOperation",
    "RecordedDecision",
    "ReplayReport",
    "SetResult",
    "TermStart",
    "default_store_url",
    "engine_version",
    "new_seed",
    "open_event_log",
    "parse_store_url",
    "utcnow",
]
