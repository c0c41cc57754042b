"""A lab of SSH-reachable "nodes" built from network namespaces on one machine.

Each node is what CKE needs of a machine: an address, an sshd on port 22 that
accepts the lab's key, its own hostname, and a podman that does not share
containers with the other nodes. Layout, for ``Lab(base, nodes=3,
prefix="ckelab", subnet="10.231.0.0/24")``::

    host (root namespaces)
      bridge ckelab0, 10.231.0.1/24
        veth ckelabv1 <-> eth0 in netns ckelab-1, 10.231.0.11/24, default via .1
        veth ckelabv2 <-> eth0 in netns ckelab-2, 10.231.0.12/24
        ...

Per node ``i`` (files under ``base/node<i>/``):

* a **holder** process ``nsenter --net=/run/netns/<ns> unshare --uts --mount``
  that sets the hostname (``node<i>``), mounts private tmpfs on ``/dev/shm``
  (podman's lock segment) and on the node's ``run/`` directory (podman's
  runroot and tmp dir, cleared like a real ``/run`` at boot), bind-mounts the
  node's own empty ``root/`` over root's home (so sessions do not run the
  host's ``~/.bashrc``, and nodes do not share dotfiles), bind-mounts the
  node's ``fs/<dir>`` over each of ``NODE_PRIVATE_DIRS`` (``/etc/etcd``,
  ``/etc/kubernetes`` ...: what CKE writes is per machine), makes its mounts
  shared *within* the node (the kubelet's ``rshared`` bind needs it; the
  host is not affected), then sleeps. Its
  UTS and mount namespaces are the node's "machine": sshd restarts re-enter
  them, so podman's view of its mounts survives an sshd restart.
* **sshd** started with ``nsenter -t <holder> --net --uts --mount sshd -D -e -f
  sshd_config``: listens on the node address, port 22, own ed25519 host key,
  ``AuthorizedKeysFile`` = the lab client key's ``.pub``, ``PermitRootLogin
  prohibit-password``, ``UsePAM no``, ``StrictModes no``, ``Subsystem sftp
  internal-sftp``, and ``SetEnv CONTAINERS_CONF=... CONTAINERS_STORAGE_CONF=...``
  so every SSH session's podman uses runc, cgroupfs, file events, the ulimits
  of environment.md and the node's own storage (``graphroot`` under the node
  directory). ``nsenter`` rather than ``ip netns exec``: the latter remounts
  ``/sys`` and podman then finds no cgroup mount.

The lab also writes the client key (``id_ed25519``) and a ``known_hosts`` file
listing every node's host key, ready for :class:`cke_adapters.ssh.SSHPool`.

Several labs coexist when their prefixes and subnets differ; interface names
stay within Linux's 15 characters. ``up()`` first removes leftovers of a
crashed run with the same prefix (unless a live process still owns it);
``down()`` kills every process in the nodes' network namespaces (sshd, its
sessions, conmon and ``--network=host`` containers), deletes the namespaces,
veths and bridge, and removes ``base_dir``; it is idempotent.

Needs root, ``ip`` (iproute2), ``nsenter``/``unshare`` (util-linux) and
``sshd`` (openssh-server). Traffic stays on the bridge: the subnet must be
private and unused, and the host does not forward it anywhere.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pwd
import re
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncssh

__all__ = [
    "NODE_PRIVATE_DIRS",
    "Lab",
    "LabError",
    "LabNode",
    "NodeStatus",
    "free_subnet",
    "reap_stale_labs",
]

_MAX_IFNAME = 15
_OWNER_DIR = Path("/run/ckelab")
_MARKER = ".ckelab"
_SSH_PORT = 22
_START_TIMEOUT = 10.0

NODE_PRIVATE_DIRS = (
    "/etc/etcd",
    "/etc/kubernetes",
    "/etc/cni",
    "/opt/cni",
    "/opt/volume",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/lib/docker",
    "/var/log/pods",
    "/var/log/containers",
    "/lib/modules",
)
"""Directories CKE writes or binds on a node, private to each lab node: each is
bind-mounted from the node's ``fs/`` directory in the node's mount namespace,
so one node's certificates and configuration never overwrite another's.
(Empty mount points are created on the host if missing.)"""

CONTAINERS_ULIMITS = ("nofile=1024:1024", "nproc=1000:1000")
"""Default container ulimits: crun/runc fail to raise the host's limits here."""


class LabError(RuntimeError):
    """The lab cannot be built or torn down; the message says what to do."""


@dataclass(frozen=True)
class LabNode:
    """One node of the lab: its address, namespace and files."""

    index: int
    hostname: str
    address: str
    netns: str
    directory: Path

    @property
    def host_key(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    @property
    def sshd_config(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def sshd_log(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def containers_conf(self) -> Path:
        return self.directory / "containers.conf"

    @property
    def storage_conf(self) -> Path:
        return self.directory / "storage.conf"

    @property
    def run_dir(self) -> Path:
        """tmpfs private to the node (podman runroot and tmp dir)."""
        return self.directory / "run"

    @property
    def fs_dir(self) -> Path:
        """The node's own copies of ``NODE_PRIVATE_DIRS`` (``fs/etc/etcd`` ...)."""
        return self.directory / "fs"

    @property
    def home(self) -> Path:
        """The node's own home of root (bind-mounted over it in the node)."""
        return self.directory / "root"

    @property
    def holder_pid_file(self) -> Path:
        return self.directory / "holder.pid"


@dataclass(frozen=True)
class NodeStatus:
    """What ``Lab.status()`` observed of one node."""

    index: int
    address: str
    netns: bool
    holder: bool
    sshd_pids: tuple[int, ...]
    listening: bool


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _root_home() -> str:
    try:
        return pwd.getpwnam("root").pw_dir or "/root"
    except KeyError:
        return "/root"


def _port_open(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


class Lab:
    """N SSH-reachable nodes in network namespaces. Use as a context manager or
    call :meth:`up` and :meth:`down` (always, even after a failure)."""

    def __init__(
        self,
        base_dir: str | Path,
        nodes: int = 3,
        *,
        prefix: str = "ckelab",
        subnet: str = "10.231.0.0/24",
        default_route: bool = True,
    ) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]*", prefix):
            raise ValueError(f"prefix {prefix!r}: use lower-case letters and digits")
        if nodes < 1:
            raise ValueError("a lab needs at least one node")
        longest = f"{prefix}v{nodes}"
        if len(longest) > _MAX_IFNAME:
            raise ValueError(
                f"prefix {prefix!r} too long: interface {longest!r} exceeds "
                f"{_MAX_IFNAME} characters"
            )
        network = ipaddress.ip_network(subnet)
        if not isinstance(network, ipaddress.IPv4Network) or not network.is_private:
            raise ValueError(f"subnet {subnet}: use a private IPv4 range")
        if network.num_addresses < 10 + nodes + 2:
            raise ValueError(f"subnet {subnet} too small for {nodes} nodes")
        base = Path(base_dir).absolute()
        if re.search(r"[\s\"'\\]", str(base)):
            raise ValueError(f"base_dir {base}: no whitespace, quotes or backslashes")
        self.base_dir = base
        self.prefix = prefix
        self.network = network
        self.default_route = default_route
        self.bridge = f"{prefix}0"
        self.bridge_address = str(network.network_address + 1)
        self.nodes = [
            LabNode(
                index=i,
                hostname=f"node{i}",
                address=str(network.network_address + 10 + i),
                netns=f"{prefix}-{i}",
                directory=base / f"node{i}",
            )
            for i in range(1, nodes + 1)
        ]
        self._children: list[subprocess.Popen[bytes]] = []

    # ------------------------------------------------------------------ paths

    @property
    def client_key_path(self) -> Path:
        """Private key the lab's sshds accept for root."""
        return self.base_dir / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        """Every node's host key, OpenSSH known_hosts format."""
        return self.base_dir / "known_hosts"

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    def node(self, index: int) -> LabNode:
        return self.nodes[index - 1]

    @property
    def _owner_file(self) -> Path:
        return _OWNER_DIR / f"{self.prefix}.owner"

    # ------------------------------------------------------------------ up

    def up(self) -> Self:
        """Build the bridge, namespaces, keys and configs; start every sshd and
        wait until each listens. Cleans leftovers of a crashed run first."""
        self._preflight()
        self._claim()
        try:
            self._cleanup()
            self._check_subnet_free()
            self._prepare_files()
            self._create_network()
            for node in self.nodes:
                self._start_holder(node)
                self._spawn_sshd(node)
            self._wait_listening(self.nodes)
        except BaseException:
            self.down()
            raise
        return self

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise LabError(
                "the lab needs root: it creates network namespaces, veths and a bridge "
                "and runs sshd (run as root, or skip the lab)"
            )
        for tool in ("ip", "nsenter", "unshare", "mount"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} not found on PATH (apt install iproute2 util-linux)")
        if self._sshd() is None:
            raise LabError("sshd not found (apt install openssh-server)")

    @staticmethod
    def _sshd() -> str | None:
        found = shutil.which("sshd")
        if found is None and os.access("/usr/sbin/sshd", os.X_OK):
            found = "/usr/sbin/sshd"
        return found

    def _other_owner(self) -> dict[str, object] | None:
        """The record of another live process owning this prefix, if any."""
        try:
            owner = json.loads(self._owner_file.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(owner, dict):
            return None
        pid = owner.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
            return owner
        return None

    def _claim(self) -> None:
        """Refuse a prefix a live lab owns; record ourselves as its owner."""
        _OWNER_DIR.mkdir(parents=True, exist_ok=True)
        owner = self._other_owner()
        if owner is not None:
            raise LabError(
                f"lab prefix {self.prefix!r} is in use by live process {owner['pid']} "
                f"(base dir {owner.get('base_dir')}); choose another prefix and subnet"
            )
        self._owner_file.write_text(
            json.dumps({"pid": os.getpid(), "base_dir": str(self.base_dir)})
        )

    def _check_subnet_free(self) -> None:
        for net in _subnets_in_use():
            if net.overlaps(self.network):
                raise LabError(
                    f"subnet {self.network} overlaps {net}, configured on this machine: "
                    "choose another subnet (cke_adapters.lab.free_subnet)"
                )

    def _prepare_files(self) -> None:
        if self.base_dir.exists() and any(self.base_dir.iterdir()):
            raise LabError(
                f"{self.base_dir} exists and is not a lab directory; give an empty or new one"
            )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / _MARKER).write_text(f"{self.prefix}\n")
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        client = asyncssh.generate_private_key("ssh-ed25519", comment=f"{self.prefix}-client")
        _write_private(self.client_key_path, client.export_private_key())
        pub = self.client_key_path.with_name(self.client_key_path.name + ".pub")
        pub.write_bytes(client.export_public_key())
        known: list[str] = []
        sshd_path = self._sshd()
        assert sshd_path is not None
        for node in self.nodes:
            node.directory.mkdir()
            node.run_dir.mkdir()
            node.home.mkdir(mode=0o700)
            host = asyncssh.generate_private_key("ssh-ed25519", comment=node.hostname)
            _write_private(node.host_key, host.export_private_key())
            node.host_key.with_name(node.host_key.name + ".pub").write_bytes(
                host.export_public_key()
            )
            known.append(f"{node.address} {host.export_public_key().decode().strip()}")
            node.containers_conf.write_text(self._containers_conf(node))
            node.storage_conf.write_text(self._storage_conf(node))
            node.sshd_config.write_text(self._sshd_config(node, pub))
        self.known_hosts_path.write_text("\n".join(known) + "\n")

    def _containers_conf(self, node: LabNode) -> str:
        ulimits = ", ".join(f'"{u}"' for u in CONTAINERS_ULIMITS)
        run = node.run_dir
        return (
            "# podman on lab node "
            f"{node.hostname}: runc (crun fails here), no systemd\n"
            "[containers]\n"
            f"default_ulimits = [{ulimits}]\n"
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{run}/events.log"\n'
            f'tmp_dir = "{run}/libpod"\n'
            "[network]\n"
            f'network_config_dir = "{node.directory}/networks"\n'
        )

    def _storage_conf(self, node: LabNode) -> str:
        return (
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{node.directory}/storage"\n'
            f'runroot = "{node.run_dir}/storage"\n'
        )

    def _sshd_config(self, node: LabNode, authorized: Path) -> str:
        return "\n".join(
            [
                f"# lab node {node.hostname} ({node.netns})",
                f"ListenAddress {node.address}",
                f"Port {_SSH_PORT}",
                f"HostKey {node.host_key}",
                f"PidFile {node.directory / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PermitRootLogin prohibit-password",
                "AllowUsers root",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "UseDNS no",
                "PrintMotd no",
                "PrintLastLog no",
                "X11Forwarding no",
                "MaxSessions 64",
                "MaxStartups 64:30:128",
                "Subsystem sftp internal-sftp",
                f"SetEnv CONTAINERS_CONF={node.containers_conf} "
                f"CONTAINERS_STORAGE_CONF={node.storage_conf}",
                "",
            ]
        )

    def _create_network(self) -> None:
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.bridge_address}/{self.network.prefixlen}",
              "dev", self.bridge])  # fmt: skip
        _run(["ip", "link", "set", self.bridge, "up"])
        for node in self.nodes:
            host_if, peer_if = f"{self.prefix}v{node.index}", f"{self.prefix}p{node.index}"
            ns = node.netns
            _run(["ip", "netns", "add", ns])
            _run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if])
            _run(["ip", "link", "set", host_if, "master", self.bridge, "up"])
            _run(["ip", "link", "set", peer_if, "netns", ns])
            _run(["ip", "-n", ns, "link", "set", peer_if, "name", "eth0"])
            _run(["ip", "-n", ns, "addr", "add",
                  f"{node.address}/{self.network.prefixlen}", "dev", "eth0"])  # fmt: skip
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            if self.default_route:
                _run(["ip", "-n", ns, "route", "add", "default", "via", self.bridge_address])

    def _start_holder(self, node: LabNode) -> None:
        for path in NODE_PRIVATE_DIRS:
            Path(path).mkdir(parents=True, exist_ok=True)  # the mount point on the host
            (node.fs_dir / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        script = (
            'hostname "$1" && mount -t tmpfs -o mode=1777 tmpfs /dev/shm'
            ' && mount -t tmpfs -o mode=0755 tmpfs "$2" && mount --bind "$3" "$4"'
            ' && fs="$5" && shift 5'
            ' && for d in "$@"; do mount --bind "$fs$d" "$d" || exit 1; done'
            " && mount --make-rshared /"
            " && echo ready && exec sleep infinity"
        )
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{node.netns}",
             "unshare", "--uts", "--mount", "--propagation", "private", "--",
             "sh", "-c", script, "sh", node.hostname, str(node.run_dir), str(node.home),
             _root_home(), str(node.fs_dir), *NODE_PRIVATE_DIRS],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self._children.append(proc)
        assert proc.stdout is not None
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stdout], [], [], _START_TIMEOUT)
        line = proc.stdout.readline() if ready else b""
        proc.stdout.close()
        if line.strip() != b"ready":
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            err = proc.stderr.read().decode(errors="replace").strip()
            proc.wait()
            raise LabError(f"node {node.hostname}: namespace holder failed: {err or 'no output'}")
        proc.stderr.close()
        node.holder_pid_file.write_text(f"{proc.pid}\n")

    def _holder_pid(self, node: LabNode) -> int:
        try:
            pid = int(node.holder_pid_file.read_text())
        except (OSError, ValueError) as exc:
            raise LabError(f"node {node.hostname}: no namespace holder (is the lab up?)") from exc
        if not _alive(pid):
            raise LabError(f"node {node.hostname}: namespace holder {pid} is gone")
        return pid

    def _spawn_sshd(self, node: LabNode) -> None:
        sshd = self._sshd()
        assert sshd is not None
        holder = self._holder_pid(node)
        log = open(node.sshd_log, "ab")  # noqa: SIM115 - handed to the child
        with log:
            proc = subprocess.Popen(
                ["nsenter", "-t", str(holder), "--net", "--uts", "--mount", "--",
                 sshd, "-D", "-e", "-f", str(node.sshd_config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self._children.append(proc)

    def _wait_listening(self, nodes: Iterable[LabNode]) -> None:
        pending = list(nodes)
        deadline = time.monotonic() + _START_TIMEOUT
        while pending:
            pending = [n for n in pending if not _port_open(n.address, _SSH_PORT, 0.2)]
            if not pending:
                return
            if time.monotonic() > deadline:
                node = pending[0]
                try:
                    tail = node.sshd_log.read_text(errors="replace")[-1500:].strip()
                except OSError:
                    tail = ""
                raise LabError(
                    f"sshd of {node.hostname} ({node.address}) does not listen after "
                    f"{_START_TIMEOUT:g} s; log: {tail or '(empty)'}"
                )
            time.sleep(0.02)

    # ------------------------------------------------------------------ sshd control

    def netns_pids(self, node: LabNode) -> list[int]:
        """Live processes in the node's network namespace."""
        proc = _run(["ip", "netns", "pids", node.netns], check=False)
        pids = [int(p) for p in proc.stdout.split() if p.isdigit()]
        return [p for p in pids if _alive(p)]

    def sshd_pids(self, node: LabNode) -> list[int]:
        """The node's sshd listener and per-connection sshd processes."""
        return [p for p in self.netns_pids(node) if _comm(p) == "sshd"]

    def stop_sshd(self, index: int) -> None:
        """Stop the node's sshd and drop every SSH connection to it (like a
        crashed or stopped sshd; the node's containers keep running)."""
        node = self.node(index)
        self._kill(self.sshd_pids(node))

    def start_sshd(self, index: int) -> None:
        """Start the node's sshd again and wait until it listens."""
        node = self.node(index)
        if self.sshd_pids(node):
            raise LabError(f"sshd of {node.hostname} is already running")
        self._spawn_sshd(node)
        self._wait_listening([node])

    def restart_sshd(self, index: int) -> None:
        self.stop_sshd(index)
        self.start_sshd(index)

    def _kill(self, pids: Sequence[int], grace: float = 1.0) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            self._reap()
            deadline = time.monotonic() + grace
            while any(_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.01)
                self._reap()
            if not any(_alive(p) for p in pids):
                return

    def _reap(self) -> None:
        for proc in list(self._children):
            if proc.poll() is not None:
                self._children.remove(proc)

    # ------------------------------------------------------------------ status

    def status(self) -> list[NodeStatus]:
        existing = self._existing_netns()
        out = []
        for node in self.nodes:
            present = node.netns in existing
            try:
                holder = present and _alive(int(node.holder_pid_file.read_text()))
            except (OSError, ValueError):
                holder = False
            sshd = tuple(self.sshd_pids(node)) if present else ()
            out.append(
                NodeStatus(
                    index=node.index,
                    address=node.address,
                    netns=present,
                    holder=holder,
                    sshd_pids=sshd,
                    listening=bool(sshd) and _port_open(node.address, _SSH_PORT),
                )
            )
        return out

    # ------------------------------------------------------------------ down

    def down(self) -> None:
        """Kill the nodes' processes, delete namespaces, veths and bridge, remove
        ``base_dir``. Idempotent; also removes leftovers of a crashed run."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root to tear down network namespaces")
        owner = self._other_owner()
        if owner is not None:
            raise LabError(
                f"not tearing down lab prefix {self.prefix!r}: it belongs to live "
                f"process {owner['pid']} (base dir {owner.get('base_dir')})"
            )
        self._cleanup()
        for proc in self._children:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
        self._children.clear()
        if (self.base_dir / _MARKER).exists():
            shutil.rmtree(self.base_dir, ignore_errors=True)
        with contextlib.suppress(OSError, ValueError):
            owner = json.loads(self._owner_file.read_text())
            if owner.get("pid") == os.getpid():
                self._owner_file.unlink()

    def _existing_netns(self) -> list[str]:
        proc = _run(["ip", "netns", "list"], check=False)
        pattern = re.compile(rf"{re.escape(self.prefix)}-\d+")
        names = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
        return [name for name in names if pattern.fullmatch(name)]

    def _cleanup(self) -> None:
        namespaces = self._existing_netns()
        victims: list[int] = []
        for ns in namespaces:
            proc = _run(["ip", "netns", "pids", ns], check=False)
            victims += [int(p) for p in proc.stdout.split() if p.isdigit()]
        if victims:
            self._kill(victims)
        for ns in namespaces:
            _run(["ip", "netns", "del", ns], check=False)
        pattern = re.compile(rf"{re.escape(self.prefix)}(0|v\d+|p\d+)")
        links = json.loads(_run(["ip", "-j", "link", "show"]).stdout or "[]")
        for link in links:
            name = link.get("ifname", "")
            if pattern.fullmatch(name):
                result = _run(["ip", "link", "del", name], check=False)
                if result.returncode != 0 and "Cannot find device" not in result.stderr:
                    raise LabError(f"cannot delete {name}: {result.stderr.strip()}")
        if (self.base_dir / _MARKER).exists():
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()


def _subnets_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network configured on an interface of this machine."""
    proc = _run(["ip", "-j", "-4", "addr", "show"], check=False)
    nets = []
    for link in json.loads(proc.stdout or "[]"):
        for info in link.get("addr_info", []):
            nets.append(ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}").network)
    return nets


def free_subnet(start: int = 0, space: str = "10.231.0.0/16") -> str:
    """The first /24 of ``space``, searching from the ``start``-th one (wrapping
    around), that overlaps no address configured on this machine. Tests pass a
    per-process ``start`` so concurrent runs rarely race for the same one."""
    network = ipaddress.IPv4Network(space)
    candidates = list(network.subnets(new_prefix=24))
    used = _subnets_in_use()
    for i in range(len(candidates)):
        candidate = candidates[(start + i) % len(candidates)]
        if not any(candidate.overlaps(net) for net in used):
            return str(candidate)
    raise LabError(f"no free /24 left in {space}")


def reap_stale_labs() -> list[str]:
    """Tear down every lab whose owning process is gone (a crashed test run).

    Labs record their owner in ``/run/ckelab/<prefix>.owner``; a lab whose owner
    is still alive is left alone. Returns the prefixes torn down.
    """
    reaped: list[str] = []
    if os.geteuid() != 0 or not _OWNER_DIR.is_dir():
        return reaped
    for owner_file in sorted(_OWNER_DIR.glob("*.owner")):
        prefix = owner_file.name.removesuffix(".owner")
        try:
            owner = json.loads(owner_file.read_text())
            pid, base = int(owner["pid"]), str(owner["base_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(pid) or not re.fullmatch(r"[a-z][a-z0-9]*", prefix):
            continue
        Lab(base, nodes=1, prefix=prefix)._cleanup()
        owner_file.unlink(missing_ok=True)
        reaped.append(prefix)
    return reaped
