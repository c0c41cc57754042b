"""Property: every ClusterStatus survives its versioned JSON form unchanged."""

from __future__ import annotations

import json

from hypothesis import given, settings
from strategies_status import cluster_statuses, reboot_queue_entries, repair_queue_entries

from cke_core import codec
from cke_core.queues import RebootQueueEntry, RepairQueueEntry
from cke_core.status import ClusterStatus, status_from_json, status_to_json


@settings(max_examples=60, deadline=None)
@given(cluster_statuses())
def test_status_round_trips_through_json_text(status: ClusterStatus) -> None:
    doc = json.loads(json.dumps(status_to_json(status)))
    assert status_from_json(doc) == status
    # Writing what was read gives the same document: the form is canonical.
    assert status_to_json(status_from_json(doc)) == doc


@settings(deadline=None)
@given(reboot_queue_entries())
def test_reboot_entry_round_trips_in_cke_form(entry: RebootQueueEntry) -> None:
    raw = json.loads(json.dumps(codec.unstructure(entry)))
    assert isinstance(raw["index"], str)
    value, problems, _ = codec.structure(raw, RebootQueueEntry)
    assert problems == []
    assert value == entry


@settings(deadline=None)
@given(repair_queue_entries())
def test_repair_entry_round_trips_in_cke_form(entry: RepairQueueEntry) -> None:
    raw = json.loads(json.dumps(codec.unstructure(entry)))
    value, problems, _ = codec.structure(raw, RepairQueueEntry)
    assert problems == []
    assert value == entry
