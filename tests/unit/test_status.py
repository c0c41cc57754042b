"""The cluster status model, its queue entries and the versioned JSON form."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any

import attrs
import pytest

from cke_core import codec
from cke_core.cluster import Cluster, Node
from cke_core.fields import wire_name
from cke_core.frozen import FrozenDict
from cke_core.problems import ConfigError
from cke_core.queues import (
    RebootQueueEntry,
    RebootStatus,
    RepairQueueEntry,
    RepairStatus,
    RepairStepStatus,
)
from cke_core.status import (
    STATUS_FORMAT_VERSION,
    ClusterStatus,
    EndpointSlice,
    EndpointSliceEndpoint,
    KubernetesNode,
    KubernetesStatus,
    NodeStatus,
    RebootQueueStatus,
    status_from_json,
    status_to_json,
)
from cke_core.timefmt import UTC, ZERO_TIME, format_rfc3339, parse_rfc3339

DOC = Path(__file__).resolve().parents[2] / "docs" / "status-json.md"


def envelope(status: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {"format": "cke-status", "version": 1, "status": status, **overrides}


def problems_of(doc: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        status_from_json(doc)
    return [str(p) for p in info.value.problems]


def when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


# --- envelope -----------------------------------------------------------------


def test_envelope_of_zero_status() -> None:
    doc = status_to_json(ClusterStatus())
    assert doc["format"] == "cke-status"
    assert doc["version"] == STATUS_FORMAT_VERSION == 1
    status = doc["status"]
    assert status["config_version"] == "1"
    assert status["reboot_queue"]["enabled"] is False
    # Absent Kubernetes objects are left out (null = does not exist).
    assert "master_endpoints" not in status["kubernetes"]
    assert json.loads(json.dumps(doc)) == doc
    assert status_from_json(doc) == ClusterStatus()


def test_empty_status_object_is_the_zero_status() -> None:
    assert status_from_json(envelope({})) == ClusterStatus()


def test_unknown_version_is_rejected() -> None:
    assert problems_of(envelope({}, version=2)) == [
        "version: unsupported version number 2; this reader understands version 1 only"
    ]


@pytest.mark.parametrize("version", [True, "1", 1.0, None])
def test_version_must_be_the_integer_1(version: Any) -> None:
    (problem,) = problems_of(envelope({}, version=version))
    assert problem.startswith("version: ")


def test_missing_version_and_wrong_format() -> None:
    doc = {"format": "cke-cluster", "status": {}}
    assert problems_of(doc) == [
        "format: expected 'cke-status', got string 'cke-cluster'",
        "version: missing; this reader understands version 1",
    ]


def test_envelope_needs_status_and_no_other_keys() -> None:
    assert problems_of({"format": "cke-status", "version": 1, "extra": 1}) == [
        "status: missing",
        "extra: unknown field 'extra'; known fields: format, version, status",
    ]


def test_document_must_be_a_mapping() -> None:
    assert problems_of([]) == ["expected a cke-status document, got a list"]


def test_version_is_checked_before_the_status_is_read() -> None:
    # A future version may have another shape: report the version only.
    assert problems_of(envelope({"renamed": {}}, version=2)) == [
        "version: unsupported version number 2; this reader understands version 1 only"
    ]


# --- structural problems are named by path ------------------------------------


def test_wrong_enum_value_is_a_path_named_problem() -> None:
    doc = envelope({"reboot_queue": {"entries": [{"index": "1", "status": "rebooted"}]}})
    assert problems_of(doc) == [
        "status.reboot_queue.entries[0].status: "
        "expected one of queued, draining, rebooting, cancelled, got 'rebooted'"
    ]


def test_wrong_repair_enums_are_all_reported() -> None:
    entry = {"index": "1", "status": "done", "step_status": 2}
    doc = envelope({"repair_queue": {"entries": [entry]}})
    assert problems_of(doc) == [
        "status.repair_queue.entries[0].status: "
        "expected one of queued, processing, succeeded, failed, got 'done'",
        "status.repair_queue.entries[0].step_status: "
        "expected one of waiting, draining, watching, got number 2",
    ]


def test_problems_everywhere_are_all_reported() -> None:
    doc = envelope(
        {
            "nodes": {"10.0.0.1": {"etcd": {"running": "yes"}, "kubelt": {}}},
            "etcd": {"members": {"a": {"id": "12"}}},
            "kubernetes": {"master_endpoints": {"subsets": [{"addresses": "10.0.0.1"}]}},
        }
    )
    assert problems_of(doc) == [
        "status.nodes[\"10.0.0.1\"].etcd.running: expected true or false, got string 'yes'",
        "status.nodes[\"10.0.0.1\"].kubelt: unknown field 'kubelt'; did you mean 'kubelet'?",
        "status.etcd.members[\"a\"].id: expected an integer, got string '12'",
        "status.kubernetes.master_endpoints.subsets[0].addresses: expected a list, "
        "got string '10.0.0.1'",
    ]


def test_reboot_index_lists_must_name_entries() -> None:
    doc = envelope(
        {
            "reboot_queue": {
                "entries": [{"index": "3", "node": "10.0.0.1"}],
                "next_candidates": [3],
                "drain_completed": [3, 4],
            }
        }
    )
    assert problems_of(doc) == [
        "status.reboot_queue.drain_completed[1]: index 4 is not the index of any reboot_queue entry"
    ]


def test_duplicate_queue_indices_are_rejected() -> None:
    entries = [{"index": "3", "address": "10.0.0.1"}, {"index": "3", "address": "10.0.0.2"}]
    assert problems_of(envelope({"repair_queue": {"entries": entries}})) == [
        "status.repair_queue.entries[1].index: duplicate entry index 3"
    ]


# --- queue entries in CKE's JSON form ------------------------------------------

GO_REBOOT_ENTRY = (
    '{"index":"12","node":"10.0.0.5","status":"draining",'
    '"last_transition_time":"2024-05-01T10:00:00.123456789Z",'
    '"drain_backoff_count":2,"drain_backoff_expire":"0001-01-01T00:00:00Z"}'
)


def test_reads_a_reboot_entry_as_cke_writes_it() -> None:
    value, problems, _ = codec.structure(json.loads(GO_REBOOT_ENTRY), RebootQueueEntry)
    assert problems == []
    assert value == RebootQueueEntry(
        index=12,
        node="10.0.0.5",
        status=RebootStatus.DRAINING,
        last_transition_time=when("2024-05-01T10:00:00.123456+00:00"),
        drain_backoff_count=2,
    )
    assert value.drain_backoff_expire == ZERO_TIME


def test_writes_entries_as_cke_does() -> None:
    entry = RepairQueueEntry(
        index=4,
        address="10.0.0.7",
        status=RepairStatus.PROCESSING,
        step_status=RepairStepStatus.WATCHING,
        last_transition_time=when("2024-05-01T19:00:00+09:00"),
    )
    raw = codec.unstructure(entry)
    assert raw["index"] == "4"
    assert raw["status"] == "processing"
    assert type(raw["status"]) is str
    assert raw["step_status"] == "watching"
    assert raw["last_transition_time"] == "2024-05-01T10:00:00Z"
    assert raw["drain_backoff_expire"] == "0001-01-01T00:00:00Z"
    assert list(raw) == [
        "index",
        "address",
        "nodename",
        "serial",
        "machine_type",
        "operation",
        "status",
        "step",
        "step_status",
        "deleted",
        "last_transition_time",
        "drain_backoff_count",
        "drain_backoff_expire",
    ]


@pytest.mark.parametrize(
    ("index", "got"),
    [(12, "number 12"), ("-1", "string '-1'"), ("0x1", "string '0x1'"), ("", "string ''")],
)
def test_index_must_be_a_decimal_string(index: Any, got: str) -> None:
    _, problems, broken = codec.structure({"index": index, "status": "x"}, RebootQueueEntry)
    assert [str(p) for p in problems] == [
        f'index: expected a decimal integer in a string (as CKE writes "index": "12"), got {got}',
        "status: expected one of queued, draining, rebooting, cancelled, got 'x'",
    ]
    assert broken == ["index", "status"]


# --- times ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00+00:00"),
        ("2024-05-01t10:00:00z", "2024-05-01T10:00:00+00:00"),
        ("2024-05-01T10:00:00.5Z", "2024-05-01T10:00:00.500000+00:00"),
        ("2024-05-01T10:00:00.123456789Z", "2024-05-01T10:00:00.123456+00:00"),
        ("2024-05-01T19:30:00+09:30", "2024-05-01T10:00:00+00:00"),
        ("2024-05-01T00:00:00-02:00", "2024-05-01T02:00:00+00:00"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00+00:00"),
    ],
)
def test_parse_rfc3339(text: str, expected: str) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == when(expected)
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01",
        "2024-05-01T10:00:00",  # no offset
        "2024-05-01 10:00:00Z",  # space separator
        "2024-05-01T10:00Z",  # no seconds
        "2024-13-01T10:00:00Z",  # no 13th month
        "2024-05-01T10:00:00.Z",
        "20240501T100000Z",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "\u0662\u0660\u0662\u0664-05-01T10:00:00Z",  # non-ASCII digits
    ],
)
def test_parse_rfc3339_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_rfc3339(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime.datetime(2024, 5, 1, 10, tzinfo=UTC), "2024-05-01T10:00:00Z"),
        (datetime.datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=UTC), "2024-05-01T10:00:00.25Z"),
        (datetime.datetime(2024, 5, 1, 10, 0, 0, 1, tzinfo=UTC), "2024-05-01T10:00:00.000001Z"),
        (when("2024-05-01T19:00:00+09:00"), "2024-05-01T10:00:00Z"),
        (ZERO_TIME, "0001-01-01T00:00:00Z"),
    ],
)
def test_format_rfc3339(value: datetime.datetime, text: str) -> None:
    assert format_rfc3339(value) == text
    assert parse_rfc3339(text) == value


def test_datetime_round_trip_through_the_status() -> None:
    ltt = datetime.datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    status = ClusterStatus(
        reboot_queue=RebootQueueStatus(
            entries=(RebootQueueEntry(index=1, node="10.0.0.1", last_transition_time=ltt),)
        )
    )
    doc = json.loads(json.dumps(status_to_json(status)))
    (raw,) = doc["status"]["reboot_queue"]["entries"]
    assert raw["last_transition_time"] == "2024-05-01T10:00:00.123456Z"
    assert status_from_json(doc) == status


def test_wrong_time_is_a_path_named_problem() -> None:
    entry = {"index": "1", "drain_backoff_expire": 1714557600}
    assert problems_of(envelope({"reboot_queue": {"entries": [entry]}})) == [
        "status.reboot_queue.entries[0].drain_backoff_expire: "
        "expected an RFC 3339 time string, got number 1714557600"
    ]


def test_times_are_normalised_to_utc_and_must_be_aware() -> None:
    entry = RebootQueueEntry(last_transition_time=when("2024-05-01T19:00:00+09:00"))
    assert entry.last_transition_time.tzinfo is UTC
    with pytest.raises(ValueError, match="naive"):
        RebootQueueEntry(last_transition_time=datetime.datetime(2024, 5, 1))


# --- helpers -------------------------------------------------------------------

NOW = datetime.datetime(2024, 5, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "processing"),
    [
        (RebootStatus.QUEUED, False),
        (RebootStatus.DRAINING, True),
        (RebootStatus.REBOOTING, True),
        (RebootStatus.CANCELLED, False),
    ],
)
def test_reboot_entry_is_processing(status: RebootStatus, processing: bool) -> None:
    assert RebootQueueEntry(status=status).is_processing is processing


def test_reboot_entry_is_drainable_when_queued_and_backoff_over() -> None:
    assert RebootQueueEntry().is_drainable(NOW)  # zero expiry: never backed off
    assert RebootQueueEntry(drain_backoff_expire=NOW).is_drainable(NOW)
    later = NOW + datetime.timedelta(seconds=1)
    assert not RebootQueueEntry(drain_backoff_expire=later).is_drainable(NOW)
    assert not RebootQueueEntry(status=RebootStatus.DRAINING).is_drainable(NOW)


@pytest.mark.parametrize(
    ("status", "finished", "processing"),
    [
        (RepairStatus.QUEUED, False, False),
        (RepairStatus.PROCESSING, False, True),
        (RepairStatus.SUCCEEDED, True, False),
        (RepairStatus.FAILED, True, False),
    ],
)
def test_repair_entry_state(status: RepairStatus, finished: bool, processing: bool) -> None:
    entry = RepairQueueEntry(status=status)
    assert entry.is_finished is finished
    assert entry.is_processing is processing


def test_repair_entry_in_cluster_and_backoff() -> None:
    assert not RepairQueueEntry(address="10.0.0.1").is_in_cluster
    assert RepairQueueEntry(address="10.0.0.1", nodename="n1").is_in_cluster
    later = NOW + datetime.timedelta(seconds=1)
    assert not RepairQueueEntry(drain_backoff_expire=later).backoff_expired(NOW)
    assert RepairQueueEntry(drain_backoff_expire=later).backoff_expired(later)


def test_reboot_queue_resolves_indices_in_order() -> None:
    a = RebootQueueEntry(index=1, node="10.0.0.1")
    b = RebootQueueEntry(index=2, node="10.0.0.2")
    queue = RebootQueueStatus(entries=(a, b), drain_completed=(2, 1))
    assert queue.entries_at(queue.drain_completed) == (b, a)
    assert queue.entries_at([9]) == ()


def test_unobserved_node_is_zero() -> None:
    status = ClusterStatus(nodes=FrozenDict({"10.0.0.1": NodeStatus(ssh_connected=True)}))
    assert status.node("10.0.0.1").ssh_connected
    assert status.node("10.0.0.9") == NodeStatus()


def test_kubernetes_is_ready_needs_more_than_half_ready() -> None:
    cluster = Cluster(nodes=tuple(Node(address=f"10.0.0.{i}") for i in range(4)))
    nodes = tuple(KubernetesNode(name=f"10.0.0.{i}", ready=i < 2) for i in range(4))
    assert not KubernetesStatus(is_control_plane_ready=True, nodes=nodes).is_ready(cluster)
    nodes = tuple(KubernetesNode(name=f"10.0.0.{i}", ready=i < 3) for i in range(4))
    assert KubernetesStatus(is_control_plane_ready=True, nodes=nodes).is_ready(cluster)
    assert not KubernetesStatus(nodes=nodes).is_ready(cluster)
    assert not KubernetesStatus(is_control_plane_ready=True).is_ready(Cluster())


def test_endpoint_slice_ready_keeps_unset_apart_from_false() -> None:
    eps = EndpointSlice(
        endpoints=(
            EndpointSliceEndpoint(addresses=("10.0.0.1",)),
            EndpointSliceEndpoint(addresses=("10.0.0.2",), ready=False),
        )
    )
    status = ClusterStatus(kubernetes=KubernetesStatus(master_endpoint_slice=eps))
    doc = json.loads(json.dumps(status_to_json(status)))
    raw = doc["status"]["kubernetes"]["master_endpoint_slice"]["endpoints"]
    assert raw == [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"], "ready": False}]
    assert status_from_json(doc) == status


# --- the documented example -----------------------------------------------------


def test_documented_example_is_a_valid_status() -> None:
    text = DOC.read_text(encoding="utf-8")
    example = text.split("## Example", 1)[1]
    match = re.search(r"```json\n(.*?)```", example, re.DOTALL)
    assert match is not None
    doc = json.loads(match.group(1))
    status = status_from_json(doc)
    assert status.config_version == "2"
    assert status.etcd.members["10.0.0.11"].id == 12345678901234567890
    (entry,) = status.reboot_queue.entries_at(status.reboot_queue.drain_completed)
    assert entry.node == "10.0.0.12"
    assert entry.status is RebootStatus.DRAINING
    assert status.kubernetes.master_endpoint_slice is None
    # Writing it back and reading it again changes nothing.
    assert status_from_json(json.loads(json.dumps(status_to_json(status)))) == status


def _field_names(cls: type) -> set[str]:
    """Every wire name reachable from ``cls`` through attrs-typed fields."""
    names: set[str] = set()
    stack, seen = [cls], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        attrs.resolve_types(current)
        for field in attrs.fields(current):
            names.add(wire_name(field))
            stack.extend(_classes_in(field.type))
    return names


def _classes_in(annotation: object) -> list[type]:
    if isinstance(annotation, type) and attrs.has(annotation):
        return [annotation]
    return [c for arg in getattr(annotation, "__args__", ()) for c in _classes_in(arg)]


def test_every_field_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z_]+)`", text)) | set(re.findall(r"[{,]\s*([a-z_]+)", text))
    assert _field_names(ClusterStatus) - documented == set()
