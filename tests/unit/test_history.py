"""The event log's domain (``cke_core.history``): records, queues, configuration,
leadership, provenance and replay."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import ProgrammingError
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)

from cke_core.cluster import Cluster, Node, Repair, RepairOperation, RepairProcedure, RepairStep
from cke_core.config import load_cluster
from cke_core.constraints import Constraints
from cke_core.frozen import FrozenDict, freeze
from cke_core.history import (
    CLUSTER_CONFIGURATION_ID,
    DECISION_LOG_ID,
    REBOOT_TRANSITIONS,
    REPAIR_TRANSITIONS,
    ClusterConfiguration,
    ConfigurationVersions,
    DecisionRecorded,
    DecisionRecorder,
    HistoryAggregate,
    HistoryError,
    Leadership,
    ObservationDelta,
    ObservationPolicy,
    ObservationSnapshot,
    ObservationUnchanged,
    OperationRecord,
    RebootQueue,
    RecordCounter,
    RemovalReason,
    RepairQueue,
    RepairState,
    TransitionError,
    apply_delta,
    compare,
    configuration_at,
    diff_json,
    encode_observation,
    encode_observation_doc,
    etcd_view,
    explain,
    fold,
    observations,
    rebuild_inputs,
    record_id,
    record_key,
    replay_log,
    should_record,
)
from cke_core.history.base import compact_json
from cke_core.ops.base import Command, Operation
from cke_core.phases import Phase
from cke_core.queues import (
    RebootQueueEntry,
    RebootStatus,
    RepairQueueEntry,
    RepairStatus,
    RepairStepStatus,
)
from cke_core.render.images import EngineSettings, Images
from cke_core.render.kubernetes import UserResource
from cke_core.simulation import apply_decision
from cke_core.status import ClusterStatus, NodeStatus, status_to_json
from cke_core.strategy import Decision, DecisionInputs, decide
from cke_core.timefmt import UTC

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def refold(aggregate: HistoryAggregate) -> Any:
    """The aggregate rebuilt from its pending events, through the JSON store format."""
    events = aggregate.collect_events()
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    mapper: Mapper[Any] = Mapper(transcoder=transcoder)
    stored = [mapper.to_domain_event(mapper.to_stored_event(e)) for e in events]
    assert stored == events
    return fold(stored, type(aggregate))


def small_cluster(workers: int = 2) -> Cluster:
    nodes = [Node(address="10.0.0.11", control_plane=True)]
    nodes += [Node(address=f"10.0.0.{12 + i}") for i in range(workers)]
    return Cluster(
        name="test", nodes=tuple(nodes), service_subnet="10.68.0.0/16", dns_servers=("8.8.8.8",)
    )


# ---------------------------------------------------------------------------
# No clock, no random ids
# ---------------------------------------------------------------------------


def test_events_never_read_the_clock() -> None:
    with pytest.raises(ProgrammingError, match="explicitly"):
        HistoryAggregate.Event.create_timestamp()
    with pytest.raises(ProgrammingError, match="explicit id"):
        OperationRecord(record_id=1, operation="x", targets=[], decision=0)
    with pytest.raises(ProgrammingError):
        DecisionRecorded.create_timestamp()


def test_times_must_be_aware_and_are_normalised_to_utc() -> None:
    counter = RecordCounter.create(T0)
    with pytest.raises(HistoryError, match="naive"):
        counter.allocate(datetime.datetime(2024, 5, 1, 12, 0))
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    counter.allocate(datetime.datetime(2024, 5, 1, 21, 0, tzinfo=tokyo))
    assert counter.modified_on == T0
    assert counter.modified_on.tzinfo is UTC


def test_ids_are_name_based_and_stable() -> None:
    assert record_id(1) == record_id(1)
    assert record_id(1) != record_id(2)
    assert len({CLUSTER_CONFIGURATION_ID, DECISION_LOG_ID, record_id(1)}) == 3
    assert record_id(1).version == 5


def test_application_stores_and_snapshots_deterministically() -> None:
    app: Application[Any] = Application(env={"IS_SNAPSHOTTING_ENABLED": "y"})
    record = OperationRecord.register(1, "etcd-start", ["10.0.0.11"], at(0))
    record.start_command("run-container", "10.0.0.11", at(1))
    app.save(record)
    assert app.repository.get(record.id) == record
    app.take_snapshot(record.id)
    assert app.snapshots is not None
    snapshots = list(app.snapshots.get(record.id))
    assert [s.timestamp for s in snapshots] == [at(1)]
    assert app.repository.get(record.id) == record


# ---------------------------------------------------------------------------
# Operation records (§E.3)
# ---------------------------------------------------------------------------


def test_record_lifecycle_and_cke_json() -> None:
    counter = RecordCounter.create(T0)
    numbers = [counter.allocate(at(i)) for i in range(3)]
    assert numbers == [1, 2, 3]
    assert counter.etcd_keys() == {"records": "4"}

    record = OperationRecord.register(3, "kubelet-restart", ["10.0.0.12"], at(5), decision=7)
    assert record.id == record_id(3)
    assert record.record_view() == {
        "id": "3",
        "status": "new",
        "operation": "kubelet-restart",
        "command": {"name": "", "target": ""},
        "targets": ["10.0.0.12"],
        "info": "",
        "error": "",
        "start-at": "2024-05-01T12:05:00Z",
        "end-at": "0001-01-01T00:00:00Z",
    }
    record.start_command("image-pull", "10.0.0.12", at(6))
    record.start_command("run-container", "10.0.0.12", at(7))
    assert record.status == "running"
    assert record.is_open
    record.complete("failed nodes: []", at(8))
    view = record.record_view()
    assert view["status"] == "completed"
    assert view["command"] == {"name": "run-container", "target": "10.0.0.12"}
    assert view["info"] == "failed nodes: []"
    assert view["end-at"] == "2024-05-01T12:08:00Z"
    assert not record.is_open
    assert record.decision == 7
    assert set(record.etcd_keys()) == {"records/0000000000000003"}
    assert record_key(255) == "records/00000000000000ff"
    assert refold(record) == record


@pytest.mark.parametrize("started", [False, True])
def test_new_or_running_records_can_be_cancelled(started: bool) -> None:
    record = OperationRecord.register(1, "etcd-start", [], at(0))
    if started:
        record.start_command("run-container", "10.0.0.11", at(1))
    record.cancel("context canceled", at(2))
    view = record.record_view()
    assert (view["status"], view["error"], view["end-at"]) == (
        "cancelled",
        "context canceled",
        "2024-05-01T12:02:00Z",
    )
    assert refold(record) == record


@pytest.mark.parametrize(
    ("prepare", "attempt"),
    [
        ([], "complete"),
        (["complete"], "start"),
        (["complete"], "cancel"),
        (["complete"], "complete"),
        (["cancel"], "start"),
        (["cancel"], "cancel"),
        (["cancel"], "complete"),
    ],
)
def test_disallowed_record_transitions_raise_and_record_nothing(
    prepare: list[str], attempt: str
) -> None:
    record = OperationRecord.register(1, "etcd-start", [], at(0))
    moves = {
        "start": lambda r: r.start_command("run-container", "", at(1)),
        "complete": lambda r: r.complete("", at(2)),
        "cancel": lambda r: r.cancel("error", at(2)),
    }
    for move in prepare:
        if move == "complete":
            moves["start"](record)
        moves[move](record)
    version, view = record.version, record.record_view()
    with pytest.raises(TransitionError):
        moves[attempt](record)
    assert (record.version, record.record_view()) == (version, view)


def test_record_registration_is_validated() -> None:
    with pytest.raises(HistoryError, match="from 1"):
        OperationRecord.register(0, "x", [], T0)
    with pytest.raises(HistoryError, match="operation"):
        OperationRecord.register(1, "", [], T0)
    with pytest.raises(HistoryError, match="targets"):
        OperationRecord.register(1, "x", "10.0.0.1", T0)


def test_a_record_for_an_operation_takes_its_name_and_targets() -> None:
    @attrs.frozen
    class Op(Operation):
        NAME: ClassVar[str] = "etcd-wait-cluster"

        @property
        def targets(self) -> tuple[str, ...]:
            return ("10.0.0.11", "10.0.0.12")

        def next_command(self, results: Any) -> Command | None:
            return None

    record = OperationRecord.for_operation(4, Op(), T0, decision=2)
    assert (record.operation, record.targets, record.decision) == (
        "etcd-wait-cluster",
        ["10.0.0.11", "10.0.0.12"],
        2,
    )


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def test_configuration_versions_and_values() -> None:
    cluster = load_cluster((EXAMPLES / "cluster.yml").read_text())
    config = ClusterConfiguration.create(T0)
    assert config.cluster() is None
    assert config.constraints() is None
    assert config.settings() == EngineSettings()
    assert config.set_spec(cluster, at(1))
    assert not config.set_spec(cluster, at(2))
    assert config.cluster() == cluster
    assert config.set_constraints(Constraints(control_plane_count=3), at(3))
    settings = EngineSettings(max_concurrent_updates=5, images=Images(etcd="etcd:test"))
    assert config.set_settings(settings, at(4))
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}
    assert config.set_resource("ConfigMap/a", manifest, at(5))
    assert not config.set_resource("ConfigMap/a", manifest, at(6))
    assert config.set_resource("Namespace/b", {"kind": "Namespace"}, at(7), revision=99)
    assert config.versions() == ConfigurationVersions(
        configuration=6, spec=1, constraints=1, resources=2, settings=1
    )
    assert config.constraints() == Constraints(control_plane_count=3)
    assert config.settings() == settings
    # Apply order: a Namespace ranks before a ConfigMap.
    resources = config.resources()
    assert [(r.key, r.revision) for r in resources] == [("Namespace/b", 99), ("ConfigMap/a", 5)]
    assert resources[1].document == freeze(manifest)
    assert isinstance(resources[0], UserResource)
    assert config.delete_resource("Namespace/b", at(8))
    assert not config.delete_resource("Namespace/b", at(9))
    keys = config.etcd_keys()
    assert set(keys) == {"cluster", "constraints", "resource/ConfigMap/a"}

    events = config.collect_events()
    old = configuration_at(events, 3)
    assert old.versions() == ConfigurationVersions(3, 1, 1, 0, 0)
    assert old.resources() == ()
    assert old.cluster() == cluster
    assert configuration_at(events) == config
    with pytest.raises(HistoryError, match="version 42"):
        configuration_at(events, 42)


def test_configuration_rejects_bad_values() -> None:
    config = ClusterConfiguration.create(T0)
    with pytest.raises(HistoryError):
        config.set_spec({"name": "x"}, T0)  # type: ignore[arg-type]
    with pytest.raises(HistoryError, match="> 0"):
        config.set_settings(EngineSettings(max_concurrent_updates=0), T0)
    with pytest.raises(HistoryError, match="key"):
        config.set_resource("", {}, T0)
    with pytest.raises(HistoryError, match="revision"):
        config.set_resource("a", {}, T0, revision=0)
    assert config.version == 1


# ---------------------------------------------------------------------------
# Reboot queue (§F.1)
# ---------------------------------------------------------------------------

ALL_REBOOT = list(RebootStatus)


def reboot_entry_in(status: RebootStatus) -> tuple[RebootQueue, int]:
    queue = RebootQueue.create(T0)
    index = queue.add("10.0.0.12", at(1))
    if status is RebootStatus.CANCELLED:
        queue.cancel(index, at(2))
    if status in (RebootStatus.DRAINING, RebootStatus.REBOOTING):
        queue.start_drain(index, at(2))
    if status is RebootStatus.REBOOTING:
        queue.start_reboot(index, at(3))
    return queue, index


@pytest.mark.parametrize(("before", "after"), list(itertools.product(ALL_REBOOT, ALL_REBOOT)))
def test_reboot_transitions_follow_f1(before: RebootStatus, after: RebootStatus) -> None:
    queue, index = reboot_entry_in(before)
    entry = queue.entry(index)
    assert entry.status is before
    backoff = (before, after) == (RebootStatus.DRAINING, RebootStatus.QUEUED)
    moved = attrs.evolve(
        entry,
        status=after,
        last_transition_time=at(10),
        drain_backoff_count=entry.drain_backoff_count + (1 if backoff else 0),
        drain_backoff_expire=at(15) if backoff else entry.drain_backoff_expire,
    )
    version = queue.version
    if (before, after) in REBOOT_TRANSITIONS:
        assert queue.update(moved, at(10))
        assert queue.entry(index) == moved
    else:
        with pytest.raises(TransitionError):
            queue.update(moved, at(10))
        assert queue.version == version
        assert queue.entry(index) == entry


def test_f1_table_is_cke_s() -> None:
    q, d, r, c = RebootStatus
    assert {(q, d), (d, q), (d, r), (q, c), (d, c), (r, c)} == REBOOT_TRANSITIONS


def test_reboot_backoff_counts_and_resets() -> None:
    queue, index = reboot_entry_in(RebootStatus.DRAINING)
    entry = queue.entry(index)
    with pytest.raises(TransitionError, match="must count"):
        queue.update(attrs.evolve(entry, status=RebootStatus.QUEUED), at(5))
    queue.back_off(index, at(20), at(5))
    assert queue.entry(index).drain_backoff_count == 1
    with pytest.raises(TransitionError, match="backoff"):
        queue.update(attrs.evolve(queue.entry(index), drain_backoff_count=5), at(6))
    assert queue.reset_backoff(index, at(7))
    assert not queue.reset_backoff(index, at(8))
    reset = queue.entry(index)
    assert (reset.drain_backoff_count, reset.drain_backoff_expire.year) == (0, 1)
    with pytest.raises(TransitionError, match="cannot change the drain backoff"):
        queue.update(
            attrs.evolve(
                reset,
                status=RebootStatus.DRAINING,
                drain_backoff_count=3,
                last_transition_time=at(9),
            ),
            at(9),
        )
    assert refold(queue) == queue


@pytest.mark.parametrize(
    ("status", "reason", "allowed"),
    [
        (RebootStatus.REBOOTING, RemovalReason.DEQUEUED, True),
        (RebootStatus.QUEUED, RemovalReason.DEQUEUED, False),
        (RebootStatus.DRAINING, RemovalReason.DEQUEUED, False),
        (RebootStatus.CANCELLED, RemovalReason.CANCELLED, True),
        (RebootStatus.QUEUED, RemovalReason.CANCELLED, False),
        (RebootStatus.DRAINING, RemovalReason.NOT_IN_CLUSTER, True),
        (RebootStatus.QUEUED, RemovalReason.DELETED, False),
    ],
)
def test_reboot_removal(status: RebootStatus, reason: RemovalReason, allowed: bool) -> None:
    queue, index = reboot_entry_in(status)
    if allowed:
        queue.remove(index, reason, at(9))
        assert queue.entries() == ()
    else:
        with pytest.raises(TransitionError):
            queue.remove(index, reason, at(9))
        assert len(queue.entries()) == 1


def test_reboot_queue_entries_keys_and_validation() -> None:
    queue = RebootQueue.create(T0)
    assert queue.etcd_keys() == {
        "reboots/disabled": "false",
        "reboots/write-index": "0",
        "reboots/running": "false",
    }
    assert [queue.add(a, at(1)) for a in ("10.0.0.12", "10.0.0.13")] == [0, 1]
    with pytest.raises(HistoryError, match="not a node"):
        queue.add("10.9.9.9", at(2), known_nodes={"10.0.0.12"})
    with pytest.raises(HistoryError, match="address"):
        queue.add("", at(2))
    with pytest.raises(HistoryError, match="no entry 5"):
        queue.start_drain(5, at(2))
    with pytest.raises(HistoryError, match="node cannot change"):
        queue.update(RebootQueueEntry(index=0, node="10.0.0.99"), at(2))
    assert not queue.update(queue.entry(0), at(2))
    assert queue.disable(at(3))
    assert not queue.disable(at(4))
    assert queue.entries()[1] == RebootQueueEntry(index=1, node="10.0.0.13")
    keys = queue.etcd_keys()
    assert keys["reboots/disabled"] == "true"
    assert keys["reboots/running"] == "false"
    assert keys["reboots/write-index"] == "2"
    assert keys["reboots/data/0000000000000001"] == (
        '{"index":"1","node":"10.0.0.13","status":"queued",'
        '"last_transition_time":"0001-01-01T00:00:00Z","drain_backoff_count":0,'
        '"drain_backoff_expire":"0001-01-01T00:00:00Z"}'
    )
    assert queue.enable(at(5))
    assert queue.etcd_keys()["reboots/running"] == "true"
    assert refold(queue) == queue


# ---------------------------------------------------------------------------
# Repair queue (§F.2)
# ---------------------------------------------------------------------------

ALL_REPAIR = list(RepairState)


def as_state(entry: RepairQueueEntry, state: RepairState, step: int) -> RepairQueueEntry:
    if state.value.startswith("processing/"):
        return attrs.evolve(
            entry,
            status=RepairStatus.PROCESSING,
            step_status=RepairStepStatus(state.value.split("/")[1]),
            step=step,
        )
    return attrs.evolve(entry, status=RepairStatus(state.value), step=step)


def repair_entry_in(state: RepairState) -> tuple[RepairQueue, int]:
    queue = RepairQueue.create(T0)
    index = queue.add("reboot", "qemu", "10.0.0.12", at(1))
    if state is not RepairState.QUEUED:
        entry = as_state(queue.entry(index), state, 0)
        queue.update(attrs.evolve(entry, last_transition_time=at(2)), at(2))
    return queue, index


@pytest.mark.parametrize(("before", "after"), list(itertools.product(ALL_REPAIR, ALL_REPAIR)))
@pytest.mark.parametrize("step_change", [0, 1])
def test_repair_transitions_follow_f2(
    before: RepairState, after: RepairState, step_change: int
) -> None:
    queue, index = repair_entry_in(before)
    entry = queue.entry(index)
    backoff = (before, after) == (RepairState.DRAINING, RepairState.WAITING)
    moved = attrs.evolve(
        as_state(entry, after, entry.step + step_change),
        last_transition_time=at(10),
        drain_backoff_count=entry.drain_backoff_count + (1 if backoff else 0),
    )
    version = queue.version
    steps = REPAIR_TRANSITIONS.get((before, after))
    if steps is not None and step_change in steps:
        assert queue.update(moved, at(10))
        assert queue.entry(index) == moved
    else:
        with pytest.raises(TransitionError):
            queue.update(moved, at(10))
        assert queue.version == version
        assert queue.entry(index) == entry


def test_f2_any_unfinished_entry_can_succeed() -> None:
    for state in (RepairState.QUEUED, RepairState.WAITING, RepairState.DRAINING):
        assert (state, RepairState.SUCCEEDED) in REPAIR_TRANSITIONS
    assert (RepairState.WATCHING, RepairState.SUCCEEDED) in REPAIR_TRANSITIONS
    assert not any(
        before in (RepairState.SUCCEEDED, RepairState.FAILED) for before, _ in REPAIR_TRANSITIONS
    )


def test_repair_delete_and_dequeue() -> None:
    queue, index = repair_entry_in(RepairState.SUCCEEDED)
    with pytest.raises(TransitionError, match="marked deleted"):
        queue.remove(index, at(5))
    assert queue.mark_deleted(index, at(5))
    assert not queue.mark_deleted(index, at(6))
    # The engine's writes do not carry `deleted`.
    assert not queue.update(attrs.evolve(queue.entry(index), deleted=False), at(7))
    assert queue.entry(index).deleted
    queue.remove(index, at(8))
    assert queue.entries() == ()
    assert queue.etcd_keys() == {"repairs/disabled": "false", "repairs/write-index": "1"}
    assert refold(queue) == queue


def test_repair_add_validation_and_nodenames() -> None:
    cluster = attrs.evolve(
        small_cluster(),
        nodes=(Node(address="10.0.0.12", hostname="worker-1"),),
        repair=Repair(
            repair_procedures=(
                RepairProcedure(
                    machine_types=("qemu",),
                    repair_operations=(
                        RepairOperation(operation="reboot", repair_steps=(RepairStep(),)),
                    ),
                ),
            )
        ),
    )
    queue = RepairQueue.create(T0, enabled=False)
    with pytest.raises(HistoryError, match="no repair operation"):
        queue.add("wipe", "qemu", "10.0.0.12", at(1), cluster=cluster)
    with pytest.raises(HistoryError, match="machine type"):
        queue.add("reboot", "", "10.0.0.12", at(1))
    index = queue.add("reboot", "qemu", "10.0.0.12", at(1), serial="abc", cluster=cluster)
    assert queue.entry(index, cluster).nodename == "worker-1"
    assert queue.entry(index).nodename == ""
    with pytest.raises(HistoryError, match="serial cannot change"):
        queue.update(attrs.evolve(queue.entry(index), serial="x"), at(2))
    assert queue.etcd_keys()["repairs/disabled"] == "true"


# ---------------------------------------------------------------------------
# Leadership
# ---------------------------------------------------------------------------


def test_leadership_terms() -> None:
    leadership = Leadership.create(T0)
    assert leadership.current() is None
    assert leadership.start_term("host1", at(1), lease="694d7b8c1a2f0e01") == 1
    assert leadership.etcd_keys() == {"leader/694d7b8c1a2f0e01": "host1"}
    with pytest.raises(TransitionError, match="term 1 is open"):
        leadership.end_term(2, "resigned", at(2))
    leadership.end_term(1, "resigned", at(2))
    with pytest.raises(TransitionError, match="no term is open"):
        leadership.end_term(1, "resigned", at(3))
    assert leadership.start_term("host2", at(3)) == 2
    assert leadership.start_term("host1", at(4)) == 3  # host2 vanished
    terms = leadership.history()
    assert [(t.term, t.leader, t.end_reason) for t in terms] == [
        (1, "host1", "resigned"),
        (2, "host2", "superseded"),
        (3, "host1", ""),
    ]
    assert terms[2].is_open
    assert not terms[1].is_open
    term_at = leadership.term_at(at(3))
    assert term_at is not None
    assert term_at.leader == "host2"
    assert leadership.term_at(T0) is None
    with pytest.raises(HistoryError, match="leader"):
        leadership.start_term("", at(5))
    assert refold(leadership) == leadership


# ---------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------


def test_should_record_ops_and_phase_changes() -> None:
    completed = Decision(Phase.COMPLETED)
    assert should_record(None, completed)
    assert not should_record(Phase.COMPLETED, completed)
    assert should_record(Phase.K8S_MAINTAIN, completed)
    assert should_record("completed", Decision(Phase.ETCD_WAIT))
    cluster = small_cluster()
    status = ClusterStatus(
        config_version="2",
        nodes=FrozenDict({n.address: NodeStatus(ssh_connected=True) for n in cluster.nodes}),
    )
    ops = decide(DecisionInputs(cluster=cluster, status=status))
    assert ops.phase is Phase.RIVERS
    assert ops.operations
    assert should_record(Phase.RIVERS, ops)


def test_observation_snapshot_delta_unchanged() -> None:
    status = ClusterStatus(config_version="2")
    first, cursor = encode_observation(None, status)
    assert isinstance(first, ObservationSnapshot)
    assert first.seq == 1
    assert first.doc == status_to_json(status)
    same, after = encode_observation(cursor, ClusterStatus(config_version="2"))
    assert same == ObservationUnchanged(1)
    assert after is cursor
    changed = attrs.evolve(status, nodes=FrozenDict({"10.0.0.11": NodeStatus(ssh_connected=True)}))
    delta, cursor2 = encode_observation(cursor, changed, ObservationPolicy(max_delta_ratio=10))
    assert isinstance(delta, ObservationDelta)
    assert delta.seq == 2
    assert apply_delta(first.doc, delta.ops) == status_to_json(changed)
    assert cursor2.deltas == 1
    assert cursor2.delta_bytes == len(compact_json(delta.ops))


def test_snapshot_policy() -> None:
    base = {"nodes": {f"n{i}": {"up": True, "pad": "x" * 50} for i in range(20)}}
    _, cursor = encode_observation_doc(None, base)

    def flip(doc: dict[str, Any], i: int) -> dict[str, Any]:
        nodes = dict(doc["nodes"])
        nodes[f"n{i}"] = {**nodes[f"n{i}"], "up": not nodes[f"n{i}"]["up"]}
        return {"nodes": nodes}

    by_count = ObservationPolicy(max_deltas=2, max_delta_ratio=10)
    doc, kinds = base, []
    c = cursor
    for i in range(5):
        doc = flip(doc, i)
        encoding, c = encode_observation_doc(c, doc, by_count)
        kinds.append(type(encoding).__name__)
    assert kinds == [
        "ObservationDelta",
        "ObservationDelta",
        "ObservationSnapshot",
        "ObservationDelta",
        "ObservationDelta",
    ]
    by_size = ObservationPolicy(max_deltas=100, max_delta_ratio=0.05)
    delta_size = len(compact_json(diff_json(base, flip(base, 0))))
    room = int(0.05 * cursor.snapshot_bytes) // delta_size
    doc, c, kinds = base, cursor, []
    for i in range(room + 1):
        doc = flip(doc, i % 20)
        encoding, c = encode_observation_doc(c, doc, by_size)
        kinds.append(type(encoding).__name__)
    assert kinds == ["ObservationDelta"] * room + ["ObservationSnapshot"]


@pytest.mark.parametrize(
    ("old", "new", "ops"),
    [
        ({"a": 1}, {"a": 2}, [["set", ["a"], 2]]),
        ({"a": 1, "b": 2}, {"a": 1}, [["del", ["b"]]]),
        ({"a": [1, 2, 3]}, {"a": [1, 9, 3]}, [["set", ["a", 1], 9]]),
        ({"a": [1, 2, 3]}, {"a": [1, 3]}, [["splice", ["a"], 1, 1, []]]),
        ({"a": [1, 3]}, {"a": [1, 2, 2, 3]}, [["splice", ["a"], 1, 0, [2, 2]]]),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, [["order", [], ["b", "a"]]]),
        ({"a": 1}, {"a": True}, [["set", ["a"], True]]),
        ({"a": {"x": 1}}, {"a": [1]}, [["set", ["a"], [1]]]),
    ],
)
def test_delta_format(old: dict[str, Any], new: dict[str, Any], ops: list[Any]) -> None:
    assert diff_json(old, new, strict=True) == ops
    rebuilt = apply_delta(old, ops)
    assert compact_json(rebuilt) == compact_json(new)
    roomy = ObservationPolicy(max_delta_ratio=100)
    encoding, _ = encode_observation_doc(encode_observation_doc(None, old)[1], new, roomy)
    assert isinstance(encoding, ObservationDelta)
    assert compact_json(apply_delta(old, encoding.ops)) == compact_json(new)


def test_apply_delta_copies_and_checks() -> None:
    doc = {"a": {"b": [1, 2]}, "c": {"d": 1}}
    out = apply_delta(doc, [["set", ["a", "b", 0], 5], ["splice", ["a", "b"], 2, 0, [3]]])
    assert doc == {"a": {"b": [1, 2]}, "c": {"d": 1}}
    assert out == {"a": {"b": [5, 2, 3]}, "c": {"d": 1}}
    assert out["c"] is doc["c"]
    for bad in (
        [["set", ["x", "y"], 1]],
        [["del", ["nope"]]],
        [["splice", ["a", "b"], 5, 1, []]],
        [["order", ["a"], ["z"]]],
        [["frob", []]],
        [["set", ["a", "b", 7], 1]],
    ):
        with pytest.raises(HistoryError, match="does not apply"):
            apply_delta(doc, bad)


DEFAULT_POLICY = ObservationPolicy()


def converge_history(
    cluster: Cluster, steps: int, *, force: bool, policy: ObservationPolicy = DEFAULT_POLICY
) -> tuple[ClusterConfiguration, list[DecisionRecorded], list[DecisionInputs], list[Decision]]:
    config = ClusterConfiguration.create(T0)
    config.set_spec(cluster, T0)
    config.set_constraints(Constraints(), T0)
    recorder = DecisionRecorder("test", policy)
    events, all_inputs, decisions = [], [], []
    status = ClusterStatus(
        config_version="2",
        nodes=FrozenDict({n.address: NodeStatus(ssh_connected=True) for n in cluster.nodes}),
    )
    for minute in range(steps):
        inputs = DecisionInputs(
            cluster=cluster, status=status, constraints=Constraints(), now=at(minute), seed=minute
        )
        decision = decide(inputs)
        event, recorder = recorder.record(inputs, decision, config.versions(), term=1, force=force)
        if event is not None:
            events.append(event)
            all_inputs.append(inputs)
            decisions.append(decision)
        status = apply_decision(inputs, decision)
    return config, events, all_inputs, decisions


def test_recorder_records_ops_and_phase_changes_and_replays() -> None:
    config, events, inputs, decisions = converge_history(small_cluster(), 15, force=False)
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))
    assert events[-1].phase == "completed"
    assert sum(1 for e in events if e.phase == "completed") == 1
    first = events[0]
    assert (first.originator_id, first.now, first.seed, first.term, first.engine_version) == (
        DECISION_LOG_ID,
        T0,
        0,
        1,
        "test",
    )
    assert first.versions() == config.versions()
    assert first.operations == [[op.name, list(op.targets)] for op in decisions[0].operations]
    replays = list(replay_log(events, config.collect_events(), engine_version="test"))
    assert [r.differences for r in replays] == [()] * len(events)
    assert all(r.identical and r.same_engine for r in replays)
    assert [r.decision for r in replays] == decisions
    assert [r.inputs for r in replays] == inputs


def test_recorder_resumes_where_it_stopped() -> None:
    policy = ObservationPolicy(max_deltas=3)
    _, events, _, _ = converge_history(small_cluster(), 12, force=True, policy=policy)
    kinds = ["-" if e.observation is None else next(iter(e.observation)) for e in events]
    assert "snapshot" in kinds[1:]
    assert "delta" in kinds
    assert "-" in kinds
    last_snapshot = max(i for i, k in enumerate(kinds) if k == "snapshot")
    resumed = DecisionRecorder.resume(events[last_snapshot:], "test", policy)
    full = DecisionRecorder.resume(events, "test", policy)
    for r in (resumed, full):
        assert r.position == len(events)
        assert r.last_phase is Phase(events[-1].phase)
        assert r.cursor is not None
        assert r.cursor.seq == events[-1].observation_seq
    assert resumed.cursor is not None
    assert full.cursor is not None
    assert resumed.cursor.text == full.cursor.text
    assert (resumed.cursor.deltas, resumed.cursor.delta_bytes) == (
        full.cursor.deltas,
        full.cursor.delta_bytes,
    )
    with pytest.raises(HistoryError, match="snapshot"):
        list(observations(events[last_snapshot + 1 :]))
    assert DecisionRecorder.resume([], "test").position == 0


def test_decision_events_survive_the_store_format() -> None:
    _, events, _, _ = converge_history(small_cluster(), 4, force=True)
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    mapper: Mapper[Any] = Mapper(transcoder=transcoder)
    assert [mapper.to_domain_event(mapper.to_stored_event(e)) for e in events] == events


# ---------------------------------------------------------------------------
# Replay
# ---------------------------------------------------------------------------


def test_compare_names_each_difference() -> None:
    config, events, inputs, decisions = converge_history(small_cluster(), 1, force=True)
    event = events[0]
    assert compare(event, decisions[0]) == []
    assert compare(event, Decision(Phase.COMPLETED)) == [
        "phase: recorded rivers, re-derived completed",
        f"operations: recorded {len(event.operations)}, re-derived 0",
        *(
            f"operation {i}: recorded {op[0]} [{', '.join(op[1])}], not re-derived"
            for i, op in enumerate(event.operations, start=1)
        ),
    ]
    other = attrs.evolve(decisions[0], operations=decisions[0].operations[::-1])
    differences = compare(event, other)
    assert differences
    assert all(d.startswith("operation ") for d in differences)
    assert rebuild_inputs(event, config, status_to_json(inputs[0].status)) == inputs[0]


def test_rebuild_inputs_checks_the_configuration_version() -> None:
    config, events, inputs, _ = converge_history(small_cluster(), 1, force=True)
    config.set_constraints(Constraints(control_plane_count=3), at(30))
    with pytest.raises(HistoryError, match="configuration version"):
        rebuild_inputs(events[0], config, status_to_json(inputs[0].status))
    empty = ClusterConfiguration.create(T0)
    bare = dataclasses.replace(events[0], configuration_version=1)
    with pytest.raises(HistoryError, match="no cluster spec"):
        rebuild_inputs(bare, empty, status_to_json(inputs[0].status))


def test_explain_names_the_facts_behind_each_operation() -> None:
    cluster = small_cluster(workers=1)
    status = ClusterStatus(
        config_version="2",
        nodes=FrozenDict({"10.0.0.11": NodeStatus(ssh_connected=True), "10.0.0.12": NodeStatus()}),
    )
    inputs = DecisionInputs(cluster=cluster, status=status, now=T0, seed=5)
    text = explain(inputs, decide(inputs))
    assert text.splitlines()[0] == (
        "Decision at 2024-05-01T12:00:00Z (seed 5): phase rivers, 2 operations."
    )
    assert "1 unreachable" in text
    assert "1. rivers-bootstrap: 10.0.0.11" in text
    assert "10.0.0.11: control plane; rivers stopped; etcd-rivers stopped" in text
    assert "kubelet runtime changed" not in text  # hidden behind "kubelet stopped"
    # An outdated component says why.
    _, _, history_inputs, _ = converge_history(cluster, 12, force=True)
    converged = history_inputs[-1]
    old = attrs.evolve(converged, settings=EngineSettings(images=Images(tools="cke-tools:old")))
    text = explain(old, decide(old))
    assert "rivers outdated (running ghcr.io/cybozu-go/cke-tools:" in text
    assert "expected cke-tools:old" in text


def test_etcd_view_derives_cke_s_keys() -> None:
    config, events, _, _ = converge_history(small_cluster(), 2, force=True)
    counter = RecordCounter.create(T0)
    counter.allocate(at(1))
    record = OperationRecord.register(1, "rivers-bootstrap", ["10.0.0.11"], at(1))
    leadership = Leadership.create(T0)
    leadership.start_term("host1", at(0), lease="abc")
    view = etcd_view(
        config,
        counter,
        record,
        RebootQueue.create(T0),
        RepairQueue.create(T0),
        leadership,
        events[-1],
    )
    assert list(view) == sorted(view)
    assert {
        "cluster",
        "constraints",
        "records",
        "records/0000000000000001",
        "reboots/disabled",
        "repairs/write-index",
        "leader/abc",
        "status",
    } <= set(view)
    assert view["status"] == '{"phase":"etcd-boot","timestamp":"2024-05-01T12:01:00Z"}'
