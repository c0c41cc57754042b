"""The engine on a real lab: 3 control planes + 2 workers.

Network namespaces with their own addresses, one sshd each, podman (runc) as
each node's runtime, the lab's etcd and tools images, certificates from a
local CA, the managed etcd cluster for real. The Kubernetes API is the
in-memory stand-in (ADR 0010); the Kubernetes containers run for real from
the stand-in image. Scenarios follow issue 5; they share one lab and run in
order (each starts from the converged state the previous one left).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cke_adapters.etcd_cluster import EtcdCluster
from cke_adapters.eventlog.application import open_event_log
from cke_adapters.lab import free_subnet
from cke_adapters.lab.info import LabInfo, LabNodeInfo, load_lab
from cke_adapters.pki import LocalCA, etcd_client_credentials
from cke_adapters.service import Engine, RoundReport
from missing import component_missing

from cke_daemon.wiring import lab_engine

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CKECLI = [str(Path(sys.executable).with_name("ckecli"))]
TIMEOUT = 300.0


def _require() -> None:
    if os.geteuid() != 0:
        component_missing("the lab needs root (network namespaces, sshd, podman)")
    for tool in ("ip", "podman", "nsenter", "etcdctl"):
        if shutil.which(tool) is None:
            component_missing(f"{tool} is not installed (scripts/bootstrap installs it)")
    if not Path("/usr/bin/etcd").exists():
        component_missing("etcd-server is not installed (scripts/bootstrap installs it)")


def ckecli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*CKECLI, *args], capture_output=True, text=True, cwd=ROOT, timeout=600, check=False
    )
    if check and done.returncode != 0:
        pytest.fail(f"ckecli {' '.join(args)} failed: {done.stderr.strip()}", pytrace=False)
    return done


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabInfo]:
    _require()
    directory = tmp_path_factory.mktemp("lab")
    name = f"cke{os.getpid() % 1000}"
    ckecli(
        "lab",
        "up",
        "--dir",
        str(directory),
        "--nodes",
        "5",
        "--control-planes",
        "3",
        "--name",
        name,
        "--subnet",
        free_subnet(start=40),
    )
    try:
        yield load_lab(directory)
    finally:
        ckecli("lab", "down", "--dir", str(directory), check=False)


class Watch:
    """Every round's report; etcd health checked after every round once it exists."""

    def __init__(self) -> None:
        self.reports: list[RoundReport] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    def progress(self, event: str, **details: Any) -> None:
        self.events.append((event, details))


def run(lab: LabInfo, goal: str = "completed", **kwargs: Any) -> tuple[RoundReport, Watch]:
    watch = Watch()

    async def go() -> RoundReport:
        async with lab_engine(
            lab, progress=watch.progress, etcd_add_member_pause=2.0, **kwargs
        ) as engine:
            return await until(engine, goal, watch)

    return asyncio.run(go()), watch


async def until(engine: Engine, goal: str, watch: Watch) -> RoundReport:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        report = await engine.reconcile_once()
        watch.reports.append(report)
        if report.phase == goal and not report.failed:
            return report
        if not report.acted or report.failed:
            await asyncio.sleep(1.0)
    last = watch.reports[-1] if watch.reports else None
    pytest.fail(
        f"{goal} not reached; last round: {last and (last.phase, last.error, last.operations)}"
    )


def set_cluster(lab: LabInfo, edit: Any) -> None:
    doc = yaml.safe_load(Path(lab.cluster_yml).read_text())
    edit(doc)
    Path(lab.cluster_yml).write_text(yaml.safe_dump(doc, sort_keys=False))


def records(lab: LabInfo) -> list[dict[str, Any]]:
    """Every operation record, oldest first."""
    log = open_event_log(f"sqlite:///{lab.directory / 'events.db'}", create=False)
    try:
        return list(reversed(log.history()))
    finally:
        log.close()


def etcd_client(lab: LabInfo) -> EtcdCluster:
    return EtcdCluster(etcd_client_credentials(LocalCA(lab.directory / "pki")))


def etcd_status(lab: LabInfo, endpoints: list[str]) -> Any:
    async def go() -> Any:
        client = etcd_client(lab)
        try:
            return await client.cluster_status(endpoints)
        finally:
            await client.close()

    return asyncio.run(go())


def endpoints(addresses: list[str]) -> list[str]:
    return [f"https://{a}:2379" for a in addresses]


def on_node(lab: LabInfo, node: LabNodeInfo, *argv: str) -> str:
    """Run ``argv`` on a lab node over SSH (the node's own mounts and podman storage)."""
    done = subprocess.run(
        ["ssh", "-i", str(lab.ssh_key), "-o", f"UserKnownHostsFile={lab.known_hosts}",
         "-o", "BatchMode=yes", f"root@{node.address}", shlex.join(argv)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def containers(lab: LabInfo, node: LabNodeInfo) -> dict[str, bool]:
    out = on_node(lab, node, "podman", "ps", "-a", "--format", "{{.Names}} {{.State}}")
    # podman 4.3 prints "Up ..." for .State of a running container (docker: "running")
    return {
        line.split()[0]: line.split()[1] in ("running", "Up") for line in out.splitlines() if line
    }


# --------------------------------------------------------------------------- scenarios


def test_bootstrap_to_completed(lab: LabInfo) -> None:
    report, watch = run(lab)
    assert report.phase == "completed"
    healthy_throughout(watch)
    cps = lab.control_planes
    status, warnings = etcd_status(lab, endpoints(cps))
    assert status.is_healthy, warnings
    assert sorted(status.members) == sorted(cps)
    assert all(status.in_sync_members.values())
    for node in lab.nodes:
        running = containers(lab, node)
        assert running.get("rivers"), (node.address, running)
        assert running.get("etcd-rivers", False) == node.control_plane
        assert running.get("etcd", False) == node.control_plane
    ops = [r["operation"] for r in records(lab)]
    assert "etcd-bootstrap" in ops
    assert {r["status"] for r in records(lab)} == {"completed"}


def test_a_client_reaches_etcd_through_each_etcd_rivers(lab: LabInfo, tmp_path: Path) -> None:
    ca = LocalCA(lab.directory / "pki")
    creds = etcd_client_credentials(ca)
    for name, text in (
        ("ca.crt", creds.ca_certificate),
        ("c.crt", creds.certificate),
        ("c.key", creds.private_key),
    ):
        (tmp_path / name).write_text(text)
    for node in lab.nodes:
        if not node.control_plane:
            continue
        argv = [
            "nsenter",
            f"--net=/run/netns/{node.netns}",
            "etcdctl",
            "--endpoints=https://127.0.0.1:12379",
            f"--cacert={tmp_path / 'ca.crt'}",
            f"--cert={tmp_path / 'c.crt'}",
            f"--key={tmp_path / 'c.key'}",
        ]
        env = {**os.environ, "ETCDCTL_API": "3"}
        # etcd-rivers starts before etcd (the rivers phase comes first) and, like
        # CKE's rivers, re-checks its upstreams every 20 s (--check-interval): until
        # its first check after etcd came up it has no healthy upstream. Allow that.
        deadline = time.monotonic() + 45
        while True:
            put = subprocess.run(
                [*argv, "--command-timeout=3s", "put", f"via-{node.hostname}", node.address],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
                check=False,
            )
            if put.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert put.returncode == 0, put.stderr
        get = subprocess.run(
            [*argv, "get", "--print-value-only", f"via-{node.hostname}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
        assert get.stdout.strip() == node.address


def test_a_stopped_etcd_is_started_again(lab: LabInfo) -> None:
    stopped = lab.nodes[2]
    on_node(lab, stopped, "podman", "stop", "--time=5", "etcd")
    assert not containers(lab, stopped).get("etcd")
    before = len(records(lab))
    report, _ = run(lab)
    assert report.phase == "completed"
    started = [r for r in records(lab)[before:] if r["operation"] == "etcd-start"]
    assert started
    assert started[0]["targets"] == [stopped.address]
    assert containers(lab, stopped).get("etcd")
    status, warnings = etcd_status(lab, endpoints(lab.control_planes))
    assert status.is_healthy, warnings
    assert all(status.in_sync_members.values())


def test_a_member_without_its_marker_volume_is_marked(lab: LabInfo) -> None:
    node = lab.nodes[1]
    on_node(lab, node, "podman", "volume", "rm", "etcd-added-member")
    before = len(records(lab))
    report, _ = run(lab)
    assert report.phase == "completed"
    marked = [r for r in records(lab)[before:] if r["operation"] == "etcd-mark-member"]
    assert [r["targets"] for r in marked] == [[node.address]]
    assert "etcd-added-member" in on_node(lab, node, "podman", "volume", "ls", "-q").split()


def etcd_args(lab: LabInfo, node: LabNodeInfo) -> list[str]:
    out = on_node(lab, node, "podman", "container", "inspect", "etcd", "--format", "{{json .Args}}")
    return list(json.loads(out))


def healthy_throughout(watch: Watch) -> None:
    """etcd was healthy in every round's observation once it had members."""
    for report in watch.reports:
        if report.status is not None and report.status.etcd.members:
            assert report.status.etcd.is_healthy, (report.phase, report.operations)


class Writer(threading.Thread):
    """Writes a key through etcd (all control-plane endpoints) as fast as etcdctl goes;
    each write may be retried a bounded number of times."""

    RETRIES = 5

    def __init__(self, lab: LabInfo, directory: Path, cps: list[str]) -> None:
        super().__init__(daemon=True)
        creds = etcd_client_credentials(LocalCA(lab.directory / "pki"))
        for name, text in (
            ("ca.crt", creds.ca_certificate),
            ("c.crt", creds.certificate),
            ("c.key", creds.private_key),
        ):
            (directory / name).write_text(text)
        self.argv = [
            "etcdctl",
            f"--endpoints={','.join(endpoints(cps))}",
            f"--cacert={directory / 'ca.crt'}",
            f"--cert={directory / 'c.crt'}",
            f"--key={directory / 'c.key'}",
            "--command-timeout=5s",
        ]
        self.stop = threading.Event()
        self.writes = 0
        self.retries = 0
        self.failed: list[str] = []

    def run(self) -> None:
        env = {**os.environ, "ETCDCTL_API": "3"}
        while not self.stop.is_set():
            for attempt in range(self.RETRIES + 1):
                done = subprocess.run(
                    [*self.argv, "put", "writer", str(self.writes)],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=False,
                )
                if done.returncode == 0:
                    self.writes += 1
                    break
                self.retries += 1
                if attempt == self.RETRIES:
                    self.failed.append(done.stderr.strip())
                time.sleep(1)


def test_changing_etcd_extra_args_restarts_members_one_at_a_time(
    lab: LabInfo, tmp_path: Path
) -> None:
    set_cluster(lab, lambda d: d["options"]["etcd"].update(extra_args=["--snapshot-count=5000"]))
    writer = Writer(lab, tmp_path, lab.control_planes)
    writer.start()
    try:
        report, watch = run(lab)
    finally:
        writer.stop.set()
        writer.join(60)
    assert report.phase == "completed"
    restarts = [r for r in records(lab) if r["operation"] == "etcd-restart"]
    assert sorted(t for r in restarts for t in r["targets"]) == sorted(lab.control_planes)
    assert all(len(r["targets"]) == 1 for r in restarts)
    assert all(r["status"] == "completed" for r in restarts)
    healthy_throughout(watch)
    for node in lab.nodes[:3]:
        assert "--snapshot-count=5000" in etcd_args(lab, node)
    assert writer.writes > 0
    assert writer.failed == [], writer.failed


def test_promote_a_worker_then_demote_a_control_plane(lab: LabInfo) -> None:
    promoted = lab.nodes[3]

    def promote(doc: dict[str, Any]) -> None:
        doc["nodes"][3]["control_plane"] = True

    set_cluster(lab, promote)
    report, watch = run(lab)
    assert report.phase == "completed"
    healthy_throughout(watch)
    cps = [*lab.control_planes, promoted.address]
    status, _ = etcd_status(lab, endpoints(cps))
    assert sorted(status.members) == sorted(cps)
    assert status.is_healthy
    added = [r for r in records(lab) if r["operation"] == "etcd-add-member"]
    assert added[-1]["targets"] == [promoted.address]
    assert containers(lab, promoted).get("etcd")

    demoted = lab.nodes[0]

    def demote(doc: dict[str, Any]) -> None:
        doc["nodes"][0]["control_plane"] = False

    set_cluster(lab, demote)
    report, watch = run(lab)
    assert report.phase == "completed"
    healthy_throughout(watch)
    remaining = [n.address for n in lab.nodes[1:4]]
    status, _ = etcd_status(lab, endpoints(remaining))
    assert sorted(status.members) == sorted(remaining)
    assert status.is_healthy
    ops = [r["operation"] for r in records(lab)]
    assert "etcd-destroy-member" in ops or "etcd-remove-member" in ops
    assert not containers(lab, demoted).get("etcd", False)
    volumes = on_node(lab, demoted, "podman", "volume", "ls", "-q").split()
    assert "etcd-cke" not in volumes


def test_an_unreachable_control_plane_blocks_etcd_maintenance(lab: LabInfo) -> None:
    down = lab.nodes[1]  # a control plane since the previous scenario
    before = len(records(lab))
    set_cluster(lab, lambda d: d["options"]["etcd"].update(extra_args=["--snapshot-count=6000"]))
    lab.lab().stop_sshd(down.index)
    try:
        watch = Watch()

        async def rounds() -> None:
            async with lab_engine(lab, progress=watch.progress) as engine:
                for _ in range(3):
                    watch.reports.append(await engine.reconcile_once())

        asyncio.run(rounds())
        assert all(down.address in r.unreachable for r in watch.reports)
        new = records(lab)[before:]
        assert not [r for r in new if r["operation"].startswith("etcd-")], new
        assert not [r for r in new if down.address in r["targets"]], new
    finally:
        lab.lab().start_sshd(down.index)
    assert "--snapshot-count=6000" not in etcd_args(lab, down)
    report, watch = run(lab)
    assert report.phase == "completed"
    for node in lab.nodes[1:4]:
        assert "--snapshot-count=6000" in etcd_args(lab, node)


CRASH_DRIVER = """
import asyncio, os, sys
from cke_adapters.lab.info import load_lab
from cke_daemon.wiring import lab_engine

def progress(event, **d):
    if event == "command-finished" and d["name"] == "add-etcd-member" and d["ok"]:
        os._exit(17)  # the engine dies before the operation's record completes

async def main():
    async with lab_engine(load_lab(sys.argv[1]), progress=progress,
                          etcd_add_member_pause=2.0) as engine:
        await engine.run_until("completed", 300)

asyncio.run(main())
"""


def test_engine_killed_after_a_member_add_converges_on_the_next_run(lab: LabInfo) -> None:
    joining = lab.nodes[4]

    def promote(doc: dict[str, Any]) -> None:
        doc["nodes"][4]["control_plane"] = True

    set_cluster(lab, promote)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_DRIVER, str(lab.directory)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert crashed.returncode == 17, crashed.stderr[-2000:]
    orphan = records(lab)[-1]
    assert orphan["operation"] == "etcd-add-member"
    assert orphan["status"] == "running"
    report, watch = run(lab)
    assert report.phase == "completed"
    assert ("record-cancelled", {"record": int(orphan["id"])}) in watch.events
    by_id = {r["id"]: r for r in records(lab)}
    assert by_id[orphan["id"]]["status"] == "cancelled"
    assert "interrupted" in by_id[orphan["id"]]["error"]
    cps = [n.address for n in lab.nodes[1:5]]
    status, _ = etcd_status(lab, endpoints(cps))
    assert sorted(status.members) == sorted(cps)
    assert status.is_healthy
    assert all(status.in_sync_members.values())
    assert containers(lab, joining).get("etcd")


HOSTILE = "a'b\\\"c; $(touch /tmp/cke-hostile-{pid}) `touch /tmp/cke-hostile-{pid}` | & > <"


def test_hostile_values_are_passed_literally(lab: LabInfo) -> None:
    value = HOSTILE.format(pid=os.getpid())
    marker = Path(f"/tmp/cke-hostile-{os.getpid()}")
    set_cluster(lab, lambda d: d["options"].update(rivers={"extra_env": {"HOSTILE": value}}))
    report, _ = run(lab)
    assert report.phase == "completed"
    assert not marker.exists()
    out = on_node(
        lab,
        lab.nodes[0],
        "podman",
        "container",
        "inspect",
        "rivers",
        "--format",
        "{{json .Config.Env}}",
    )
    assert f"HOSTILE={value}" in json.loads(out)


def test_bad_cluster_yml_and_unreachable_node_give_one_line_errors(lab: LabInfo) -> None:
    text = Path(lab.cluster_yml).read_text()
    try:
        Path(lab.cluster_yml).write_text(text + "\nunknown_field: 1\n")
        bad = ckecli("lab", "run", "--dir", str(lab.directory), "--timeout", "5", check=False)
        assert bad.returncode == 1
        assert "Traceback" not in bad.stderr + bad.stdout
        assert bad.stderr.count("\n") == 1
        assert "unknown_field" in bad.stderr

        def add_ghost(doc: dict[str, Any]) -> None:
            prefix = lab.nodes[0].address.rsplit(".", 1)[0]
            doc["nodes"].append(
                {
                    "address": f"{prefix}.250",
                    "hostname": "ghost",
                    "user": "root",
                    "control_plane": False,
                }
            )

        Path(lab.cluster_yml).write_text(text)
        set_cluster(lab, add_ghost)
        ghost = ckecli("lab", "run", "--dir", str(lab.directory), "--timeout", "25", check=False)
        assert "Traceback" not in ghost.stderr + ghost.stdout
        assert "unreachable: " in ghost.stdout
        assert ".250" in ghost.stdout
        if ghost.returncode != 0:
            assert ghost.stderr.count("\n") == 1, ghost.stderr
    finally:
        Path(lab.cluster_yml).write_text(text)
