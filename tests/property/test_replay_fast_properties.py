"""The fast replay path gives exactly what the plain path gives.

* ``StatusRebuilder`` (parts remembered by identity, by content and by field
  values) returns, for every observation of a chain stored and read back
  through eventsourcing's store format, a status equal to what
  ``status_from_json`` makes of the same document, and refuses exactly the
  documents it refuses, with the same problems;
* equal parts come back as the same object (what ``decide``'s memory uses);
* ``FastJSONTranscoder`` decodes every stored state exactly as eventsourcing's
  ``JSONTranscoder`` does, types included;
* ``content_key`` names exactly one JSON value: equal keys, equal documents
  (types and key order included);
* ``ConfigurationFolder`` gives, for any configuration version asked in any
  order, the values the aggregate folded to that version gives.
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import json
import uuid
from typing import Any

import attrs
import pytest
from cke_adapters.eventlog.replaying import ConfigurationFolder, StatusRebuilder, content_key
from cke_adapters.eventlog.transcoder import FastJSONTranscoder
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    Transcoder,
    UUIDAsHex,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies_status import cluster_statuses, kubernetes_nodes, node_statuses

from cke_core.cluster import Cluster, Node
from cke_core.constraints import Constraints
from cke_core.frozen import FrozenDict
from cke_core.history import (
    ClusterConfiguration,
    DecisionRecorder,
    ObservationPolicy,
    configuration_at,
    observations,
)
from cke_core.phases import Phase
from cke_core.problems import ConfigError
from cke_core.render.images import EngineSettings, Images
from cke_core.status import ClusterStatus, status_from_json, status_to_json
from cke_core.strategy import Decision, DecisionInputs
from cke_core.testing import fixture_cluster
from cke_core.timefmt import UTC

T0 = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


def stored_and_read_back(events: list[Any], transcoder: Transcoder) -> list[Any]:
    """The events as a replay reads them: encoded as the store keeps them and
    decoded again (fresh documents; deltas share what they do not touch)."""
    writer = Mapper(transcoder=registered(JSONTranscoder()))
    reader = Mapper(transcoder=transcoder)
    return [reader.to_domain_event(writer.to_stored_event(e)) for e in events]


# ---------------------------------------------------------------------------
# Status chains
# ---------------------------------------------------------------------------


@st.composite
def status_chains(draw: st.DrawFn) -> list[ClusterStatus]:
    """Consecutive observations, each the previous one with a few parts
    replaced (a node, Kubernetes, one of its Node objects, the queues) by
    values from small pools, so parts change, come back and stay."""
    first = draw(cluster_statuses())
    node_pool = draw(st.lists(node_statuses(), min_size=1, max_size=3))
    k8s_node_pool = draw(st.lists(kubernetes_nodes(), min_size=1, max_size=3))
    others = draw(st.lists(cluster_statuses(), min_size=1, max_size=2))
    steps = draw(
        st.lists(
            st.tuples(st.integers(0, 5), st.integers(0, 20), st.integers(0, 20)),
            min_size=1,
            max_size=8,
        )
    )
    chain = [first]
    status = first
    for kind, a, b in steps:
        if kind == 0 and status.nodes:
            address = sorted(status.nodes)[a % len(status.nodes)]
            node = node_pool[b % len(node_pool)]
            status = attrs.evolve(status, nodes=status.nodes.set(address, node))
        elif kind == 1:
            status = attrs.evolve(status, kubernetes=others[a % len(others)].kubernetes)
        elif kind == 2 and status.kubernetes.nodes:
            items = list(status.kubernetes.nodes)
            items[a % len(items)] = k8s_node_pool[b % len(k8s_node_pool)]
            k8s = attrs.evolve(status.kubernetes, nodes=tuple(items))
            status = attrs.evolve(status, kubernetes=k8s)
        elif kind == 3:
            other = others[a % len(others)]
            status = attrs.evolve(
                status, reboot_queue=other.reboot_queue, repair_queue=other.repair_queue
            )
        elif kind == 4:
            status = chain[a % len(chain)]  # back to an earlier observation
        # kind 5: unchanged
        chain.append(status)
    return chain


policies = st.builds(
    ObservationPolicy,
    max_deltas=st.integers(0, 6),
    max_delta_ratio=st.sampled_from([0.0, 0.5, 100.0]),
)


def recorded(chain: list[ClusterStatus], policy: ObservationPolicy) -> list[Any]:
    recorder = DecisionRecorder("p", policy)
    cluster = Cluster(nodes=(Node(address="10.0.0.11"),))
    events = []
    for minute, status in enumerate(chain):
        inputs = DecisionInputs(
            cluster=cluster,
            status=status,
            now=T0 + datetime.timedelta(minutes=minute),
            seed=minute,
        )
        event, recorder = recorder.record(
            inputs,
            Decision(Phase.COMPLETED),
            ClusterConfiguration.create(T0).versions(),
            force=True,
        )
        assert event is not None
        events.append(event)
    return events


@settings(max_examples=40, deadline=None)
@given(status_chains(), policies)
def test_rebuilt_statuses_equal_status_from_json(
    chain: list[ClusterStatus], policy: ObservationPolicy
) -> None:
    events = stored_and_read_back(recorded(chain, policy), registered(FastJSONTranscoder()))
    rebuilder = StatusRebuilder()
    forgetful = StatusRebuilder(slack=0)  # remembers no more than the current document
    rebuilt = []
    for (_, doc), status in zip(observations(events), chain, strict=True):
        fast = rebuilder.status(doc)
        assert fast == status_from_json(doc)
        assert fast == status
        assert forgetful.status(doc) == status
        nodes = {a: (content_key(d), fast.nodes[a]) for a, d in doc["status"]["nodes"].items()}
        rebuilt.append(nodes)
    # Node documents with the same content give one object, within a document
    # and from one document to the next (what decide's memory recognises).
    for before, after in itertools.pairwise(rebuilt):
        for address, (key, node) in after.items():
            if address in before and before[address][0] == key:
                assert before[address][1] is node
    for nodes in rebuilt:
        for key_a, a in nodes.values():
            for key_b, b in nodes.values():
                assert (a is b) == (key_a == key_b)


@settings(max_examples=60, deadline=None)
@given(cluster_statuses(), st.data())
def test_refused_documents_are_refused_alike(status: ClusterStatus, data: st.DataObject) -> None:
    """A broken document (an unknown key, a mistyped value, a dangling queue
    index) gives the same ConfigError from both paths, also after a good one."""
    good = status_to_json(status)
    body = json.loads(json.dumps(good["status"]))
    breakage = data.draw(st.sampled_from(["key", "type", "index", "node", "top"]))
    if breakage == "key":
        body["kubernetes"]["frob"] = 1
    elif breakage == "type":
        body["etcd"]["is_healthy"] = "yes"
    elif breakage == "index":
        body["reboot_queue"]["next_candidates"] = [999_999]
    elif breakage == "node":
        body["nodes"]["10.9.9.9"] = {"ssh_connected": 1}
    else:
        body["extra"] = {}
    bad = {**good, "status": body}
    with pytest.raises(ConfigError) as plain:
        status_from_json(bad)
    rebuilder = StatusRebuilder()
    assert rebuilder.status(json.loads(json.dumps(good))) == status
    with pytest.raises(ConfigError) as fast:
        rebuilder.status(bad)
    assert fast.value.problems == plain.value.problems
    assert rebuilder.status(json.loads(json.dumps(good))) == status


# ---------------------------------------------------------------------------
# The transcoder and content keys
# ---------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([0.5, 1.0, -0.0])
    | st.text(max_size=4)
    | st.sampled_from(["_type_", '"_type_"', "_data_", "\\u005f", "é", "\x01"])
)
typed = (
    st.uuids()
    | st.datetimes(timezones=st.just(datetime.UTC))
    | st.decimals(allow_nan=False, allow_infinity=False, places=2)
)
keys = st.sampled_from(["a", "b", "_type_", "_data_", "\x02", "é"])
values = st.recursive(
    scalars | typed,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=10,
)


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types everywhere (``1 == 1.0 == True`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return repr(a) == repr(b)  # -0.0 is not 0.0
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys | st.text(max_size=3), values, max_size=5))
def test_fast_transcoder_decodes_like_the_library(state: dict[str, Any]) -> None:
    library = registered(JSONTranscoder())
    data = library.encode(state)
    fast = registered(FastJSONTranscoder())
    try:
        expected = library.decode(data)
    except Exception as exc:  # e.g. {"_type_": null, "_data_": 1}: no such transcoding
        with pytest.raises(type(exc)):
            fast.decode(data)
        return
    assert same(fast.decode(data), expected)


@given(st.sampled_from([uuid.uuid4(), datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)]))
def test_fast_transcoder_converts_top_level_values(value: Any) -> None:
    library = registered(JSONTranscoder())
    data = library.encode({"timestamp": value, "n": decimal.Decimal("1.5")})
    decoded = registered(FastJSONTranscoder()).decode(data)
    assert same(decoded, library.decode(data))
    assert decoded["timestamp"] == value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from([1.0, -0.0]) | st.text("ab1"),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from("ab"), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(json_values, json_values)
def test_content_keys_name_one_value(a: Any, b: Any) -> None:
    assert content_key(a) is not None
    assert (content_key(a) == content_key(b)) == same(a, b)
    assert content_key(a) == content_key(json.loads(json.dumps(a)))


def test_content_keys_tell_apart_what_equality_does_not() -> None:
    assert content_key(1) != content_key(True) != content_key(1.0)
    assert content_key({"a": 1, "b": 2}) != content_key({"b": 2, "a": 1})
    assert content_key([1]) != content_key({"0": 1})
    assert content_key(FrozenDict({"a": 1})) is None  # not JSON: not remembered


# ---------------------------------------------------------------------------
# The configuration
# ---------------------------------------------------------------------------


@st.composite
def configuration_histories(draw: st.DrawFn) -> list[Any]:
    """A configuration changed part by part: labels of the test cluster's
    nodes, the constraints, the engine settings, user resources."""
    config = ClusterConfiguration.create(T0)
    cluster = fixture_cluster()
    config.set_spec(cluster, T0)
    for step in range(draw(st.integers(1, 8))):
        when = T0 + datetime.timedelta(minutes=step + 1)
        kind = draw(st.sampled_from(["spec", "constraints", "settings", "resource", "delete"]))
        if kind == "spec":
            index = draw(st.integers(0, len(cluster.nodes) - 1))
            node = cluster.nodes[index]
            labels = node.labels.set("generation", str(draw(st.integers(0, 2))))
            nodes = list(cluster.nodes)
            nodes[index] = attrs.evolve(node, labels=labels)
            cluster = attrs.evolve(cluster, nodes=tuple(nodes))
            config.set_spec(cluster, when)
        elif kind == "constraints":
            config.set_constraints(
                Constraints(control_plane_count=3, minimum_workers_rate=draw(st.integers(0, 100))),
                when,
            )
        elif kind == "settings":
            tools = draw(st.sampled_from(["cke-tools:1", "cke-tools:2"]))
            config.set_settings(EngineSettings(images=Images(tools=tools)), when)
        elif kind == "resource":
            name = draw(st.sampled_from(["a", "b"]))
            manifest = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default"},
                "data": {"n": str(step)},
            }
            config.set_resource(f"ConfigMap/default/{name}", manifest, when, revision=step + 1)
        else:
            config.delete_resource(draw(st.sampled_from(["ConfigMap/default/a"])), when)
    return list(config.collect_events())


@settings(max_examples=60, deadline=None)
@given(configuration_histories(), st.data())
def test_configuration_folder_gives_the_values_of_each_version(
    events: list[Any], data: st.DataObject
) -> None:
    """Asked for versions in any order (forward, repeated, backward), the
    folder gives what the aggregate folded to that version gives."""
    stored = stored_and_read_back(events, registered(FastJSONTranscoder()))
    folder = ConfigurationFolder(stored)
    versions = data.draw(st.lists(st.integers(2, len(events)), min_size=1, max_size=10))
    for version in versions:
        expected = configuration_at(stored, version)
        configured = folder._at(version)
        assert configured.configuration.version == version
        assert configured.cluster == expected.cluster()
        assert configured.constraints == (expected.constraints() or Constraints())
        assert configured.resources == expected.resources()
        assert configured.settings == expected.settings()
