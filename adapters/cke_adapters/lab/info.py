"""What ``ckecli lab up`` created, as the file ``lab.json`` in the lab's directory.

Other code (the engine's wiring, tests, ``ckecli lab status|down``) reads it
with :func:`load_lab` to reach the nodes: addresses and namespaces, the SSH
key and known-hosts file, the container CLI and log driver to use on the
nodes, the images loaded there (as the ``Images`` value decisions take) and
where ``cluster.yml`` is. Example::

    info = load_lab("/run/cke-lab")
    async with info.ssh_pool() as pool:
        runtime = ContainerRuntime(pool, info.runtime_cli, log_driver=info.log_driver)
        ...

The file is versioned (``"format": "cke-lab/1"``) and every field is checked
when it is read: a bad file is one line naming the field, not a ``KeyError``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from cke_adapters.lab.netns import Lab, LabError
from cke_adapters.ssh import FileKeySource, SSHPool
from cke_core.render.images import Images

__all__ = ["LAB_FILE", "LAB_FORMAT", "LabInfo", "LabInfoError", "LabNodeInfo", "load_lab"]

LAB_FILE = "lab.json"
LAB_FORMAT = "cke-lab/1"

T = TypeVar("T")


class LabInfoError(LabError):
    """``lab.json`` is missing or invalid; the message is one line."""


@attrs.frozen
class LabNodeInfo:
    """One node: its address and namespace, whether cluster.yml makes it a
    control plane, and the podman configuration its SSH sessions use."""

    index: int
    hostname: str
    address: str
    netns: str
    control_plane: bool
    directory: Path
    containers_conf: Path
    storage_conf: Path


@attrs.frozen
class LabInfo:
    """A lab as ``ckecli lab up`` built it (see the module docstring)."""

    name: str
    directory: Path
    prefix: str
    subnet: str
    bridge: str
    bridge_address: str
    nodes: tuple[LabNodeInfo, ...]
    ssh_user: str
    ssh_port: int
    ssh_key: Path
    known_hosts: Path
    runtime_cli: str
    log_driver: str
    images: Images
    kubernetes_stand_in: bool
    cluster_yml: Path

    @property
    def path(self) -> Path:
        return self.directory / LAB_FILE

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.nodes]

    @property
    def control_planes(self) -> list[str]:
        return [n.address for n in self.nodes if n.control_plane]

    def lab(self) -> Lab:
        """The :class:`Lab` object of these nodes (for ``status()``, ``down()``,
        stopping and starting sshd), without bringing anything up."""
        return Lab(self.directory, nodes=len(self.nodes), prefix=self.prefix, subnet=self.subnet)

    def ssh_pool(self, **kwargs: Any) -> SSHPool:
        """An :class:`SSHPool` to the nodes (keyword arguments go to it)."""
        kwargs.setdefault("username", self.ssh_user)
        kwargs.setdefault("port", self.ssh_port)
        return SSHPool(FileKeySource(self.ssh_key), self.known_hosts, **kwargs)

    def to_json(self) -> str:
        data = {
            "format": LAB_FORMAT,
            "name": self.name,
            "directory": str(self.directory),
            "prefix": self.prefix,
            "subnet": self.subnet,
            "bridge": self.bridge,
            "bridge_address": self.bridge_address,
            "ssh": {
                "user": self.ssh_user,
                "port": self.ssh_port,
                "key": str(self.ssh_key),
                "known_hosts": str(self.known_hosts),
            },
            "runtime": {"cli": self.runtime_cli, "log_driver": self.log_driver},
            "images": {
                "etcd": self.images.etcd,
                "tools": self.images.tools,
                "kubernetes": self.images.kubernetes,
                "kubernetes_stand_in": self.kubernetes_stand_in,
            },
            "cluster_yml": str(self.cluster_yml),
            "nodes": [
                {
                    "index": n.index,
                    "hostname": n.hostname,
                    "address": n.address,
                    "netns": n.netns,
                    "control_plane": n.control_plane,
                    "directory": str(n.directory),
                    "containers_conf": str(n.containers_conf),
                    "storage_conf": str(n.storage_conf),
                }
                for n in self.nodes
            ],
        }
        return json.dumps(data, indent=2) + "\n"

    def save(self) -> None:
        """Write ``lab.json`` into the lab's directory (atomically)."""
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{LAB_FILE}.")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(self.to_json())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class _Reader:
    """Typed access to a JSON object, with the field's path in every error."""

    def __init__(self, source: Path, data: object, at: str = "") -> None:
        if not isinstance(data, Mapping):
            raise LabInfoError(f"{source}: {at or 'the document'} must be an object")
        self.source = source
        self.data = data
        self.at = at

    def _get(self, key: str, kind: type[T], check: Callable[[T], bool] | None = None) -> T:
        where = f"{self.at}.{key}" if self.at else key
        if key not in self.data:
            raise LabInfoError(f"{self.source}: {where}: missing")
        value = self.data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise LabInfoError(f"{self.source}: {where}: expected {kind.__name__}")
        if check is not None and not check(value):
            raise LabInfoError(f"{self.source}: {where}: invalid value {value!r}")
        return value

    def text(self, key: str) -> str:
        return self._get(key, str, lambda v: bool(v))

    def integer(self, key: str) -> int:
        return self._get(key, int, lambda v: v >= 0)

    def flag(self, key: str) -> bool:
        return self._get(key, bool)

    def path(self, key: str) -> Path:
        return Path(self._get(key, str, lambda v: v.startswith("/")))

    def obj(self, key: str) -> _Reader:
        where = f"{self.at}.{key}" if self.at else key
        return _Reader(self.source, self._get(key, dict), where)

    def items(self, key: str) -> list[_Reader]:
        where = f"{self.at}.{key}" if self.at else key
        items = self._get(key, list, lambda v: len(v) > 0)
        return [_Reader(self.source, item, f"{where}[{i}]") for i, item in enumerate(items)]


def load_lab(directory: str | Path) -> LabInfo:
    """The lab described by ``directory/lab.json``; :class:`LabInfoError` (one
    line) when there is none or it is invalid."""
    source = Path(directory).absolute() / LAB_FILE
    try:
        text = source.read_text()
    except FileNotFoundError:
        raise LabInfoError(
            f"no lab in {source.parent}: {LAB_FILE} not found (ckecli lab up --dir {source.parent})"
        ) from None
    except OSError as exc:
        raise LabInfoError(f"cannot read {source}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LabInfoError(f"{source}: not JSON: {exc}") from exc
    top = _Reader(source, data)
    fmt = top.text("format")
    if fmt != LAB_FORMAT:
        raise LabInfoError(f"{source}: format {fmt!r} is not {LAB_FORMAT!r}")
    ssh, runtime, images = top.obj("ssh"), top.obj("runtime"), top.obj("images")
    nodes = tuple(
        LabNodeInfo(
            index=node.integer("index"),
            hostname=node.text("hostname"),
            address=node.text("address"),
            netns=node.text("netns"),
            control_plane=node.flag("control_plane"),
            directory=node.path("directory"),
            containers_conf=node.path("containers_conf"),
            storage_conf=node.path("storage_conf"),
        )
        for node in top.items("nodes")
    )
    return LabInfo(
        name=top.text("name"),
        directory=top.path("directory"),
        prefix=top.text("prefix"),
        subnet=top.text("subnet"),
        bridge=top.text("bridge"),
        bridge_address=top.text("bridge_address"),
        nodes=nodes,
        ssh_user=ssh.text("user"),
        ssh_port=ssh.integer("port"),
        ssh_key=ssh.path("key"),
        known_hosts=ssh.path("known_hosts"),
        runtime_cli=runtime.text("cli"),
        log_driver=runtime.text("log_driver"),
        images=Images(
            etcd=images.text("etcd"),
            tools=images.text("tools"),
            kubernetes=images.text("kubernetes"),
        ),
        kubernetes_stand_in=images.flag("kubernetes_stand_in"),
        cluster_yml=top.path("cluster_yml"),
    )
