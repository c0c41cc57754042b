"""``EventLog``: the event log of one cluster, as an eventsourcing application.

This is the unit of work of the engine and of ``ckecli``. Every command loads
the aggregates it needs (``cke_core.history``), calls the domain, and stores
every new event of every aggregate it touched in ONE ``save()``, i.e. one
transaction of the store: a record and the counter that allocated its id, a
new leadership term and the record it cancelled, land together or not at all.
A command the domain refuses (a state-machine transition, an invalid
configuration) raises before anything is saved.

What it adds to the pure domain:

* times: every command takes ``at`` (default: the wall clock, UTC);
* the configuration from operator texts, validated with ``cke_core.config``
  (``ConfigError`` carries every problem);
* decisions: ``decision_inputs`` builds the inputs from the configuration
  aggregate, ``record_decision`` runs the ``DecisionRecorder`` (resumed on the
  first use from the last observation snapshot) and stores its event;
* operation records with CKE's lifecycle (§E.3), reboot and repair queues
  (§F), leadership terms with CKE's ``checkLastOp`` (§E.2);
* operator tools: ``history`` and ``follow`` (CKE's ``ckecli history``),
  ``replay``, ``explain``, ``plan``, and a JSON Lines export/import
  (``cke_adapters.eventlog.jsonl``).

Concurrency. Writers use optimistic concurrency: a conflicting write (another
process appended to the same aggregate first) is retried from a fresh read,
up to three times, then reported as ``ConflictError``. With the etcd store and
a leader key, every write is fenced (``FencedError`` when not the leader).

Errors a caller sees are ``EventLogError`` subclasses (one line each),
``HistoryError`` from the domain and ``ConfigError`` from validation; store
failures become ``EventStoreUnavailableError`` ("cannot reach the event store
at URL: reason").
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import importlib.metadata
import itertools
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any, ClassVar, Final, ParamSpec, TextIO, TypeVar
from uuid import UUID

import attrs
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    JSONTranscoder,
    OperationalError,
    PersistenceError,
    Transcoder,
)
from eventsourcing.utils import Environment, get_topic

from cke_adapters.eventlog import jsonl
from cke_adapters.eventlog.errors import (
    ConflictError,
    EventLogError,
    EventStoreUnavailableError,
    FencedError,
    NotFoundError,
)
from cke_adapters.eventlog.parallel import (
    Chunk,
    Row,
    WorkerLink,
    WorkQueue,
    read_frame,
    rederive_claimed,
    write_frame,
)
from cke_adapters.eventlog.replaying import ENGINE_DECIDE, Rederiver, rederive
from cke_adapters.eventlog.store import StoreURLError, default_store_url, parse_store_url
from cke_adapters.eventlog.transcoder import FastJSONTranscoder
from cke_adapters.oneline import error_line
from cke_core import codec, strategy
from cke_core.cluster import Cluster
from cke_core.config import check_cluster, check_constraints, check_raw
from cke_core.constraints import Constraints
from cke_core.frozen import thaw
from cke_core.history import (
    CLUSTER_CONFIGURATION_ID,
    DECISION_LOG_ID,
    LEADERSHIP_ID,
    REBOOT_QUEUE_ID,
    RECORD_COUNTER_ID,
    REPAIR_QUEUE_ID,
    STORAGE_VERSION_ID,
    ClusterConfiguration,
    ConfigurationVersions,
    DecisionRecorded,
    DecisionRecorder,
    HistoryAggregate,
    HistoryError,
    Leadership,
    ObservationPolicy,
    OperationRecord,
    RebootQueue,
    RecordCounter,
    RemovalReason,
    RepairQueue,
    StorageVersion,
    etcd_view,
    explain,
    observations,
    record_id,
)
from cke_core.ops.base import Operation
from cke_core.problems import ConfigError, Problem
from cke_core.queues import RebootQueueEntry, RepairQueueEntry, RepairStatus
from cke_core.render.images import EngineSettings
from cke_core.render.kubernetes import parse_user_resources
from cke_core.status import DEFAULT_CONFIG_VERSION, ClusterStatus, status_from_json
from cke_core.strategy import Decision, DecisionInputs
from cke_core.testing import UnfinishedPlanError, step_ops
from cke_core.timefmt import UTC, format_rfc3339
from cke_core.validation import check_against_constraints, validate_constraints

__all__ = [
    "MAX_HISTORY",
    "DecisionDifference",
    "EventLog",
    "Plan",
    "PlannedCommand",
    "PlannedOperation",
    "RecordedDecision",
    "ReplayReport",
    "SetResult",
    "TermStart",
    "engine_version",
    "new_seed",
    "open_event_log",
    "utcnow",
]

#: The records CKE keeps (and ``history`` shows without ``-n``).
MAX_HISTORY: Final = 1000
#: The records ``follow`` replays before it watches, without ``-n``.
FOLLOW_DEFAULT: Final = 20
_PAGE: Final = 2000
#: Notifications read per query by ``replay`` (SQLite: one SELECT each).
REPLAY_PAGE: Final = 10_000
#: Decisions a replay process reads per query.
_DECISION_PAGE: Final = 1000
_WORKER_MODULE: Final = "cke_adapters.eventlog.replay_worker"
#: Processes ``replay`` uses at most by default.
MAX_REPLAY_JOBS: Final = 4
#: Decisions below which ``replay`` stays in one process (starting a worker
#: costs about half a second).
PARALLEL_MIN_DECISIONS: Final = 4000
#: The chunks ``replay`` hands out: about this many per process, within the
#: bounds below (a process finishes within about one chunk of the others).
_CHUNKS_PER_JOB: Final = 32
_CHUNK_BOUNDS: Final = (50, 500)
#: The replaying process's name in the work queue (workers are 1, 2 ...).
_MAIN: Final = 0
_ATTEMPTS: Final = 3
_INTEGER: Final = re.compile(r"[+-]?\d+\Z")
DEFAULT_POLICY: Final = ObservationPolicy()
NO_CLUSTER: Final = "no cluster configuration in the event log (ckecli cluster set)"

P = ParamSpec("P")
#: A configuration's versions and values: cluster, constraints, resources, settings.
_Values = tuple[ConfigurationVersions, Cluster, Constraints, tuple[Any, ...], EngineSettings]
T = TypeVar("T")
A = TypeVar("A", bound=HistoryAggregate)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def engine_version() -> str:
    """What ``DecisionRecorded.engine_version`` says for this code: ``cke-py/X.Y.Z``."""
    try:
        return f"cke-py/{importlib.metadata.version('cke-py')}"
    except importlib.metadata.PackageNotFoundError:
        return "cke-py/unknown"


def new_seed() -> int:
    """A fresh seed for one decision (recorded with it, so replay is exact)."""
    return secrets.randbits(63)


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@attrs.frozen
class SetResult:
    """The outcome of a configuration command: whether anything changed (a
    value equal to the stored one records nothing) and the warnings."""

    changed: bool
    warnings: tuple[Problem, ...] = ()
    keys: tuple[str, ...] = ()


@attrs.frozen
class RecordedDecision:
    """``position``: the decision's place in the decision log (what operation
    records refer to); 0 when the decision was not recorded (no operations and
    no phase change, ``should_record``)."""

    position: int
    event: DecisionRecorded | None


@attrs.frozen
class TermStart:
    term: int
    #: The orphaned record that the new term cancelled (CKE's ``checkLastOp``).
    cancelled_record: int | None


@attrs.frozen
class DecisionDifference:
    position: int
    at: datetime.datetime
    engine_version: str
    phase: str
    differences: tuple[str, ...]
    #: The operation records the decision started.
    records: tuple[int, ...]


@attrs.define
class _ReplayProgress:
    """What ``replay`` has read so far."""

    count: int = 0
    decisions: int = 0
    #: The last decision read: its event, or its notification when another
    #: process re-derives it (decoded at the end).
    last_decision: Any = None
    last_at: datetime.datetime | None = None


@attrs.frozen
class ReplayReport:
    """``replay``: the state as of ``point`` and the decisions re-derived."""

    point: str
    events: int
    decisions: int
    differences: tuple[DecisionDifference, ...]
    #: What CKE would read from its keys at that point (``etcd_view``).
    state: Mapping[str, str]
    last_event_at: datetime.datetime | None
    engine_version: str
    #: Decisions per recorded engine version.
    recorded_engines: Mapping[str, int]

    @property
    def identical(self) -> bool:
        return not self.differences


@attrs.frozen
class PlannedCommand:
    name: str
    target: str


@attrs.frozen
class PlannedOperation:
    name: str
    targets: tuple[str, ...]
    commands: tuple[PlannedCommand, ...]
    #: Set when the plan could not be driven to its end.
    note: str = ""


@attrs.frozen
class Plan:
    """What the engine would do now (nothing is changed)."""

    phase: str
    operations: tuple[PlannedOperation, ...]
    now: datetime.datetime
    #: The decision whose observation the plan starts from, and its time.
    observed_by: int
    observed_at: datetime.datetime
    proposed_spec: bool
    proposed_constraints: bool
    warnings: tuple[Problem, ...] = ()

    @property
    def would_act(self) -> bool:
        return bool(self.operations)


# ---------------------------------------------------------------------------
# Error mapping
# ---------------------------------------------------------------------------


def _not_leader(exc: BaseException) -> bool:
    module = sys.modules.get("cke_adapters.eventstore.etcd")
    return module is not None and isinstance(exc, module.NotLeaderError)


class _Conflict(Exception):
    """An IntegrityError inside a command: retry from a fresh read."""


def _query(method: Callable[P, T]) -> Callable[P, T]:
    """Store failures become ``EventLogError``s."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        log = args[0]
        assert isinstance(log, EventLog)
        with log.store_errors():
            return method(*args, **kwargs)

    return wrapper


def _command(method: Callable[P, T]) -> Callable[P, T]:
    """A write: retried from a fresh read on a conflict, then ``ConflictError``."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        log = args[0]
        assert isinstance(log, EventLog)
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with log.store_errors(conflict=_Conflict):
                    return method(*args, **kwargs)
            except _Conflict as exc:
                if attempt == _ATTEMPTS:
                    raise ConflictError(
                        f"the event log kept changing while {method.__name__} ran "
                        f"({error_line(exc.__cause__ or exc)}); nothing was written, try again"
                    ) from None
        raise AssertionError("unreachable")

    return wrapper


# ---------------------------------------------------------------------------
# The application
# ---------------------------------------------------------------------------


class EventLog(Application[UUID]):
    """The event log (see the module docstring). Build it with ``open_event_log``;
    ``EventLog()`` alone keeps everything in memory (tests)."""

    name = "CKE"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {
        RecordCounter: 200,
        ClusterConfiguration: 50,
        RebootQueue: 100,
        RepairQueue: 100,
        Leadership: 50,
    }

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        url: str = "memory:",
        policy: ObservationPolicy = DEFAULT_POLICY,
        clock: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self.url = url
        self.policy = policy
        self._clock = clock
        self._recorder: DecisionRecorder | None = None
        self._built: tuple[DecisionInputs, ConfigurationVersions] | None = None
        self._values: _Values | None = None
        with self.store_errors():
            super().__init__(dict(env or {}))

    def construct_transcoder(self) -> Transcoder:
        """eventsourcing's JSON transcoder, with a faster decoder (``transcoder``)
        unless the environment names another transcoder."""
        transcoder = super().construct_transcoder()
        if type(transcoder) is JSONTranscoder:
            transcoder = FastJSONTranscoder()
            self.register_transcodings(transcoder)
        return transcoder

    def construct_env(self, name: str, env: Mapping[str, str] | None = None) -> Environment:
        """Only the settings given (not ``os.environ``): the URL decides the store."""
        settings = {
            **type(self).env,
            "IS_SNAPSHOTTING_ENABLED": "y",
            # Aggregates are cached and fast-forwarded from the store on every
            # read, so other writers' events are seen; commands get deep copies.
            "AGGREGATE_CACHE_MAXSIZE": "1000",
            **(env or {}),
        }
        return Environment(name, settings)

    def _take_snapshots(self, processing_event: Any) -> None:
        # Snapshots are a cache: failing to write one must not fail a command
        # whose events are already stored.
        with contextlib.suppress(PersistenceError):
            super()._take_snapshots(processing_event)

    @contextlib.contextmanager
    def store_errors(self, *, conflict: type[Exception] = ConflictError) -> Iterator[None]:
        """Map store failures to ``EventLogError``s (``conflict`` for IntegrityError)."""
        try:
            yield
        except EventLogError:
            raise
        except IntegrityError as exc:
            if conflict is ConflictError:
                raise ConflictError(
                    f"version conflict: {error_line(exc)}; nothing was written"
                ) from None
            raise conflict(error_line(exc)) from exc
        except PersistenceError as exc:
            if _not_leader(exc):
                raise FencedError(f"not the leader: {error_line(exc)}") from None
            if isinstance(exc, OperationalError | InterfaceError):
                raise EventStoreUnavailableError(self.url, error_line(exc)) from None
            raise EventLogError(f"event store error: {error_line(exc)}") from None

    def _time(self, at: datetime.datetime | None) -> datetime.datetime:
        return at if at is not None else self._clock()

    # --- loading and saving ----------------------------------------------------------

    def _get(
        self, oid: UUID, cls: type[A], version: int | None = None, *, copy: bool = True
    ) -> A | None:
        """The aggregate (None if absent). ``copy=False`` may return the cached
        object itself: only for reading."""
        try:
            aggregate: Any = self.repository.get(oid, version=version, deepcopy_from_cache=copy)
        except AggregateNotFoundError:
            return None
        if not isinstance(aggregate, cls):
            raise EventLogError(
                f"aggregate {oid} is a {type(aggregate).__name__}, not a {cls.__name__}"
            )
        return aggregate

    def _singleton(self, cls: Any, oid: UUID, at: datetime.datetime) -> Any:
        found = self._get(oid, cls)
        return found if found is not None else cls.create(at)

    def _save(self, *aggregates: HistoryAggregate | None) -> None:
        pending = [a for a in aggregates if a is not None and a.pending_events]
        if pending:
            self.save(*pending)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            super().close()

    def set_leader_key(self, key: str | None) -> None:
        """Fence every later write on ``key`` (the etcd store; CKE's election key).
        The SQLite store lives on one host and has nothing to fence."""
        datastore = getattr(self.factory, "datastore", None)
        if datastore is not None and hasattr(datastore, "leader_key"):
            datastore.leader_key = key

    # --- configuration ------------------------------------------------------------------

    @_query
    def configuration(self, version: int | None = None) -> ClusterConfiguration | None:
        return self._get(CLUSTER_CONFIGURATION_ID, ClusterConfiguration, version)

    def cluster(self) -> Cluster | None:
        config = self.configuration()
        return None if config is None else config.cluster()

    def constraints(self) -> Constraints | None:
        config = self.configuration()
        return None if config is None else config.constraints()

    @_command
    def set_cluster(self, text: str, at: datetime.datetime | None = None) -> SetResult:
        """``ckecli cluster set``: CKE's defaults, validation, the constraints check."""
        checked = check_cluster(text)
        errors = [p for p in checked.problems if p.severity == "error"]
        warnings = tuple(p for p in checked.problems if p.severity == "warning")
        if errors or checked.value is None:
            raise ConfigError([*errors, *warnings] or [Problem("", "the document is empty")])
        return self._set_spec(checked.value, warnings, self._time(at))

    @_command
    def set_cluster_and_constraints(
        self, text: str, constraints: Constraints, at: datetime.datetime | None = None
    ) -> SetResult:
        """Store cluster.yml and the constraints together, checked against each
        other and saved in one write: how a change that moves both is made (a
        promoted control plane changes ``control-plane-count`` too), which two
        separate writes cannot do since each is checked against the other."""
        checked = check_cluster(text)
        errors = [p for p in checked.problems if p.severity == "error"]
        warnings = tuple(p for p in checked.problems if p.severity == "warning")
        if errors or checked.value is None:
            raise ConfigError([*errors, *warnings] or [Problem("", "the document is empty")])
        _raise_errors(check_against_constraints(checked.value, constraints))
        when = self._time(at)
        config = self._singleton(ClusterConfiguration, CLUSTER_CONFIGURATION_ID, when)
        changed = config.set_constraints(constraints, when)
        changed = config.set_spec(checked.value, when) or changed
        self._save(config)
        return SetResult(changed, warnings)

    @_command
    def set_spec(self, cluster: Cluster, at: datetime.datetime | None = None) -> SetResult:
        """Store a ``Cluster`` value (sabakan, the daemon), checked as ``set_cluster``."""
        return self._set_spec(cluster, (), self._time(at))

    def _set_spec(
        self, cluster: Cluster, warnings: tuple[Problem, ...], when: datetime.datetime
    ) -> SetResult:
        config = self._singleton(ClusterConfiguration, CLUSTER_CONFIGURATION_ID, when)
        _raise_errors(check_against_constraints(cluster, config.constraints() or Constraints()))
        changed = config.set_spec(cluster, when)
        self._save(config)
        return SetResult(changed, warnings)

    @_command
    def set_constraints(self, text: str, at: datetime.datetime | None = None) -> SetResult:
        """Replace the constraints with a whole document (CKE's hyphenated names)."""
        constraints = check_constraints(text).unwrap()
        return self._put_constraints(constraints, self._time(at))

    @_command
    def set_constraint(
        self, name: str, value: str | int, at: datetime.datetime | None = None
    ) -> SetResult:
        """``ckecli constraints set NAME VALUE``: one constraint, an integer."""
        when = self._time(at)
        config = self.configuration()
        current = (config.constraints() if config else None) or Constraints()
        doc = codec.unstructure(current)
        if name not in doc:
            raise EventLogError(f"no such constraint: {name} (one of: {', '.join(doc)})")
        if isinstance(value, str):
            if not _INTEGER.match(value.strip()):
                raise EventLogError(f"{name}: VALUE must be an integer, got {value!r}")
            value = int(value)
        doc[name] = value
        constraints = check_raw(doc, Constraints, validate_constraints).unwrap()
        return self._put_constraints(constraints, when)

    def _put_constraints(self, constraints: Constraints, when: datetime.datetime) -> SetResult:
        config = self._singleton(ClusterConfiguration, CLUSTER_CONFIGURATION_ID, when)
        cluster = config.cluster()
        if cluster is not None:
            _raise_errors(check_against_constraints(cluster, constraints))
        changed = config.set_constraints(constraints, when)
        self._save(config)
        return SetResult(changed)

    @_command
    def set_resource(self, text: str, at: datetime.datetime | None = None) -> SetResult:
        """``ckecli resource set``: every document of ``text``; ``keys``: those changed."""
        when = self._time(at)
        resources = parse_user_resources(text)
        config = self._singleton(ClusterConfiguration, CLUSTER_CONFIGURATION_ID, when)
        keys = tuple(r.key for r in resources if config.set_resource(r.key, thaw(r.document), when))
        self._save(config)
        return SetResult(bool(keys), keys=keys)

    @_command
    def delete_resource(self, text: str, at: datetime.datetime | None = None) -> SetResult:
        """``ckecli resource delete``: the keys of the documents of ``text``."""
        return self._delete_keys([r.key for r in parse_user_resources(text)], self._time(at))

    @_command
    def delete_resource_keys(
        self, keys: Sequence[str], at: datetime.datetime | None = None
    ) -> SetResult:
        return self._delete_keys(keys, self._time(at))

    def _delete_keys(self, keys: Sequence[str], when: datetime.datetime) -> SetResult:
        config = self.configuration()
        if config is None:
            return SetResult(False)
        deleted = tuple(k for k in keys if config.delete_resource(k, when))
        self._save(config)
        return SetResult(bool(deleted), keys=deleted)

    @_command
    def set_settings(self, settings: EngineSettings, at: datetime.datetime | None = None) -> bool:
        when = self._time(at)
        config = self._singleton(ClusterConfiguration, CLUSTER_CONFIGURATION_ID, when)
        changed: bool = config.set_settings(settings, when)
        self._save(config)
        return changed

    # --- decisions ----------------------------------------------------------------------

    def decision_inputs(
        self,
        status: ClusterStatus,
        now: datetime.datetime,
        seed: int,
        settings: EngineSettings | None = None,
    ) -> DecisionInputs:
        """The inputs of a decision now: the configuration from the log (storing
        ``settings`` first when they changed), ``status`` as observed."""
        if settings is not None:
            self.set_settings(settings, now)
        with self.store_errors():
            config = self._get(CLUSTER_CONFIGURATION_ID, ClusterConfiguration, copy=False)
        values = self._configured(config)
        if values is None:
            raise NotFoundError(NO_CLUSTER)
        versions, cluster, constraints, resources, engine = values
        inputs = DecisionInputs(
            cluster=cluster,
            status=status,
            constraints=constraints,
            resources=resources,
            settings=engine,
            now=now,
            seed=seed,
        )
        self._built = (inputs, versions)
        return inputs

    def _configured(self, config: ClusterConfiguration | None) -> _Values | None:
        """The values of ``config``, structured once per configuration version."""
        if config is None:
            return None
        if self._values is None or self._values[0].configuration != config.version:
            cluster = config.cluster()
            if cluster is None:
                return None
            self._values = (
                config.versions(),
                cluster,
                config.constraints() or Constraints(),
                config.resources(),
                config.settings(),
            )
        return self._values

    def _versions_for(self, inputs: DecisionInputs) -> ConfigurationVersions:
        if self._built is not None and self._built[0] is inputs:
            return self._built[1]
        with self.store_errors():
            config = self._get(CLUSTER_CONFIGURATION_ID, ClusterConfiguration, copy=False)
        values = self._configured(config)
        if values is not None and values[1:] == (
            inputs.cluster,
            inputs.constraints,
            inputs.resources,
            inputs.settings,
        ):
            return values[0]
        raise EventLogError(
            "the decision's inputs are not the configuration in the event log; "
            "build them with decision_inputs()"
        )

    @_query
    def _decision_tail(self, lte: int | None = None) -> list[DecisionRecorded]:
        """The decisions from the last one carrying an observation snapshot (at or
        before ``lte``) to ``lte`` (the end when None)."""
        tail: list[DecisionRecorded] = []
        while True:
            page = list(self.events.get(DECISION_LOG_ID, desc=True, lte=lte, limit=500))
            for event in page:
                assert isinstance(event, DecisionRecorded)
                tail.append(event)
                if isinstance(event.observation, dict) and "snapshot" in event.observation:
                    return tail[::-1]
            if len(page) < 500:
                return tail[::-1]
            lte = page[-1].originator_version - 1

    def _decision_recorder(self, version: str) -> DecisionRecorder:
        if self._recorder is None:
            self._recorder = DecisionRecorder.resume(self._decision_tail(), version, self.policy)
        if self._recorder.engine_version != version:
            self._recorder = attrs.evolve(self._recorder, engine_version=version)
        return self._recorder

    def record_decision(
        self,
        inputs: DecisionInputs,
        decision: Decision,
        engine_version: str,
        term: int = 0,
        *,
        force: bool = False,
    ) -> RecordedDecision:
        """Record ``decision`` (made from ``inputs``) in the decision log when it
        starts operations or changes the phase (always with ``force``).

        Operation records are registered when each operation starts
        (``register(op, decision=position)``), as CKE's ``runOp`` does: an
        operation that never runs has no record.
        """
        versions = self._versions_for(inputs)
        with self.store_errors():
            recorder = self._decision_recorder(engine_version)
        event, after = recorder.record(inputs, decision, versions, term=term, force=force)
        if event is None:
            self._recorder = after
            return RecordedDecision(0, None)
        try:
            with self.store_errors():
                self.save(event)
        except EventLogError:
            self._recorder = None  # re-read the end of the log next time
            raise
        self._recorder = after
        return RecordedDecision(event.position, event)

    @_query
    def last_decision(self) -> DecisionRecorded | None:
        for event in self.events.get(DECISION_LOG_ID, desc=True, limit=1):
            assert isinstance(event, DecisionRecorded)
            return event
        return None

    def status(self) -> dict[str, str] | None:
        """CKE's ``status`` key: ``{"phase", "timestamp"}`` of the last recorded
        decision, or None before the first."""
        last = self.last_decision()
        if last is None:
            return None
        return {"phase": last.phase, "timestamp": format_rfc3339(last.now)}

    def latest_observation(self) -> tuple[DecisionRecorded, dict[str, Any]]:
        """The last recorded decision and the status document it observed."""
        tail = self._decision_tail()
        if not tail:
            raise NotFoundError(
                "no observation recorded yet: the engine has not recorded a decision"
            )
        *_, last = observations(tail)
        return last

    # --- operation records ------------------------------------------------------------------

    @_command
    def register(
        self,
        operation: Operation | str,
        targets: Sequence[str] = (),
        at: datetime.datetime | None = None,
        *,
        decision: int = 0,
    ) -> int:
        """A new record (status ``new``); returns its id. The counter and the
        record are saved together."""
        when = self._time(at)
        counter = self._singleton(RecordCounter, RECORD_COUNTER_ID, when)
        number = counter.allocate(when)
        if isinstance(operation, Operation):
            record = OperationRecord.for_operation(number, operation, when, decision=decision)
        else:
            record = OperationRecord.register(number, operation, targets, when, decision=decision)
        self._save(counter, record)
        return int(number)

    def _load_record(self, number: int) -> OperationRecord:
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise NotFoundError(f"record ids are integers from 1, got {number!r}")
        record = self._get(record_id(number), OperationRecord)
        if record is None:
            raise NotFoundError(f"no record {number}")
        return record

    @_query
    def record(self, number: int) -> OperationRecord:
        return self._load_record(number)

    @_command
    def command_started(
        self, number: int, name: str, target: str = "", at: datetime.datetime | None = None
    ) -> None:
        record = self._load_record(number)
        record.start_command(name, target, self._time(at))
        self._save(record)

    @_command
    def completed(self, number: int, info: str = "", at: datetime.datetime | None = None) -> None:
        record = self._load_record(number)
        record.complete(info, self._time(at))
        self._save(record)

    @_command
    def cancelled(self, number: int, error: str, at: datetime.datetime | None = None) -> None:
        record = self._load_record(number)
        record.cancel(error, self._time(at))
        self._save(record)

    @_query
    def last_record_id(self) -> int:
        """The newest record id (0: none), from the counter's last event."""
        for event in self.events.get(RECORD_COUNTER_ID, desc=True, limit=1):
            return int(getattr(event, "record_id", 0))
        return 0

    # --- queues ----------------------------------------------------------------------------

    def _queue(
        self, cls: Any, oid: UUID, action: Callable[[Any, datetime.datetime], Any], at: Any
    ) -> Any:
        when = self._time(at)
        queue = self._singleton(cls, oid, when)
        result = action(queue, when)
        self._save(queue)
        return result

    @_query
    def reboot_queue(self) -> RebootQueue | None:
        return self._get(REBOOT_QUEUE_ID, RebootQueue)

    @_query
    def repair_queue(self) -> RepairQueue | None:
        return self._get(REPAIR_QUEUE_ID, RepairQueue)

    def reboot_queue_is_enabled(self) -> bool:
        queue = self.reboot_queue()
        return True if queue is None else bool(queue.enabled)

    def repair_queue_is_enabled(self) -> bool:
        queue = self.repair_queue()
        return True if queue is None else bool(queue.enabled)

    @_command
    def reboot_queue_enable(
        self, enabled: bool = True, at: datetime.datetime | None = None
    ) -> bool:
        """``ckecli reboot-queue enable|disable``; False if nothing changed."""
        return bool(
            self._queue(
                RebootQueue,
                REBOOT_QUEUE_ID,
                lambda q, w: q.enable(w) if enabled else q.disable(w),
                at,
            )
        )

    @_command
    def repair_queue_enable(
        self, enabled: bool = True, at: datetime.datetime | None = None
    ) -> bool:
        return bool(
            self._queue(
                RepairQueue,
                REPAIR_QUEUE_ID,
                lambda q, w: q.enable(w) if enabled else q.disable(w),
                at,
            )
        )

    @_command
    def reboot_queue_add(
        self, nodes: Sequence[str], at: datetime.datetime | None = None
    ) -> list[int]:
        """``ckecli reboot-queue add``: one entry per address, each a node of cluster.yml."""
        cluster = self.cluster()
        if cluster is None:
            raise NotFoundError(NO_CLUSTER)
        known = {n.address for n in cluster.nodes}
        return list(
            self._queue(
                RebootQueue,
                REBOOT_QUEUE_ID,
                lambda q, w: [q.add(node, w, known_nodes=known) for node in nodes],
                at,
            )
        )

    @_command
    def reboot_queue_cancel(self, index: int, at: datetime.datetime | None = None) -> bool:
        return bool(self._queue(RebootQueue, REBOOT_QUEUE_ID, lambda q, w: q.cancel(index, w), at))

    @_command
    def reboot_queue_cancel_all(self, at: datetime.datetime | None = None) -> list[int]:
        return list(
            self._queue(
                RebootQueue,
                REBOOT_QUEUE_ID,
                lambda q, w: [e.index for e in q.entries() if q.cancel(e.index, w)],
                at,
            )
        )

    @_command
    def reboot_queue_reset_backoff(self, at: datetime.datetime | None = None) -> list[int]:
        return list(
            self._queue(
                RebootQueue,
                REBOOT_QUEUE_ID,
                lambda q, w: [e.index for e in q.entries() if q.reset_backoff(e.index, w)],
                at,
            )
        )

    @_command
    def reboot_queue_update(
        self, entry: RebootQueueEntry, at: datetime.datetime | None = None
    ) -> bool:
        """The engine wrote ``entry`` (checked against §F.1)."""
        return bool(self._queue(RebootQueue, REBOOT_QUEUE_ID, lambda q, w: q.update(entry, w), at))

    @_command
    def reboot_queue_remove(
        self, index: int, reason: RemovalReason, at: datetime.datetime | None = None
    ) -> None:
        self._queue(RebootQueue, REBOOT_QUEUE_ID, lambda q, w: q.remove(index, reason, w), at)

    @_command
    def repair_queue_add(
        self,
        operation: str,
        machine_type: str,
        address: str,
        serial: str = "",
        at: datetime.datetime | None = None,
    ) -> int:
        """``ckecli repair-queue add``: the procedure and operation must exist."""
        cluster = self.cluster()
        if cluster is None:
            raise NotFoundError(NO_CLUSTER)
        return int(
            self._queue(
                RepairQueue,
                REPAIR_QUEUE_ID,
                lambda q, w: q.add(
                    operation, machine_type, address, w, serial=serial, cluster=cluster
                ),
                at,
            )
        )

    @_command
    def repair_queue_delete(self, index: int, at: datetime.datetime | None = None) -> bool:
        return bool(
            self._queue(RepairQueue, REPAIR_QUEUE_ID, lambda q, w: q.mark_deleted(index, w), at)
        )

    def _repair_delete_where(self, finished: bool, at: datetime.datetime | None) -> list[int]:
        done = {RepairStatus.SUCCEEDED, RepairStatus.FAILED}
        return list(
            self._queue(
                RepairQueue,
                REPAIR_QUEUE_ID,
                lambda q, w: [
                    e.index
                    for e in q.entries()
                    if (e.status in done) == finished and q.mark_deleted(e.index, w)
                ],
                at,
            )
        )

    @_command
    def repair_queue_delete_finished(self, at: datetime.datetime | None = None) -> list[int]:
        return self._repair_delete_where(True, at)

    @_command
    def repair_queue_delete_unfinished(self, at: datetime.datetime | None = None) -> list[int]:
        return self._repair_delete_where(False, at)

    @_command
    def repair_queue_reset_backoff(self, at: datetime.datetime | None = None) -> list[int]:
        return list(
            self._queue(
                RepairQueue,
                REPAIR_QUEUE_ID,
                lambda q, w: [e.index for e in q.entries() if q.reset_backoff(e.index, w)],
                at,
            )
        )

    @_command
    def repair_queue_update(
        self, entry: RepairQueueEntry, at: datetime.datetime | None = None
    ) -> bool:
        """The engine wrote ``entry`` (checked against §F.2)."""
        return bool(self._queue(RepairQueue, REPAIR_QUEUE_ID, lambda q, w: q.update(entry, w), at))

    @_command
    def repair_queue_remove(self, index: int, at: datetime.datetime | None = None) -> None:
        self._queue(RepairQueue, REPAIR_QUEUE_ID, lambda q, w: q.remove(index, w), at)

    # --- leadership -----------------------------------------------------------------------

    @_query
    def leadership(self) -> Leadership | None:
        return self._get(LEADERSHIP_ID, Leadership)

    @_command
    def start_term(
        self, leader: str, at: datetime.datetime | None = None, *, lease: str = ""
    ) -> TermStart:
        """``leader`` won the election. As CKE's new leader does (``checkLastOp``),
        the newest record, if still new or running, is cancelled: its operation
        was interrupted. The term and the cancellation are saved together."""
        when = self._time(at)
        leadership = self._singleton(Leadership, LEADERSHIP_ID, when)
        term = leadership.start_term(leader, when, lease=lease)
        last = self.last_record_id()
        record = self._load_record(last) if last else None
        cancelled = None
        if record is not None and record.is_open:
            command = record.command
            doing = (
                f"while it ran {command['name']} on {command['target'] or 'no target'}"
                if record.status == "running"
                else "before it ran any command"
            )
            record.cancel(
                f"interrupted: the leader stopped {doing}; cancelled by the new leader "
                f"{leader} (term {term})",
                when,
            )
            cancelled = last
        self._save(leadership, record)
        self._recorder = None
        return TermStart(term, cancelled)

    @_command
    def end_term(self, term: int, reason: str, at: datetime.datetime | None = None) -> None:
        leadership = self._get(LEADERSHIP_ID, Leadership)
        if leadership is None:
            raise NotFoundError("no leadership term has started")
        leadership.end_term(term, reason, self._time(at))
        self._save(leadership)

    # --- config-version ---------------------------------------------------------------------

    @_query
    def config_version(self) -> str:
        """CKE's ``config-version`` (§E.1); ``"1"`` until the ``upgrade`` operation set it."""
        stored = self._get(STORAGE_VERSION_ID, StorageVersion)
        return DEFAULT_CONFIG_VERSION if stored is None else str(stored.config_version)

    @_command
    def set_config_version(self, version: str, at: datetime.datetime | None = None) -> bool:
        """Set ``config-version`` (what ``upgrade-version-from-1-to-2`` writes);
        False when it already had that value. Fenced like every write."""
        when = self._time(at)
        stored = self._singleton(StorageVersion, STORAGE_VERSION_ID, when)
        changed = stored.set_version(version, when)
        self._save(stored)
        return bool(changed)

    # --- history ------------------------------------------------------------------------------

    @_query
    def history(self, count: int = 0) -> list[dict[str, Any]]:
        """CKE's records, newest first: ``count`` of them (0: the newest
        ``MAX_HISTORY``, what CKE keeps)."""
        wanted = count if count > 0 else MAX_HISTORY
        last = self.last_record_id()
        return [self._load_record(n).record_view() for n in range(last, max(0, last - wanted), -1)]

    def follow(
        self,
        count: int = 0,
        *,
        poll_interval: float = 0.5,
        idle_timeout: float | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[dict[str, Any]]:
        """``ckecli history -f``: the last ``count`` records (0: 20) oldest first,
        then every record change as it is stored, until ``stop`` is set or
        nothing happened for ``idle_timeout`` seconds."""
        topics = _record_topics()
        with self.store_errors():
            position = self.recorder.max_notification_id() or 0
            last = self.last_record_id()
            wanted = count if count > 0 else FOLLOW_DEFAULT
            cache: dict[UUID, Any] = {}
            record: Any
            first = [self._load_record(n) for n in range(max(1, last - wanted + 1), last + 1)]
        for record in first:
            cache[record.id] = record
            yield record.record_view()
        idle_since = time.monotonic()
        while stop is None or not stop.is_set():
            with self.store_errors():
                page = self.recorder.select_notifications(position + 1, 500, topics=topics)
            changed: list[dict[str, Any]] = []
            for notification in page:
                position = notification.id
                event: Any = self.mapper.to_domain_event(notification)
                record = cache.get(event.originator_id)
                if record is not None and event.originator_version <= record.version:
                    continue
                if record is None and event.originator_version > 1:
                    with self.store_errors():  # a record older than those replayed
                        record = self._get(
                            event.originator_id, OperationRecord, event.originator_version
                        )
                else:
                    record = event.mutate(record)
                if record is None:
                    continue
                if len(cache) > 4 * MAX_HISTORY:
                    cache.clear()
                cache[record.id] = record
                changed.append(record.record_view())
            yield from changed
            if page:
                idle_since = time.monotonic()
                if len(page) == 500:
                    continue
            elif idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                return
            if stop is not None:
                stop.wait(poll_interval)
            else:
                time.sleep(poll_interval)

    # --- replay, explain, plan -----------------------------------------------------------

    def _notifications(self, page: int = _PAGE) -> Iterator[Any]:
        start = 1
        while True:
            with self.store_errors():
                notifications = self.recorder.select_notifications(start, page)
            yield from notifications
            if len(notifications) < page:
                return
            start = notifications[-1].id + 1

    def replay(
        self, until: int | datetime.datetime | None = None, *, jobs: int | None = None
    ) -> ReplayReport:
        """Rebuild the state as of ``until`` (a record id: up to that record's
        last event; a time: up to the last event at or before it; None: the
        whole log), re-run ``decide`` on every recorded decision up to there and
        report each one whose result differs.

        The log is read once, in order, and each decision is re-derived as soon
        as it is read (its configuration events are earlier in the log), so
        only the aggregates and the last observation are held in memory.

        ``jobs``: processes to re-derive decisions in (None: as many as there
        are CPUs, at most ``MAX_REPLAY_JOBS``). With more than one, a log of at
        least ``PARALLEL_MIN_DECISIONS`` decisions in a store other processes
        can open is shared out (``cke_adapters.eventlog.parallel``): worker
        processes start re-deriving at once, this one reads and folds every
        event, then joins them; chunks of decisions are handed out by work
        stealing. The report is the same; a worker that cannot run leaves its
        work to the others."""
        stop_after: tuple[UUID, int] | None = None
        if until is None:
            point = "the end of the log"
        elif isinstance(until, datetime.datetime):
            point = format_rfc3339(until)
        else:
            target = self.record(until)
            stop_after = (target.id, target.version)
            point = f"record {until}"
        with _without_cycle_collection():
            return self._replay(until, stop_after, point, self._replay_plan(until, jobs))

    def _replay(
        self,
        until: int | datetime.datetime | None,
        stop_after: tuple[UUID, int] | None,
        point: str,
        plan: _ReplayPlan | None,
    ) -> ReplayReport:
        if plan is None:
            return self._replay_here(until, stop_after, point, None)
        queue = WorkQueue(plan.regions, plan.chunk)
        links: list[WorkerLink] = []
        try:
            for owner, _, _ in plan.regions:
                link = WorkerLink(queue, owner, self.url, _WORKER_MODULE)
                link.start()
                links.append(link)
            return self._replay_here(until, stop_after, point, _Shared(plan, queue, links))
        finally:
            queue.abort()
            for link in links:
                link.stop()

    def _replay_plan(
        self, until: int | datetime.datetime | None, jobs: int | None
    ) -> _ReplayPlan | None:
        """How to share a replay out between processes, or None for one process."""
        wanted = min(os.cpu_count() or 1, MAX_REPLAY_JOBS) if jobs is None else jobs
        if (
            wanted <= 1
            or isinstance(until, datetime.datetime)  # the cut needs every event decoded
            or self.url == "memory:"
            or strategy.decide is not ENGINE_DECIDE  # a substituted engine stays here
        ):
            return None
        with self.store_errors():
            # First the last event, then the last decision: every decision stored
            # up to that event is then within the decisions shared out below.
            last_event = int(self.recorder.max_notification_id() or 0)
            last = self.last_decision()
        decisions = last.position if last is not None else 0
        if decisions < 2 * wanted or (jobs is None and decisions < PARALLEL_MIN_DECISIONS):
            return None
        low, high = _CHUNK_BOUNDS
        chunk = max(low, min(high, decisions // (wanted * _CHUNKS_PER_JOB)))
        # The workers start at once, each on its share; this process reads and
        # folds the log first, then steals from them.
        workers = wanted - 1
        bounds = [round(decisions * i / workers) for i in range(workers + 1)]
        regions = tuple(
            (owner, lo + 1, hi)
            for owner, (lo, hi) in enumerate(itertools.pairwise(bounds), start=1)
            if hi > lo
        )
        return _ReplayPlan(last_event=last_event, regions=regions, chunk=chunk)

    def _replay_here(
        self,
        until: int | datetime.datetime | None,
        stop_after: tuple[UUID, int] | None,
        point: str,
        shared: _Shared | None,
    ) -> ReplayReport:
        aggregates: dict[UUID, Any] = {}
        configuration: list[Any] = []
        read = _ReplayProgress()
        last_event = shared.plan.last_event if shared is not None else None
        to_domain_event = self.mapper.to_domain_event

        def decision_events() -> Iterator[DecisionRecorded]:
            for notification in self._notifications(REPLAY_PAGE):
                if last_event is not None and notification.id > last_event:
                    return
                oid = notification.originator_id
                if shared is not None and oid == DECISION_LOG_ID:
                    # Re-derived from the work queue: decoded only if it is the last.
                    read.count += 1
                    read.decisions += 1
                    read.last_decision = notification
                    read.last_at = None
                    if stop_after is not None and (oid, notification.originator_version) == (
                        stop_after
                    ):
                        return
                    continue
                event: Any = to_domain_event(notification)
                if isinstance(until, datetime.datetime) and event.timestamp > until:
                    return
                read.count += 1
                if oid == DECISION_LOG_ID:
                    read.decisions += 1
                    read.last_decision = event
                    yield event
                else:
                    aggregates[oid] = event.mutate(aggregates.get(oid))
                    if oid == CLUSTER_CONFIGURATION_ID:
                        configuration.append(event)
                read.last_at = event.timestamp
                if stop_after is not None and (oid, event.originator_version) == stop_after:
                    return

        found: list[Row] = []
        rederiver = Rederiver(configuration)
        for rederived in rederiver.run(decision_events()):
            event = rederived.event
            found.append(
                (
                    event.position,
                    event.now,
                    event.engine_version,
                    event.phase,
                    rederived.differences,
                )
            )
        last_decision: Any = read.last_decision
        if last_decision is not None and not isinstance(last_decision, DecisionRecorded):
            last_decision = to_domain_event(last_decision)  # a notification
        if read.last_at is None and last_decision is not None:
            read.last_at = last_decision.timestamp
        upto = last_decision.position if last_decision is not None else 0
        if shared is not None:
            found.extend(r for r in self._rederive_shared(shared, rederiver, upto) if r[0] <= upto)
        return self._replay_report(point, read, aggregates, last_decision, found)

    def _rederive_shared(self, shared: _Shared, rederiver: Rederiver, upto: int) -> list[Row]:
        """Join the workers on the work queue up to decision ``upto``, then
        gather every row (raising a worker's one-line error)."""
        queue = shared.queue
        queue.limit(upto)
        rows: list[Row] = []

        def claim(finished: list[Row]) -> Chunk | None:
            rows.extend(finished)
            return queue.claim(_MAIN)

        while True:
            rederive_claimed(rederiver, claim, self._decision_tail, self._decisions_between)
            if not queue.wait_for_work():
                break
        for link in shared.links:
            link.join()
            if link.error is not None:
                kind, message = link.error
                raise (HistoryError if kind == "history" else EventLogError)(message)
            rows.extend(link.rows)
        return rows

    def _decisions_between(self, first: int, last: int) -> Iterator[DecisionRecorded]:
        """Decisions ``first`` to ``last`` (fewer if the log ends before)."""
        position = first - 1
        while position < last:
            with self.store_errors():
                page = list(
                    self.events.get(DECISION_LOG_ID, gt=position, lte=last, limit=_DECISION_PAGE)
                )
            if not page:
                return
            for event in page:
                assert isinstance(event, DecisionRecorded)
                yield event
            position = page[-1].originator_version

    def _replay_report(
        self,
        point: str,
        read: _ReplayProgress,
        aggregates: Mapping[UUID, Any],
        last_decision: DecisionRecorded | None,
        found: Sequence[Row],
    ) -> ReplayReport:
        records: dict[int, list[int]] = {}
        for aggregate in aggregates.values():
            if isinstance(aggregate, OperationRecord) and aggregate.decision:
                records.setdefault(aggregate.decision, []).append(aggregate.record_id)
        engines: dict[str, int] = {}
        differences = []
        for position, at, engine, phase, differing in sorted(found, key=lambda r: r[0]):
            engines[engine] = engines.get(engine, 0) + 1
            if differing:
                differences.append(
                    DecisionDifference(
                        position=position,
                        at=at,
                        engine_version=engine,
                        phase=phase,
                        differences=differing,
                        records=tuple(sorted(records.get(position, ()))),
                    )
                )
        sources: list[Any] = list(aggregates.values())
        if last_decision is not None:
            sources.append(last_decision)
        return ReplayReport(
            point=point,
            events=read.count,
            decisions=read.decisions,
            differences=tuple(differences),
            state=etcd_view(*sources),
            last_event_at=read.last_at,
            engine_version=engine_version(),
            recorded_engines=engines,
        )

    def explain(self, number: int) -> str:
        """The inputs that led to record ``number``'s operation, in words."""
        record = self.record(number)
        if not record.decision:
            raise NotFoundError(
                f"record {number} ({record.operation}) was not started by a recorded decision"
            )
        with self.store_errors():
            chain = self._decision_tail(record.decision)
            configuration = list(self.events.get(CLUSTER_CONFIGURATION_ID))
        if not chain or chain[-1].position != record.decision:
            raise NotFoundError(f"decision {record.decision} of record {number} is not in the log")
        *_, rederived = rederive(chain, configuration)
        event = rederived.event
        targets = ", ".join(record.targets) or "no targets"
        lines = [
            f"Record {number}: {record.operation} ({targets}), {record.status}; started by "
            f"decision {event.position} (engine {event.engine_version}, term {event.term}, "
            f"configuration version {event.configuration_version}, observation "
            f"{event.observation_seq}).",
            explain(rederived.inputs, rederived.decision),
        ]
        if rederived.differences:
            lines.append("Re-derived now, the decision differs:")
            lines += [f"  {d}" for d in rederived.differences]
        return "\n".join(lines)

    def plan(
        self,
        cluster_text: str | None = None,
        constraints_text: str | None = None,
        *,
        now: datetime.datetime | None = None,
        seed: int = 0,
    ) -> Plan:
        """What the engine would do now, from the latest recorded observation and
        the stored (or the proposed) cluster.yml and constraints. Each
        operation's commands are its plan driven with successful results.
        Nothing is written."""
        when = self._time(now)
        warnings: tuple[Problem, ...] = ()
        cluster: Cluster | None
        if cluster_text is not None:
            checked = check_cluster(cluster_text)
            cluster = checked.unwrap()
            warnings = checked.warnings
        if constraints_text is not None:
            proposed = check_constraints(constraints_text).unwrap()
        last, doc = self.latest_observation()
        config = self.configuration()
        if cluster_text is None:
            cluster = None if config is None else config.cluster()
            if cluster is None:
                raise NotFoundError(NO_CLUSTER)
        assert cluster is not None
        constraints = (
            proposed
            if constraints_text is not None
            else ((config.constraints() if config else None) or Constraints())
        )
        _raise_errors(check_against_constraints(cluster, constraints))
        inputs = DecisionInputs(
            cluster=cluster,
            status=status_from_json(doc),
            constraints=constraints,
            resources=config.resources() if config else (),
            settings=config.settings() if config else EngineSettings(),
            now=when,
            seed=seed,
        )
        decision = strategy.decide(inputs)
        planned = []
        for op in decision.operations:
            note = ""
            try:
                commands = step_ops(op)
            except UnfinishedPlanError as exc:
                commands, note = [], str(exc)
            planned.append(
                PlannedOperation(
                    name=op.name,
                    targets=tuple(op.targets),
                    commands=tuple(PlannedCommand(c.name, c.target) for c in commands),
                    note=note,
                )
            )
        return Plan(
            phase=decision.phase.value,
            operations=tuple(planned),
            now=when,
            observed_by=last.position,
            observed_at=last.now,
            proposed_spec=cluster_text is not None,
            proposed_constraints=constraints_text is not None,
            warnings=warnings,
        )

    # --- export / import ---------------------------------------------------------------

    @_query
    def count_events(self) -> int:
        """The number of stored events (the last notification id)."""
        return int(self.recorder.max_notification_id() or 0)

    @_query
    def export_jsonl(self, stream: TextIO) -> int:
        """Write the whole log to ``stream`` as JSON Lines (``jsonl``); the number
        of events."""
        return jsonl.export_to(self.recorder, stream)

    def import_jsonl(self, stream: TextIO) -> int:
        """Append an export to this log; everything is checked first
        (``jsonl.validate_import``) and nothing is written unless all of it is
        valid. Returns the number of events written.

        SQLite writes the whole import in one transaction. etcd limits the
        operations of a transaction, so a large import is written in
        consecutive batches; should the store fail between two of them, the
        error says how many events were written (a prefix of the file)."""
        with self.store_errors():
            imported = jsonl.validate_import(stream, self.mapper, _ExistingLog(self))
        events = imported.events
        datastore = getattr(self.factory, "datastore", None)
        max_ops = getattr(datastore, "max_txn_ops", None)
        if isinstance(max_ops, int):
            # k events need 2k + 2 operations in the success list and up to
            # 2k + 2 compares (one per version run and floor, the counter, the
            # leader key): keep both within max-txn-ops.
            batches = list(jsonl.batches(events, max(1, (max_ops - 4) // 2), 1024 * 1024))
        else:
            batches = [events] if events else []
        written = 0
        for batch in batches:
            try:
                with self.store_errors():
                    self.recorder.insert_events(batch)
            except EventLogError as exc:
                if written:
                    raise EventLogError(
                        f"import stopped after {written} of {len(events)} events (the log now "
                        f"holds the file's first {written}): {exc}"
                    ) from None
                raise
            written += len(batch)
        self._recorder = None
        return written


@contextlib.contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """The cyclic garbage collector paused: a replay allocates millions of
    short-lived, acyclic objects (freed by reference counting), and the
    collector's passes over them cost a tenth of the replay."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@attrs.frozen
class _ReplayPlan:
    """``replay`` over processes: the last event read, each worker's region of
    decisions (owner, first, last) and the chunk size."""

    last_event: int
    regions: tuple[tuple[int, int, int], ...]
    chunk: int


@attrs.frozen(eq=False)
class _Shared:
    """A replay shared out: its plan, the work queue and the workers' links."""

    plan: _ReplayPlan
    queue: WorkQueue
    links: Sequence[WorkerLink]


def serve_replay(url: str, requests: IO[bytes], answers: IO[bytes]) -> int:
    """What a replay worker does (``replay_worker``): re-derive the chunks of
    decisions the replaying process hands out (``parallel``), answering the
    rows of each; ends with ``("done",)``, or ``("error", "history" | "log",
    message)`` for a problem with the log."""

    def claim(rows: list[Row]) -> Chunk | None:
        write_frame(answers, ("rows", rows))
        chunk: Chunk | None = read_frame(requests)
        return chunk

    gc.disable()  # as in ``replay``; this process ends with the replay
    try:
        log = open_event_log(url, create=False)
        try:
            with log.store_errors():
                configuration = list(log.events.get(CLUSTER_CONFIGURATION_ID))
            rederive_claimed(
                Rederiver(configuration), claim, log._decision_tail, log._decisions_between
            )
        finally:
            log.close()
    except HistoryError as exc:
        write_frame(answers, ("error", "history", str(exc)))
    except EventLogError as exc:
        write_frame(answers, ("error", "log", str(exc)))
    else:
        write_frame(answers, ("done",))
    return 0


class _ExistingLog:
    """What an import needs to know about the log it appends to."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._empty = log.recorder.max_notification_id() is None

    def version_of(self, originator_id: UUID) -> int:
        if self._empty:
            return 0
        for stored in self._log.recorder.select_events(originator_id, desc=True, limit=1):
            return int(stored.originator_version)
        return 0

    def aggregate(self, originator_id: UUID) -> Any:
        try:
            return self._log.repository.get(originator_id)
        except AggregateNotFoundError:
            return None

    def decision_tail(self) -> list[DecisionRecorded]:
        return self._log._decision_tail()


@functools.cache
def _record_topics() -> tuple[str, ...]:
    return tuple(
        get_topic(cls)
        for cls in (
            OperationRecord.Registered,
            OperationRecord.CommandStarted,
            OperationRecord.Completed,
            OperationRecord.Cancelled,
        )
    )


def _raise_errors(problems: Sequence[Problem]) -> None:
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigError(errors)


# ---------------------------------------------------------------------------
# Opening a store
# ---------------------------------------------------------------------------


def open_event_log(
    url: str | None = None,
    *,
    create: bool = True,
    leader_key: str | None = None,
    policy: ObservationPolicy = DEFAULT_POLICY,
    clock: Callable[[], datetime.datetime] = utcnow,
) -> EventLog:
    """Open the event log at ``url`` (``store`` module docstring; None:
    ``$CKE_EVENT_LOG`` or ``./var/cke-events.db``).

    ``create=False`` refuses a SQLite file that does not exist yet (read-only
    tools). ``leader_key`` fences every write on that etcd key. The store is
    reached once before this returns: ``EventStoreUnavailableError`` if not.
    """
    text = url or default_store_url()
    try:
        parsed = parse_store_url(text)
    except StoreURLError as exc:
        raise EventLogError(f"invalid store URL: {exc}") from None
    env = parsed.environment()
    if leader_key:
        env["CKE_EVENTS_LEADER_KEY"] = leader_key
    try:
        if parsed.kind == "sqlite":
            parsed.check_sqlite(create=create)
        log = EventLog(env, url=text, policy=policy, clock=clock)
    except EventLogError:
        raise
    except Exception as exc:  # OSError, grpc and driver errors while connecting
        raise EventStoreUnavailableError(text, error_line(exc)) from None
    try:
        with log.store_errors():
            log.recorder.max_notification_id()
    except EventLogError:
        log.close()
        raise
    return log
