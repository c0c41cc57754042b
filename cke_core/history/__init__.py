"""The event log's domain: what CKE keeps in etcd, as events (pure).

CKE keeps its state in etcd keys and the newest 1,000 operation records; here
every change is an event of an eventsourcing aggregate, and what CKE would read
from its keys (§E.1) is derived from them (each aggregate's ``etcd_keys()``):

* ``ClusterConfiguration`` — spec, constraints, user resources, engine
  settings, each versioned (``configuration``);
* ``RecordCounter`` and ``OperationRecord`` — operation records with CKE's
  lifecycle and JSON (``records``);
* ``RebootQueue`` and ``RepairQueue`` — every entry transition of §F, checked
  against its state machine (``queues``);
* ``Leadership`` — leadership terms (``leadership``);
* ``StorageVersion`` — CKE's ``config-version`` (``storage``);
* ``DecisionRecorded`` — each decision with references to its inputs and a
  compact observation chain (``provenance``); ``replay`` re-derives and
  explains decisions.

No event reads the clock: every command takes its time (``at``) and every
aggregate its id (``ids``); see ``base``.
"""

from cke_core.history.base import (
    HistoryAggregate,
    HistoryError,
    TransitionError,
    etcd_view,
    fold,
)
from cke_core.history.configuration import (
    ClusterConfiguration,
    ConfigurationVersions,
    configuration_at,
)
from cke_core.history.ids import (
    CLUSTER_CONFIGURATION_ID,
    DECISION_LOG_ID,
    LEADERSHIP_ID,
    REBOOT_QUEUE_ID,
    RECORD_COUNTER_ID,
    REPAIR_QUEUE_ID,
    STORAGE_VERSION_ID,
    record_id,
)
from cke_core.history.leadership import Leadership, LeadershipTerm
from cke_core.history.provenance import (
    DecisionRecorded,
    DecisionRecorder,
    ObservationCursor,
    ObservationDelta,
    ObservationEncoding,
    ObservationPolicy,
    ObservationSnapshot,
    ObservationUnchanged,
    apply_delta,
    diff_json,
    encode_observation,
    encode_observation_doc,
    observations,
    operations_summary,
    should_record,
)
from cke_core.history.queues import (
    REBOOT_REMOVALS,
    REBOOT_TRANSITIONS,
    REPAIR_TRANSITIONS,
    RebootQueue,
    RemovalReason,
    RepairQueue,
    RepairState,
    repair_state,
)
from cke_core.history.records import OperationRecord, RecordCounter, RecordStatus, record_key
from cke_core.history.replay import Replay, compare, explain, rebuild_inputs, replay_log
from cke_core.history.storage import StorageVersion

__all__ = [
    "CLUSTER_CONFIGURATION_ID",
    "DECISION_LOG_ID",
    "LEADERSHIP_ID",
    "REBOOT_QUEUE_ID",
    "REBOOT_REMOVALS",
    "REBOOT_TRANSITIONS",
    "RECORD_COUNTER_ID",
    "REPAIR_QUEUE_ID",
    "REPAIR_TRANSITIONS",
    "STORAGE_VERSION_ID",
    "ClusterConfiguration",
    "ConfigurationVersions",
    "DecisionRecorded",
    "DecisionRecorder",
    "HistoryAggregate",
    "HistoryError",
    "Leadership",
    "LeadershipTerm",
    "ObservationCursor",
    "ObservationDelta",
    "ObservationEncoding",
    "ObservationPolicy",
    "ObservationSnapshot",
    "ObservationUnchanged",
    "OperationRecord",
    "RebootQueue",
    "RecordCounter",
    "RecordStatus",
    "RemovalReason",
    "RepairQueue",
    "RepairState",
    "Replay",
    "StorageVersion",
    "TransitionError",
    "apply_delta",
    "compare",
    "configuration_at",
    "diff_json",
    "encode_observation",
    "encode_observation_doc",
    "etcd_view",
    "explain",
    "fold",
    "observations",
    "operations_summary",
    "rebuild_inputs",
    "record_id",
    "record_key",
    "repair_state",
    "replay_log",
    "should_record",
]
