"""The executor's own duties, with a recording container runtime.

Real: the local CA (``LocalCA``), the in-memory Kubernetes stand-in, the
SQLite event log, local processes. The container runtime is a recorder here
because what is checked is the executor's contract (per-node parallel parts,
failures per node, the prepare-*/make-files staging, one result per command);
the runtime itself runs against real podman in tests/integration.
"""

from __future__ import annotations

import asyncio
import datetime
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from cke_adapters.eventlog.application import EventLog, open_event_log
from cke_adapters.executor import Executor, ExecutorError, Staging
from cke_adapters.kubernetes.standin import StandInKubernetes
from cke_adapters.pki import LocalCA

from cke_core.cluster import Cluster
from cke_core.commands import node as nc
from cke_core.commands import queue as qc
from cke_core.ops.base import Command, CommandResult, failed_nodes
from cke_core.render.files import File, etcd_certificate_requests
from cke_core.testing import fixture_cluster

T0 = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)


class RecordingRuntime:
    """Records every call; ``fail`` maps an address to the error its parts raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.fail: dict[str, str] = {}
        self.written: dict[str, dict[str, tuple[str | bytes, int]]] = {}

    def _call(self, name: str, address: str, detail: Any = None) -> None:
        self.calls.append((name, address, detail))
        if address in self.fail:
            raise RuntimeError(self.fail[address])

    async def pull_image(self, address: str, image: str) -> bool:
        await asyncio.sleep(0)
        self._call("pull", address, image)
        return True

    async def create_volume(self, address: str, name: str) -> None:
        self._call("volume-create", address, name)

    async def write_files(self, address: str, files: Iterable[Any]) -> None:
        self._call("write", address)
        self.written[address] = {f.path: (f.content, f.mode) for f in files}


class NoEtcd:
    """Any etcd call is a test failure."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected etcd call {name}")


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    opened = open_event_log(f"sqlite:///{tmp_path / 'cke.db'}")
    opened.set_constraint("control-plane-count", "3", at=T0)
    opened.set_spec(fixture_cluster(), at=T0)
    return opened


def executor(tmp_path: Path, log: EventLog) -> tuple[Executor, RecordingRuntime]:
    runtime = RecordingRuntime()
    ex = Executor(
        runtime,  # type: ignore[arg-type]
        NoEtcd(),  # type: ignore[arg-type]
        LocalCA(tmp_path / "pki"),
        StandInKubernetes(),
        log,
    )
    return ex, runtime


def run(ex: Executor, command: Command, staging: Staging | None = None) -> CommandResult:
    cluster: Cluster = fixture_cluster()
    return asyncio.run(ex.run(cluster, command, staging or Staging(), {}))


def test_a_node_command_fails_with_the_failed_nodes_named(tmp_path: Path, log: EventLog) -> None:
    ex, runtime = executor(tmp_path, log)
    nodes = ("10.0.0.11", "10.0.0.12", "10.0.0.13")
    runtime.fail["10.0.0.12"] = "no space left on device"
    result = run(ex, nc.ImagePull(nodes=nodes, image="img:1"))
    assert not result.ok
    assert failed_nodes(nodes, result) == ("10.0.0.12",)
    assert result.value == {"10.0.0.12": "no space left on device"}
    assert result.error == "image-pull failed on 10.0.0.12: no space left on device"
    # every node's part ran (none is skipped because another failed)
    assert sorted(a for _, a, _ in runtime.calls) == sorted(nodes)


def test_prepare_stages_secrets_that_make_files_writes_per_node(
    tmp_path: Path, log: EventLog
) -> None:
    ex, runtime = executor(tmp_path, log)
    cluster = fixture_cluster()
    cps = cluster.control_planes[:2]
    addresses = tuple(n.address for n in cps)
    staging = Staging()
    prepare = nc.PrepareEtcdCertificates(
        nodes=addresses, pki={n.address: etcd_certificate_requests(cluster, n) for n in cps}
    )
    assert run(ex, prepare, staging).ok
    assert "<" in repr(staging)  # never shows contents
    own = File(path="/etc/etcd/pki/ca-peer.crt", content="mine", mode=0o600)
    extra = File(path="/etc/etcd/extra.conf", content="x")
    make = nc.MakeFiles(nodes=addresses, files={addresses[0]: (own, extra)})
    assert run(ex, make, staging).ok
    first, second = (runtime.written[a] for a in addresses)
    assert first["/etc/etcd/pki/ca-peer.crt"] == ("mine", 0o600)  # the command's own file wins
    assert "/etc/etcd/extra.conf" in first
    assert "/etc/etcd/extra.conf" not in second
    assert second["/etc/etcd/pki/ca-peer.crt"][0].startswith("-----BEGIN CERTIFICATE-----")
    key, mode = second["/etc/etcd/pki/server.key"]
    assert mode == 0o600
    assert "PRIVATE KEY" in str(key)
    assert first["/etc/etcd/pki/server.crt"] != second["/etc/etcd/pki/server.crt"]


def test_run_local_command(tmp_path: Path, log: EventLog) -> None:
    ex, _ = executor(tmp_path, log)
    ok = run(ex, qc.RunLocalCommand(argv=(sys.executable, "-c", "print('true')")))
    assert ok.ok
    assert ok.value == "true\n"
    failing = qc.RunLocalCommand(
        argv=(sys.executable, "-c", "import sys; sys.exit('boom')"), retries=2
    )
    failed = run(ex, failing)
    assert not failed.ok
    assert "exit status 1: boom" in failed.error
    slow = qc.RunLocalCommand(
        argv=(sys.executable, "-c", "import time; time.sleep(30)"), timeout_seconds=1
    )
    timed_out = run(ex, slow)
    assert not timed_out.ok
    assert "timed out after 1 s" in timed_out.error
    missing = run(ex, qc.RunLocalCommand(argv=("/nonexistent/boot-check",)))
    assert not missing.ok
    assert "/nonexistent/boot-check" in missing.error


def test_reboot_queue_commands_read_and_write_the_event_log(tmp_path: Path, log: EventLog) -> None:
    ex, _ = executor(tmp_path, log)
    [index] = log.reboot_queue_add(["10.0.0.14"], at=T0)
    got = run(ex, qc.GetRebootQueueEntry(index=index))
    assert got.ok
    assert got.value.node == "10.0.0.14"
    assert run(ex, qc.GetRebootQueueEntry(index=index + 7)).value is None
    assert run(ex, qc.DeleteRebootQueueEntry(index=index, node="10.0.0.14")).ok
    queue = log.reboot_queue()
    assert queue is not None
    assert queue.entries() == ()


def test_kubernetes_commands_go_to_the_port(tmp_path: Path, log: EventLog) -> None:
    ex, runtime = executor(tmp_path, log)
    result = run(ex, nc.RetaintBeforeKubeletBoot(nodes=("node1",)))
    assert not result.ok  # no apiserver runs in this (empty) world: the port says so
    assert result.error
    assert runtime.calls == []


def test_a_command_nobody_handles_is_a_programming_error(tmp_path: Path, log: EventLog) -> None:
    ex, _ = executor(tmp_path, log)

    class Unknown(Command):
        NAME = "unknown-command"

    with pytest.raises(ExecutorError, match="unknown-command"):
        run(ex, Unknown())
