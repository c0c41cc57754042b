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

Each case is timed with ``time.perf_counter`` around one ``decide(inputs)``:
two warm-up calls, then the median of ``--repeat`` (>= 7) calls. Scaling is
the ratio of the converged 5,000-node median to the 1,000-node one (5 is
linear).

Usage::

    .venv/bin/python benchmarks/decide.py            # print the table
    .venv/bin/python benchmarks/decide.py --write    # and update docs/benchmarks.md
    .venv/bin/python benchmarks/decide.py --profile  # cProfile of converged 5,000

``--write`` replaces the text between ``<!-- decide:begin -->`` and
``<!-- decide:end -->`` in ``docs/benchmarks.md`` (appends the section if
missing) and keeps everything else.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import ipaddress
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
)
from cke_core.strategy import DecisionInputs, decide
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
}
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


def cases(sizes: tuple[int, ...] = SIZES) -> list[tuple[str, int, DecisionInputs, Phase]]:
    """(kind, size, inputs, expected phase) for every benchmark case."""
    settings = EngineSettings()
    out: list[tuple[str, int, DecisionInputs, Phase]] = []
    for size in sizes:
        cluster = make_cluster(size)
        status = converged_status(cluster, settings)
        inputs = DecisionInputs(cluster=cluster, status=status, settings=settings, now=NOW)
        out.append(("converged", size, inputs, Phase.COMPLETED))
    big = make_cluster(max(sizes))
    inputs = DecisionInputs(cluster=big, status=bootstrap_status(big), now=NOW)
    out.append(("bootstrap", max(sizes), inputs, Phase.RIVERS))
    return out


def time_decide(
    inputs: DecisionInputs, repeat: int, warmup: int = 2
) -> tuple[list[float], list[float]]:
    """Seconds per ``decide(inputs)``, ``repeat`` times after ``warmup`` calls: wall
    clock (``perf_counter``) and this process's CPU time (``process_time``, which a
    busy shared machine disturbs less)."""
    for _ in range(warmup):
        decide(inputs)
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        decide(inputs)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
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


def measure(repeat: int) -> tuple[Medians, list[tuple[str, float, float]]]:
    """Median wall and CPU milliseconds per case (each decision's phase checked
    first), and the hot spots of the converged 5,000-node decision."""
    medians: Medians = {}
    spots: list[tuple[str, float, float]] = []
    for kind, size, inputs, phase in cases():
        got = decide(inputs).phase
        if got is not phase:
            raise RuntimeError(f"{kind} {size}: expected phase {phase}, got {got}")
        wall, cpu = time_decide(inputs, repeat)
        medians[(kind, size)] = (statistics.median(wall) * 1000, statistics.median(cpu) * 1000)
        print(f"  {kind:>9} {size:>5,} nodes: {medians[(kind, size)][0]:8.2f} ms", file=sys.stderr)
        if (kind, size) == ("converged", 5_000):
            spots = hot_spots(inputs)
    return medians, spots


def render(medians: Medians, spots: list[tuple[str, float, float]], repeat: int) -> str:
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
        f"`max_concurrent_updates`. Median of {repeat} calls after 2 warm-up calls, "
        "`time.perf_counter` around `decide(inputs)` only (the target applies to it); the CPU "
        "column is `time.process_time` over the same calls.",
        "",
        "| status | nodes | median (ms) | median CPU (ms) | target (ms) | result |",
        "|---|---:|---:|---:|---:|---|",
        *rows,
        "",
        f"Scaling, converged 5,000 / 1,000 nodes: {ratio:.2f} (5 is linear): {scaling}.",
        "",
        "Where a converged 5,000-node decision spends its time (cProfile of one call, "
        "which inflates it; shares of the whole call; `benchmarks/decide.py --profile` "
        "prints more):",
        "",
        "| function | own time | including callees |",
        "|---|---:|---:|",
        *(f"| {name} | {own:.0f}% | {cum:.0f}% |" for name, own, cum in spots),
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


def _profiled(inputs: DecisionInputs, calls: int) -> pstats.Stats:
    decide(inputs)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        decide(inputs)
    profiler.disable()
    return pstats.Stats(profiler, stream=sys.stdout)


def hot_spots(inputs: DecisionInputs, top: int = 10) -> list[tuple[str, float, float]]:
    """(function, share of own time, share of cumulative time) of one profiled decision,
    the ``top`` functions by cumulative time below ``decide`` itself."""
    stats = _profiled(inputs, 1)
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
    (inputs,) = [i for k, s, i, _ in cases((size,)) if (k, s) == (kind, size)]
    stats = _profiled(inputs, calls)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="timed calls per case (>= 7)")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile converged 5,000 instead of timing"
    )
    args = parser.parse_args()
    if args.profile:
        profile("converged", 5_000, calls=5, top=30)
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
