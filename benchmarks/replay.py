"""Replay of a 100,000-event log: read and fold every event, re-derive every decision.

The log is made by driving the real ``EventLog`` API with the simulator
(``cke_core.simulation``) on the six-node cluster of ``cke_core.testing``
(3 control planes, 3 workers), one decision a minute:

* bootstrap from nothing to ``completed``;
* then incidents until the log holds ``--events`` events, each followed by
  decide / run / observe cycles until the cluster converges again: a
  container stops (kubelet, kube-proxy, rivers, etcd, an apiserver ...), a
  node label changes in cluster.yml (``cluster set``), a node is unreachable
  for a few minutes, a command fails (the record is cancelled and the
  operation retried), and now and then the leader crashes in the middle of an
  operation (the next term cancels the orphaned record, as CKE does);
* every operation is an operation record (register, one ``command_started``
  per command, completed or cancelled), every decision that starts
  operations or changes the phase a ``DecisionRecorded`` event with its
  observation (snapshot, delta or unchanged).

The log is generated in memory (eventsourcing's POPO store: every command is
one ``save()``), exported as JSON Lines and imported into a fresh SQLite file
(one transaction, after the import's full validation). Then, on that file,
with a freshly opened ``EventLog``:

* **read + fold**: read every notification, decode it and fold it into its
  aggregate (what ``replay`` does before re-deriving);
* **replay**: ``EventLog.replay()``: the above, plus rebuilding each recorded
  decision's inputs and running ``decide()`` again, compared with the record.

Each timing is the median of ``--repeat`` runs. Target: replay of 100,000
events <= 10 s.

Usage::

    .venv/bin/python benchmarks/replay.py                       # print the table
    .venv/bin/python benchmarks/replay.py --write               # and update docs/benchmarks.md
    .venv/bin/python benchmarks/replay.py --events 3000 --keep var/demo.db   # a demo log
    .venv/bin/python benchmarks/replay.py --profile             # cProfile of one replay

``--write`` replaces the text between ``<!-- replay:begin -->`` and
``<!-- replay:end -->`` in ``docs/benchmarks.md`` (appends the section if
missing) and keeps everything else.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import io
import os
import platform
import pstats
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
from cke_adapters.eventlog import EventLog, open_event_log
from cke_adapters.eventlog.application import REPLAY_PAGE, _without_cycle_collection
from cke_adapters.eventlog.replaying import ConfigurationFolder, StatusRebuilder

from cke_core import strategy
from cke_core.cluster import Cluster
from cke_core.frozen import FrozenDict
from cke_core.history import (
    CLUSTER_CONFIGURATION_ID,
    DECISION_LOG_ID,
    HistoryAggregate,
    compare,
    observations,
)
from cke_core.ops.base import Operation
from cke_core.simulation import execute, health, stop_container
from cke_core.status import ClusterStatus, NodeStatus
from cke_core.testing import fixture_cluster
from cke_core.timefmt import UTC

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- replay:begin -->", "<!-- replay:end -->"
START = datetime.datetime(2024, 5, 1, 0, 0, tzinfo=UTC)
ENGINE = "cke-py/bench"
TARGET_SECONDS = 10.0
MINUTE = datetime.timedelta(minutes=1)

#: Containers an incident may stop, and on which nodes.
CP_CONTAINERS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
ANY_CONTAINERS = ("kubelet", "kube-proxy", "rivers")


def bench_cluster() -> Cluster:
    """CKE's test cluster (``fixture_cluster``), made valid for ``cluster set``: its
    scheduler configuration gets the apiVersion and kind validation requires."""
    cluster = fixture_cluster()
    scheduler = cluster.options.kube_scheduler
    config = FrozenDict(
        {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            **(scheduler.config or {}),
        }
    )
    options = attrs.evolve(cluster.options, kube_scheduler=attrs.evolve(scheduler, config=config))
    return attrs.evolve(cluster, options=options)


class Simulator:
    """The engine loop against the simulated cluster, recording into ``log``."""

    def __init__(self, log: EventLog, seed: int) -> None:
        self.log = log
        self.rng = random.Random(seed)
        self.now = START
        self.cluster: Cluster = bench_cluster()
        self.status = ClusterStatus(
            config_version="2",
            nodes=FrozenDict(
                {n.address: NodeStatus(ssh_connected=True) for n in self.cluster.nodes}
            ),
        )
        self.unreachable: dict[str, int] = {}
        self.term = 0
        self.decisions = 0
        self.records = 0
        self.leader_crashes = 0
        self.failures = 0
        log.set_constraint("control-plane-count", "3", at=self.now)
        log.set_spec(self.cluster, at=self.now)
        self.new_term()

    def new_term(self) -> None:
        self.term = self.log.start_term(f"cke-{self.term % 2 + 1}", at=self.now).term

    def cycle(self) -> bool:
        """One decide / run / observe cycle; False when the decision had no operations."""
        self.now += MINUTE
        observed = self._observe(self.status)
        inputs = self.log.decision_inputs(observed, self.now, seed=self.rng.getrandbits(31))
        decision = strategy.decide(inputs)
        recorded = self.log.record_decision(inputs, decision, ENGINE, self.term)
        if recorded.event is not None:
            self.decisions += 1
        status = self.status
        for op in decision.operations:
            ok, status = self._run(op, status, inputs, recorded.position)
            if not ok:
                break
        self.status = health(status, self.cluster)
        self._tick_unreachable()
        return bool(decision.operations)

    def _observe(self, status: ClusterStatus) -> ClusterStatus:
        if not self.unreachable:
            return status
        nodes = dict(status.nodes)
        for address in self.unreachable:
            nodes[address] = NodeStatus()
        return attrs.evolve(status, nodes=FrozenDict(nodes))

    def _tick_unreachable(self) -> None:
        for address in list(self.unreachable):
            self.unreachable[address] -= 1
            if self.unreachable[address] <= 0:
                del self.unreachable[address]

    def _run(
        self, op: Operation, status: ClusterStatus, inputs: Any, position: int
    ) -> tuple[bool, ClusterStatus]:
        log = self.log
        number = log.register(op, at=self.now, decision=position)
        self.records += 1
        run = execute(status, self.cluster, inputs.settings, op, self.now)
        fail_at = None
        if run.commands and self.rng.random() < 0.03:
            fail_at = self.rng.randrange(len(run.commands))
        crash = fail_at is None and run.commands and self.rng.random() < 0.004
        for index, (command, result) in enumerate(zip(run.commands, run.results, strict=True)):
            log.command_started(number, command.name, command.target, at=self.now)
            if crash and index == len(run.commands) // 2:
                # The leader dies here; the next one cancels the orphaned record.
                self.leader_crashes += 1
                self.now += MINUTE
                self.new_term()
                return False, status
            if index == fail_at or not result.ok:
                self.failures += 1
                log.cancelled(number, f"{command.name} on {command.target}: failed", at=self.now)
                return False, status
        log.completed(number, op.info(list(run.results)), at=self.now)
        return True, run.status

    def converge(self, limit: int = 40) -> None:
        for _ in range(limit):
            if not self.cycle():
                return

    def incident(self) -> None:
        kind = self.rng.random()
        if kind < 0.55:
            node = self.rng.choice(self.cluster.nodes)
            choices = ANY_CONTAINERS + (CP_CONTAINERS if node.control_plane else ())
            container = self.rng.choice(choices)
            stopped = stop_container(self.status, self.cluster, node.address, container)
            self.status = health(stopped, self.cluster)
        elif kind < 0.8:
            index = self.rng.randrange(len(self.cluster.nodes))
            node = self.cluster.nodes[index]
            labels = dict(node.labels)
            labels["bench/generation"] = str(self.rng.randrange(1000))
            nodes = list(self.cluster.nodes)
            nodes[index] = attrs.evolve(node, labels=FrozenDict(labels))
            self.cluster = attrs.evolve(self.cluster, nodes=tuple(nodes))
            self.log.set_spec(self.cluster, at=self.now)
        else:
            worker = self.rng.choice([n for n in self.cluster.nodes if not n.control_plane])
            self.unreachable[worker.address] = self.rng.randrange(2, 5)
        self.converge()


def generate(events: int, seed: int = 1) -> tuple[EventLog, Simulator]:
    log = EventLog()  # in memory
    sim = Simulator(log, seed)
    sim.converge()
    while log.count_events() < events:
        sim.incident()
    return log, sim


def time_median(func: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def read_and_fold(log: EventLog) -> int:
    aggregates: dict[Any, Any] = {}
    count = 0
    for notification in log._notifications(REPLAY_PAGE):
        event: Any = log.mapper.to_domain_event(notification)
        if isinstance(event, HistoryAggregate.Event):
            aggregates[event.originator_id] = event.mutate(aggregates.get(event.originator_id))
        count += 1
    return count


class _Stages:
    """Time spent in each stage of a streaming pipeline (per call, summed)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.times[name] = self.times.get(name, 0.0) + seconds

    def pulled(self, name: str, items: Any) -> Any:
        """``items``, the time to draw each one counted under ``name``
        (including what the stages feeding it spend)."""
        iterator = iter(items)
        while True:
            began = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                self.add(name, time.perf_counter() - began)
                return
            self.add(name, time.perf_counter() - began)
            yield item

    def call(self, name: str, func: Any, *args: Any) -> Any:
        began = time.perf_counter()
        result = func(*args)
        self.add(name, time.perf_counter() - began)
        return result


READ = "read the notifications (SQLite, pages of 10,000)"
DECODE = "decode them (JSON + eventsourcing's mapper)"
FOLD = "fold them into their aggregates"
DELTAS = "apply the observation deltas"
STATUS = "structure each observed status (shared parts)"
CONFIG = "configuration at each decision"
DECIDE = "decide() again"
COMPARE = "compare with the record"


def breakdown(log: EventLog) -> dict[str, float]:
    """``replay``'s pipeline stage by stage, streaming as ``EventLog.replay``
    does (each decision re-derived as soon as it is read), each call timed."""
    stages = _Stages()
    aggregates: dict[Any, Any] = {}
    configuration: list[Any] = []

    def decode(notifications: Any) -> Any:
        for notification in notifications:
            yield stages.call(DECODE, log.mapper.to_domain_event, notification)

    def fold(events: Any) -> Any:
        for event in events:
            began = time.perf_counter()
            oid = event.originator_id
            if oid == DECISION_LOG_ID:
                stages.add(FOLD, time.perf_counter() - began)
                yield event
                continue
            aggregates[oid] = event.mutate(aggregates.get(oid))
            if oid == CLUSTER_CONFIGURATION_ID:
                configuration.append(event)
            stages.add(FOLD, time.perf_counter() - began)

    decisions = fold(decode(stages.pulled(READ, log._notifications(REPLAY_PAGE))))
    rebuilder = StatusRebuilder()
    folder = ConfigurationFolder(configuration)
    for event, doc in stages.pulled("upstream", observations(decisions)):
        status = stages.call(STATUS, rebuilder.status, doc)
        inputs = stages.call(CONFIG, folder.inputs, event, status)
        decision = stages.call(DECIDE, strategy.decide, inputs)
        stages.call(COMPARE, compare, event, decision)
    times = stages.times
    # "upstream" includes everything before it: keep what applying deltas took.
    times[DELTAS] = times.pop("upstream") - times[FOLD] - times[DECODE] - times[READ]
    order = (READ, DECODE, FOLD, DELTAS, STATUS, CONFIG, DECIDE, COMPARE)
    return {name: times[name] for name in order}


def hot_spots(log: EventLog, top: int = 12) -> list[tuple[str, float, float]]:
    """(function, share of own time, share of cumulative time) in one profiled
    replay, the ``top`` functions by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    log.replay(jobs=1)
    profiler.disable()
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    raw = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, name), (_, _, _, ct, _) in raw.items() if name == "replay")
    rows = []
    for (path, line, name), (_, _, tt, ct, _) in raw.items():
        for marker in ("cke_core/", "cke_adapters/", "site-packages/", "python3.11/"):
            if marker in path:
                label = f"`{path.split(marker, 1)[1]}:{line} {name}`"
                break
        else:
            label = f"`{path.strip('<>')}: {name}`" if path != "~" else f"`{name}`"
        rows.append((label, tt / total * 100, ct / total * 100))
    rows.sort(key=lambda r: -r[1])
    return rows[:top]


def decide_share(log: EventLog) -> float:
    """The share of one replay spent in ``strategy.decide`` (timed around each call)."""
    spent = 0.0
    original = strategy.decide

    def timed(inputs: Any) -> Any:
        nonlocal spent
        began = time.perf_counter()
        try:
            return original(inputs)
        finally:
            spent += time.perf_counter() - began

    strategy.decide = timed
    try:
        began = time.perf_counter()
        log.replay(jobs=1)
        total = time.perf_counter() - began
    finally:
        strategy.decide = original
    return spent / total


def measure(events: int, repeat: int, keep: str | None) -> dict[str, Any]:
    began = time.perf_counter()
    memory, sim = generate(events)
    generated = time.perf_counter() - began
    tmp = Path(tempfile.mkdtemp(prefix="cke-replay-bench-"))
    try:
        buffer = io.StringIO()
        began = time.perf_counter()
        memory.export_jsonl(buffer)
        exported = time.perf_counter() - began
        text = buffer.getvalue()
        stats = {
            "records": sim.records,
            "failures": sim.failures,
            "crashes": sim.leader_crashes,
            "terms": sim.term,
        }
        # Time the replay as a fresh `ckecli replay` would run it: without the
        # generated in-memory log (its heap would make every collection of the
        # garbage collector slower) and with what is left frozen.
        del memory, sim
        gc.collect()
        gc.freeze()
        path = tmp / "events.db"
        target = open_event_log(f"sqlite:///{path}")
        began = time.perf_counter()
        imported = target.import_jsonl(io.StringIO(text))
        import_seconds = time.perf_counter() - began
        target.close()
        log = open_event_log(f"sqlite:///{path}", create=False)
        fold_seconds, folded = time_median(lambda: read_and_fold(log), repeat)
        plan = log._replay_plan(None, None)
        jobs = 1 + len(plan.regions) if plan is not None else 1
        replay_seconds, report = time_median(log.replay, repeat)
        single_seconds, single = time_median(lambda: log.replay(jobs=1), repeat)
        assert single == report, "one process and several give different reports"
        replay_cpu = statistics.median(_cpu(log.replay) for _ in range(repeat))
        single_cpu = statistics.median(_cpu(lambda: log.replay(jobs=1)) for _ in range(repeat))
        with _without_cycle_collection():  # as replay() itself runs
            stages = breakdown(log)
        share = decide_share(log)
        spots = hot_spots(log)
        log.close()
        if keep:
            Path(keep).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, keep)
        return {
            "events": imported,
            "folded": folded,
            "decisions": report.decisions,
            "differences": len(report.differences),
            "records": stats["records"],
            "failures": stats["failures"],
            "crashes": stats["crashes"],
            "terms": stats["terms"],
            "generated": generated,
            "export": exported,
            "import": import_seconds,
            "export_mib": len(text.encode()) / 2**20,
            "db_mib": path.stat().st_size / 2**20,
            "fold": fold_seconds,
            "replay": replay_seconds,
            "replay_cpu": replay_cpu,
            "single": single_seconds,
            "single_cpu": single_cpu,
            "jobs": jobs,
            "repeat": repeat,
            "stages": stages,
            "decide_share": share,
            "hot_spots": spots,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cpu(func: Any) -> float:
    """CPU seconds of ``func()`` in this process and in the processes it waited for."""

    def used() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime

    began = used()
    func()
    return used() - began


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({cpu}), CPython {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, load average {load} at the start "
        "(the machine is shared)"
    )


#: Earlier measurements of this benchmark on the same machine: (when and
#: with what, replay seconds with the default processes, in one process).
HISTORY: tuple[tuple[str, float, float], ...] = (
    ("commit b09f069: the whole log read into memory, then re-derived", 34.67, 34.67),
    (
        "commit 3b43272: streaming replay, shared status parts, fast JSON decoding, "
        "a static split over 2 processes",
        14.19,
        23.85,
    ),
)


def render(m: dict[str, Any], machine: str) -> str:
    total = sum(m["stages"].values()) or 1.0
    met = "met" if m["replay"] <= TARGET_SECONDS else "NOT met"
    per_decision = (m["single"] - m["fold"]) / max(1, m["decisions"]) * 1000
    decide_seconds = m["stages"][DECIDE]
    return "\n".join(
        [
            "## Replay",
            "",
            f"Measured {datetime.date.today().isoformat()} on {machine}, with "
            "`.venv/bin/python benchmarks/replay.py --write`.",
            "",
            "The log: the simulated engine (`cke_core.simulation`) on a six-node cluster "
            "(3 control planes), one decision a minute, from bootstrap through incidents "
            "(stopped containers, cluster.yml changes, unreachable nodes, failed commands, "
            "leader crashes mid-operation), written through `EventLog` in memory, exported "
            "as JSON Lines and imported into SQLite. "
            f"{m['events']:,} events: {m['decisions']:,} recorded decisions, "
            f"{m['records']:,} operation records ({m['failures']} with a failed command, "
            f"{m['crashes']} orphaned by a leader crash and cancelled by the next term), "
            f"{m['terms']} leadership terms. Export {m['export_mib']:.1f} MiB, SQLite file "
            f"{m['db_mib']:.1f} MiB.",
            "",
            f"Timings on the SQLite file, each the median of {m['repeat']} runs:",
            "",
            "| measure | seconds |",
            "|---|---:|",
            f"| read + decode + fold {m['folded']:,} events | {m['fold']:.2f} |",
            f"| **replay**: the above + re-derive {m['decisions']:,} decisions "
            f"(`EventLog.replay()`, {m['jobs']} processes) | **{m['replay']:.2f}** |",
            f"| replay in one process (`EventLog.replay(jobs=1)`) | {m['single']:.2f} |",
            f"| CPU time (all processes), {m['jobs']} processes / one process | "
            f"{m['replay_cpu']:.2f} / {m['single_cpu']:.2f} |",
            f"| one process: re-deriving, per decision | {per_decision / 1000:.5f} |",
            f"| export to JSON Lines (from memory) | {m['export']:.2f} |",
            f"| import: validate everything, then one SQLite transaction | {m['import']:.2f} |",
            f"| generating the log (simulation + {m['events']:,} events through the API, "
            f"in memory) | {m['generated']:.1f} |",
            "",
            f"Decisions that differ on replay: {m['differences']} (same engine; one process "
            "and several give the same report). "
            f"Target: replay of 100,000 events <= {TARGET_SECONDS:.0f} s: **{met}** "
            f"({m['replay']:.2f} s).",
            "",
            "Where the time goes (one replay in one process, stage by stage, each call "
            "timed; the timers add a little):",
            "",
            "| stage | seconds | share |",
            "|---|---:|---:|",
            *(
                f"| {name} | {seconds:.2f} | {seconds / total:.0%} |"
                for name, seconds in m["stages"].items()
            ),
            "",
            f"`decide()` alone, timed around each call inside `EventLog.replay(jobs=1)`: "
            f"{m['decide_share']:.0%} of the replay. The functions with the most own time "
            "(cProfile of one replay in one process, which inflates it; shares of the whole "
            "replay):",
            "",
            "| function | own time | including callees |",
            "|---|---:|---:|",
            *(f"| {name} | {own:.1f}% | {cum:.1f}% |" for name, own, cum in m["hot_spots"]),
            "",
            "Earlier versions, measured the same way on this machine (replay with the "
            "default processes / in one process):",
            "",
            "| version | replay | one process |",
            "|---|---:|---:|",
            *(f"| {what} | {both:.2f} | {one:.2f} |" for what, both, one in HISTORY),
            f"| this one | {m['replay']:.2f} | {m['single']:.2f} |",
            "",
            "How it gets there. `replay` reads the log once, in pages of 10,000, holding "
            "only the aggregates and the current observation, with the cyclic garbage "
            "collector paused (a replay allocates millions of short-lived acyclic objects; "
            "the collector's passes over the live aggregates and memos cost about a third "
            "of the time). `StatusRebuilder` rebuilds each observed status from the parts "
            "of the previous one that a delta left in place, and remembers the others by "
            "exact content (a BLAKE2b digest of their `marshal` form) and by field values, "
            "so equal parts are the same objects. `decide()` remembers, across decisions, "
            "the renders and node facts of every cluster with the same basis (nodes without "
            "labels, annotations and taints, so a cluster.yml label change keeps them), "
            "the facts of the last statuses of each node, the selections of the last sets "
            "of node statuses, and rendered endpoints, DNS ConfigMaps and resource "
            f"comparisons ({decide_seconds / max(1, m['decisions']) * 1e3:.2f} ms per "
            "decision here). Observation snapshots are written when the deltas since the "
            "last one pass twice its size (it was half: the log is a quarter smaller and "
            "decodes faster). Every recorded decision is still re-derived by `decide()` "
            "from exactly its recorded inputs and compared.",
            "",
            "With more than one CPU (at most 4 processes, from 4,000 decisions; `jobs=1` "
            "keeps one), worker processes (`python -m cke_adapters.eventlog.replay_worker`) "
            "start re-deriving at once, each on its share of the decisions, a chunk at a "
            "time and kept two chunks ahead, while this process reads and folds every event; "
            "then it joins them, stealing the back half of the largest share left. So "
            "every process works until the last chunk, whatever the machine's load; a "
            "worker that dies leaves its work to the others. The reports are identical "
            "(checked here and by the unit tests). A substituted `decide`, a time cut "
            "(`--until TIME`) or a log in memory stays in one process.",
        ]
    )


def write(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


def profile(events: int) -> None:
    memory, _ = generate(events)
    buffer = io.StringIO()
    memory.export_jsonl(buffer)
    tmp = Path(tempfile.mkdtemp(prefix="cke-replay-prof-"))
    try:
        log = open_event_log(f"sqlite:///{tmp / 'events.db'}")
        log.import_jsonl(io.StringIO(buffer.getvalue()))
        profiler = cProfile.Profile()
        profiler.enable()
        log.replay()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--keep", metavar="PATH", help="keep the SQLite log here")
    parser.add_argument("--profile", action="store_true", help="cProfile one replay")
    args = parser.parse_args()
    if args.profile:
        profile(args.events)
        return
    machine = _machine()
    result = measure(args.events, args.repeat, args.keep)
    section = render(result, machine)
    print(section)
    if args.write:
        write(section)
        print(f"\nupdated {DOC.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
