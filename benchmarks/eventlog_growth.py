"""How fast the decision log grows: a converged 1,000-node cluster decided once a minute.

The cluster is converged with the simulator (``cke_core.simulation``) from an empty
status, then decided 60 times (one hour at one decision a minute) with ``now`` advancing
and a new seed each time. Each decision goes through ``DecisionRecorder`` (provenance +
observation chain, ``cke_core.history.provenance``) and every event it records is
serialised as an eventsourcing application would store it: the JSON transcoder with
its UUID and datetime transcodings, counting the stored state, the topic, 16 bytes of
originator id and 8 of version. The zlib column is the same with eventsourcing's
``ZlibCompressor``.

Cases:

* steady: nothing changes, only ``now`` and the seed;
* one node changing: one Kubernetes Node's ``volumesInUse`` differs at every decision.

Each case runs with the default policy (record decisions that start operations or
change the phase) and with ``force`` (record every decision, a full audit). Before the
measured hour one decision is recorded to write the first observation snapshot, which is
reported apart (it is written once, then only when the snapshot policy asks for one).

Usage::

    .venv/bin/python benchmarks/eventlog_growth.py            # print the table
    .venv/bin/python benchmarks/eventlog_growth.py --write    # and update docs/benchmarks.md

``--write`` replaces the text between ``<!-- eventlog-growth:begin -->`` and
``<!-- eventlog-growth:end -->`` in ``docs/benchmarks.md`` (appends the section if
missing) and keeps everything else.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from eventsourcing.compressor import ZlibCompressor
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)

from cke_core.cluster import Cluster, Node
from cke_core.history import (
    ClusterConfiguration,
    DecisionRecorded,
    DecisionRecorder,
    ObservationPolicy,
)
from cke_core.queues import UTC
from cke_core.render.images import EngineSettings
from cke_core.simulation import run
from cke_core.status import ClusterStatus, NodeStatus
from cke_core.strategy import DecisionInputs, decide

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- eventlog-growth:begin -->", "<!-- eventlog-growth:end -->"
START = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TARGET = 50 * 1024


def cluster(nodes: int, control_planes: int = 3) -> Cluster:
    return Cluster(
        name="bench",
        nodes=tuple(
            Node(address=f"10.0.{i // 250}.{i % 250 + 1}", control_plane=i < control_planes)
            for i in range(nodes)
        ),
        service_subnet="10.68.0.0/16",
        dns_servers=("8.8.8.8",),
    )


def converged(c: Cluster, settings: EngineSettings) -> ClusterStatus:
    empty = ClusterStatus(
        config_version="2",
        nodes={n.address: NodeStatus(ssh_connected=True) for n in c.nodes},  # type: ignore[arg-type]
    )
    result = run(DecisionInputs(cluster=c, status=empty, settings=settings, now=START), 100)
    if result.decisions[-1].operations:
        raise SystemExit("the simulated cluster did not converge")
    return result.status


def mapper(compress: bool) -> Mapper[Any]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return Mapper(transcoder=transcoder, compressor=ZlibCompressor() if compress else None)


def stored_bytes(event: DecisionRecorded, m: Mapper[Any]) -> int:
    stored = m.to_stored_event(event)
    return len(stored.state) + len(stored.topic) + 16 + 8


@attrs.frozen
class Row:
    case: str
    policy: str
    recorded: int
    snapshots: int
    deltas: int
    unchanged: int
    raw: int
    zlib: int
    first_snapshot: int
    amortised_snapshot: float
    ms_per_decision: float


def measure(
    case: str,
    c: Cluster,
    status: ClusterStatus,
    change: Callable[[ClusterStatus, int], ClusterStatus],
    *,
    force: bool,
    decisions: int,
    policy: ObservationPolicy,
) -> Row:
    settings = EngineSettings(max_concurrent_updates=len(c.nodes))
    config = ClusterConfiguration.create(START)
    config.set_spec(c, START)
    config.set_settings(settings, START)
    raw, packed = mapper(False), mapper(True)
    recorder = DecisionRecorder("bench", policy)
    first = DecisionInputs(cluster=c, status=status, settings=settings, now=START, seed=0)
    warm, recorder = recorder.record(first, decide(first), config.versions(), force=True)
    assert warm is not None
    first_snapshot = stored_bytes(warm, raw)
    totals = {"raw": 0, "zlib": 0, "snapshot": 0, "delta": 0, "unchanged": 0, "recorded": 0}
    spent = 0.0
    delta_bytes = 0
    for minute in range(1, decisions + 1):
        inputs = DecisionInputs(
            cluster=c,
            status=change(status, minute),
            settings=settings,
            now=START + datetime.timedelta(minutes=minute),
            seed=minute,
        )
        decision = decide(inputs)
        began = time.perf_counter()
        event, recorder = recorder.record(inputs, decision, config.versions(), force=force)
        spent += time.perf_counter() - began
        if event is None:
            continue
        totals["recorded"] += 1
        totals["raw"] += stored_bytes(event, raw)
        totals["zlib"] += stored_bytes(event, packed)
        kind = "unchanged" if event.observation is None else next(iter(event.observation))
        totals[kind] += 1
        if kind == "delta":
            delta_bytes += stored_bytes(event, raw)
    cursor = recorder.cursor
    assert cursor is not None
    amortised = 0.0
    if totals["delta"]:
        # The snapshot policy writes the next snapshot after this many deltas.
        per_delta = cursor.delta_bytes / cursor.deltas
        until = min(policy.max_deltas, policy.max_delta_ratio * cursor.snapshot_bytes / per_delta)
        hours = until / (totals["delta"] * 60 / decisions)
        amortised = first_snapshot / hours
    return Row(
        case,
        "every decision" if force else "ops or phase change",
        totals["recorded"],
        totals["snapshot"],
        totals["delta"],
        totals["unchanged"],
        totals["raw"] * 60 // decisions,
        totals["zlib"] * 60 // decisions,
        first_snapshot,
        amortised,
        1000 * spent / decisions,
    )


def steady(status: ClusterStatus, minute: int) -> ClusterStatus:
    return status


def one_node_changing(status: ClusterStatus, minute: int) -> ClusterStatus:
    k8s = status.kubernetes
    index = len(k8s.nodes) // 2
    node = attrs.evolve(k8s.nodes[index], volumes_in_use=(f"kubernetes.io/csi/vol-{minute}",))
    nodes = (*k8s.nodes[:index], node, *k8s.nodes[index + 1 :])
    return attrs.evolve(status, kubernetes=attrs.evolve(k8s, nodes=nodes))


def kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB"


def report(rows: list[Row], nodes: int, policy: ObservationPolicy, decisions: int) -> str:
    header = [
        "case",
        "policy",
        "decisions recorded",
        "snapshots / deltas / unchanged",
        "bytes per hour",
        "zlib per hour",
        "record ms / decision",
    ]
    lines = [
        "## Event log growth",
        "",
        f"`benchmarks/eventlog_growth.py`: a converged {nodes}-node cluster (3 control planes),",
        f"decided once a minute for {decisions} minutes; every recorded `DecisionRecorded`",
        "serialised as eventsourcing stores it (JSON transcoder; state + topic + id + version).",
        f"Observation policy: snapshot after {policy.max_deltas} deltas or when the deltas",
        f"exceed {policy.max_delta_ratio:g} x the snapshot. Target: a steady cluster grows the",
        f"log by at most {TARGET // 1024} KiB per hour.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---", "---:", "---:", "---:", "---:", "---:"]) + "|",
    ]
    for r in rows:
        cells = [
            r.case,
            r.policy,
            str(r.recorded),
            f"{r.snapshots} / {r.deltas} / {r.unchanged}",
            kib(r.raw),
            kib(r.zlib),
            f"{r.ms_per_decision:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    first = rows[0].first_snapshot
    changing = [r for r in rows if r.amortised_snapshot]
    lines += [
        "",
        f"The first observation snapshot ({kib(first)}) is written once, before the hour",
        "measured; a steady cluster never writes another (unchanged observations are not",
        "deltas).",
    ]
    if changing:
        worst = max(r.amortised_snapshot for r in changing)
        lines += [
            "With one node changing, the policy writes the next snapshot when the deltas reach",
            f"its limit: amortised over that time, {kib(worst)} per hour more.",
        ]
    steady_rows = [r for r in rows if r.case == "steady"]
    verdict = all(r.raw <= TARGET for r in steady_rows)
    lines += ["", f"Steady cluster within {TARGET // 1024} KiB/hour: {'yes' if verdict else 'NO'}."]
    return "\n".join(lines) + "\n"


def write(section: str) -> None:
    block = f"{BEGIN}\n{section}{END}\n"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        _, after = rest.split(END, 1)
        text = before + block + after.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="nodes (1000)")
    parser.add_argument("--decisions", type=int, default=60, help="decisions, one a minute (60)")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    policy = ObservationPolicy()
    c = cluster(args.nodes)
    status = converged(c, EngineSettings(max_concurrent_updates=args.nodes))
    rows = [
        measure(name, c, status, change, force=force, decisions=args.decisions, policy=policy)
        for name, change in (("steady", steady), ("one node changing", one_node_changing))
        for force in (False, True)
    ]
    section = report(rows, args.nodes, policy, args.decisions)
    print(section)
    if args.write:
        write(section)


if __name__ == "__main__":
    main()
