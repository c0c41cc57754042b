"""The command executor: runs the core's commands (data) against the world.

Every command of ``cke_core.commands`` has one handler here. The contract the
core relies on is written in ``cke_core/commands/node.py`` and
``docs/operations.md``; in short:

* a node command runs on each of its nodes **concurrently** (bounded by
  ``concurrency``) and waits for all of them. It succeeds when every node's
  part succeeded; otherwise the result is ``ok=False``, ``error`` names the
  failed nodes, and ``value`` maps each failed address to its one-line error
  (``ops.base.failed_nodes`` reads it). Parts that succeeded are not undone:
  every command is safe to run again;
* ``prepare-*`` requests issue certificates and render kubeconfigs and the
  encryption configuration through the ``Issuer`` and **stage** the files per
  node in the ``Staging`` of the running operation; ``make-files`` then writes
  on each node what is staged for it together with the command's own
  non-secret files (the latter win on the same path). Secrets never leave
  the shell: neither the core nor the event log sees them;
* etcd commands go to ``cke_adapters.etcd_cluster.EtcdCluster``; Kubernetes
  API commands to the ``KubernetesPort``; queue commands to the event log;
  ``run-local-command`` to a process on this host.

No handler raises for a failure of the world: each returns a
``CommandResult`` with a one-line ``error``. Only a programming error (a
command nobody handles) raises ``ExecutorError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import attrs

from cke_adapters.oneline import error_line
from cke_adapters.pki import stage_files
from cke_adapters.ports import Issuer, KubernetesPort
from cke_adapters.runtime import ContainerRuntime, NodeFile
from cke_core.cluster import Cluster
from cke_core.commands import etcd as ec
from cke_core.commands import node as nc
from cke_core.commands import queue as qc
from cke_core.history import RemovalReason
from cke_core.ops.base import Command, CommandResult
from cke_core.queues import RebootStatus
from cke_core.render.components import KUBELET
from cke_core.status import EtcdMember, KubeletStatus, NodeStatus, ServiceStatus

__all__ = ["EtcdCommands", "Executor", "ExecutorError", "QueueStore", "Staging"]

SUCCESS: Final = CommandResult()
#: ``wait-for-kubelet-ready``: CKE's 10 tries, 5 s apart.
KUBELET_READY_TRIES: Final = 10
KUBELET_READY_INTERVAL: Final = 5.0


class ExecutorError(Exception):
    """A command this executor has no handler for (a programming error)."""


class EtcdCommands(Protocol):
    """What the executor needs of ``cke_adapters.etcd_cluster.EtcdCluster``."""

    async def member_list(self, endpoints: Sequence[str]) -> tuple[EtcdMember, ...]: ...

    async def wait_sync(self, endpoints: Sequence[str], redundancy: bool) -> None: ...

    async def setup_auth(self, endpoints: Sequence[str]) -> None: ...

    async def add_member(
        self, endpoints: Sequence[str], address: str
    ) -> tuple[EtcdMember, ...]: ...

    async def remove_members(self, endpoints: Sequence[str], ids: Sequence[int]) -> None: ...


class QueueStore(Protocol):
    """The event log's queue and storage-version writes the commands need
    (``cke_adapters.eventlog.EventLog`` has them)."""

    def set_config_version(self, version: str) -> bool: ...

    def reboot_queue(self) -> Any: ...

    def reboot_queue_update(self, entry: Any) -> bool: ...

    def reboot_queue_remove(self, index: int, reason: RemovalReason) -> None: ...

    def repair_queue_update(self, entry: Any) -> bool: ...

    def repair_queue_remove(self, index: int) -> None: ...


@attrs.define
class Staging:
    """Files ``prepare-*`` staged for each node during one operation (secrets:
    never logged, never recorded; dropped when the operation ends)."""

    files: dict[str, dict[str, NodeFile]] = attrs.field(factory=dict)

    def stage(self, address: str, staged: Sequence[NodeFile]) -> None:
        mine = self.files.setdefault(address, {})
        for f in staged:
            mine[f.path] = f

    def for_node(self, address: str) -> list[NodeFile]:
        return list(self.files.get(address, {}).values())

    def __repr__(self) -> str:
        return f"Staging(<{sum(len(v) for v in self.files.values())} files>)"


def _failure(error: str, value: Any = None) -> CommandResult:
    return CommandResult(ok=False, value=value, error=error)


class Executor:
    """Runs one command at a time for the service layer."""

    def __init__(
        self,
        runtime: ContainerRuntime,
        etcd: EtcdCommands,
        issuer: Issuer,
        kubernetes: KubernetesPort,
        queues: QueueStore,
        *,
        concurrency: int = 64,
        kubelet_ready_tries: int = KUBELET_READY_TRIES,
        kubelet_ready_interval: float = KUBELET_READY_INTERVAL,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.runtime = runtime
        self.etcd = etcd
        self.issuer = issuer
        self.kubernetes = kubernetes
        self.queues = queues
        self.kubelet_ready_tries = kubelet_ready_tries
        self.kubelet_ready_interval = kubelet_ready_interval
        self._limit = asyncio.Semaphore(concurrency)

    async def run(
        self,
        cluster: Cluster,
        command: Command,
        staging: Staging,
        nodes: Mapping[str, NodeStatus],
    ) -> CommandResult:
        """Run ``command``; ``nodes`` is the status observed for this decision."""
        if self.kubernetes.handles(command):
            return await self._guard(command, self.kubernetes.run(cluster, command, nodes))
        if isinstance(command, nc.NodeCommand):
            return await self._on_nodes(cluster, command, staging, nodes)
        handler = _HANDLERS.get(type(command))
        if handler is None:
            raise ExecutorError(f"no handler for command {command.name!r}")
        return await self._guard(command, handler(self, command))

    @staticmethod
    async def _guard(command: Command, work: Awaitable[CommandResult | None]) -> CommandResult:
        try:
            result = await work
        except ExecutorError:
            raise
        except Exception as exc:  # the world failed: a result, never an exception
            return _failure(f"{command.name}: {error_line(exc)}")
        return SUCCESS if result is None else result

    # --- node commands --------------------------------------------------------------------

    async def _on_nodes(
        self,
        cluster: Cluster,
        command: nc.NodeCommand,
        staging: Staging,
        nodes: Mapping[str, NodeStatus],
    ) -> CommandResult:
        part = _NODE_PARTS.get(type(command))
        if part is None and isinstance(command, nc.PrepareFiles):
            part = _prepare
        if part is None:
            raise ExecutorError(f"no handler for node command {command.name!r}")
        chosen = part
        return await self.each_node(
            command.name,
            command.nodes,
            lambda address: chosen(self, cluster, command, staging, address),
        )

    async def each_node(
        self, name: str, addresses: Sequence[str], part: Callable[[str], Awaitable[object]]
    ) -> CommandResult:
        """Run ``part(address)`` for every node concurrently (bounded); the result of
        the command ``name``: a success, or the failed nodes with their errors."""

        async def one(address: str) -> str:
            async with self._limit:
                try:
                    await part(address)
                except ExecutorError:
                    raise
                except Exception as exc:  # per node, reported in the result
                    return error_line(exc)
            return ""

        errors = await asyncio.gather(*(one(a) for a in addresses))
        failed = {a: e for a, e in zip(addresses, errors, strict=True) if e}
        if not failed:
            return SUCCESS
        first = next(iter(failed.values()))
        return _failure(f"{name} failed on {', '.join(failed)}: {first}", failed)

    async def _wait_kubelet(self, cluster: Cluster, address: str) -> None:
        """CKE's ``wait-for-kubelet-ready``: the kubelet's health check passes,
        asked of the Kubernetes port with what the node runs now."""
        for attempt in range(self.kubelet_ready_tries):
            found = await self.runtime.inspect(address, [KUBELET])
            kubelet = found.get(KUBELET, ServiceStatus())
            node = NodeStatus(
                ssh_connected=True,
                kubelet=KubeletStatus(
                    running=kubelet.running,
                    image=kubelet.image,
                    builtin_params=kubelet.builtin_params,
                    extra_params=kubelet.extra_params,
                ),
            )
            checked = await self.kubernetes.component_health(cluster, address, node)
            if checked.kubelet.is_healthy:
                return
            if attempt + 1 < self.kubelet_ready_tries:
                await asyncio.sleep(self.kubelet_ready_interval)
        raise RuntimeError(f"{address}: kubelet is not ready")


_NodePart = Callable[[Executor, Cluster, Any, Staging, str], Awaitable[None]]


async def _pull(ex: Executor, _c: Cluster, cmd: nc.ImagePull, _s: Staging, a: str) -> None:
    await ex.runtime.pull_image(a, cmd.image)


async def _run(ex: Executor, _c: Cluster, cmd: nc.RunContainer, _s: Staging, a: str) -> None:
    await ex.runtime.run_container(
        a,
        cmd.container,
        cmd.image,
        options=cmd.options,
        params=cmd.params_of(a),
        extra=cmd.extra,
        restart=cmd.restart,
    )


async def _stop(ex: Executor, _c: Cluster, cmd: nc.StopContainer, _s: Staging, a: str) -> None:
    await ex.runtime.stop_container(a, cmd.container)


async def _kill(ex: Executor, _c: Cluster, cmd: nc.KillContainers, _s: Staging, a: str) -> None:
    await ex.runtime.kill_container(a, cmd.container)


async def _vol_create(ex: Executor, _c: Cluster, cmd: nc.VolumeCreate, _s: Staging, a: str) -> None:
    await ex.runtime.create_volume(a, cmd.volume)


async def _vol_remove(ex: Executor, _c: Cluster, cmd: nc.VolumeRemove, _s: Staging, a: str) -> None:
    await ex.runtime.remove_volume(a, cmd.volume)


async def _dirs(ex: Executor, _c: Cluster, cmd: nc.MakeDirs, _s: Staging, a: str) -> None:
    await ex.runtime.make_dirs(a, cmd.dirs, cmd.mode)


async def _files(ex: Executor, _c: Cluster, cmd: nc.MakeFiles, staging: Staging, a: str) -> None:
    files = {f.path: f for f in staging.for_node(a)}
    for f in cmd.files_of(a):
        files[f.path] = NodeFile(f.path, f.content, f.mode)
    await ex.runtime.write_files(a, files.values())


async def _empty(ex: Executor, _c: Cluster, cmd: nc.EmptyDir, _s: Staging, a: str) -> None:
    await ex.runtime.empty_dir(a, cmd.directory)


async def _cni(ex: Executor, _c: Cluster, cmd: nc.InstallCNI, _s: Staging, a: str) -> None:
    await ex.runtime.install_cni(a, cmd.image)


async def _prepare(
    ex: Executor, c: Cluster, cmd: nc.PrepareFiles, staging: Staging, a: str
) -> None:
    # Issuing is CPU work (key generation): keep the event loop free.
    staged = await asyncio.to_thread(stage_files, ex.issuer, cmd, a, c)
    staging.stage(a, staged)


async def _kubelet_ready(
    ex: Executor, c: Cluster, _cmd: nc.WaitForKubeletReady, _s: Staging, a: str
) -> None:
    await ex._wait_kubelet(c, a)


_NODE_PARTS: Final[Mapping[type, _NodePart]] = {
    nc.ImagePull: _pull,
    nc.RunContainer: _run,
    nc.StopContainer: _stop,
    nc.KillContainers: _kill,
    nc.VolumeCreate: _vol_create,
    nc.VolumeRemove: _vol_remove,
    nc.MakeDirs: _dirs,
    nc.MakeFiles: _files,
    nc.EmptyDir: _empty,
    nc.InstallCNI: _cni,
    nc.WaitForKubeletReady: _kubelet_ready,
}


# --- etcd, storage, queues, local commands ---------------------------------------------


async def _wait_sync(ex: Executor, cmd: ec.WaitEtcdSync) -> None:
    await ex.etcd.wait_sync(cmd.endpoints, cmd.redundancy)


async def _auth(ex: Executor, cmd: ec.SetupEtcdAuth) -> None:
    await ex.etcd.setup_auth(cmd.endpoints)


async def _members(ex: Executor, cmd: ec.EtcdMemberList) -> CommandResult:
    return CommandResult(value=await ex.etcd.member_list(cmd.endpoints))


async def _add_member(ex: Executor, cmd: ec.AddEtcdMember) -> CommandResult:
    return CommandResult(value=await ex.etcd.add_member(cmd.endpoints, cmd.node))


async def _remove_member(ex: Executor, cmd: ec.RemoveEtcdMember) -> None:
    await ex.etcd.remove_members(cmd.endpoints, cmd.ids)


async def _upgrade(ex: Executor, cmd: ec.UpgradeVersionFrom1To2) -> CommandResult:
    marked = await ex.each_node(
        cmd.name, cmd.nodes, lambda a: ex.runtime.create_volume(a, ec.ADDED_MEMBER_VOLUME)
    )
    if not marked.ok:
        return marked
    await asyncio.to_thread(ex.queues.set_config_version, "2")
    return SUCCESS


async def _get_reboot(ex: Executor, cmd: qc.GetRebootQueueEntry) -> CommandResult:
    queue = await asyncio.to_thread(ex.queues.reboot_queue)
    if queue is None:
        return CommandResult(value=None)
    found = [e for e in queue.entries() if e.index == cmd.index]
    return CommandResult(value=found[0] if found else None)


async def _update_reboot(ex: Executor, cmd: qc.UpdateRebootQueueEntry) -> None:
    await asyncio.to_thread(ex.queues.reboot_queue_update, cmd.entry)


async def _delete_reboot(ex: Executor, cmd: qc.DeleteRebootQueueEntry) -> None:
    queue = await asyncio.to_thread(ex.queues.reboot_queue)
    entry = None
    if queue is not None:
        entry = next((e for e in queue.entries() if e.index == cmd.index), None)
    if entry is None:
        return
    reason = (
        RemovalReason.CANCELLED
        if entry.status is RebootStatus.CANCELLED
        else RemovalReason.DEQUEUED
        if entry.status is RebootStatus.REBOOTING
        else RemovalReason.NOT_IN_CLUSTER
    )
    await asyncio.to_thread(ex.queues.reboot_queue_remove, cmd.index, reason)


async def _update_repair(ex: Executor, cmd: qc.UpdateRepairQueueEntry) -> None:
    await asyncio.to_thread(ex.queues.repair_queue_update, cmd.entry)


async def _delete_repair(ex: Executor, cmd: qc.DeleteRepairQueueEntry) -> None:
    await asyncio.to_thread(ex.queues.repair_queue_remove, cmd.index)


async def _local(ex: Executor, cmd: qc.RunLocalCommand) -> CommandResult:
    del ex
    last = ""
    for attempt in range(cmd.retries + 1):
        try:
            process = await asyncio.create_subprocess_exec(
                *cmd.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            return _failure(f"{cmd.name}: {cmd.argv[0]}: {exc.strerror or exc}")
        try:
            out, err = await asyncio.wait_for(process.communicate(), cmd.timeout_seconds or None)
        except TimeoutError:
            process.kill()
            await process.wait()
            last = f"timed out after {cmd.timeout_seconds} s"
        else:
            if process.returncode == 0:
                return CommandResult(value=out.decode(errors="replace"))
            detail = " ".join(err.decode(errors="replace").split())[:300]
            last = f"exit status {process.returncode}" + (f": {detail}" if detail else "")
        if attempt < cmd.retries and cmd.interval:
            await asyncio.sleep(cmd.interval)
    return _failure(f"{cmd.name}: {cmd.argv[0] if cmd.argv else ''}: {last}")


_HANDLERS: Final[Mapping[type, Callable[[Executor, Any], Awaitable[CommandResult | None]]]] = {
    ec.WaitEtcdSync: _wait_sync,
    ec.SetupEtcdAuth: _auth,
    ec.EtcdMemberList: _members,
    ec.AddEtcdMember: _add_member,
    ec.RemoveEtcdMember: _remove_member,
    ec.UpgradeVersionFrom1To2: _upgrade,
    qc.GetRebootQueueEntry: _get_reboot,
    qc.UpdateRebootQueueEntry: _update_reboot,
    qc.DeleteRebootQueueEntry: _delete_reboot,
    qc.UpdateRepairQueueEntry: _update_repair,
    qc.DeleteRepairQueueEntry: _delete_repair,
    qc.RunLocalCommand: _local,
}
