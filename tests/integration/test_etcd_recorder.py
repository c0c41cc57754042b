"""The etcd event store against a real etcd started here (cke_adapters.local_etcd).

* eventsourcing's own recorder conformance suites (aggregate, application,
  tracking, process, non-interleaving ids, infrastructure factory), each test
  on a fresh key prefix;
* several concurrent writers (threads here and two other processes), to the
  same and to different aggregates: the log is gapless, strictly increasing,
  nothing lost, duplicated or reordered, per-aggregate versions contiguous;
* leader fencing, subscriptions fed by watches, oversize batches, the archive
  (archive + etcd read as one), and an eventsourcing application end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from cke_adapters.eventstore.archive import Archiver, SQLiteArchive
from cke_adapters.eventstore.etcd import (
    ArchiveNotConfiguredError,
    EtcdAggregateRecorder,
    EtcdApplicationRecorder,
    EtcdDatastore,
    EtcdFactory,
    EtcdProcessRecorder,
    EtcdQuotaExceededError,
    EtcdTrackingRecorder,
    EtcdUnavailableError,
    NotLeaderError,
    TransactionTooLargeError,
)
from cke_adapters.local_etcd import EtcdNotFoundError, LocalEtcd
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.utils import Environment
from missing import component_missing

pytestmark = pytest.mark.integration

MAX_TXN_OPS = 4096  # NonInterleaving writes 1000 events in one transaction


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def etcd() -> Iterator[LocalEtcd]:
    server = LocalEtcd(max_txn_ops=MAX_TXN_OPS, quota_backend_bytes=512 * 1024 * 1024)
    try:
        server.start()
    except EtcdNotFoundError as e:
        component_missing(str(e))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def base_store(etcd: LocalEtcd) -> Iterator[EtcdDatastore]:
    ds = EtcdDatastore.connect(etcd.endpoints, max_txn_ops=MAX_TXN_OPS, prefix="/unused/")
    yield ds
    ds.close()


@pytest.fixture(scope="class")
def _etcd_cls(request: pytest.FixtureRequest, etcd: LocalEtcd, base_store: EtcdDatastore) -> None:
    request.cls.etcd = etcd
    request.cls.base_store = base_store


def new_store(base: EtcdDatastore, **kwargs: Any) -> EtcdDatastore:
    """A datastore on the shared client with a fresh key prefix."""
    kwargs.setdefault("max_txn_ops", MAX_TXN_OPS)
    return EtcdDatastore(base.client, prefix=f"/test/{uuid4().hex}/", **kwargs)


@pytest.fixture
def store(base_store: EtcdDatastore) -> Iterator[EtcdDatastore]:
    ds = new_store(base_store)
    yield ds
    ds.close()


class _EtcdCase:
    etcd: ClassVar[LocalEtcd]
    base_store: ClassVar[EtcdDatastore]

    def store(self) -> EtcdDatastore:
        ds = new_store(self.base_store)
        self.addCleanup(ds.close)  # type: ignore[attr-defined]
        return ds


# ------------------------------------------------------- conformance suites


@pytest.mark.usefixtures("_etcd_cls")
class TestAggregateRecorder(_EtcdCase, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return EtcdAggregateRecorder(self.store(), purpose="events")


@pytest.mark.usefixtures("_etcd_cls")
class TestSnapshotRecorder(_EtcdCase, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return EtcdAggregateRecorder(self.store(), purpose="snapshots")


@pytest.mark.usefixtures("_etcd_cls")
class TestApplicationRecorder(_EtcdCase, ApplicationRecorderTestCase[EtcdApplicationRecorder]):
    def create_recorder(self) -> EtcdApplicationRecorder:
        return EtcdApplicationRecorder(self.store())

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


@pytest.mark.usefixtures("_etcd_cls")
class TestTrackingRecorder(_EtcdCase, TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return EtcdTrackingRecorder(self.store())


@pytest.mark.usefixtures("_etcd_cls")
class TestProcessRecorder(_EtcdCase, ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return EtcdProcessRecorder(self.store())


@pytest.mark.usefixtures("_etcd_cls")
class TestNonInterleavingNotificationIDs(_EtcdCase, NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return EtcdApplicationRecorder(self.store())


class _TrackingSub(EtcdTrackingRecorder):
    pass


@pytest.mark.usefixtures("_etcd_cls")
class TestEtcdFactory(_EtcdCase, InfrastructureFactoryTestCase[EtcdFactory]):
    def setUp(self) -> None:
        self.env = Environment("TestCase")
        self.env[EtcdFactory.PERSISTENCE_MODULE] = "cke_adapters.eventstore.etcd"
        self.env[EtcdFactory.ENDPOINTS] = self.etcd.endpoints_env
        self.env[EtcdFactory.KEY_PREFIX] = f"/test/{uuid4().hex}/"
        self.env[EtcdFactory.MAX_TXN_OPS] = str(MAX_TXN_OPS)
        super().setUp()

    def expected_factory_class(self) -> type[EtcdFactory]:
        return EtcdFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return EtcdAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return EtcdApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return EtcdTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return _TrackingSub

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return EtcdProcessRecorder


# -------------------------------------------------------------- helpers


def ev(oid: UUID | str, version: int, payload: str = "", topic: str = "t") -> StoredEvent:
    return StoredEvent(
        originator_id=oid,
        originator_version=version,
        topic=topic,
        state=payload.encode() or b"{}",
    )


def all_notifications(rec: ApplicationRecorder) -> list[Notification]:
    out: list[Notification] = []
    start = 1
    while True:
        page = rec.select_notifications(start, 1000)
        out += page
        if len(page) < 1000:
            return out
        start = page[-1].id + 1


def count_keys(ds: EtcdDatastore, sub: bytes = b"") -> int:
    from cke_adapters.eventstore.etcd import prefix_range_end

    start = ds.keys.prefix + sub
    return len(ds.range(start, prefix_range_end(start), keys_only=True).kvs)


# ---------------------------------------------------- concurrent writers


def run_writer(
    rec: EtcdApplicationRecorder,
    name: str,
    own: str,
    shared: list[str],
    rounds: int,
) -> list[tuple[str, int, int, str]]:
    """Append ``rounds`` batches: even rounds to its own aggregate, odd rounds to a
    shared one (read the head version, append 1-3 events, retry on IntegrityError).
    Returns (oid, version, notification id, payload) for every committed event."""
    committed: list[tuple[str, int, int, str]] = []
    own_version = 0
    for i in range(rounds):
        size = 1 + i % 3
        if i % 2 == 0:
            batch = [ev(own, own_version + k, f"{name}:{i}:{k}") for k in range(size)]
            ids = rec.insert_events(batch)
            own_version += size
        else:
            oid = shared[i % len(shared)]
            while True:
                head = rec.select_events(oid, desc=True, limit=1)
                nxt = head[0].originator_version + 1 if head else 0
                batch = [ev(oid, nxt + k, f"{name}:{i}:{k}") for k in range(size)]
                try:
                    ids = rec.insert_events(batch)
                except IntegrityError:
                    continue
                break
        assert ids is not None
        for e, nid in zip(batch, ids, strict=True):
            committed.append((str(e.originator_id), e.originator_version, nid, e.state.decode()))
    return committed


_PROCESS_SCRIPT = """
import json, sys, threading
from cke_adapters.eventstore.etcd import EtcdDatastore, EtcdApplicationRecorder
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/.."]  # this module, and tests/ (missing.py)
import test_etcd_recorder as t
endpoints, prefix, name = sys.argv[2:5]
rounds, shared = int(sys.argv[5]), sys.argv[6].split(",")
ds = EtcdDatastore.connect(endpoints, prefix=prefix, max_txn_ops=t.MAX_TXN_OPS)
rec = EtcdApplicationRecorder(ds)
results, errors = [], []
def work(k):
    try:
        results.extend(t.run_writer(rec, f"{name}-{k}", f"{name}-{k}-own", shared, rounds))
    except BaseException as e:
        errors.append(repr(e))
threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
[th.start() for th in threads]
[th.join() for th in threads]
ds.close()
print(json.dumps({"committed": results, "errors": errors}))
"""


def test_concurrent_writers_threads_and_processes(
    etcd: LocalEtcd, base_store: EtcdDatastore
) -> None:
    ds = new_store(base_store)
    prefix = ds.keys.prefix.decode()
    shared = ["shared-a", "shared-b"]
    rounds = 40
    here = os.path.dirname(os.path.abspath(__file__))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _PROCESS_SCRIPT,
                here,
                etcd.endpoints_env,
                prefix,
                f"p{i}",
                str(rounds),
                ",".join(shared),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    # Two recorders in this process (two independent writers), two threads each.
    recorders = [EtcdApplicationRecorder(ds), EtcdApplicationRecorder(ds)]  # own locks, caches
    committed: list[tuple[str, int, int, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(rec: EtcdApplicationRecorder, name: str) -> None:
        try:
            out = run_writer(rec, name, f"{name}-own", shared, rounds)
        except BaseException as e:
            errors.append(e)
            return
        with lock:
            committed.extend(out)

    threads = [threading.Thread(target=work, args=(recorders[k % 2], f"t{k}")) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        result = json.loads(out)
        assert result["errors"] == []
        committed.extend(tuple(c) for c in result["committed"])
    assert errors == []

    log = all_notifications(recorders[0])
    ids = [n.id for n in log]
    # Gapless and strictly increasing, from 1.
    assert ids == list(range(1, len(ids) + 1))
    # Nothing lost, nothing duplicated: the log is exactly what writers committed,
    # at the ids insert_events returned.
    assert len(log) == len(committed) == 8 * sum(1 + i % 3 for i in range(rounds))
    by_id = {nid: (oid, v, payload) for oid, v, nid, payload in committed}
    assert len(by_id) == len(committed)
    for n in log:
        assert by_id[n.id] == (str(n.originator_id), n.originator_version, n.state.decode())
    payloads = [n.state for n in log]
    assert len(set(payloads)) == len(payloads)
    # Per aggregate: versions contiguous from 0, and in log order (not reordered).
    per_oid: dict[str, list[int]] = {}
    for n in log:
        per_oid.setdefault(str(n.originator_id), []).append(n.originator_version)
    for oid, versions in per_oid.items():
        assert versions == list(range(len(versions))), oid
        events = recorders[0].select_events(oid)
        assert [e.originator_version for e in events] == versions
    # Each writer's own batches appear in the order it wrote them.
    for name in {p.split(":")[0] for p in (n.state.decode() for n in log)}:
        mine = [n.state.decode() for n in log if n.state.decode().startswith(name + ":")]
        order = [tuple(int(x) for x in p.split(":")[1:]) for p in mine]
        assert order == sorted(order)
    assert recorders[0].max_notification_id() == len(log)


# ------------------------------------------------------------------- fencing


def test_fencing(store: EtcdDatastore) -> None:
    leader_key = store.keys.prefix + b"leader/1234"
    client = store.client
    client.put(leader_key, b"host-a")
    store.leader_key = leader_key
    rec = EtcdApplicationRecorder(store)
    snaps = EtcdAggregateRecorder(store, purpose="snapshots")
    proc = EtcdProcessRecorder(store)
    tracking = EtcdTrackingRecorder(store)
    oid = uuid4()
    assert rec.insert_events([ev(oid, 1)]) == [1]

    client.delete(leader_key)
    keys_before = count_keys(store)
    with pytest.raises(NotLeaderError):
        rec.insert_events([ev(oid, 2), ev(uuid4(), 1)])
    with pytest.raises(NotLeaderError):
        snaps.insert_events([ev(oid, 2)])
    with pytest.raises(NotLeaderError):
        proc.insert_events([ev(oid, 2)], tracking=Tracking("up", 5))
    with pytest.raises(NotLeaderError):
        tracking.insert_tracking(Tracking("up", 5))
    assert count_keys(store) == keys_before
    assert rec.max_notification_id() == 1
    assert [e.originator_version for e in rec.select_events(oid)] == [1]
    assert tracking.max_tracking_id("up") is None

    client.put(leader_key, b"host-a")
    assert rec.insert_events([ev(oid, 2)]) == [2]
    snaps.insert_events([ev(oid, 2)])
    assert proc.insert_events([ev(oid, 3)], tracking=Tracking("up", 5)) == [3]
    tracking.insert_tracking(Tracking("up2", 1))
    assert [n.id for n in all_notifications(rec)] == [1, 2, 3]


def test_fencing_on_a_lease(store: EtcdDatastore) -> None:
    """The leader key of an election lives on a lease: when the lease ends, the
    fence closes, even for a writer that still believes it leads."""
    lease = store.client.lease(60)
    leader_key = store.keys.prefix + b"leader/" + b"%x" % lease.id
    store.client.put(leader_key, b"host-a", lease=lease)
    store.leader_key = leader_key
    rec = EtcdApplicationRecorder(store)
    assert rec.insert_events([ev("agg", 0)]) == [1]
    lease.revoke()
    with pytest.raises(NotLeaderError):
        rec.insert_events([ev("agg", 1)])
    assert rec.max_notification_id() == 1


# --------------------------------------------------------------- batches


def test_oversize_batch_fails_cleanly(base_store: EtcdDatastore) -> None:
    ds = new_store(base_store, max_txn_ops=128)
    rec = EtcdApplicationRecorder(ds)
    oid = uuid4()
    assert rec.insert_events([ev(oid, v) for v in range(63)]) == list(range(1, 64))
    with pytest.raises(TransactionTooLargeError):
        rec.insert_events([ev(oid, v) for v in range(63, 63 + 64)])
    assert rec.max_notification_id() == 63
    assert len(rec.select_events(oid)) == 63
    ds.close()


def test_server_limit_also_fails_cleanly(base_store: EtcdDatastore) -> None:
    """The recorder believes in a larger limit than the server's: etcd refuses."""
    ds = new_store(base_store, max_txn_ops=100_000)
    rec = EtcdApplicationRecorder(ds)
    with pytest.raises(TransactionTooLargeError):
        rec.insert_events([ev("big", v) for v in range(MAX_TXN_OPS)])
    assert rec.max_notification_id() is None
    assert count_keys(ds) == 0
    ds.close()


def test_request_too_large_fails_cleanly(store: EtcdDatastore) -> None:
    """etcd's --max-request-bytes (1.5 MiB by default) bounds a batch's bytes."""
    rec = EtcdApplicationRecorder(store)
    with pytest.raises(TransactionTooLargeError):
        rec.insert_events([ev("huge", 0, "x" * (2 * 1024 * 1024))])
    assert rec.max_notification_id() is None
    assert rec.insert_events([ev("huge", 0, "small")]) == [1]


def test_string_ids_with_slashes_are_distinct(store: EtcdDatastore) -> None:
    rec = EtcdApplicationRecorder(store)
    rec.insert_events([ev("a", 0), ev("a/b", 0), ev("a%2Fb", 0)])
    assert [e.originator_id for e in rec.select_events("a")] == ["a"]
    assert [e.originator_id for e in rec.select_events("a/b")] == ["a/b"]
    assert [e.originator_id for e in rec.select_events("a%2Fb")] == ["a%2Fb"]


# ------------------------------------------------------------ subscription


def test_subscription_receives_another_clients_events_in_order(
    etcd: LocalEtcd, store: EtcdDatastore
) -> None:
    reader = EtcdApplicationRecorder(store)
    writer_store = EtcdDatastore.connect(
        etcd.endpoints, prefix=store.keys.prefix, max_txn_ops=MAX_TXN_OPS
    )
    writer = EtcdApplicationRecorder(writer_store)
    oid = uuid4()
    writer.insert_events([ev(oid, v, f"early-{v}") for v in range(3)])
    total = 3 + 40 * 5
    received: list[Notification] = []
    done = threading.Event()

    def consume() -> None:
        with reader.subscribe(gt=1) as sub:
            for n in sub:
                received.append(n)
                if n.id == total:
                    break
        done.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    version = 3
    for i in range(40):
        writer.insert_events([ev(oid, version + k, f"w{i}-{k}") for k in range(5)])
        version += 5
        if i % 10 == 0:
            time.sleep(0.01)
    assert done.wait(20), f"received only {len(received)}"
    consumer.join()
    assert [n.id for n in received] == list(range(2, total + 1))
    assert [n.originator_version for n in received] == list(range(1, total))
    writer_store.close()


def test_subscription_with_topics_and_from_the_middle(store: EtcdDatastore) -> None:
    rec = EtcdApplicationRecorder(store)
    rec.insert_events([ev("x", v, topic="a" if v % 2 else "b") for v in range(10)])
    with rec.subscribe(gt=4, topics=["a"]) as sub:
        got = []
        for n in sub:
            got.append(n.id)
            if n.id == 12:
                break
            if n.id == 10:
                rec.insert_events([ev("x", 10, topic="b"), ev("x", 11, topic="a")])
    assert got == [6, 8, 10, 12]


# ----------------------------------------------------------------- archive


def test_archive_moves_old_events_without_gaps(store: EtcdDatastore, tmp_path: Any) -> None:
    archive = SQLiteArchive(tmp_path / "archive.sqlite")
    store.archive = archive
    rec = EtcdApplicationRecorder(store)
    snaps = EtcdAggregateRecorder(store, purpose="snapshots")
    oids = [uuid4() for _ in range(4)] + ["named/aggregate"]
    versions = dict.fromkeys(oids, 0)
    for i in range(60):
        oid = oids[i % len(oids)]
        size = 1 + i % 3
        rec.insert_events([ev(oid, versions[oid] + k, f"{i}:{k}") for k in range(size)])
        versions[oid] += size
    for oid in oids:
        snaps.insert_events([ev(oid, versions[oid] - 1, f"snapshot of {oid}", topic="snap")])
    before = all_notifications(rec)
    before_events = {oid: rec.select_events(oid) for oid in oids}
    last = before[-1].id
    k = 77

    report = Archiver(store).archive_upto(k)
    assert (report.first, report.last, report.copied, report.deleted) == (1, k, k, k)

    # etcd holds only the recent notifications and their index keys.
    assert count_keys(store, b"n/") == last - k
    assert count_keys(store, b"a/") == last - k
    assert archive.count_between(1, last) == k
    # Reads span archive + etcd and are identical to before.
    assert all_notifications(rec) == before
    for start in (1, k - 3, k, k + 1, last):
        assert rec.select_notifications(start, 10) == before[start - 1 : start - 1 + 10]
    assert rec.select_notifications(k - 2, 10, stop=k + 2) == before[k - 3 : k + 2]
    assert rec.select_notifications(None, 5, topics=["t"]) == before[:5]
    for oid in oids:
        assert rec.select_events(oid) == before_events[oid]
        assert rec.select_events(oid, desc=True, limit=3) == before_events[oid][::-1][:3]
        assert rec.select_events(oid, gt=2, lte=9) == [
            e for e in before_events[oid] if 2 < e.originator_version <= 9
        ]
        assert (
            rec.select_events(oid, lte=4, desc=True, limit=2)
            == [e for e in before_events[oid][::-1] if e.originator_version <= 4][:2]
        )
    # Snapshots stay in etcd.
    for oid in oids:
        assert snaps.select_events(oid, desc=True, limit=1)[0].topic == "snap"
    assert count_keys(store, b"r/") == len(oids)
    # A subscription from the start replays the archive, then etcd.
    with rec.subscribe() as sub:
        got = []
        for n in sub:
            got.append(n)
            if n.id == last:
                break
    assert got == before
    # A reader without the archive gets recent events, and a clear error otherwise.
    blind = EtcdApplicationRecorder(EtcdDatastore(store.client, prefix=store.keys.prefix))
    assert blind.select_notifications(k + 1, 5) == before[k : k + 5]
    with pytest.raises(ArchiveNotConfiguredError):
        blind.select_notifications(1, 5)
    with pytest.raises(ArchiveNotConfiguredError):
        blind.select_events(oids[0])
    assert blind.select_events(oids[0], gt=versions[oids[0]] - 2) == before_events[oids[0]][-1:]
    # Archived events still count for optimistic concurrency.
    with pytest.raises(IntegrityError):
        rec.insert_events([ev(oids[0], 0)])
    # Ids continue; archiving again is idempotent and then continues.
    rec.insert_events([ev(oids[0], versions[oids[0]])])
    assert rec.max_notification_id() == last + 1
    assert Archiver(store).archive_upto(k).moved == 0
    report = Archiver(store).archive_keep_recent(5)
    assert (report.first, report.last) == (k + 1, last + 1 - 5)
    assert [n.id for n in all_notifications(rec)] == list(range(1, last + 2))


def test_archive_deletes_are_fenced(store: EtcdDatastore, tmp_path: Any) -> None:
    store.archive = SQLiteArchive(tmp_path / "a.sqlite")
    rec = EtcdApplicationRecorder(store)
    rec.insert_events([ev("agg", v) for v in range(10)])
    store.leader_key = store.keys.prefix + b"leader/x"
    with pytest.raises(NotLeaderError):
        Archiver(store).archive_upto(5)
    # Copied (harmless, idempotent) but nothing left etcd.
    assert count_keys(store, b"n/") == 10
    store.client.put(store.leader_key, b"me")
    assert Archiver(store).archive_upto(5).moved == 5
    assert count_keys(store, b"n/") == 5
    assert [e.originator_version for e in rec.select_events("agg")] == list(range(10))


# ---------------------------------------------------- application end to end


class Cluster(Aggregate):
    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[str] = []

    @event("NodeAdded")
    def add_node(self, address: str) -> None:
        self.nodes.append(address)


def test_application_with_snapshots_and_archive(etcd: LocalEtcd, tmp_path: Any) -> None:
    env = {
        "PERSISTENCE_MODULE": "cke_adapters.eventstore.etcd",
        "CKE_EVENTS_ETCD_ENDPOINTS": ",".join(etcd.endpoints),
        "CKE_EVENTS_KEY_PREFIX": f"/test/{uuid4().hex}/",
        "CKE_EVENTS_MAX_TXN_OPS": str(MAX_TXN_OPS),
        "CKE_EVENTS_ARCHIVE_SQLITE": str(tmp_path / "archive.sqlite"),
        "IS_SNAPSHOTTING_ENABLED": "y",
    }
    app: Application[UUID] = Application(env=env)
    cluster = Cluster("prod")
    for i in range(30):
        cluster.add_node(f"10.0.0.{i}")
    app.save(cluster)
    app.take_snapshot(cluster.id)
    cluster = app.repository.get(cluster.id)
    cluster.add_node("10.0.1.1")
    app.save(cluster)
    ds = app.factory.datastore  # type: ignore[attr-defined]
    Archiver(ds).archive_keep_recent(1)
    assert count_keys(ds, b"n/") == 1

    app2: Application[UUID] = Application(env=env)  # a fresh process: no cache
    copy: Cluster = app2.repository.get(cluster.id)
    assert copy.nodes == [*(f"10.0.0.{i}" for i in range(30)), "10.0.1.1"]
    old: Cluster = app2.repository.get(cluster.id, version=5)
    assert old.nodes == [f"10.0.0.{i}" for i in range(4)]
    assert [n.id for n in app2.recorder.select_notifications(1, 100)] == list(range(1, 33))
    app.close()
    app2.close()


# ------------------------------------------------------------------- quota


def test_quota_exhausted_is_reported() -> None:
    try:
        small = LocalEtcd(max_txn_ops=1024, quota_backend_bytes=4 * 1024 * 1024)
        small.start()
    except EtcdNotFoundError as e:
        component_missing(str(e))
    try:
        ds = EtcdDatastore.connect(small.endpoints, max_txn_ops=1024)
        rec = EtcdApplicationRecorder(ds)
        state = "x" * 20_000

        def fill() -> None:
            for i in range(1000):
                rec.insert_events([ev("big", i * 10 + k, state) for k in range(10)])

        with pytest.raises(EtcdQuotaExceededError):
            fill()
        n = rec.max_notification_id() or 0
        assert [x.id for x in all_notifications(rec)] == list(range(1, n + 1))
        ds.close()
    finally:
        small.stop()


# ------------------------------------------------------------- three members


def test_three_members_writer_fails_over() -> None:
    try:
        cluster = LocalEtcd(members=3, max_txn_ops=1024, stop_timeout=1).start()
    except EtcdNotFoundError as e:
        component_missing(str(e))
    try:
        ds = EtcdDatastore.connect(cluster.endpoints, max_txn_ops=1024, timeout=5)
        rec = EtcdApplicationRecorder(ds)
        assert rec.insert_events([ev("ha", 0)]) == [1]
        current = ds.client.endpoint_in_use.netloc
        ports = [m.client_port for m in cluster.running_members]
        cluster.kill_member(ports.index(int(current.rsplit(":", 1)[1])))
        for version in (1, 2, 3):
            for _attempt in range(5):
                try:
                    rec.insert_events([ev("ha", version)])
                except EtcdUnavailableError:
                    continue  # connection refused: not sent; the client rotates
                break
        assert ds.client.endpoint_in_use.netloc != current
        assert [n.id for n in all_notifications(rec)] == [1, 2, 3, 4]
        assert [e.originator_version for e in rec.select_events("ha")] == [0, 1, 2, 3]
        ds.close()
    finally:
        cluster.stop()
