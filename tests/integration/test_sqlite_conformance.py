"""The SQLite store (eventsourcing.sqlite, the event log's embedded default) under
the same recorder conformance suites as the etcd store
(tests/integration/test_etcd_recorder.py): aggregate (events and snapshots),
application, tracking, process, non-interleaving notification ids and the
infrastructure factory, each test on a fresh database file.

SQLite has no subscriptions (eventsourcing raises NotImplementedError), so the
optional subscription test that the etcd store passes is not run here; the
event log's ``follow`` polls instead.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from cke_adapters.eventlog.store import parse_store_url
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    ProcessRecorder,
    TrackingRecorder,
)
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteDatastore,
    SQLiteFactory,
    SQLiteProcessRecorder,
    SQLiteTrackingRecorder,
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

pytestmark = pytest.mark.integration


class _FileCase:
    """A fresh database file per test (removed afterwards)."""

    def datastore(self) -> SQLiteDatastore:
        directory = Path(tempfile.mkdtemp(prefix="cke-sqlite-conformance-"))
        self.addCleanup(shutil.rmtree, directory, True)  # type: ignore[attr-defined]
        store = SQLiteDatastore(str(directory / "events.db"))
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        # Cleanups run last-in first-out: this one runs before the store is closed.
        self.addCleanup(_join_library_readers)  # type: ignore[attr-defined]
        return store


def _join_library_readers() -> None:
    """Wait for the reader threads of the library's ``test_concurrent_no_conflicts``.

    That test sets ``stop_reading`` and returns without joining its two
    ``read_continuously`` threads; closing the SQLite connection while one of
    them is inside a query is a use-after-close in the sqlite3 module, which
    crashed the interpreter (SIGSEGV) once on a loaded 2-CPU machine.
    """
    for thread in threading.enumerate():
        target = getattr(thread, "_target", None)
        if thread is not threading.current_thread() and (
            getattr(target, "__name__", "") == "read_continuously"
        ):
            thread.join(timeout=30)


class TestAggregateRecorder(_FileCase, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        recorder = SQLiteAggregateRecorder(self.datastore(), events_table_name="stored_events")
        recorder.create_table()
        return recorder


class TestSnapshotRecorder(_FileCase, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        recorder = SQLiteAggregateRecorder(self.datastore(), events_table_name="stored_snapshots")
        recorder.create_table()
        return recorder


class TestApplicationRecorder(_FileCase, ApplicationRecorderTestCase[SQLiteApplicationRecorder]):
    def create_recorder(self) -> SQLiteApplicationRecorder:
        recorder = SQLiteApplicationRecorder(self.datastore())
        recorder.create_table()
        return recorder


class TestTrackingRecorder(_FileCase, TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        recorder = SQLiteTrackingRecorder(self.datastore())
        recorder.create_table()
        return recorder


class TestProcessRecorder(_FileCase, ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        recorder = SQLiteProcessRecorder(self.datastore())
        recorder.create_table()
        return recorder


class TestNonInterleavingNotificationIDs(_FileCase, NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        recorder = SQLiteApplicationRecorder(self.datastore())
        recorder.create_table()
        return recorder


class _TrackingSub(SQLiteTrackingRecorder):
    pass


class TestSQLiteFactory(InfrastructureFactoryTestCase[SQLiteFactory]):
    """The factory as the event log configures it from a store URL."""

    def setUp(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="cke-sqlite-factory-"))
        self.addCleanup(shutil.rmtree, directory, True)
        self.env = Environment("TestCase")
        self.env.update(parse_store_url(f"sqlite:///{directory}/events.db").environment())
        super().setUp()

    def expected_factory_class(self) -> type[SQLiteFactory]:
        return SQLiteFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return SQLiteAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return SQLiteApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return SQLiteTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return _TrackingSub

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return SQLiteProcessRecorder
