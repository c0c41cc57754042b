"""An eventsourcing persistence module on etcd v3 (python-etcd3 API client ``pyetcd``).

Select it with ``PERSISTENCE_MODULE=cke_adapters.eventstore.etcd``. Decision record:
docs/adr/0006-etcd-event-store.md.

Theory of operation
===================

Key layout (``P`` is the key prefix, default ``/cke/events/``; ``%020d`` is a
zero-padded decimal, so etcd's byte order is numeric order; ``<oid>`` is the
originator id as text, percent-quoted so that it contains no ``/``)::

    P seq                       last notification id assigned (decimal)
    P n/<%020d id>              notification record: the whole stored event
    P a/<oid>/<%020d version>   aggregate index: the notification id (decimal)
    P f/<oid>                   "floor": highest version of <oid> moved to the archive
    P archived                  highest notification id moved to the archive (%020d)
    P t/<application name>      tracking: highest processed notification id (%020d)
    P r/<purpose>/<oid>/<%020d version>
                                plain aggregate recorders (snapshots): the record

A record value is one line of JSON ``{"o": oid, "u": is_uuid, "v": version,
"t": topic}``, a newline, then the state bytes unchanged.

Writes (``insert_events``) are ONE etcd transaction:

    compare  mod_revision(P seq)        == the revision this writer last saw
             create_revision(leader key) >  0            (only if fencing is on)
             mod_revision(P f/<oid>)     == last seen     (one per aggregate)
             create_revision(P a/<oid>/[v1, vk]) == 0     (one per run of
                                                          consecutive new versions:
                                                          a range compare, so every
                                                          new event key is absent)
             mod_revision(P t/<app>)     == last seen     (process recorder only)
    success  put P n/<id> for ids seq+1 ... seq+k (in order), put P a/<oid>/<v>,
             put P seq = seq+k, put P t/<app>
    failure  get P seq, the leader key, each P f/<oid>, each run's existing
             keys, P t/<app>

So the notification counter is advanced by compare-and-swap in the same
transaction as the events: ids are assigned in commit order, contiguously, and a
reader (one etcd revision) never sees id ``k+1`` without ``k``. A failed compare
costs one round trip and returns what changed: an existing event key is an
``IntegrityError``; a missing leader key is a :class:`NotLeaderError`; anything
else (another writer advanced ``seq``) is retried with the fresh values, with
jittered back-off after a few attempts. Writers in one process also serialise on
a lock, so they queue instead of colliding. The last seen ``seq`` revision is
cached, so a steady single writer (the leader) needs one round trip per write.

Batches: a transaction holds at most ``--max-txn-ops`` operations per list
(compare, success, failure); a batch of ``k`` events needs ``2k + 2`` success
operations (``+1`` with tracking). A batch that does not fit fails cleanly
with :class:`TransactionTooLargeError` before anything is sent: batches are
never split, because a split would break their atomicity. Configure
``CKE_EVENTS_MAX_TXN_OPS`` to the server's ``--max-txn-ops`` (default 128, so
63 events per batch).

Reads: ``select_notifications`` reads ``P archived`` and a range of ``P n/`` at
one revision; ids at or below ``archived`` come from the archive (copied there
before they were deleted, in the same transaction that advanced ``archived``),
later ids from etcd. ``select_events`` reads the index ``P a/<oid>/`` and
``P f/<oid>`` at one revision, then the notification records at that same
revision, and adds archived versions (at or below the floor) from the archive.

Fencing: with a leader key configured (``CKE_EVENTS_LEADER_KEY`` or
``EtcdDatastore.leader_key`` at run time, e.g. the key CKE's election created),
every write compares ``create_revision(leader key) > 0`` in its own
transaction: a deposed leader writes nothing and gets :class:`NotLeaderError`.

Subscriptions read what exists at a revision ``R`` (the catch-up, spanning the
archive), then watch ``P n/`` from ``R + 1``; watch events carry the records, so
no further read is needed. A gap in the ids, a compacted revision or a broken
watch stream makes the subscription catch up again from its last id.

Archive: see :mod:`cke_adapters.eventstore.archive`. Writes of a version at or
below an aggregate's floor are checked against the archive (``IntegrityError`` if
it is there); the floor's ``mod_revision`` is compared in the write, so an
archive run cannot race a duplicate in.
"""

from __future__ import annotations

import contextlib
import json
import queue
import random
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote
from uuid import UUID

import grpc  # type: ignore[import-untyped]
import pyetcd  # type: ignore[import-untyped]
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DataError,
    InfrastructureFactory,
    IntegrityError,
    Notification,
    OperationalError,
    ProcessRecorder,
    ProgrammingError,
    Queue,
    ShutDown,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic
from pyetcd import etcdrpc
from pyetcd import events as etcd_events

__all__ = [
    "ArchiveNotConfiguredError",
    "EtcdAggregateRecorder",
    "EtcdApplicationRecorder",
    "EtcdCompactedError",
    "EtcdDatastore",
    "EtcdFactory",
    "EtcdProcessRecorder",
    "EtcdQuotaExceededError",
    "EtcdSubscription",
    "EtcdTrackingRecorder",
    "EtcdUnavailableError",
    "EventArchive",
    "Factory",
    "NotLeaderError",
    "TransactionTooLargeError",
]

DEFAULT_PREFIX = "/cke/events/"
DEFAULT_MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
DEFAULT_TIMEOUT = 10.0
_GRPC_MAX_MESSAGE = 64 * 1024 * 1024
_READ_PAGE = 500
_MAX_WRITE_ATTEMPTS = 1000
_WRITE_DEADLINE = 60.0
_TOO_LARGE = ("too many operations in txn", "request is too large", "larger than max")


# --------------------------------------------------------------------- errors


class NotLeaderError(OperationalError):
    """The configured leader key does not exist: this writer is not the leader.

    Raised by a fenced write; the transaction wrote nothing.
    """


class EtcdUnavailableError(OperationalError):
    """etcd did not answer (no endpoint reachable, or a timeout).

    After a timeout on a write the outcome is unknown: the write may or may not
    have committed. Reads are retried once per endpoint before this is raised.
    """


class EtcdQuotaExceededError(OperationalError):
    """etcd's backend quota is exhausted (NOSPACE alarm): it accepts no writes.

    Archive old events, compact and defragment etcd, then disarm the alarm.
    """


class ArchiveNotConfiguredError(OperationalError):
    """Events needed by a read or a duplicate check are archived, but no archive
    is configured (``CKE_EVENTS_ARCHIVE_SQLITE`` or ``EtcdDatastore.archive``)."""


class EtcdCompactedError(OperationalError):
    """A read at an old revision hit etcd's compaction."""


class TransactionTooLargeError(DataError):
    """A batch needs more operations (or bytes) than one etcd transaction allows.

    Nothing was written. Batches are never split (that would break atomicity):
    write smaller batches or raise etcd's ``--max-txn-ops``/``--max-request-bytes``
    together with ``CKE_EVENTS_MAX_TXN_OPS``.
    """


# ------------------------------------------------------------------- encoding


def _fmt(n: int) -> bytes:
    return b"%020d" % n


def _oid_text(originator_id: UUID | str) -> str:
    return str(originator_id)


def _quote(text: str) -> bytes:
    return quote(text, safe="").encode("ascii")


def prefix_range_end(prefix: bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix``."""
    s = bytearray(prefix)
    for i in reversed(range(len(s))):
        if s[i] < 0xFF:
            s[i] += 1
            return bytes(s[: i + 1])
    return b"\0"


def encode_record(event: StoredEvent) -> bytes:
    header = {
        "o": _oid_text(event.originator_id),
        "u": isinstance(event.originator_id, UUID),
        "v": event.originator_version,
        "t": event.topic,
    }
    return json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n" + event.state


def _decode_header(value: bytes) -> tuple[UUID | str, int, str, bytes]:
    head, _, state = value.partition(b"\n")
    h = json.loads(head)
    oid: UUID | str = UUID(h["o"]) if h["u"] else h["o"]
    return oid, int(h["v"]), str(h["t"]), state


def decode_record(value: bytes) -> StoredEvent:
    oid, version, topic, state = _decode_header(value)
    return StoredEvent(originator_id=oid, originator_version=version, topic=topic, state=state)


def decode_notification(nid: int, value: bytes) -> Notification:
    oid, version, topic, state = _decode_header(value)
    return Notification(
        id=nid, originator_id=oid, originator_version=version, topic=topic, state=state
    )


def _check_versions(stored_events: Sequence[StoredEvent]) -> None:
    seen: set[tuple[str, int]] = set()
    for e in stored_events:
        v = e.originator_version
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise DataError(f"originator_version must be an int >= 0, got {v!r}")
        k = (_oid_text(e.originator_id), v)
        if k in seen:
            raise IntegrityError(f"Stored events are not unique: {k}")
        seen.add(k)


def _runs(versions: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted versions grouped into runs of consecutive numbers: [(first, last)]."""
    runs: list[tuple[int, int]] = []
    for v in sorted(versions):
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


# ---------------------------------------------------------- protobuf helpers


def _put(key: bytes, value: bytes) -> Any:
    return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key, value=value))


def _get(
    key: bytes,
    range_end: bytes | None = None,
    *,
    revision: int = 0,
    limit: int = 0,
    keys_only: bool = False,
    descend: bool = False,
) -> Any:
    req = etcdrpc.RangeRequest(key=key, revision=revision, limit=limit, keys_only=keys_only)
    if range_end is not None:
        req.range_end = range_end
    if descend:
        req.sort_order = etcdrpc.RangeRequest.DESCEND
        req.sort_target = etcdrpc.RangeRequest.KEY
    return etcdrpc.RequestOp(request_range=req)


def _delete(key: bytes, range_end: bytes | None = None) -> Any:
    req = etcdrpc.DeleteRangeRequest(key=key)
    if range_end is not None:
        req.range_end = range_end
    return etcdrpc.RequestOp(request_delete_range=req)


def _cmp_mod(key: bytes, mod_revision: int) -> Any:
    return etcdrpc.Compare(
        key=key,
        target=etcdrpc.Compare.MOD,
        result=etcdrpc.Compare.EQUAL,
        mod_revision=mod_revision,
    )


def _cmp_absent(key: bytes, range_end: bytes | None = None) -> Any:
    c = etcdrpc.Compare(
        key=key,
        target=etcdrpc.Compare.CREATE,
        result=etcdrpc.Compare.EQUAL,
        create_revision=0,
    )
    if range_end is not None:
        c.range_end = range_end
    return c


def _cmp_exists(key: bytes) -> Any:
    return etcdrpc.Compare(
        key=key,
        target=etcdrpc.Compare.CREATE,
        result=etcdrpc.Compare.GREATER,
        create_revision=0,
    )


def _kvs(resp: Any) -> Any:
    return resp.response_range.kvs


# ------------------------------------------------------------------ archive


class EventArchive(Protocol):
    """Storage for events moved out of etcd (see ``archive.SQLiteArchive``)."""

    def insert_notifications(self, notifications: Sequence[Notification]) -> None:
        """Store notifications; re-inserting identical ones is a no-op."""

    def select_notifications(self, lo: int, hi: int, limit: int) -> list[Notification]:
        """Notifications with ``lo <= id <= hi``, ascending, at most ``limit``."""
        ...

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        """Archived events of one aggregate, like ``select_events``."""
        ...

    def existing_versions(self, originator_id: UUID | str, versions: Iterable[int]) -> set[int]:
        """Which of ``versions`` of this aggregate are archived."""
        ...

    def max_notification_id(self) -> int | None:
        """Highest archived notification id."""
        ...

    def close(self) -> None:
        """Release resources."""


# ------------------------------------------------------------------ datastore


@dataclass(frozen=True)
class Keys:
    """The key layout under one prefix (see the module docstring)."""

    prefix: bytes

    @property
    def seq(self) -> bytes:
        return self.prefix + b"seq"

    @property
    def archived(self) -> bytes:
        return self.prefix + b"archived"

    @property
    def notifications(self) -> bytes:
        return self.prefix + b"n/"

    def notification(self, nid: int) -> bytes:
        return self.prefix + b"n/" + _fmt(nid)

    def nid_of(self, key: bytes) -> int:
        return int(key[len(self.prefix) + 2 :])

    def aggregate(self, oid: UUID | str) -> bytes:
        return self.prefix + b"a/" + _quote(_oid_text(oid)) + b"/"

    def event(self, oid: UUID | str, version: int) -> bytes:
        return self.aggregate(oid) + _fmt(version)

    def floor(self, oid: UUID | str) -> bytes:
        return self.prefix + b"f/" + _quote(_oid_text(oid))

    def tracking(self, application_name: str) -> bytes:
        return self.prefix + b"t/" + _quote(application_name)

    def record_prefix(self, purpose: str, oid: UUID | str) -> bytes:
        return self.prefix + b"r/" + _quote(purpose) + b"/" + _quote(_oid_text(oid)) + b"/"


def _parse_endpoint(text: str) -> tuple[str, int, bool | None]:
    text = text.strip()
    secure: bool | None = None
    if text.startswith("https://"):
        secure, text = True, text[len("https://") :]
    elif text.startswith("http://"):
        secure, text = False, text[len("http://") :]
    text = text.rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"etcd endpoint must be [http[s]://]host:port, got {text!r}")
    return host.strip("[]"), int(port), secure


class EtcdDatastore:
    """One etcd client, the key layout, the leader fence and an optional archive.

    Shared by the recorders a factory makes. ``leader_key`` may be changed at run
    time (e.g. after an election); ``None`` disables fencing.
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str | bytes = DEFAULT_PREFIX,
        leader_key: str | bytes | None = None,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        timeout: float | None = DEFAULT_TIMEOUT,
        archive: EventArchive | None = None,
        owns_client: bool = False,
        owns_archive: bool = False,
    ) -> None:
        p = prefix.encode("utf-8") if isinstance(prefix, str) else prefix
        if not p:
            raise ValueError("the key prefix must not be empty")
        if max_txn_ops < 8:
            raise ValueError("max_txn_ops must be >= 8")
        self.client = client
        self.keys = Keys(p)
        self.max_txn_ops = max_txn_ops
        self.timeout = timeout
        self.archive = archive
        self._owns_client = owns_client
        self._owns_archive = owns_archive
        self._leader_key: bytes | None = None
        self.leader_key = leader_key
        self._closed = False

    @classmethod
    def connect(
        cls,
        endpoints: Sequence[str] | str = "127.0.0.1:2379",
        *,
        ca_cert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> EtcdDatastore:
        """Connect to etcd: ``endpoints`` as ``[http[s]://]host:port`` (list or CSV)."""
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("no etcd endpoints given")
        if (cert is None) != (key is None):
            raise ValueError("a client certificate and its key must be given together")
        creds = None
        if ca_cert is not None or cert is not None:
            creds = pyetcd.MultiEndpointEtcd3Client.get_secure_creds(
                ca_cert, cert_key=key, cert_cert=cert
            )
        opts = [
            ("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE),
            ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE),
        ]
        eps = []
        for text in endpoints:
            host, port, secure = _parse_endpoint(text)
            use_tls = creds is not None if secure is None else secure
            if use_tls and creds is None:
                raise ValueError(f"endpoint {text} is https: give a CA certificate")
            eps.append(
                pyetcd.Endpoint(
                    host,
                    port,
                    secure=use_tls,
                    creds=creds if use_tls else None,
                    time_retry=1.0,
                    opts=opts,
                )
            )
        client = pyetcd.MultiEndpointEtcd3Client(
            endpoints=eps, timeout=timeout, user=user, password=password, failover=True
        )
        return cls(client, timeout=timeout, owns_client=True, **kwargs)

    # -- fence

    @property
    def leader_key(self) -> bytes | None:
        return self._leader_key

    @leader_key.setter
    def leader_key(self, value: str | bytes | None) -> None:
        self._leader_key = value.encode("utf-8") if isinstance(value, str) else value

    def fence_compares(self) -> list[Any]:
        lk = self._leader_key
        return [] if lk is None else [_cmp_exists(lk)]

    def fence_reads(self) -> list[Any]:
        lk = self._leader_key
        return [] if lk is None else [_get(lk, keys_only=True)]

    def check_fence(self, responses: Sequence[Any], fence: list[Any]) -> None:
        """After a failed txn whose failure ops started with ``fence_reads()``."""
        if fence and not _kvs(responses[0]):
            raise NotLeaderError(
                f"leader key {self._leader_key!r} does not exist: not the leader, "
                "nothing was written"
            )

    # -- rpc

    def txn(
        self,
        compare: Sequence[Any] = (),
        success: Sequence[Any] = (),
        failure: Sequence[Any] = (),
        *,
        write: bool,
    ) -> Any:
        for name, ops in (("compare", compare), ("success", success), ("failure", failure)):
            if len(ops) > self.max_txn_ops:
                raise TransactionTooLargeError(
                    f"transaction needs {len(ops)} {name} operations; max-txn-ops is "
                    f"{self.max_txn_ops}; nothing was written"
                )
        request = etcdrpc.TxnRequest(compare=compare, success=success, failure=failure)
        return self._call("Txn", request, write=write)

    def range(
        self,
        key: bytes,
        range_end: bytes | None = None,
        *,
        revision: int = 0,
        limit: int = 0,
        descend: bool = False,
        keys_only: bool = False,
    ) -> Any:
        req = _get(
            key, range_end, revision=revision, limit=limit, descend=descend, keys_only=keys_only
        ).request_range
        return self._call("Range", req, write=False)

    def _call(self, method: str, request: Any, *, write: bool) -> Any:
        if self._closed:
            raise OperationalError("etcd datastore is closed")
        attempts = 1 if write else max(2, len(getattr(self.client, "endpoints", {})) + 1)
        last: BaseException | None = None
        for _ in range(attempts):
            try:
                stub = self.client.kvstub
                return getattr(stub, method)(
                    request,
                    self.timeout,
                    credentials=self.client.call_credentials,
                    metadata=self.client.metadata,
                )
            except grpc.RpcError as exc:
                err = self._map_rpc_error(exc, write=write)
                if not isinstance(err, EtcdUnavailableError):
                    raise err from exc
                last = err
            except pyetcd.Etcd3Exception as exc:  # e.g. NoServerAvailableError
                last = EtcdUnavailableError(f"etcd unavailable: {exc!r}")
                time.sleep(0.2)
            except ValueError as exc:  # pyetcd: "Trying to use a failed node"
                last = EtcdUnavailableError(f"etcd unavailable: {exc}")
                time.sleep(0.2)
        assert last is not None
        raise last

    def _map_rpc_error(self, exc: grpc.RpcError, *, write: bool) -> OperationalError | DataError:
        code = exc.code() if hasattr(exc, "code") else None
        details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            self._fail_endpoint()
            unknown = " (outcome unknown)" if write else ""
            return EtcdUnavailableError(f"etcd {code.name}{unknown}: {details}")
        if any(s in details for s in ("database space exceeded", "no space", "NOSPACE")):
            return EtcdQuotaExceededError(f"etcd quota exhausted, write refused: {details}")
        if any(s in details for s in _TOO_LARGE):
            return TransactionTooLargeError(f"{details}; nothing was written")
        if "compacted" in details:
            return EtcdCompactedError(details)
        name = code.name if code is not None else "?"
        return OperationalError(f"etcd error {name}: {details}")

    def _fail_endpoint(self) -> None:
        client = self.client
        endpoints = getattr(client, "endpoints", None)
        if not endpoints or len(endpoints) < 2:
            return
        with contextlib.suppress(Exception):
            client.endpoint_in_use.fail()
            for label, ep in endpoints.items():
                if not ep.is_failed():
                    client._current_endpoint_label = label
                    break

    def get_value(self, key: bytes, *, revision: int = 0) -> tuple[bytes | None, int, int]:
        """(value or None, mod_revision (0 if absent), header revision)."""
        r = self.range(key, revision=revision)
        if not r.kvs:
            return None, 0, int(r.header.revision)
        return bytes(r.kvs[0].value), int(r.kvs[0].mod_revision), int(r.header.revision)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            with contextlib.suppress(Exception):
                self.client.close()
        if self.archive is not None and self._owns_archive:
            with contextlib.suppress(Exception):
                self.archive.close()


# ------------------------------------------------------------------ recorders


class EtcdRecorder:
    """Base of the etcd recorders: the datastore and the write caches."""

    def __init__(self, datastore: EtcdDatastore) -> None:
        self.datastore = datastore
        self.keys = datastore.keys
        self._write_lock = threading.Lock()
        # Hints for compare-and-swap (a wrong hint costs one failed round trip).
        self._seq: tuple[int, int] = (0, 0)  # (value, mod_revision)
        self._floors: dict[bytes, tuple[int, int]] = {}  # key -> (floor, mod_revision)
        self._tracking: dict[bytes, tuple[int, int]] = {}  # key -> (value, mod_revision)

    def _remember(
        self, cache: dict[bytes, tuple[int, int]], key: bytes, v: tuple[int, int]
    ) -> None:
        if len(cache) > 10000:
            cache.clear()
        cache[key] = v

    @staticmethod
    def _backoff(attempt: int) -> None:
        if attempt >= 3:
            time.sleep(random.uniform(0, min(0.002 * 2 ** min(attempt, 10), 0.2)))

    def _tracking_step(
        self, tracking: Tracking | None
    ) -> tuple[list[Any], list[Any], list[Any], bytes | None]:
        """Compare / success / failure ops for one tracking record (maybe none)."""
        if tracking is None:
            return [], [], [], None
        tkey = self.keys.tracking(tracking.application_name)
        value, mod = self._tracking.get(tkey, (0, 0))
        if mod and value >= tracking.notification_id:
            raise IntegrityError(
                f"Tracking notification ID {tracking.notification_id} not greater than "
                f"current max tracking ID {value} of {tracking.application_name!r}"
            )
        return (
            [_cmp_mod(tkey, mod)],
            [_put(tkey, _fmt(tracking.notification_id))],
            [_get(tkey)],
            tkey,
        )

    def _tracking_failed(self, tkey: bytes, tracking: Tracking, resp: Any) -> None:
        kvs = _kvs(resp)
        if kvs:
            value, mod = int(kvs[0].value), int(kvs[0].mod_revision)
            self._remember(self._tracking, tkey, (value, mod))
            if value >= tracking.notification_id:
                raise IntegrityError(
                    f"Tracking notification ID {tracking.notification_id} not greater "
                    f"than current max tracking ID {value} of {tracking.application_name!r}"
                )
        else:
            self._tracking.pop(tkey, None)

    def _max_tracking_id(self, application_name: str) -> int | None:
        value, _mod, _rev = self.datastore.get_value(self.keys.tracking(application_name))
        return None if value is None else int(value)


class EtcdAggregateRecorder(EtcdRecorder, AggregateRecorder):
    """Events of aggregates without notifications (used for snapshots).

    Keys ``P r/<purpose>/<oid>/<%020d version>``; the value is the record.
    """

    def __init__(self, datastore: EtcdDatastore, purpose: str = "events") -> None:
        super().__init__(datastore)
        self.purpose = purpose

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return None
        _check_versions(stored_events)
        ds = self.datastore
        by_oid: dict[str, tuple[UUID | str, list[int]]] = {}
        for e in stored_events:
            by_oid.setdefault(_oid_text(e.originator_id), (e.originator_id, []))[1].append(
                e.originator_version
            )
        compare = ds.fence_compares()
        for oid, versions in by_oid.values():
            base = self.keys.record_prefix(self.purpose, oid)
            for lo, hi in _runs(versions):
                compare.append(_cmp_absent(base + _fmt(lo), base + _fmt(hi + 1)))
        success = [
            _put(
                self.keys.record_prefix(self.purpose, e.originator_id) + _fmt(e.originator_version),
                encode_record(e),
            )
            for e in stored_events
        ]
        fence = ds.fence_reads()
        resp = ds.txn(compare, success, fence, write=True)
        if not resp.succeeded:
            ds.check_fence(resp.responses, fence)
            raise IntegrityError(f"Stored event already recorded (purpose {self.purpose!r})")
        return None

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        base = self.keys.record_prefix(self.purpose, originator_id)
        lo, hi = _version_bounds(base, gt, lte)
        if lo >= hi:
            return []
        r = self.datastore.range(lo, hi, limit=limit or 0, descend=desc)
        return [decode_record(bytes(kv.value)) for kv in r.kvs]


def _version_bounds(base: bytes, gt: int | None, lte: int | None) -> tuple[bytes, bytes]:
    lo = base + _fmt(max(gt + 1, 0)) if gt is not None else base
    if lte is None:
        hi = prefix_range_end(base)
    elif lte < 0:
        hi = base
    else:
        hi = base + _fmt(lte + 1)
    return lo, hi


class EtcdApplicationRecorder(EtcdRecorder, ApplicationRecorder):
    """Events with a totally ordered, gapless notification log (see module doc)."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        return self._insert(stored_events, None)

    def _insert(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None) -> list[int]:
        if not stored_events and tracking is None:
            return []
        _check_versions(stored_events)
        ds, keys = self.datastore, self.keys
        by_oid: dict[str, tuple[UUID | str, list[int]]] = {}
        for e in stored_events:
            by_oid.setdefault(_oid_text(e.originator_id), (e.originator_id, []))[1].append(
                e.originator_version
            )
        groups = [(oid, keys.floor(oid), _runs(vs), vs) for oid, vs in by_oid.values()]
        n = len(stored_events)
        n_runs = sum(len(g[2]) for g in groups)
        has_t = tracking is not None
        need = {
            "compare": 1 + len(ds.fence_compares()) + len(groups) + n_runs + has_t,
            "success": (1 + 2 * n if n else 0) + has_t,
            "failure": 1 + len(ds.fence_reads()) + len(groups) + n_runs + has_t,
        }
        worst = max(need.values())
        if worst > ds.max_txn_ops:
            raise TransactionTooLargeError(
                f"a batch of {n} events needs {worst} operations in one transaction; "
                f"max-txn-ops is {ds.max_txn_ops}; nothing was written (batches are not "
                "split, to keep them atomic)"
            )
        records = [encode_record(e) for e in stored_events]
        deadline = time.monotonic() + _WRITE_DEADLINE
        with self._write_lock:
            for attempt in range(_MAX_WRITE_ATTEMPTS):
                self._check_archived_duplicates(groups)
                seq, seq_mod = self._seq
                fence = ds.fence_reads()
                compare = [_cmp_mod(keys.seq, seq_mod), *ds.fence_compares()]
                failure = [_get(keys.seq), *fence]
                for oid, fkey, runs, _vs in groups:
                    compare.append(_cmp_mod(fkey, self._floors.get(fkey, (0, 0))[1]))
                    failure.append(_get(fkey))
                    base = keys.aggregate(oid)
                    for lo, hi in runs:
                        compare.append(_cmp_absent(base + _fmt(lo), base + _fmt(hi + 1)))
                        failure.append(_get(base + _fmt(lo), base + _fmt(hi + 1), keys_only=True))
                t_cmp, t_ok, t_fail, tkey = self._tracking_step(tracking)
                compare += t_cmp
                failure += t_fail
                success: list[Any] = []
                ids = list(range(seq + 1, seq + n + 1))
                for nid, record in zip(ids, records, strict=True):
                    success.append(_put(keys.notification(nid), record))
                for nid, e in zip(ids, stored_events, strict=True):
                    success.append(
                        _put(keys.event(e.originator_id, e.originator_version), b"%d" % nid)
                    )
                if n:
                    success.append(_put(keys.seq, b"%d" % (seq + n)))
                success += t_ok
                resp = ds.txn(compare, success, failure, write=True)
                if resp.succeeded:
                    rev = int(resp.header.revision)
                    if n:
                        self._seq = (seq + n, rev)
                    if tracking is not None and tkey is not None:
                        self._remember(self._tracking, tkey, (tracking.notification_id, rev))
                    return ids
                self._after_failed_insert(resp.responses, fence, groups, tracking, tkey)
                if time.monotonic() > deadline:
                    break
                self._backoff(attempt)
        raise OperationalError(
            f"could not append {n} events: the notification counter kept changing "
            f"(contention) for {_WRITE_DEADLINE:.0f} s; nothing was written"
        )

    def _after_failed_insert(
        self,
        responses: Sequence[Any],
        fence: list[Any],
        groups: list[tuple[UUID | str, bytes, list[tuple[int, int]], list[int]]],
        tracking: Tracking | None,
        tkey: bytes | None,
    ) -> None:
        """Learn from the failure branch; raise if the write can never succeed."""
        seq_kvs = _kvs(responses[0])
        if seq_kvs:
            self._seq = (int(seq_kvs[0].value), int(seq_kvs[0].mod_revision))
        else:
            self._seq = (0, 0)
        i = 1
        if fence:
            self.datastore.check_fence(responses[i:], fence)
            i += 1
        duplicates: list[bytes] = []
        for _oid, fkey, runs, _vs in groups:
            f_kvs = _kvs(responses[i])
            i += 1
            if f_kvs:
                self._remember(
                    self._floors, fkey, (int(f_kvs[0].value), int(f_kvs[0].mod_revision))
                )
            else:
                self._floors.pop(fkey, None)
            for _run in runs:
                duplicates += [bytes(kv.key) for kv in _kvs(responses[i])]
                i += 1
        if duplicates:
            raise IntegrityError(f"Stored event already recorded: {duplicates[0]!r}")
        if tracking is not None and tkey is not None:
            self._tracking_failed(tkey, tracking, responses[i])

    def _check_archived_duplicates(
        self, groups: list[tuple[UUID | str, bytes, list[tuple[int, int]], list[int]]]
    ) -> None:
        for oid, fkey, _rs, versions in groups:
            floor, mod = self._floors.get(fkey, (0, 0))
            if not mod:
                continue
            low = [v for v in versions if v <= floor]
            if not low:
                continue
            archive = self.datastore.archive
            if archive is None:
                raise ArchiveNotConfiguredError(
                    f"aggregate {oid} has archived events up to version {floor}, but no "
                    "archive is configured to check the new ones against"
                )
            existing = archive.existing_versions(oid, low)
            if existing:
                raise IntegrityError(
                    f"Stored event already recorded (archived): {oid} v{min(existing)}"
                )

    # -- reads

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        ds, keys = self.datastore, self.keys
        lo, hi = _version_bounds(keys.aggregate(originator_id), gt, lte)
        if lo >= hi:
            return []
        fkey = keys.floor(originator_id)
        for _attempt in range(5):
            r = ds.txn(
                success=[_get(lo, hi, limit=limit or 0, descend=desc), _get(fkey)], write=False
            )
            rev = int(r.header.revision)
            index = [int(kv.value) for kv in _kvs(r.responses[0])]
            f_kvs = _kvs(r.responses[1])
            try:
                values = self._get_notifications(index, rev)
            except EtcdCompactedError:
                continue
            if values is None:
                continue  # cannot happen at one revision; be safe and re-read
            events: list[StoredEvent] = [decode_record(v) for v in values]
            if f_kvs:
                floor = int(f_kvs[0].value)
                if gt is None or gt < floor:
                    events = self._merge_archived(
                        originator_id, events, gt, lte, floor, desc, limit
                    )
            return events
        raise OperationalError("could not read a consistent view of the aggregate")

    def _get_notifications(self, nids: Sequence[int], revision: int) -> list[bytes] | None:
        out: list[bytes] = []
        step = min(self.datastore.max_txn_ops, 128)  # bounded response size
        for i in range(0, len(nids), step):
            chunk = nids[i : i + step]
            r = self.datastore.txn(
                success=[_get(self.keys.notification(nid), revision=revision) for nid in chunk],
                write=False,
            )
            for resp in r.responses:
                kvs = _kvs(resp)
                if not kvs:
                    return None
                out.append(bytes(kvs[0].value))
        return out

    def _merge_archived(
        self,
        originator_id: UUID | str,
        events: list[StoredEvent],
        gt: int | None,
        lte: int | None,
        floor: int,
        desc: bool,
        limit: int | None,
    ) -> list[StoredEvent]:
        archive = self.datastore.archive
        if archive is None:
            raise ArchiveNotConfiguredError(
                f"events of {originator_id} up to version {floor} are archived, but no "
                "archive is configured (CKE_EVENTS_ARCHIVE_SQLITE)"
            )
        top = floor if lte is None else min(lte, floor)
        archived = archive.select_events(originator_id, gt=gt, lte=top, desc=desc, limit=limit)
        merged = {e.originator_version: e for e in archived}
        for e in events:
            merged.setdefault(e.originator_version, e)
        out = [merged[v] for v in sorted(merged, reverse=desc)]
        return out[:limit] if limit else out

    def _read_notifications(
        self, lo: int, hi: int | None, limit: int, revision: int = 0
    ) -> tuple[list[Notification], int, int]:
        """Up to ``limit`` notifications with ``lo <= id <= hi``, no topic filter.

        Returns (notifications, revision read, seq at that revision).
        """
        ds, keys = self.datastore, self.keys
        start = keys.notification(max(lo, 1))
        end = keys.notification(hi + 1) if hi is not None else prefix_range_end(keys.notifications)
        if start >= end:
            _v, _m, rev = ds.get_value(keys.seq, revision=revision)
            return [], rev, int(_v or 0)
        page = min(limit, _READ_PAGE)
        r = ds.txn(
            success=[
                _get(keys.archived, revision=revision),
                _get(keys.seq, revision=revision),
                _get(start, end, limit=page, revision=revision),
            ],
            write=False,
        )
        rev = revision or int(r.header.revision)
        a_kvs = _kvs(r.responses[0])
        s_kvs = _kvs(r.responses[1])
        seq = int(s_kvs[0].value) if s_kvs else 0
        archived_upto = int(a_kvs[0].value) if a_kvs else 0
        out: list[Notification] = []
        if archived_upto >= lo:
            archive = ds.archive
            if archive is None:
                raise ArchiveNotConfiguredError(
                    f"notifications up to {archived_upto} are archived, but no archive "
                    "is configured (CKE_EVENTS_ARCHIVE_SQLITE)"
                )
            top = archived_upto if hi is None else min(hi, archived_upto)
            out = archive.select_notifications(max(lo, 1), top, limit)
            if len(out) >= limit:
                return out[:limit], rev, seq
        # At revision ``rev`` etcd holds exactly the ids above ``archived_upto``.
        kvs = _kvs(r.responses[2])
        while True:
            for kv in kvs:
                out.append(decode_notification(keys.nid_of(bytes(kv.key)), bytes(kv.value)))
            if len(kvs) < page or len(out) >= limit:
                return out[:limit], rev, seq
            nxt = keys.notification(keys.nid_of(bytes(kvs[-1].key)) + 1)
            kvs = ds.range(nxt, end, limit=page, revision=rev).kvs

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        lo = 1 if start is None else (start if inclusive_of_start else start + 1)
        lo = max(lo, 1)
        if limit <= 0 or (stop is not None and stop < lo):
            return []
        if not topics:
            return self._read_notifications(lo, stop, limit)[0]
        wanted = set(topics)
        out: list[Notification] = []
        revision = 0
        page = max(limit, _READ_PAGE)
        while len(out) < limit:
            batch, revision, _seq = self._read_notifications(lo, stop, page, revision)
            out += [n for n in batch if n.topic in wanted]
            if len(batch) < page:
                break
            lo = batch[-1].id + 1
        return out[:limit]

    def max_notification_id(self) -> int | None:
        value, _mod, _rev = self.datastore.get_value(self.keys.seq)
        return int(value) if value and int(value) > 0 else None

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return EtcdSubscription(self, gt=gt, topics=topics)


class EtcdTrackingRecorder(EtcdRecorder, TrackingRecorder):
    """Tracking records ``P t/<application>``: a value that only increases."""

    def insert_tracking(self, tracking: Tracking) -> None:
        ds = self.datastore
        with self._write_lock:
            for attempt in range(_MAX_WRITE_ATTEMPTS):
                t_cmp, t_ok, t_fail, tkey = self._tracking_step(tracking)
                assert tkey is not None
                fence = ds.fence_reads()
                resp = ds.txn([*ds.fence_compares(), *t_cmp], t_ok, [*fence, *t_fail], write=True)
                if resp.succeeded:
                    rev = int(resp.header.revision)
                    self._remember(self._tracking, tkey, (tracking.notification_id, rev))
                    return
                ds.check_fence(resp.responses, fence)
                self._tracking_failed(tkey, tracking, resp.responses[len(fence)])
                self._backoff(attempt)
        raise OperationalError("could not record tracking: the key kept changing")

    def max_tracking_id(self, application_name: str) -> int | None:
        return self._max_tracking_id(application_name)


class EtcdProcessRecorder(EtcdTrackingRecorder, EtcdApplicationRecorder, ProcessRecorder):
    """Events and the tracking record of the processed notification, atomically."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        return self._insert(stored_events, tracking)


# -------------------------------------------------------------- subscription


_STOP = object()


class _Resync(Exception):
    pass


class EtcdSubscription(Subscription[EtcdApplicationRecorder]):
    """Catch-up reads, then an etcd watch on ``P n/`` from the next revision."""

    max_consecutive_failures = 20

    def __init__(
        self,
        recorder: EtcdApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._topics_set = set(topics)
        self._batches: Queue[Sequence[Notification]] = Queue(maxsize=64)
        self._batch: Sequence[Notification] = ()
        self._index = 0
        self._thread_error: BaseException | None = None
        self._watch_lock = threading.Lock()
        self._events: queue.Queue[object] | None = None
        self._last_seen = gt or 0
        self._thread = threading.Thread(target=self._run, name="etcd-subscription", daemon=True)
        self._thread.start()

    # -- consumer side

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            self._thread.join(timeout=30)

    def stop(self) -> None:
        super().stop()
        self._batches.shutdown(immediate=True)
        with self._watch_lock:
            if self._events is not None:
                self._events.put(_STOP)

    def __next__(self) -> Notification:
        if self._index == len(self._batch) and not self._has_been_stopped:
            try:
                self._batch = self._batches.get()
            except ShutDown:
                pass
            else:
                self._batches.task_done()
                self._index = 0
        if self._has_been_stopped:
            if self._thread_error is not None:
                raise self._thread_error
            raise StopIteration
        notification = self._batch[self._index]
        self._index += 1
        return notification

    # -- producer thread

    def _emit(self, batch: list[Notification]) -> None:
        if self._topics_set:
            batch = [n for n in batch if n.topic in self._topics_set]
        if batch:
            self._batches.put(batch)

    def _run(self) -> None:
        failures = 0
        try:
            while not self._has_been_stopped:
                try:
                    self._catch_up_and_follow()
                except (_Resync, EtcdCompactedError):
                    continue
                except ShutDown:
                    return
                except ArchiveNotConfiguredError:
                    raise
                except (OperationalError, pyetcd.Etcd3Exception, grpc.RpcError):
                    failures += 1
                    if failures > self.max_consecutive_failures:
                        raise
                    time.sleep(min(0.05 * 2**failures, 2.0))
                else:
                    failures = 0
        except ShutDown:
            return
        except BaseException as e:
            if self._thread_error is None:
                self._thread_error = e
            self.stop()

    def _catch_up_and_follow(self) -> None:
        rec = self._recorder
        keys = rec.keys
        # 1. Catch up: everything up to seq at one revision R (archive included).
        _v, _m, rev = rec.datastore.get_value(keys.seq)
        seq = int(_v or 0)
        while self._last_seen < seq and not self._has_been_stopped:
            batch, _rev, _seq = rec._read_notifications(self._last_seen + 1, seq, _READ_PAGE, rev)
            if not batch:
                raise _Resync  # e.g. compaction under us
            self._last_seen = batch[-1].id
            self._emit(batch)
        self._last_seen = max(self._last_seen, seq)
        if self._has_been_stopped:
            return
        # 2. Follow: watch P n/ from R + 1; events arrive in revision order.
        events: queue.Queue[object] = queue.Queue()
        with self._watch_lock:
            if self._has_been_stopped:
                return
            self._events = events
        watch_id = rec.datastore.client.add_watch_prefix_callback(
            keys.notifications, events.put, start_revision=rev + 1
        )
        try:
            prefix_len = len(keys.notifications)
            while not self._has_been_stopped:
                item = events.get()
                if item is _STOP:
                    return
                if isinstance(item, BaseException):
                    raise OperationalError(f"etcd watch failed: {item!r}") from item
                batch = []
                for ev in getattr(item, "events", ()):
                    if not isinstance(ev, etcd_events.PutEvent):
                        continue  # deletions are archiving
                    nid = int(bytes(ev.key)[prefix_len:])
                    if nid <= self._last_seen:
                        continue
                    if nid != self._last_seen + 1:
                        self._emit(batch)
                        raise _Resync
                    self._last_seen = nid
                    batch.append(decode_notification(nid, bytes(ev.value)))
                self._emit(batch)
        finally:
            with self._watch_lock:
                self._events = None
            with contextlib.suppress(Exception):
                rec.datastore.client.cancel_watch(watch_id)


# ------------------------------------------------------------------- factory


class EtcdFactory(InfrastructureFactory[EtcdTrackingRecorder]):
    """Infrastructure factory: ``PERSISTENCE_MODULE=cke_adapters.eventstore.etcd``.

    Environment (eventsourcing's ``Environment``: each may be prefixed by the
    application name, e.g. ``CKE_CKE_EVENTS_KEY_PREFIX``):

    ``CKE_EVENTS_ETCD_ENDPOINTS``  comma-separated ``[http[s]://]host:port``
                                   (default ``127.0.0.1:2379``)
    ``CKE_EVENTS_KEY_PREFIX``      default ``/cke/events/``
    ``CKE_EVENTS_LEADER_KEY``      fence every write on this key's existence
    ``CKE_EVENTS_ETCD_CACERT`` / ``_CERT`` / ``_KEY``   TLS files
    ``CKE_EVENTS_ETCD_USER`` / ``_PASSWORD``            etcd authentication
    ``CKE_EVENTS_ETCD_TIMEOUT``    seconds per RPC (default 10)
    ``CKE_EVENTS_MAX_TXN_OPS``     the server's --max-txn-ops (default 128)
    ``CKE_EVENTS_ARCHIVE_SQLITE``  path of the SQLite archive of old events
    """

    ENDPOINTS = "CKE_EVENTS_ETCD_ENDPOINTS"
    KEY_PREFIX = "CKE_EVENTS_KEY_PREFIX"
    LEADER_KEY = "CKE_EVENTS_LEADER_KEY"
    CACERT = "CKE_EVENTS_ETCD_CACERT"
    CERT = "CKE_EVENTS_ETCD_CERT"
    KEY = "CKE_EVENTS_ETCD_KEY"
    USER = "CKE_EVENTS_ETCD_USER"
    PASSWORD = "CKE_EVENTS_ETCD_PASSWORD"
    TIMEOUT = "CKE_EVENTS_ETCD_TIMEOUT"
    MAX_TXN_OPS = "CKE_EVENTS_MAX_TXN_OPS"
    ARCHIVE_SQLITE = "CKE_EVENTS_ARCHIVE_SQLITE"

    aggregate_recorder_class = EtcdAggregateRecorder
    application_recorder_class = EtcdApplicationRecorder
    tracking_recorder_class = EtcdTrackingRecorder
    process_recorder_class = EtcdProcessRecorder

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        self.datastore = self._make_datastore()

    def _get(self, key: str, default: str | None = None) -> str | None:
        value = self.env.get(key)
        return value if value not in (None, "") else default

    def _make_datastore(self) -> EtcdDatastore:
        try:
            timeout = float(self._get(self.TIMEOUT, str(DEFAULT_TIMEOUT)) or DEFAULT_TIMEOUT)
            max_ops = int(self._get(self.MAX_TXN_OPS, str(DEFAULT_MAX_TXN_OPS)) or 0)
        except ValueError as e:
            raise OSError(f"invalid {self.TIMEOUT} or {self.MAX_TXN_OPS}: {e}") from None
        archive: EventArchive | None = None
        archive_path = self._get(self.ARCHIVE_SQLITE)
        if archive_path:
            from cke_adapters.eventstore.archive import SQLiteArchive

            archive = SQLiteArchive(archive_path)
        return EtcdDatastore.connect(
            self._get(self.ENDPOINTS, "127.0.0.1:2379") or "127.0.0.1:2379",
            ca_cert=self._get(self.CACERT),
            cert=self._get(self.CERT),
            key=self._get(self.KEY),
            user=self._get(self.USER),
            password=self._get(self.PASSWORD),
            timeout=timeout,
            prefix=self._get(self.KEY_PREFIX, DEFAULT_PREFIX) or DEFAULT_PREFIX,
            leader_key=self._get(self.LEADER_KEY),
            max_txn_ops=max_ops,
            archive=archive,
            owns_archive=True,
        )

    def _resolve(self, topic_key: str, default: type[Any], base: type[Any]) -> type[Any]:
        topic = self.env.get(topic_key)
        cls: type[Any] = resolve_topic(topic) if topic else default
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ProgrammingError(f"{topic_key}={topic!r} is not a subclass of {base.__name__}")
        return cls

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return self.aggregate_recorder_class(self.datastore, purpose=purpose)

    def application_recorder(self) -> ApplicationRecorder:
        cls = self._resolve(
            self.APPLICATION_RECORDER_TOPIC,
            self.application_recorder_class,
            EtcdApplicationRecorder,
        )
        recorder: ApplicationRecorder = cls(self.datastore)
        return recorder

    def tracking_recorder(
        self, tracking_recorder_class: type[EtcdTrackingRecorder] | None = None
    ) -> EtcdTrackingRecorder:
        cls = tracking_recorder_class or self._resolve(
            self.TRACKING_RECORDER_TOPIC, self.tracking_recorder_class, EtcdTrackingRecorder
        )
        if not issubclass(cls, EtcdTrackingRecorder):
            raise ProgrammingError(f"{cls} is not a subclass of EtcdTrackingRecorder")
        return cls(self.datastore)

    def process_recorder(self) -> ProcessRecorder:
        cls = self._resolve(
            self.PROCESS_RECORDER_TOPIC, self.process_recorder_class, EtcdProcessRecorder
        )
        recorder: ProcessRecorder = cls(self.datastore)
        return recorder

    def is_fencing_enabled(self) -> bool:
        return self.datastore.leader_key is not None

    def close(self) -> None:
        self.datastore.close()


Factory = EtcdFactory
