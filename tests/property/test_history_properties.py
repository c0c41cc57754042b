"""Properties of the event log's domain (``cke_core.history``).

* folding an aggregate's events (through eventsourcing's JSON store format, or
  from a snapshot) rebuilds the aggregate;
* the observation chain (snapshots, deltas, unchanged) rebuilds every
  observed status exactly, byte for byte;
* the queue state machines never take a transition §F does not allow:
  random attempts succeed exactly when §F allows them, and a refused attempt
  changes nothing;
* a recorded history of decisions replays to identical decisions.
"""

from __future__ import annotations

import datetime
from typing import Any

import attrs
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies_decide import scenarios
from strategies_status import cluster_statuses

from cke_core.cluster import Cluster, KubeletParams, Node, Options
from cke_core.constraints import Constraints
from cke_core.frozen import FrozenDict
from cke_core.history import (
    ClusterConfiguration,
    DecisionRecorder,
    HistoryAggregate,
    HistoryError,
    Leadership,
    ObservationPolicy,
    OperationRecord,
    RebootQueue,
    RemovalReason,
    RepairQueue,
    RepairState,
    apply_delta,
    diff_json,
    encode_observation_doc,
    fold,
    observations,
    repair_state,
    replay_log,
)
from cke_core.history.base import compact_json
from cke_core.history.provenance import ObservationDelta, ObservationSnapshot
from cke_core.phases import Phase
from cke_core.queues import (
    UTC,
    RebootQueueEntry,
    RebootStatus,
    RepairQueueEntry,
    RepairStatus,
    RepairStepStatus,
)
from cke_core.render.images import EngineSettings, Images
from cke_core.simulation import apply_decision
from cke_core.status import ClusterStatus, NodeStatus, status_from_json, status_to_json
from cke_core.strategy import Decision, DecisionInputs, decide

T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def mapper() -> Any:
    from eventsourcing.persistence import (
        DatetimeAsISO,
        DecimalAsStr,
        JSONTranscoder,
        Mapper,
        UUIDAsHex,
    )

    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return Mapper(transcoder=transcoder)


def assert_refolds(aggregate: HistoryAggregate) -> None:
    """The events, stored and read back, fold to the aggregate; so does a snapshot."""
    m = mapper()
    snapshot = type(aggregate).Snapshot.take(aggregate)
    events = aggregate.collect_events()
    stored = [m.to_domain_event(m.to_stored_event(e)) for e in events]
    assert stored == events
    assert fold(stored, type(aggregate)) == aggregate
    restored = m.to_domain_event(m.to_stored_event(snapshot))
    assert restored.timestamp == aggregate.modified_on
    assert fold([restored], type(aggregate)) == aggregate


def attempt(action: Any, *args: Any) -> bool:
    """Run ``action(*args)``; False if the domain refused it."""
    try:
        action(*args)
    except HistoryError:
        return False
    return True


# ---------------------------------------------------------------------------
# Folding
# ---------------------------------------------------------------------------

record_moves = st.lists(st.sampled_from(["start", "complete", "cancel"]), max_size=6)


@given(record_moves, st.lists(st.text(max_size=5), max_size=3))
def test_records_refold(moves: list[str], targets: list[str]) -> None:
    record = OperationRecord.register(7, "op", targets, at(0))
    for minute, move in enumerate(moves, start=1):
        if move == "start":
            attempt(record.start_command, f"c{minute}", "t", at(minute))
        elif move == "complete":
            attempt(record.complete, f"info {minute}", at(minute))
        else:
            attempt(record.cancel, f"error {minute}", at(minute))
    assert_refolds(record)


def clusters() -> st.SearchStrategy[Cluster]:
    return st.builds(
        lambda workers, in_place: Cluster(
            name="p",
            nodes=(
                Node(address="10.0.0.11", control_plane=True),
                *(Node(address=f"10.0.0.{12 + i}") for i in range(workers)),
            ),
            service_subnet="10.68.0.0/16",
            options=Options(kubelet=KubeletParams(in_place_update=in_place)),
        ),
        st.integers(0, 3),
        st.booleans(),
    )


configuration_commands = st.lists(
    st.one_of(
        st.tuples(st.just("spec"), clusters()),
        st.tuples(st.just("constraints"), st.integers(1, 5)),
        st.tuples(st.just("settings"), st.integers(1, 20)),
        st.tuples(
            st.just("resource"),
            st.sampled_from(["ConfigMap/a", "ConfigMap/ns/b"]),
            st.dictionaries(st.sampled_from("xyz"), st.integers(0, 3) | st.booleans(), max_size=2),
            st.none() | st.integers(1, 50),
        ),
        st.tuples(st.just("delete"), st.sampled_from(["ConfigMap/a", "ConfigMap/ns/b"])),
    ),
    max_size=12,
)


@given(configuration_commands)
def test_configuration_refolds_and_answers_as_of_any_version(commands: list[Any]) -> None:
    config = ClusterConfiguration.create(at(0))
    seen = [config.versions()]
    for minute, (kind, *args) in enumerate(commands, start=1):
        if kind == "spec":
            config.set_spec(args[0], at(minute))
        elif kind == "constraints":
            config.set_constraints(Constraints(control_plane_count=args[0]), at(minute))
        elif kind == "settings":
            config.set_settings(EngineSettings(max_concurrent_updates=args[0]), at(minute))
        elif kind == "resource":
            config.set_resource(args[0], args[1], at(minute), revision=args[2])
        else:
            config.delete_resource(args[0], at(minute))
        seen.append(config.versions())
    values = (config.cluster(), config.constraints(), config.settings(), config.resources())
    events = list(config.collect_events())
    for versions in seen:
        old = fold(events, ClusterConfiguration, versions.configuration)
        assert old.versions() == versions
    latest = fold(events, ClusterConfiguration)
    assert (latest.cluster(), latest.constraints(), latest.settings(), latest.resources()) == values
    config._pending_events.extend(events)  # put them back for the stored round trip
    assert_refolds(config)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), max_size=10))
def test_leadership_refolds_and_keeps_one_open_term(moves: list[tuple[bool, int]]) -> None:
    leadership = Leadership.create(at(0))
    for minute, (start, who) in enumerate(moves, start=1):
        if start:
            leadership.start_term(f"host{who}", at(minute))
        else:
            attempt(leadership.end_term, who, "resigned", at(minute))
        terms = leadership.history()
        assert [t.term for t in terms] == list(range(1, len(terms) + 1))
        assert all(not t.is_open for t in terms[:-1])
    assert_refolds(leadership)


# ---------------------------------------------------------------------------
# The observation chain
# ---------------------------------------------------------------------------

policies = st.builds(
    ObservationPolicy,
    max_deltas=st.integers(0, 4),
    max_delta_ratio=st.sampled_from([0.0, 0.1, 0.5, 2.0, 100.0]),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(cluster_statuses(), min_size=1, max_size=4),
    st.lists(st.integers(0, 3), min_size=1, max_size=10),
    policies,
)
def test_observation_chain_rebuilds_every_status_exactly(
    pool: list[ClusterStatus], picks: list[int], policy: ObservationPolicy
) -> None:
    statuses = [pool[i % len(pool)] for i in picks]
    recorder = DecisionRecorder("p", policy)
    events = []
    cluster = Cluster(nodes=(Node(address="10.0.0.11"),))
    for minute, status in enumerate(statuses):
        inputs = DecisionInputs(cluster=cluster, status=status, now=at(minute), seed=minute)
        event, recorder = recorder.record(
            inputs,
            Decision(Phase.COMPLETED),
            ClusterConfiguration.create(T0).versions(),
            force=True,
        )
        assert event is not None
        events.append(event)
    rebuilt = [doc for _, doc in observations(events)]
    assert len(rebuilt) == len(statuses)
    for status, doc in zip(statuses, rebuilt, strict=True):
        assert compact_json(doc) == compact_json(status_to_json(status))
        assert status_from_json(doc) == status
    # An unchanged status is stored as nothing; a new one as a snapshot or a delta.
    for before, after, event in zip(statuses, statuses[1:], events[1:], strict=False):
        same = compact_json(status_to_json(before)) == compact_json(status_to_json(after))
        assert (event.observation is None) == same
    # Resuming from the events continues the same chain.
    resumed = DecisionRecorder.resume(events, "p", policy)
    assert resumed.cursor is not None
    assert recorder.cursor is not None
    assert (resumed.position, resumed.cursor.seq, resumed.cursor.text) == (
        recorder.position,
        recorder.cursor.seq,
        recorder.cursor.text,
    )


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2)
    | st.sampled_from([0.5, 1.0])
    | st.text("ab", max_size=2)
)
json_docs = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from("abcd"), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.dictionaries(st.sampled_from("abcd"), json_docs, max_size=4),
    st.dictionaries(st.sampled_from("abcd"), json_docs, max_size=4),
)
def test_deltas_rebuild_documents_exactly(old: dict[str, Any], new: dict[str, Any]) -> None:
    before = compact_json(old)
    strict = diff_json(old, new, strict=True)
    assert compact_json(apply_delta(old, strict)) == compact_json(new)
    assert compact_json(old) == before  # never modified in place
    _, cursor = encode_observation_doc(None, old)
    encoding, after = encode_observation_doc(cursor, new, ObservationPolicy(max_delta_ratio=1000))
    if isinstance(encoding, ObservationDelta):
        assert compact_json(apply_delta(old, encoding.ops)) == compact_json(new)
    elif isinstance(encoding, ObservationSnapshot):
        assert encoding.doc is new
    else:
        assert before == compact_json(new)
    assert after.text == compact_json(new)


# ---------------------------------------------------------------------------
# Queue state machines (§F): an independent statement of what is allowed
# ---------------------------------------------------------------------------

_F1 = {
    ("queued", "draining"),
    ("draining", "queued"),
    ("draining", "rebooting"),
    ("queued", "cancelled"),
    ("draining", "cancelled"),
    ("rebooting", "cancelled"),
}


def f1_allows(old: RebootQueueEntry, new: RebootQueueEntry) -> bool | None:
    """True/False: allowed or not; None: nothing changes (no event)."""
    fields = ("status", "last_transition_time", "drain_backoff_count", "drain_backoff_expire")
    if all(getattr(old, f) == getattr(new, f) for f in fields):
        return None
    backoff_changed = (old.drain_backoff_count, old.drain_backoff_expire) != (
        new.drain_backoff_count,
        new.drain_backoff_expire,
    )
    if old.status == new.status:
        # Only ckecli's reset-backoff: both fields back to zero, nothing else.
        return (
            old.last_transition_time == new.last_transition_time
            and new.drain_backoff_count == 0
            and new.drain_backoff_expire.year == 1
        )
    if (old.status.value, new.status.value) not in _F1:
        return False
    if (old.status, new.status) == (RebootStatus.DRAINING, RebootStatus.QUEUED):
        return new.drain_backoff_count == old.drain_backoff_count + 1
    return not backoff_changed


reboot_attempts = st.lists(
    st.tuples(
        st.sampled_from(["update", "update", "update", "remove", "add"]),
        st.sampled_from(list(RebootStatus)),
        st.booleans() | st.just(True),  # engine-like fields (else random ones)
        st.integers(-1, 2),  # backoff count change, when random
        st.booleans(),  # new last transition time, when random
        st.sampled_from(list(RemovalReason)),
        st.integers(0, 2),  # which entry
    ),
    max_size=25,
)


def reboot_target(
    old: RebootQueueEntry, status: RebootStatus, engine: bool, count: int, touch: bool, minute: int
) -> RebootQueueEntry:
    """The entry an attempt writes: as the engine would (LTT = now, a backoff
    counts one), or with random backoff and time fields."""
    if engine:
        count = 1 if (old.status, status) == (RebootStatus.DRAINING, RebootStatus.QUEUED) else 0
        touch = status != old.status
    return attrs.evolve(
        old,
        status=status,
        last_transition_time=at(minute) if touch else old.last_transition_time,
        drain_backoff_count=max(0, old.drain_backoff_count + count),
        drain_backoff_expire=at(minute + 5) if count > 0 else old.drain_backoff_expire,
    )


@settings(max_examples=150, deadline=None)
@given(reboot_attempts)
def test_reboot_queue_takes_only_f1_transitions(attempts: list[Any]) -> None:
    queue = RebootQueue.create(at(0))
    queue.add("10.0.0.12", at(0))
    for minute, (kind, status, engine, count, touch, reason, which) in enumerate(attempts, start=1):
        indices = [e.index for e in queue.entries()]
        before = (queue.version, dict(queue.entry_docs))
        if kind == "add":
            assert queue.add(f"10.0.0.{20 + minute}", at(minute)) == queue.write_index - 1
            continue
        if not indices:
            continue
        index = indices[which % len(indices)]
        old = queue.entry(index)
        if kind == "remove":
            allowed = {
                RemovalReason.DEQUEUED: old.status is RebootStatus.REBOOTING,
                RemovalReason.CANCELLED: old.status is RebootStatus.CANCELLED,
                RemovalReason.NOT_IN_CLUSTER: True,
                RemovalReason.DELETED: False,
            }[reason]
            done = attempt(queue.remove, index, reason, at(minute))
            assert done == allowed
            if not done:
                assert (queue.version, dict(queue.entry_docs)) == before
            continue
        new = reboot_target(old, status, engine, count, touch, minute)
        expected = f1_allows(old, new)
        done = attempt(queue.update, new, at(minute))
        if expected is None:
            assert done
            assert queue.version == before[0]
        elif expected:
            assert done
            assert queue.entry(index) == new
            assert queue.version == before[0] + 1
        else:
            assert not done
            assert (queue.version, dict(queue.entry_docs)) == before
    for event in queue.collect_events():
        if isinstance(event, RebootQueue.EntryTransitioned):
            assert (event.from_state, event.to_state) in _F1


_F2_STEPS: dict[tuple[str, str], set[int]] = {}
for _before in ("queued", "processing/waiting", "processing/draining"):
    for _after in ("succeeded", "failed"):
        _F2_STEPS[(_before, _after)] = {0}
for _after in ("processing/waiting", "processing/draining", "processing/watching"):
    if _after != "processing/waiting":
        _F2_STEPS[("processing/waiting", _after)] = {0}
    _F2_STEPS[("queued", _after)] = {0}
    _F2_STEPS[("processing/watching", _after)] = {1}  # the next step
_F2_STEPS[("processing/draining", "processing/waiting")] = {0}  # drain backoff
_F2_STEPS[("processing/draining", "processing/watching")] = {0}  # drained: execute
_F2_STEPS[("processing/watching", "succeeded")] = {0}
_F2_STEPS[("processing/watching", "failed")] = {0, 1}


def f2_allows(old: RepairQueueEntry, new: RepairQueueEntry) -> bool | None:
    fields = (
        "status",
        "step",
        "step_status",
        "last_transition_time",
        "drain_backoff_count",
        "drain_backoff_expire",
    )
    if all(getattr(old, f) == getattr(new, f) for f in fields):
        return None
    a, b = repair_state(old).value, repair_state(new).value
    backoff_changed = (old.drain_backoff_count, old.drain_backoff_expire) != (
        new.drain_backoff_count,
        new.drain_backoff_expire,
    )
    only_backoff = all(
        getattr(old, f) == getattr(new, f) for f in fields if not f.startswith("drain_backoff")
    )
    if a == b and only_backoff and backoff_changed:
        return new.drain_backoff_count == 0 and new.drain_backoff_expire.year == 1
    steps = _F2_STEPS.get((a, b))
    if steps is None or new.step - old.step not in steps:
        return False
    if (a, b) == ("processing/draining", "processing/waiting"):
        return new.drain_backoff_count == old.drain_backoff_count + 1
    return not backoff_changed


def repair_entry(state: RepairState, base: RepairQueueEntry, step: int) -> RepairQueueEntry:
    if state.value.startswith("processing/"):
        return attrs.evolve(
            base,
            status=RepairStatus.PROCESSING,
            step_status=RepairStepStatus(state.value.split("/")[1]),
            step=step,
        )
    return attrs.evolve(base, status=RepairStatus(state.value), step=step)


repair_attempts = st.lists(
    st.tuples(
        st.sampled_from(["update", "update", "update", "update", "delete", "remove", "reset"]),
        st.sampled_from(list(RepairState)),
        st.booleans() | st.just(True),  # engine-like fields (else random ones)
        st.integers(-1, 2),  # step change
        st.integers(-1, 1),  # backoff count change, when random
        st.booleans(),  # new last transition time, when random
        st.booleans(),  # step status changed while queued/finished
    ),
    max_size=25,
)


def repair_target(
    old: RepairQueueEntry,
    state: RepairState,
    engine: bool,
    step: int,
    count: int,
    touch: bool,
    odd: bool,
    minute: int,
) -> RepairQueueEntry:
    before = repair_state(old)
    if engine:
        watching = before is RepairState.WATCHING
        step = 1 if watching and state.value.startswith("processing/") else min(step, 1) * watching
        count = 1 if (before, state) == (RepairState.DRAINING, RepairState.WAITING) else 0
        touch, odd = True, False
    new = repair_entry(state, old, max(0, old.step + step))
    if odd and not new.is_processing:
        new = attrs.evolve(new, step_status=RepairStepStatus.DRAINING)
    return attrs.evolve(
        new,
        last_transition_time=at(minute) if touch else old.last_transition_time,
        drain_backoff_count=max(0, old.drain_backoff_count + count),
        drain_backoff_expire=at(minute + 5) if count > 0 else old.drain_backoff_expire,
    )


@settings(max_examples=150, deadline=None)
@given(repair_attempts)
def test_repair_queue_takes_only_f2_transitions(attempts: list[Any]) -> None:
    queue = RepairQueue.create(at(0))
    index = queue.add("reboot", "qemu", "10.0.0.12", at(0))
    for minute, (kind, state, engine, step, count, touch, odd) in enumerate(attempts, start=1):
        if not queue.entry_docs:
            break
        old = queue.entry(index)
        before = (queue.version, dict(queue.entry_docs))
        if kind == "delete":
            assert attempt(queue.mark_deleted, index, at(minute))
            assert queue.entry(index).deleted
            continue
        if kind == "remove":
            assert attempt(queue.remove, index, at(minute)) == old.deleted
            continue
        if kind == "reset":
            assert attempt(queue.reset_backoff, index, at(minute))
            assert queue.entry(index).drain_backoff_count == 0
            continue
        new = repair_target(old, state, engine, step, count, touch, odd, minute)
        expected = f2_allows(old, new)
        done = attempt(queue.update, new, at(minute))
        if expected is None:
            assert done
            assert queue.version == before[0]
        elif expected:
            assert done, (repair_state(old), repair_state(new), old, new)
            assert queue.entry(index) == attrs.evolve(new, deleted=old.deleted)
        else:
            assert not done, (repair_state(old), repair_state(new), old, new)
            assert (queue.version, dict(queue.entry_docs)) == before
    for event in queue.collect_events():
        if isinstance(event, RepairQueue.EntryTransitioned):
            assert (event.from_state, event.to_state) in _F2_STEPS


# ---------------------------------------------------------------------------
# Replay
# ---------------------------------------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    control_planes = draw(st.integers(1, 3))
    workers = draw(st.integers(0, 3))
    nodes = tuple(
        Node(address=f"10.0.0.{11 + i}", control_plane=i < control_planes)
        for i in range(control_planes + workers)
    )
    return {
        "cluster": Cluster(
            name="replay",
            nodes=nodes,
            service_subnet="10.68.0.0/16",
            dns_servers=("8.8.8.8",),
        ),
        "steps": draw(st.integers(3, 22)),
        "spec_change": draw(st.none() | st.integers(0, 20)),
        "image_change": draw(st.none() | st.integers(0, 20)),
        "outage": draw(st.none() | st.tuples(st.integers(0, 20), st.integers(0, 4))),
        "force": draw(st.booleans()),
        "policy": draw(policies),
        "seed": draw(st.integers(0, 2**40)),
    }


@settings(max_examples=25, deadline=None)
@given(histories())
def test_a_recorded_history_replays_to_identical_decisions(h: dict[str, Any]) -> None:
    cluster: Cluster = h["cluster"]
    config = ClusterConfiguration.create(at(0))
    config.set_spec(cluster, at(0))
    config.set_constraints(Constraints(control_plane_count=len(cluster.control_planes)), at(0))
    recorder = DecisionRecorder("p", h["policy"])
    status = ClusterStatus(
        config_version="2",
        nodes=FrozenDict({n.address: NodeStatus(ssh_connected=True) for n in cluster.nodes}),
    )
    recorded: list[tuple[Any, DecisionInputs, Decision]] = []
    for minute in range(h["steps"]):
        if minute == h["spec_change"]:
            extra = KubeletParams(extra_args=("--v=3",))
            config.set_spec(
                attrs.evolve(config.cluster(), options=Options(kubelet=extra)), at(minute)
            )
        if minute == h["image_change"]:
            config.set_settings(EngineSettings(images=Images(tools="cke-tools:next")), at(minute))
        observed = status
        if h["outage"] is not None and h["outage"][0] <= minute < h["outage"][0] + 3:
            lost = cluster.nodes[h["outage"][1] % len(cluster.nodes)].address
            observed = attrs.evolve(status, nodes=status.nodes.set(lost, NodeStatus()))
        current = config.cluster()
        constraints = config.constraints()
        assert current is not None
        assert constraints is not None
        inputs = DecisionInputs(
            cluster=current,
            status=observed,
            constraints=constraints,
            resources=config.resources(),
            settings=config.settings(),
            now=at(minute),
            seed=(h["seed"] + minute) % 2**48,
        )
        decision = decide(inputs)
        event, recorder = recorder.record(inputs, decision, config.versions(), force=h["force"])
        if event is not None:
            recorded.append((event, inputs, decision))
        status = apply_decision(inputs, decision)
    assume(recorded)
    replays = list(replay_log([e for e, _, _ in recorded], config.collect_events()))
    assert len(replays) == len(recorded)
    for replay, (event, inputs, decision) in zip(replays, recorded, strict=True):
        assert replay.event is event
        assert replay.differences == ()
        assert replay.inputs == inputs
        assert replay.decision == decision


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_any_scenario_decision_replays(scenario: Any) -> None:
    inputs: DecisionInputs = scenario.inputs
    config = ClusterConfiguration.create(inputs.now)
    config.set_spec(inputs.cluster, inputs.now)
    config.set_constraints(inputs.constraints, inputs.now)
    config.set_settings(inputs.settings, inputs.now)
    for resource in inputs.resources:
        config.set_resource(resource.key, resource.document, inputs.now, revision=resource.revision)
    decision = decide(inputs)
    event, _ = DecisionRecorder("p").record(inputs, decision, config.versions())
    assert event is not None
    (replay,) = replay_log([event], config.collect_events())
    assert replay.inputs == inputs
    assert replay.differences == ()
    assert replay.decision == decision
