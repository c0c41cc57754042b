"""A lab that outlives the process that made it: ``ckecli lab up|status|down``.

:func:`lab_up` builds the images, brings a :class:`~cke_adapters.lab.Lab` up
in a directory, imports the images on every node and writes, beside the
lab's SSH key and ``known_hosts``, a validated ``cluster.yml`` and
``lab.json`` (:mod:`cke_adapters.lab.info`). :func:`lab_status` reports each
node; :func:`lab_down` removes everything ``up`` made, also after an ``up``
that was killed half-way, and does nothing when there is nothing left.

Ownership. ``Lab`` records its owner process in ``/run/ckelab/<prefix>.owner``
and :func:`~cke_adapters.lab.reap_stale_labs` (run by the test suites) tears
down labs whose owner is gone. ``ckecli lab up`` exits while its lab goes on,
so when ``up`` succeeds it hands ownership to the lab's first namespace
holder, which lives exactly as long as the lab; ``down`` takes it back before
tearing down. A lab whose ``up`` was killed keeps the dead process as owner
and may be reaped, which is what should happen to it.

The image cache (``--cache-dir``) is kept by ``down``: it is what makes the
next ``up`` fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from cke_adapters.images import (
    DEFAULT_IMAGE_CACHE,
    LabImages,
    build_lab_images,
    lab_engine_images,
    load_lab_images,
)
from cke_adapters.lab.info import LAB_FILE, LabInfo, LabInfoError, LabNodeInfo, load_lab
from cke_adapters.lab.netns import _MARKER, Lab, LabError, _alive, free_subnet
from cke_adapters.ssh import SSHError, SSHPool
from cke_core.config import check_cluster
from cke_core.documents import dump_yaml

__all__ = [
    "CLUSTER_FILE",
    "DEFAULT_LAB_DIR",
    "DEFAULT_LAB_NAME",
    "LAB_LOG_DRIVER",
    "LAB_SERVICE_SUBNET",
    "DownReport",
    "NodeReport",
    "UpReport",
    "lab_cluster_yml",
    "lab_down",
    "lab_status",
    "lab_up",
]

DEFAULT_LAB_DIR = Path("/run/cke-lab")
DEFAULT_LAB_NAME = "ckelab"
CLUSTER_FILE = "cluster.yml"
LAB_SERVICE_SUBNET = "10.68.0.0/16"
LAB_LOG_DRIVER = "k8s-file"
"""Log driver of system containers in the lab: no journald runs here."""

_NAME = re.compile(r"[a-z][a-z0-9]*")
_CONNECT_TIMEOUT = 5.0
_COMMAND_TIMEOUT = 30.0
_SSH_PORT = 22


@attrs.frozen
class UpReport:
    """What :func:`lab_up` made and how long each part took (seconds)."""

    info: LabInfo
    build_seconds: float
    network_seconds: float
    load_seconds: float
    imported: int


@attrs.frozen
class NodeReport:
    """One node in :func:`lab_status`: ``containers`` are ``(name, image,
    status)`` of running containers, or None with ``error`` when SSH failed."""

    node: LabNodeInfo
    netns: bool
    sshd: bool
    containers: tuple[tuple[str, str, str], ...] | None
    error: str = ""


@attrs.frozen
class DownReport:
    """What :func:`lab_down` removed (``found`` False: there was no lab)."""

    directory: Path
    found: bool
    name: str = ""
    nodes: int = 0
    containers_removed: int = 0
    problems: tuple[str, ...] = ()


# --------------------------------------------------------------------------- cluster.yml


def lab_cluster_yml(name: str, nodes: Sequence[LabNodeInfo]) -> str:
    """cluster.yml for the lab's nodes (SSH as root; the first
    ``control_planes`` nodes are control planes), checked with the project's
    validator: :class:`LabError` if it has an error."""
    document = {
        "name": name,
        "nodes": [
            {
                "address": n.address,
                "hostname": n.hostname,
                "user": "root",
                "control_plane": n.control_plane,
            }
            for n in nodes
        ],
        "service_subnet": LAB_SERVICE_SUBNET,
        "options": {"etcd": {"volume_name": "etcd-cke"}},
    }
    text = (
        f"# cluster.yml of the lab {name!r}, written by `ckecli lab up` (see {LAB_FILE}).\n"
        "# Nodes are network namespaces on this machine with their own sshd and podman.\n"
        + dump_yaml(document)
    )
    checked = check_cluster(text)
    if checked.errors:
        raise LabError(f"generated cluster.yml is invalid: {checked.errors[0]}")
    return text


# --------------------------------------------------------------------------- helpers


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("must run as root (network namespaces, sshd, podman)")


def _set_owner(lab: Lab, pid: int) -> None:
    """Record ``pid`` as the owner of ``lab``'s prefix (``Lab``'s owner file)."""
    owner = lab._owner_file
    owner.parent.mkdir(parents=True, exist_ok=True)
    owner.write_text(json.dumps({"pid": pid, "base_dir": str(lab.base_dir)}))


def _holder_pid_file(path: Path) -> int | None:
    """The live namespace holder recorded in ``path`` (``Lab``'s holder.pid)."""
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _holder_pid(node: LabNodeInfo) -> int | None:
    return _holder_pid_file(node.directory / "holder.pid")


def _node_infos(lab: Lab, control_planes: int) -> tuple[LabNodeInfo, ...]:
    return tuple(
        LabNodeInfo(
            index=n.index,
            hostname=n.hostname,
            address=n.address,
            netns=n.netns,
            control_plane=n.index <= control_planes,
            directory=n.directory,
            containers_conf=n.containers_conf,
            storage_conf=n.storage_conf,
        )
        for n in lab.nodes
    )


def _pool(info: LabInfo) -> SSHPool:
    return info.ssh_pool(connect_timeout=_CONNECT_TIMEOUT, command_timeout=_COMMAND_TIMEOUT)


def _listening(info: LabInfo) -> dict[str, bool]:
    statuses = info.lab().status()
    return {s.address: s.listening for s in statuses}


# --------------------------------------------------------------------------- up


def _check_up_arguments(name: str, nodes: int, control_planes: int) -> None:
    if not _NAME.fullmatch(name):
        raise LabError(
            f"--name {name!r}: use lower-case letters and digits, starting with a letter"
        )
    if nodes < 1:
        raise LabError(f"--nodes {nodes}: a lab needs at least one node")
    if not 1 <= control_planes <= nodes:
        raise LabError(
            f"--control-planes {control_planes}: must be between 1 and --nodes ({nodes})"
        )
    longest = f"{name}v{nodes}"
    if len(longest) > 15:
        raise LabError(
            f"--name {name!r} is too long for {nodes} nodes: interface {longest!r} "
            "exceeds Linux's 15 characters"
        )


def _existing(directory: Path) -> None:
    """Refuse a directory with a live lab; clear a dead one (a killed ``up``)."""
    if not (directory / LAB_FILE).exists() and not (directory / _MARKER).exists():
        return
    try:
        info = load_lab(directory)
    except LabInfoError:
        info = None
    if info is not None and any(_holder_pid(n) is not None for n in info.nodes):
        raise LabError(
            f"a lab ({info.name}) is already up in {directory}: "
            f"run ckecli lab down --dir {directory} first"
        )
    lab_down(directory)


def lab_up(
    directory: str | Path = DEFAULT_LAB_DIR,
    *,
    nodes: int = 5,
    control_planes: int = 3,
    name: str = DEFAULT_LAB_NAME,
    k8s_bin: Path | None = None,
    cache_dir: Path = DEFAULT_IMAGE_CACHE,
    rivers_source: Path | None = None,
    subnet: str | None = None,
) -> UpReport:
    """Build the images, bring the lab up in ``directory``, load the images on
    every node, and write ``cluster.yml`` and ``lab.json``. All or nothing: on
    any failure what was made is removed again. ``name`` is the cluster's name
    and the prefix of the lab's namespaces and interfaces."""
    _require_root()
    _check_up_arguments(name, nodes, control_planes)
    base = Path(directory).absolute()
    _existing(base)
    podman = shutil.which("podman")
    if podman is None:
        raise LabError("podman not found on PATH (apt-get install podman runc)")

    start = time.monotonic()
    images = build_lab_images(cache_dir, k8s_bin=k8s_bin, rivers_source=rivers_source)
    built = time.monotonic()

    try:
        lab = Lab(base, nodes=nodes, prefix=name, subnet=subnet or free_subnet())
    except ValueError as exc:
        raise LabError(str(exc)) from exc
    node_infos = _node_infos(lab, control_planes)
    cluster = lab_cluster_yml(name, node_infos)
    info = LabInfo(
        name=name,
        directory=base,
        prefix=name,
        subnet=str(lab.network),
        bridge=lab.bridge,
        bridge_address=lab.bridge_address,
        nodes=node_infos,
        ssh_user="root",
        ssh_port=_SSH_PORT,
        ssh_key=lab.client_key_path,
        known_hosts=lab.known_hosts_path,
        runtime_cli=podman,
        log_driver=LAB_LOG_DRIVER,
        images=lab_engine_images(images),
        kubernetes_stand_in=images.kubernetes_stand_in,
        cluster_yml=base / CLUSTER_FILE,
    )
    lab.up()
    try:
        info.save()
        up = time.monotonic()
        imported = asyncio.run(_load(info, images))
        loaded = time.monotonic()
        (base / CLUSTER_FILE).write_text(cluster)
        holder = _holder_pid(node_infos[0])
        if holder is None:
            raise LabError(f"{node_infos[0].hostname}: its namespace holder is gone")
        _set_owner(lab, holder)
    except BaseException:
        with contextlib.suppress(Exception):
            lab_down(base)
        raise
    return UpReport(
        info=info,
        build_seconds=built - start,
        network_seconds=up - built,
        load_seconds=loaded - up,
        imported=imported,
    )


async def _load(info: LabInfo, images: LabImages) -> int:
    async with _pool(info) as pool:
        done = await load_lab_images(pool, info.addresses, info.runtime_cli, images)
    return sum(len(names) for names in done.values())


# --------------------------------------------------------------------------- status


async def _containers(info: LabInfo, reachable: Sequence[LabNodeInfo]) -> dict[str, object]:
    fmt = "{{.Names}}\t{{.Image}}\t{{.Status}}"

    async def one(pool: SSHPool, node: LabNodeInfo) -> object:
        try:
            out = await pool.run(node.address, [info.runtime_cli, "ps", "--format", fmt])
        except SSHError as exc:
            return str(exc)
        rows = []
        for line in out.stdout.decode(errors="replace").splitlines():
            cells = line.split("\t")
            if len(cells) == 3:
                rows.append((cells[0], cells[1], cells[2]))
        return tuple(sorted(rows))

    async with _pool(info) as pool:
        results = await asyncio.gather(*(one(pool, n) for n in reachable))
    return {n.address: r for n, r in zip(reachable, results, strict=True)}


def lab_status(directory: str | Path = DEFAULT_LAB_DIR) -> tuple[LabInfo, list[NodeReport]]:
    """Each node: namespace present, sshd listening, running containers."""
    _require_root()
    info = load_lab(directory)
    statuses = {s.address: s for s in info.lab().status()}
    reachable = [n for n in info.nodes if statuses[n.address].listening]
    found = asyncio.run(_containers(info, reachable)) if reachable else {}
    reports = []
    for node in info.nodes:
        status = statuses[node.address]
        result = found.get(node.address)
        containers = result if isinstance(result, tuple) else None
        error = result if isinstance(result, str) else ""
        reports.append(NodeReport(node, status.netns, status.listening, containers, error))
    return info, reports


# --------------------------------------------------------------------------- down


async def _remove_containers(info: LabInfo, reachable: Sequence[str]) -> tuple[int, list[str]]:
    """``podman rm -a -f`` on each reachable node: containers with their own
    network namespace would survive the killing of the node's processes."""
    problems: list[str] = []

    async def one(pool: SSHPool, address: str) -> int:
        argv = [info.runtime_cli, "rm", "--all", "--force", "--time=0"]
        try:
            out = await pool.run(address, argv, check=False)
        except SSHError as exc:
            problems.append(str(exc))
            return 0
        if not out.ok:
            detail = " ".join(out.stderr.decode(errors="replace").split())
            problems.append(f"{address}: podman rm failed: {detail}")
        return len(out.stdout.split())

    async with _pool(info) as pool:
        removed = sum(await asyncio.gather(*(one(pool, a) for a in reachable)))
    return removed, problems


def _marker_prefix(directory: Path) -> str | None:
    try:
        prefix = (directory / _MARKER).read_text().strip()
    except OSError:
        return None
    return prefix if _NAME.fullmatch(prefix) else None


def lab_down(directory: str | Path = DEFAULT_LAB_DIR) -> DownReport:
    """Remove the lab in ``directory``: containers, namespaces with every
    process in them, veths, bridge, node storage and the directory itself.
    Idempotent; works from ``lab.json`` or, after an ``up`` killed before
    writing it, from ``Lab``'s marker file. A directory that holds neither is
    not touched (:class:`LabError`)."""
    _require_root()
    base = Path(directory).absolute()
    if not base.exists():
        return DownReport(base, found=False)
    try:
        info: LabInfo | None = load_lab(base)
    except LabInfoError:
        info = None
    prefix = info.prefix if info is not None else _marker_prefix(base)
    if prefix is None:
        raise LabError(f"{base} holds no lab (no {LAB_FILE}, no {_MARKER} marker): not removed")

    removed = 0
    problems: list[str] = []
    if info is not None:
        lab = info.lab()
        if (info.known_hosts.is_file() and info.ssh_key.is_file()) and (
            reachable := [a for a, ok in _listening(info).items() if ok]
        ):
            with contextlib.suppress(SSHError, OSError):
                removed, problems = asyncio.run(_remove_containers(info, reachable))
    else:
        nodes = len([d for d in base.glob("node*") if d.is_dir()]) or 1
        lab = Lab(base, nodes=nodes, prefix=prefix, subnet=str(_any_subnet()))
    _take_over(lab)
    lab.down()
    return DownReport(
        base,
        found=True,
        name=info.name if info is not None else prefix,
        nodes=len(lab.nodes),
        containers_removed=removed,
        problems=tuple(problems),
    )


def _any_subnet() -> ipaddress.IPv4Network:
    """A placeholder subnet for a ``Lab`` object that is only torn down."""
    return ipaddress.IPv4Network("10.231.0.0/24")


def _take_over(lab: Lab) -> None:
    """Make this process the owner of ``lab`` so ``Lab.down`` proceeds. Refused
    when a live process other than the lab's own holders owns the prefix: a
    lab of another directory, or an ``up`` (or a test) still using this one."""
    try:
        owner = json.loads(lab._owner_file.read_text())
    except (OSError, ValueError):
        owner = None
    if isinstance(owner, dict):
        pid, base = owner.get("pid"), owner.get("base_dir")
        if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
            if base != str(lab.base_dir):
                raise LabError(
                    f"prefix {lab.prefix!r} belongs to another lab in {base} "
                    f"(process {pid}): not tearing it down"
                )
            holders = {_holder_pid_file(f) for f in lab.base_dir.glob("node*/holder.pid")}
            if pid not in holders:
                raise LabError(
                    f"the lab in {base} is in use by process {pid} (an unfinished "
                    "ckecli lab up?): not tearing it down"
                )
    _set_owner(lab, os.getpid())
