"""Cluster constraints (§A.7), stored apart from cluster.yml as in CKE.

CKE keeps constraints under their own etcd key and sets them one at a time
with ``ckecli constraints set NAME VALUE``; the names are hyphenated.
"""

from __future__ import annotations

import attrs

from cke_core.fields import named


@attrs.frozen
class Constraints:
    control_plane_count: int = named("control-plane-count", default=1)
    minimum_workers_rate: int = named("minimum-workers-rate", default=80)
    maximum_unreachable_nodes_for_reboot: int = named(
        "maximum-unreachable-nodes-for-reboot", default=0
    )
    maximum_repair_queue_entries: int = named("maximum-repair-queue-entries", default=0)
    wait_seconds_to_repair_rebooting: int = named("wait-seconds-to-repair-rebooting", default=0)
