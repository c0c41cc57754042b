"""Move old events out of etcd into an archive, without gaps; read across both.

etcd's storage quota is small, so the etcd event store keeps snapshots and recent
events, and an :class:`Archiver` moves the notifications with id ``<= N`` to an
:class:`SQLiteArchive` (docs/adr/0006-etcd-event-store.md):

1. **Copy.** Read ``P n/`` from ``archived + 1`` to ``N`` at one etcd revision,
   check that the ids are contiguous, and insert them into the archive in
   pages. Inserting is idempotent (an identical row is a no-op, a different row
   is an error), so a run interrupted after copying is simply repeated.
2. **Verify.** Every page is read back from the archive and compared with what
   etcd holds; then the archive's count of ids in ``(archived, N]`` must be
   exactly ``N - archived``.
3. **Delete, fenced.** In transactions that fit ``--max-txn-ops``, delete a
   contiguous block of ``P n/`` keys and their ``P a/`` index keys, raise the
   aggregates' floors ``P f/<oid>`` and advance ``P archived``, comparing that
   the leader key exists (if fencing is on) and that ``P archived`` and the
   floors did not change since they were read. So at every etcd revision the
   ids ``<= archived`` are in the archive and the ids ``> archived`` in etcd:
   readers never see a gap. Snapshots (``P r/...``) are never touched.

Reading across both stores is done by the etcd recorders themselves once the
datastore has an archive (``EtcdDatastore(archive=...)`` or the environment
variable ``CKE_EVENTS_ARCHIVE_SQLITE``): the application recorder is the
composite.

The SQLite archive is local to one host: in an HA deployment every member that
may read archived events (the leader, and anything replaying the whole log)
needs the same archive, e.g. on shared storage, or an archive on a shared
database implementing :class:`~cke_adapters.eventstore.etcd.EventArchive`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    DataError,
    Notification,
    OperationalError,
    StoredEvent,
)
from pyetcd import etcdrpc  # type: ignore[import-untyped]

from cke_adapters.eventstore.etcd import (
    EtcdDatastore,
    EventArchive,
    _cmp_mod,
    _delete,
    _fmt,
    _get,
    _kvs,
    _put,
    decode_notification,
)

__all__ = ["ArchiveReport", "Archiver", "SQLiteArchive"]

_PAGE = 500


class SQLiteArchive:
    """Archived events in one SQLite table, keyed by notification id.

    Thread-safe (one connection behind a lock); WAL journal.
    """

    def __init__(self, path: str | os.PathLike[str], *, table: str = "archived_events") -> None:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"invalid table name {table!r}")
        self.path = os.fspath(path)
        self.table = table
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.path not in (":memory:", ""):
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " notification_id INTEGER PRIMARY KEY,"
            " originator_id TEXT NOT NULL,"
            " originator_id_is_uuid INTEGER NOT NULL,"
            " originator_version INTEGER NOT NULL,"
            " topic TEXT NOT NULL,"
            " state BLOB NOT NULL,"
            " UNIQUE (originator_id, originator_version))"
        )

    @staticmethod
    def _row(n: Notification) -> tuple[int, str, int, int, str, bytes]:
        return (
            n.id,
            str(n.originator_id),
            int(isinstance(n.originator_id, UUID)),
            n.originator_version,
            n.topic,
            bytes(n.state),
        )

    @staticmethod
    def _notification(row: Sequence[Any]) -> Notification:
        nid, oid, is_uuid, version, topic, state = row
        return Notification(
            id=int(nid),
            originator_id=UUID(oid) if is_uuid else str(oid),
            originator_version=int(version),
            topic=str(topic),
            state=bytes(state),
        )

    def insert_notifications(self, notifications: Sequence[Notification]) -> None:
        if not notifications:
            return
        rows = [self._row(n) for n in notifications]
        ids = [r[0] for r in rows]
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                c.executemany(f"INSERT OR IGNORE INTO {self.table} VALUES (?,?,?,?,?,?)", rows)
                placeholders = ",".join("?" * len(ids))
                stored = {
                    r[0]: tuple(r)
                    for r in c.execute(
                        f"SELECT notification_id, originator_id, originator_id_is_uuid,"
                        f" originator_version, topic, state FROM {self.table}"
                        f" WHERE notification_id IN ({placeholders})",
                        ids,
                    )
                }
                for row in rows:
                    got = stored.get(row[0])
                    if got is None or (got[:5], bytes(got[5])) != (row[:5], row[5]):
                        raise DataError(
                            f"archive conflict at notification {row[0]}: the archive holds "
                            f"{got[:5] if got else None}, etcd holds {row[:5]}"
                        )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def select_notifications(self, lo: int, hi: int, limit: int) -> list[Notification]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM {self.table} WHERE notification_id BETWEEN ? AND ?"
                " ORDER BY notification_id LIMIT ?",
                (lo, hi, limit),
            ).fetchall()
        return [self._notification(r) for r in rows]

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        sql = f"SELECT * FROM {self.table} WHERE originator_id = ?"
        params: list[Any] = [str(originator_id)]
        if gt is not None:
            sql += " AND originator_version > ?"
            params.append(gt)
        if lte is not None:
            sql += " AND originator_version <= ?"
            params.append(lte)
        sql += " ORDER BY originator_version" + (" DESC" if desc else "")
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        out: list[StoredEvent] = []
        for r in rows:
            n = self._notification(r)
            out.append(
                StoredEvent(
                    originator_id=n.originator_id,
                    originator_version=n.originator_version,
                    topic=n.topic,
                    state=n.state,
                )
            )
        return out

    def existing_versions(self, originator_id: UUID | str, versions: Iterable[int]) -> set[int]:
        vs = list(versions)
        if not vs:
            return set()
        placeholders = ",".join("?" * len(vs))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT originator_version FROM {self.table} WHERE originator_id = ?"
                f" AND originator_version IN ({placeholders})",
                [str(originator_id), *vs],
            ).fetchall()
        return {int(r[0]) for r in rows}

    def count_between(self, lo: int, hi: int) -> int:
        with self._lock:
            row = self._conn.execute(
                f"SELECT COUNT(*) FROM {self.table} WHERE notification_id BETWEEN ? AND ?",
                (lo, hi),
            ).fetchone()
        return int(row[0])

    def max_notification_id(self) -> int | None:
        with self._lock:
            row = self._conn.execute(f"SELECT MAX(notification_id) FROM {self.table}").fetchone()
        return None if row[0] is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


@dataclass(frozen=True)
class ArchiveReport:
    """What one archive run did: ids ``first..last`` moved (none if first > last)."""

    first: int
    last: int
    copied: int
    deleted: int
    transactions: int

    @property
    def moved(self) -> int:
        return max(0, self.last - self.first + 1)


class Archiver:
    """Moves notifications ``<= N`` from etcd to an archive (see the module docstring).

    Runs on the leader: with fencing on, every deleting transaction is fenced on
    the leader key. Several archivers are safe (the marker is compare-and-swapped)
    but pointless.
    """

    def __init__(self, datastore: EtcdDatastore, archive: EventArchive | None = None) -> None:
        archive = archive if archive is not None else datastore.archive
        if archive is None:
            raise ValueError("no archive: pass one or configure the datastore's archive")
        self.datastore = datastore
        self.archive = archive
        self.keys = datastore.keys

    def positions(self) -> tuple[int, int, int]:
        """(highest archived id, its key's mod_revision, last notification id)."""
        r = self.datastore.txn(success=[_get(self.keys.archived), _get(self.keys.seq)], write=False)
        a_kvs, s_kvs = _kvs(r.responses[0]), _kvs(r.responses[1])
        archived = int(a_kvs[0].value) if a_kvs else 0
        archived_mod = int(a_kvs[0].mod_revision) if a_kvs else 0
        seq = int(s_kvs[0].value) if s_kvs else 0
        return archived, archived_mod, seq

    def archive_keep_recent(self, keep_recent: int) -> ArchiveReport:
        """Archive all but the newest ``keep_recent`` notifications."""
        _a, _m, seq = self.positions()
        return self.archive_upto(seq - keep_recent)

    def archive_upto(self, upto: int) -> ArchiveReport:
        """Move notifications with id ``<= upto`` (bounded by the last one) to the archive."""
        archived, _mod, seq = self.positions()
        target = min(upto, seq)
        first = archived + 1
        if target < first:
            return ArchiveReport(first, archived, 0, 0, 0)
        copied = self._copy(first, target)
        have = self.archive_count(first, target)
        if have != target - first + 1:
            raise DataError(
                f"archive verification failed: {have} of {target - first + 1} notifications "
                f"{first}..{target} in the archive; nothing deleted from etcd"
            )
        deleted, txns = self._delete_upto(target)
        return ArchiveReport(first, target, copied, deleted, txns)

    def archive_count(self, lo: int, hi: int) -> int:
        count = getattr(self.archive, "count_between", None)
        if callable(count):
            return int(count(lo, hi))
        return len(self.archive.select_notifications(lo, hi, hi - lo + 1))

    # -- 1 + 2: copy and verify

    def _copy(self, first: int, target: int) -> int:
        ds, keys = self.datastore, self.keys
        rev = 0
        nid = first
        copied = 0
        while nid <= target:
            top = min(nid + _PAGE - 1, target)
            r = ds.range(keys.notification(nid), keys.notification(top + 1), revision=rev)
            rev = rev or int(r.header.revision)
            batch = [
                decode_notification(keys.nid_of(bytes(kv.key)), bytes(kv.value)) for kv in r.kvs
            ]
            expected = list(range(nid, top + 1))
            if [n.id for n in batch] != expected:
                missing = sorted(set(expected) - {n.id for n in batch})
                raise DataError(
                    f"gap in etcd's notification log: ids {missing[:5]} missing; "
                    "nothing deleted from etcd"
                )
            self.archive.insert_notifications(batch)
            back = self.archive.select_notifications(nid, top, top - nid + 1)
            if back != batch:
                raise DataError(
                    f"archive read-back differs from etcd for {nid}..{top}; nothing deleted"
                )
            copied += len(batch)
            nid = top + 1
        return copied

    # -- 3: fenced deletes

    def _delete_upto(self, target: int) -> tuple[int, int]:
        ds, keys = self.datastore, self.keys
        # Per chunk of k events over m aggregates: compare 1 + fence + m,
        # success 1 (n/ range) + k (a/ keys) + m (floors) + 1 (marker).
        chunk = max(1, (ds.max_txn_ops - 3) // 2)
        deleted = txns = 0
        attempts = 0
        while True:
            archived, archived_mod, _seq = self.positions()
            if archived >= target:
                return deleted, txns
            top = min(archived + chunk, target)
            r = ds.range(keys.notification(archived + 1), keys.notification(top + 1))
            batch = [
                decode_notification(keys.nid_of(bytes(kv.key)), bytes(kv.value)) for kv in r.kvs
            ]
            if [n.id for n in batch] != list(range(archived + 1, top + 1)):
                raise DataError(f"gap in etcd's notification log in {archived + 1}..{top}")
            floors_new: dict[bytes, int] = {}
            for n in batch:
                fkey = keys.floor(n.originator_id)
                floors_new[fkey] = max(floors_new.get(fkey, -1), n.originator_version)
            fkeys = list(floors_new)
            fr = ds.txn(success=[_get(k) for k in fkeys], write=False)
            compare = [*ds.fence_compares(), _cmp_mod(keys.archived, archived_mod)]
            success: list[Any] = [
                _delete(keys.notification(archived + 1), keys.notification(top + 1))
            ]
            success += [_delete(keys.event(n.originator_id, n.originator_version)) for n in batch]
            for fkey, resp in zip(fkeys, fr.responses, strict=True):
                kvs = _kvs(resp)
                old, mod = (int(kvs[0].value), int(kvs[0].mod_revision)) if kvs else (-1, 0)
                compare.append(_cmp_mod(fkey, mod))
                success.append(_put(fkey, _fmt(max(old, floors_new[fkey]))))
            success.append(_put(keys.archived, _fmt(top)))
            fence = ds.fence_reads()
            resp = ds.txn(compare, success, fence, write=True)
            txns += 1
            if resp.succeeded:
                deleted += len(batch)
                attempts = 0
                continue
            ds.check_fence(resp.responses, fence)
            attempts += 1
            if attempts > 20:
                raise OperationalError("archiving kept conflicting with another archiver")

    # -- space

    def db_size(self) -> int:
        """The etcd member's backend size in bytes (what the quota is checked against)."""
        client = self.datastore.client
        resp = client.maintenancestub.Status(
            etcdrpc.StatusRequest(),
            self.datastore.timeout,
            credentials=client.call_credentials,
            metadata=client.metadata,
        )
        return int(resp.dbSize)

    def maybe_archive(
        self, quota_bytes: int, *, high_water: float = 0.5, keep_recent: int = 1000
    ) -> ArchiveReport | None:
        """Archive all but ``keep_recent`` notifications when the backend passes
        ``high_water`` of the quota. Space returns to etcd only after compaction
        and defragmentation (see :meth:`reclaim_space`)."""
        if self.db_size() < high_water * quota_bytes:
            return None
        return self.archive_keep_recent(keep_recent)

    def reclaim_space(self, *, defragment: bool = False) -> None:
        """Compact etcd's history up to now (all keys, not only events) and
        optionally defragment the member the client talks to (it blocks that
        member while it runs). Normally etcd's ``--auto-compaction-retention``
        does the compaction; see the ADR before calling this on a shared etcd."""
        client = self.datastore.client
        _v, _m, rev = self.datastore.get_value(self.keys.seq)
        try:
            client.kvstub.Compact(
                etcdrpc.CompactionRequest(revision=rev, physical=True),
                self.datastore.timeout,
                credentials=client.call_credentials,
                metadata=client.metadata,
            )
        except Exception as e:
            if "compacted" not in str(e):
                raise OperationalError(f"compaction failed: {e}") from e
        if defragment:
            client.maintenancestub.Defragment(
                etcdrpc.DefragmentRequest(),
                max(60.0, self.datastore.timeout or 60.0),
                credentials=client.call_credentials,
                metadata=client.metadata,
            )
