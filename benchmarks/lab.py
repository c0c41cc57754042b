"""The engine on a real lab: bring-up, bootstrap to etcd healthy, status gathering.

For each lab size (``--nodes``; the first three nodes are control planes) this
brings a lab up with ``ckecli lab up`` (network namespaces, sshd, podman,
the lab's images), then, with the library engine
(``cke_daemon.wiring.lab_engine``):

* **etcd healthy**: seconds from the first round to the end of the first round
  after which etcd is healthy with every control plane a member and rivers
  runs on every node (the observation of the next round shows it);
* **completed**: seconds to the first round that decides ``completed``
  (the Kubernetes containers run from the stand-in image, ADR 0010);
* **status gather**: ``Observer.observe`` on the converged lab, median and
  maximum of ``--rounds`` observations (SSH to every node, container inspect,
  volumes, etcd member list / health / in-sync, the stand-in API).

Then ``ckecli lab down``. Root only (the lab is).

Usage::

    .venv/bin/python benchmarks/lab.py                    # 5 nodes, print the table
    .venv/bin/python benchmarks/lab.py --nodes 5 10 --write   # update docs/benchmarks.md

``--write`` replaces the text between ``<!-- lab:begin -->`` and
``<!-- lab:end -->`` in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cke_adapters.lab import free_subnet
from cke_adapters.lab.info import load_lab
from cke_adapters.service import Engine

from cke_daemon.wiring import lab_engine

ROOT = Path(__file__).resolve().parents[1]
CKECLI = str(Path(sys.executable).with_name("ckecli"))
DOC = ROOT / "docs" / "benchmarks.md"


def ckecli(*args: str) -> float:
    started = time.monotonic()
    done = subprocess.run([CKECLI, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"ckecli {' '.join(args)}: {done.stderr.strip()}")
    return time.monotonic() - started


def etcd_ready(engine: Engine, report: Any, control_planes: int) -> bool:
    status = report.status
    if status is None:
        return False
    return (
        status.etcd.is_healthy
        and len(status.etcd.members) == control_planes
        and all(n.rivers.running for n in status.nodes.values())
    )


async def measure(directory: Path, rounds: int) -> dict[str, float]:
    lab = load_lab(directory)
    control_planes = len(lab.control_planes)
    async with lab_engine(lab) as engine:
        started = time.monotonic()
        etcd_at = completed_at = 0.0
        for _ in range(200):
            report = await engine.reconcile_once()
            if not etcd_at and etcd_ready(engine, report, control_planes):
                etcd_at = time.monotonic() - started
            if report.phase == "completed" and not report.failed:
                completed_at = time.monotonic() - started
                break
        if not completed_at:
            raise SystemExit(f"the lab did not converge: last phase {report.phase}")
        gathers = []
        for _ in range(rounds):
            t0 = time.monotonic()
            await engine.observe()
            gathers.append(time.monotonic() - t0)
    return {
        "etcd": etcd_at,
        "completed": completed_at,
        "gather_median": statistics.median(gathers),
        "gather_max": max(gathers),
    }


def one_size(nodes: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="cke-bench-lab-") as tmp:
        directory = Path(tmp) / "lab"
        name = f"ckb{os.getpid() % 1000}"
        up = ckecli(
            "lab", "up", "--dir", str(directory), "--nodes", str(nodes),
            "--control-planes", "3", "--name", name, "--subnet", free_subnet(start=80),
        )  # fmt: skip
        try:
            result = asyncio.run(measure(directory, rounds))
        finally:
            ckecli("lab", "down", "--dir", str(directory))
    return {"nodes": nodes, "up": up, **result}


def table(results: list[dict[str, float]]) -> str:
    lines = [
        "| nodes | `lab up` | to etcd healthy + rivers | to `completed` "
        "| status gather median | max |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {int(r['nodes'])} | {r['up']:.1f} s | {r['etcd']:.1f} s | {r['completed']:.1f} s "
            f"| {r['gather_median'] * 1000:.0f} ms | {r['gather_max'] * 1000:.0f} ms |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[5])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmarks/lab.py: must run as root (the lab is)")
    results = [one_size(n, args.rounds) for n in args.nodes]
    text = table(results)
    print(text)
    if args.write:
        cpu = platform.processor() or platform.machine()
        body = (
            f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs ({cpu}), "
            f"`benchmarks/lab.py --nodes {' '.join(map(str, args.nodes))}`; "
            f"{args.rounds} observations per size.\n\n{text}\n"
        )
        doc = DOC.read_text()
        begin, end = "<!-- lab:begin -->", "<!-- lab:end -->"
        if begin not in doc:
            raise SystemExit(f"{DOC}: no {begin} marker")
        head, rest = doc.split(begin, 1)
        _, tail = rest.split(end, 1)
        DOC.write_text(f"{head}{begin}\n{body}{end}{tail}")


if __name__ == "__main__":
    main()
