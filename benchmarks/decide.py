"""Benchmark ``decide()`` on large clusters: converged, and at the start of a bootstrap.

Clusters have 3 control planes and the rest workers (100, 1,000 and 5,000
nodes). The statuses are:

* **converged**: the control planes, etcd and the Kubernetes objects come from
  the simulator (``cke_core.simulation``) converging a 3-CP, 1-worker cluster
  with the same control planes; every worker is then stamped with what an
  up-to-date worker reports (rivers, kubelet and kube-proxy rendered by
  ``cke_core.render.components`` for that node, a Ready Node object with the
  attributes ``update-node`` writes). ``decide`` must answer ``completed``,
  which the script checks, so the whole policy runs (every step is evaluated
  and finds nothing to do);
* **bootstrap**: every node reachable, nothing running (``rivers`` phase).

As in the daemon, every call decides on the *same* ``Cluster`` object and a
*new* observation: each status is parsed anew by ``status_from_json`` from the
JSON form of the case's status (outside the timed region), which is what a
recorded or received observation yields (identical node documents give shared
values, see ``cke_core.status``). The memoisation of ``decide`` across
decisions (``cke_core.nodefilter``) therefore works as it does in the daemon
while the spec is unchanged. The *cold* cases clear every cache before each
call (``strategy.clear_caches``): the first decision after the spec changed.

Each case is timed with ``time.perf_counter`` around one ``decide(inputs)``
(``gc.collect()`` before, outside the timed region): two warm-up calls, then
the median of ``--repeat`` (>= 7) calls. Scaling is the ratio of the converged
5,000-node median to the 1,000-node one (5 is linear). The *unshared* cases parse
each observation without the node statuses shared with the previous parse
(every node status a new object, as an adapter building statuses directly
would give them).

Usage::

    .venv/bin/python benchmarks/decide.py            # print the table
    .venv/bin/python benchmarks/decide.py --write    # and update docs/benchmarks.md
    .venv/bin/python benchmarks/decide.py --profile  # cProfile of converged 5,000
    .venv/bin/python benchmarks/decide.py --profile --cold  # the same from cold caches

``--write`` replaces the text between ``<!-- decide:begin -->`` and
``<!-- decide:end -->`` in ``docs/benchmarks.md`` (appends the section if
missing) and keeps everything else.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import gc
import ipaddress
import json
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

import attrs

from cke_core.cluster import Cluster, Node
from cke_core.frozen import FrozenDict
from cke_core.phases import Phase
from cke_core.render import components as rc
from cke_core.render import kubernetes as rk
from cke_core.render.images import EngineSettings
from cke_core.simulation import run
from cke_core.status import (
    ClusterStatus,
    KubeletStatus,
    KubernetesNode,
    NodeStatus,
    ProxyStatus,
    ServiceStatus,
    status_from_json,
    status_to_json,
)
from cke_core.status import clear_caches as clear_status_caches
from cke_core.strategy import DecisionInputs, clear_caches, decide
from cke_core.timefmt import UTC

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- decide:begin -->", "<!-- decide:end -->"
NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
CONTROL_PLANES = 3
SIZES = (100, 1_000, 5_000)
#: Targets in milliseconds (median).
TARGETS = {
    ("converged", 1_000): 10.0,
    ("converged", 5_000): 50.0,
    ("bootstrap", 5_000): 100.0,
    ("bootstrap, cold", 5_000): 100.0,
}
WARMUP = 2  # calls before the timed ones
_FIRST = ipaddress.ip_address("10.0.0.11")


def address(i: int) -> str:
    return str(_FIRST + i)


def make_cluster(size: int) -> Cluster:
    nodes = tuple(Node(address=address(i), control_plane=i < CONTROL_PLANES) for i in range(size))
    return Cluster(
        name="bench",
        nodes=nodes,
        service_subnet="10.68.0.0/16",
        dns_servers=("8.8.8.8",),
    )


def bootstrap_status(cluster: Cluster) -> ClusterStatus:
    """Every node reachable, nothing running, config version 2."""
    return ClusterStatus(
        config_version="2",
        nodes=FrozenDict({n.address: NodeStatus(ssh_connected=True) for n in cluster.nodes}),
    )


def _worker_status(cluster: Cluster, settings: EngineSettings, node: Node) -> NodeStatus:
    """What an up-to-date worker reports (§D.1)."""
    images = settings.images

    return NodeStatus(
        ssh_connected=True,
        rivers=ServiceStatus(
            running=True,
            image=images.tools,
            builtin_params=rc.rivers_params(cluster),
            extra_params=rc.extra_params(cluster, rc.RIVERS),
        ),
        kubelet=KubeletStatus(
            running=True,
            is_healthy=True,
            image=images.kubernetes,
            builtin_params=rc.kubelet_params(cluster, node),
            extra_params=rc.extra_params(cluster, rc.KUBELET),
            config=rc.kubelet_config(cluster, node),
        ),
        proxy=ProxyStatus(
            running=True,
            is_healthy=True,
            image=images.kubernetes,
            builtin_params=rc.proxy_params(cluster, node),
            extra_params=rc.extra_params(cluster, rc.KUBE_PROXY),
            config=rc.proxy_config(cluster, node),
        ),
    )


def converged_status(cluster: Cluster, settings: EngineSettings) -> ClusterStatus:
    """A converged status of ``cluster`` (3 CPs first, then workers); see the module doc."""
    small = attrs.evolve(cluster, nodes=cluster.nodes[: CONTROL_PLANES + 1])
    result = run(DecisionInputs(cluster=small, status=bootstrap_status(small), now=NOW), 60)
    if result.decisions[-1].phase is not Phase.COMPLETED:
        raise RuntimeError(f"the template cluster did not converge: {result.decisions[-1]}")
    template = result.status
    cps = {n.address: template.nodes[n.address] for n in cluster.control_planes}
    workers = {n.address: _worker_status(cluster, settings, n) for n in cluster.workers}
    cp_objects = {k.name: k for k in template.kubernetes.nodes}
    k8s_nodes = tuple(
        cp_objects.get(n.nodename)
        or rk.desired_node(cluster, n, KubernetesNode(name=n.nodename, ready=True))
        for n in cluster.nodes
    )
    return attrs.evolve(
        template,
        nodes=FrozenDict({**cps, **workers}),
        kubernetes=attrs.evolve(template.kubernetes, nodes=k8s_nodes),
    )


@attrs.frozen
class Case:
    """One benchmark case: every call decides on ``cluster`` and a new observation,
    ``text`` parsed anew (outside the timed region); ``shared=False`` parses it
    without the node statuses remembered from the previous parse; ``cold`` clears
    every cache before each call."""

    kind: str
    size: int
    cluster: Cluster
    text: str
    phase: Phase
    settings: EngineSettings = EngineSettings()
    shared: bool = True
    cold: bool = False

    def observe(self) -> DecisionInputs:
        """The inputs of one call: the same cluster, a newly parsed observation."""
        if not self.shared:
            clear_status_caches()
        status = status_from_json(json.loads(self.text))
        return DecisionInputs(cluster=self.cluster, status=status, settings=self.settings, now=NOW)


def cases(sizes: tuple[int, ...] = SIZES) -> list[Case]:
    """Every benchmark case."""
    settings = EngineSettings()
    out: list[Case] = []
    for size in sizes:
        cluster = make_cluster(size)
        text = json.dumps(status_to_json(converged_status(cluster, settings)))
        converged = Case("converged", size, cluster, text, Phase.COMPLETED, settings)
        out.append(converged)
        if size >= 1_000:
            out.append(attrs.evolve(converged, kind="converged, unshared", shared=False))
            out.append(attrs.evolve(converged, kind="converged, cold", cold=True))
    big = make_cluster(max(sizes))
    text = json.dumps(status_to_json(bootstrap_status(big)))
    bootstrap = Case("bootstrap", max(sizes), big, text, Phase.RIVERS, settings)
    out.append(bootstrap)
    out.append(attrs.evolve(bootstrap, kind="bootstrap, cold", cold=True))
    return out


def time_decide(case: Case, repeat: int) -> tuple[list[float], list[float]]:
    """Seconds per ``decide`` call of ``case`` after ``WARMUP`` calls: wall clock
    (``perf_counter``) and this process's CPU time (``process_time``, which a busy
    shared machine disturbs less)."""
    wall, cpu = [], []
    for number in range(WARMUP + repeat):
        inputs = case.observe()
        if case.cold:
            clear_caches()
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        decision = decide(inputs)
        elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        if decision.phase is not case.phase:
            raise RuntimeError(f"{case.kind} {case.size}: expected {case.phase}, got {decision}")
        if number >= WARMUP:
            wall.append(elapsed)
            cpu.append(elapsed_cpu)
        del inputs, decision
    return wall, cpu


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


Medians = dict[tuple[str, int], tuple[float, float]]


Spots = dict[str, list[tuple[str, float, float]]]


def measure(repeat: int) -> tuple[Medians, Spots]:
    """Median wall and CPU milliseconds per case (each decision's phase checked),
    and the hot spots of the converged 5,000-node decisions (warm and cold)."""
    medians: Medians = {}
    spots: Spots = {}
    for case in cases():
        wall, cpu = time_decide(case, repeat)
        key = (case.kind, case.size)
        medians[key] = (statistics.median(wall) * 1000, statistics.median(cpu) * 1000)
        ms = medians[key][0]
        print(f"  {case.kind:>15} {case.size:>5,} nodes: {ms:8.2f} ms", file=sys.stderr)
        if case.kind in ("converged", "converged, cold") and case.size == 5_000:
            spots[case.kind] = hot_spots(case)
    return medians, spots


def render(medians: Medians, spots: Spots, repeat: int) -> str:
    m = {
        "date": datetime.date.today().isoformat(),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(terse=True),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    rows = []
    for (kind, size), (ms, cpu_ms) in medians.items():
        target = TARGETS.get((kind, size))
        verdict = "" if target is None else ("pass" if ms <= target else "**FAIL**")
        shown = "" if target is None else f"<= {target:g}"
        rows.append(f"| {kind} | {size:,} | {ms:.2f} | {cpu_ms:.2f} | {shown} | {verdict} |")
    ratio = medians[("converged", 5_000)][0] / medians[("converged", 1_000)][0]
    scaling = "linear" if ratio <= 6.0 else "worse than linear"
    lines = [
        "## decide()",
        "",
        f"Measured {m['date']} on {m['nproc']} CPUs ({m['cpu']}), {m['python']}, {m['os']}, "
        f"load average {m['load']} at the start (the machine is shared), with "
        "`.venv/bin/python benchmarks/decide.py --write`.",
        "",
        "Clusters of 3 control planes and workers. *converged*: every component up to date "
        "and every Kubernetes object in place, so `decide` evaluates every step and answers "
        "`completed` (control planes and objects from the simulator, workers stamped with "
        "their rendered, up-to-date status). *bootstrap*: every node reachable and nothing "
        "running, so `decide` answers `rivers` with `rivers-bootstrap` capped at "
        "`max_concurrent_updates`. As in the daemon, every call decides on the same `Cluster` "
        "object and a new observation: the status parsed anew by `status_from_json` from its "
        "JSON text (outside the timed region), so what `decide` remembers across decisions "
        "(`cke_core.nodefilter`) is used as in a steady daemon loop. *unshared*: the same, "
        "but every node status a new object (parsed without the previous parse's shared "
        "node statuses, as an observation adapter building statuses directly would give "
        "them), so only the per-cluster renders are remembered. *cold*: every cache "
        "cleared before each call (`strategy.clear_caches`), i.e. the first decision after "
        f"the spec changed. Median of {repeat} calls after {WARMUP} warm-up calls, "
        "`gc.collect()` before each, `time.perf_counter` around `decide(inputs)` only (the "
        "target applies to it); the CPU column is `time.process_time` over the same calls.",
        "",
        "| status | nodes | median (ms) | median CPU (ms) | target (ms) | result |",
        "|---|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"Scaling, converged 5,000 / 1,000 nodes: {ratio:.2f} (5 is linear): {scaling}.",
        "",
        "Before `decide` remembered anything across decisions (2026-11-22, statuses built "
        "directly, not parsed): 61.32 ms at 1,000 and 305.87 ms at 5,000 nodes converged, "
        "9.94 ms for the bootstrap.",
        "",
        "Where a converged 5,000-node decision spends its time (cProfile of one call, "
        "which inflates it; shares of the whole call; `benchmarks/decide.py --profile` "
        "prints more), in the steady loop and from cold caches:",
    ]
    for kind, rows_ in spots.items():
        lines += [
            "",
            f"| {kind}: function | own time | including callees |",
            "|---|---:|---:|",
            *(f"| {name} | {own:.0f}% | {cum:.0f}% |" for name, own, cum in rows_),
        ]
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


def _profiled(case: Case, calls: int) -> pstats.Stats:
    """cProfile of ``calls`` decisions of ``case`` (after one unprofiled call),
    each on a new observation as timed."""
    decide(case.observe())
    profiler = cProfile.Profile()
    for _ in range(calls):
        inputs = case.observe()
        if case.cold:
            clear_caches()
        gc.collect()
        profiler.enable()
        decide(inputs)
        profiler.disable()
    return pstats.Stats(profiler, stream=sys.stdout)


def hot_spots(case: Case, top: int = 10) -> list[tuple[str, float, float]]:
    """(function, share of own time, share of cumulative time) of one profiled decision,
    the ``top`` functions by cumulative time below ``decide`` itself."""
    stats = _profiled(case, 1)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    raw = stats.stats  # type: ignore[attr-defined]
    total = max(ct for (_, _, name), (_, _, _, ct, _) in raw.items() if name == "decide")
    rows = []
    for (path, line, name), (_, _, tt, ct, _) in raw.items():
        if name == "decide" or "cke_core" not in path:
            continue
        if "cke_core/" in path:
            label = f"`{path.split('cke_core/', 1)[1]}:{line} {name}`"
        else:  # attrs-generated methods
            label = f"`{path.strip('<>')}: {name}`"
        rows.append((label, tt / total * 100, ct / total * 100))
    rows.sort(key=lambda r: -r[2])
    return rows[:top]


def profile(kind: str, size: int, calls: int, top: int) -> None:
    """cProfile ``calls`` decisions of one case; print the top functions by own time."""
    (case,) = [c for c in cases((size,)) if (c.kind, c.size) == (kind, size)]
    stats = _profiled(case, calls)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="timed calls per case (>= 7)")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile converged 5,000 instead of timing"
    )
    parser.add_argument("--cold", action="store_true", help="with --profile: from cold caches")
    args = parser.parse_args()
    if args.profile:
        profile("converged, cold" if args.cold else "converged", 5_000, calls=5, top=30)
        return
    if args.repeat < 7:
        parser.error("--repeat must be at least 7")
    medians, spots = measure(args.repeat)
    section = render(medians, spots, args.repeat)
    print(section)
    if args.write:
        write(section)
        print(f"updated {DOC.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
