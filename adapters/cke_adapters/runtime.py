"""The container runtime of the nodes, driven over SSH with the docker CLI.

This is CKE's ``op.ContainerEngine`` (behaviour reference §C.1, §C.3, §D.1):
every primitive command a node needs, run as ``{cli} ...`` through
:meth:`cke_adapters.ssh.SSHPool.run`. ``cli`` is ``docker`` or ``podman``; only
the subcommands and flags both accept are used (``image list``, ``image
pull``, ``run``, ``ps -a``, ``container inspect|stop|kill|rm``, ``volume
ls|create|rm``), and the differences in their output are absorbed here
(podman lists images as ``localhost/NAME``, names containers without the
leading ``/``, and fails ``container kill`` of a stopped container).

Arguments are never interpreted by a shell
------------------------------------------
Every value that comes from ``cluster.yml`` (extra arguments, environment,
bind paths, label content, file names and contents) travels as one element of
an argument vector (``SSHPool.run`` quotes each element as one literal word)
or as SFTP data, never inside a script. The only script used (``empty_dir``)
is a constant that receives the directory as ``"$1"``. Values the docker CLI
itself cannot express (a ``:`` in a bind path, an ``=`` in an environment
name or a CR LF in its value, which podman turns into LF, a newline in a
container name) are refused with :class:`RuntimeCommandError` before anything
runs.

System containers (``run_container``)
-------------------------------------
::

    [restart: {cli} container kill N  (when running)]
    [exists:  {cli} container rm N]
    mktemp /tmp/cke-label.XXXXXXXXXX ; tee F  <- "com.cybozu.cke=<json>\\n" on stdin
    {cli} run --log-driver=<log_driver> -d --name=N --read-only --network=host --uts=host
        <options...> --volume=S:D:ro|rw[,propagation][,z|Z]... --env=K=V...
        --label-file=F IMAGE <builtin extra_args...> <extra extra_args...>
    rm -f -- F

The label ``com.cybozu.cke`` holds ``{"builtin": params, "extra": extra}``
(CKE's JSON names) so :meth:`ContainerRuntime.inspect` can give back exactly
what the container was started with, and the decision can compare it with
what it would start now. ``log_driver`` is CKE's ``journald`` by default; where
journald does not run (the lab), use ``k8s-file`` or ``none``. SELinux labels
(``z``/``Z`` of a bind) are applied only on nodes where ``getenforce`` exists
and prints ``Enforcing`` (asked once per node; ``selinux=True|False`` overrides).

Files and directories without a tools container
-----------------------------------------------
CKE writes files and makes directories by running its tools image
(``write_files``, ``make_directories``) with the parent directories bound.
Here they are done directly over the SSH connection instead:

* ``write_files`` uses SFTP on the node's persistent connection: for each
  file, create the parent directories, write a temporary file *in the same
  directory*, ``fsync`` it (``fsync@openssh.com``), set its mode, and
  ``posix-rename`` it over the target; afterwards ``sync`` the directories so
  the renames are durable too. A reader sees the old or the new content, never
  a mix, and a failure removes the temporary file: the same guarantees as
  ``write_files``.
* ``make_dirs`` is ``install -d -m MODE -- DIR...`` (creates missing parents,
  sets the mode also on a directory that exists).
* ``empty_dir`` is ``find -H DIR -mindepth 1 -delete`` when DIR exists.

Why: the tools image is itself something CKE installs, so a node must be able
to receive files before any image is present (no chicken-and-egg at
bootstrap, no image pull on the path of every file write), each write costs
one SFTP round trip instead of a container start, and nothing about the
result differs (root writes the same paths with the same modes atomically).
``tools_image`` is kept for the commands that need the image's *content*
(CKE's ``install-cni`` copies the tools image's CNI plugins); none is
implemented here yet. Note for whoever adds one: a *foreground* ``podman run``
(attached, waiting for the exit code, with or without ``--rm``) was seen to
hang in the lab with podman 4.3 after the container had exited (podman stuck
polling in ``libpod.(*Container).WaitForExit``); the detached ``run -d`` used
by ``run_container`` is not affected.

Errors
------
A command that runs and fails raises :class:`RuntimeCommandError` (node
address, CKE's command name, and the CLI's error line: one line, no
traceback). Transport failures keep their own one-line
:class:`cke_adapters.ssh.SSHError` types (``NodeUnreachable``,
``CommandTimeout``, ``CommandInterrupted``) so the caller can tell an
unreachable node (status) from a failed command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import posixpath
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, Protocol

import asyncssh

from cke_adapters.oneline import one_line
from cke_adapters.ssh import CommandFailed, CommandOutput, SSHPool
from cke_core.cluster import Mount, ServiceParams
from cke_core.codec import structure, unstructure
from cke_core.status import ServiceStatus

__all__ = [
    "CKE_LABEL",
    "ETCD_ADDED_MEMBER_VOLUME",
    "ContainerRuntime",
    "FileToWrite",
    "NodeFile",
    "PullFailed",
    "RuntimeCommandError",
    "image_listed",
    "label_value",
    "parse_label",
]

CKE_LABEL = "com.cybozu.cke"
"""The label holding ``{"builtin": ..., "extra": ...}`` of a system container."""

ETCD_ADDED_MEMBER_VOLUME = "etcd-added-member"
"""The volume marking a node whose etcd joined the cluster (§D.1 IsAddedMember)."""

_INSPECT_TRIES = 3
_INSPECT_PAUSE = 0.2
_LABEL_LINE_MAX = 64 * 1024
_SETTLE_TRIES = 10
_SETTLE_PAUSE = 0.3
_MAX_DETAIL = 500


# --------------------------------------------------------------------------- errors


def _stderr_summary(stderr: bytes | str) -> str:
    """The CLI's error as one line: its last ``Error...`` line (docker and podman
    print warnings and retries before it), else all of stderr, shortened."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error")]
    summary = one_line(errors[-1] if errors else " ".join(lines))
    if len(summary) > _MAX_DETAIL:
        summary = summary[: _MAX_DETAIL - 3] + "..."
    return summary or "no error output"


class RuntimeCommandError(Exception):
    """A container-runtime command failed on a node. ``str()`` is one line:
    ``<address>: <action>: <detail>``; ``action`` is CKE's command name."""

    def __init__(self, address: str, action: str, detail: str) -> None:
        self.address = address
        self.action = action
        self.detail = one_line(detail) or "failed"
        super().__init__(f"{address}: {action}: {self.detail}")


class PullFailed(RuntimeCommandError):
    """``image-pull`` failed every attempt."""

    def __init__(self, address: str, image: str, attempts: int, detail: str) -> None:
        self.image = image
        self.attempts = attempts
        super().__init__(
            address, "image-pull", f"{image}: {one_line(detail)} (failed {attempts} attempts)"
        )


# --------------------------------------------------------------------------- values


class FileToWrite(Protocol):
    """A file for :meth:`ContainerRuntime.write_files`: ``cke_core.render.files.File``
    and :class:`NodeFile` both are. ``content`` as ``str`` is written UTF-8 encoded."""

    @property
    def path(self) -> str: ...

    @property
    def content(self) -> str | bytes: ...

    @property
    def mode(self) -> int: ...


class NodeFile:
    """A file to write: absolute ``path``, ``content`` (bytes or text), ``mode``."""

    __slots__ = ("content", "mode", "path")

    def __init__(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        self.path = path
        self.content = content
        self.mode = mode

    def __repr__(self) -> str:
        return f"NodeFile({self.path!r}, <{len(self.content)} bytes>, {self.mode:#o})"


def _plain(params: ServiceParams) -> ServiceParams:
    """Only the three ServiceParams fields (a subclass such as EtcdParams has more,
    which CKE's label does not carry)."""
    if type(params) is ServiceParams:
        return params
    return ServiceParams(
        extra_args=params.extra_args,
        extra_binds=params.extra_binds,
        extra_env=params.extra_env,
    )


def label_value(params: ServiceParams, extra: ServiceParams) -> str:
    """The ``com.cybozu.cke`` label: compact JSON on one line (newlines and
    non-ASCII characters escaped, so it survives the line-based label file)."""
    data = {"builtin": unstructure(_plain(params)), "extra": unstructure(_plain(extra))}
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True)


def parse_label(value: str | None) -> tuple[ServiceParams, ServiceParams] | None:
    """``(builtin, extra)`` from a label value; None when it is absent or not
    CKE's (then the container is not ours: its parameters count as empty)."""
    if not value:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    out: list[ServiceParams] = []
    for key in ("builtin", "extra"):
        raw = data.get(key)
        if raw is None:
            out.append(ServiceParams())
            continue
        parsed, problems, _ = structure(raw, ServiceParams)
        if parsed is None or problems:
            return None
        out.append(parsed)
    return out[0], out[1]


def _normalize_image(name: str) -> str:
    """``name`` as a fully qualified reference (docker's rules): default registry
    ``docker.io``, ``library/`` for official images, tag ``latest``."""
    if "@" in name:
        return name
    slash = name.find("/")
    first = name[:slash] if slash >= 0 else ""
    if slash < 0 or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}"
        rest = name.removeprefix("docker.io/")
        if "/" not in rest:
            name = f"docker.io/library/{rest}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    return name


def image_listed(image: str, listed: Iterable[str]) -> bool:
    """Whether ``image`` is among the names printed by ``image list --format
    {{.Repository}}:{{.Tag}}`` (docker prints ``busybox:1``, podman
    ``docker.io/library/busybox:1``; podman names local imports ``localhost/N``)."""
    wanted = _normalize_image(image)
    for name in listed:
        if "<none>" in name:
            continue
        if name == image or name == f"localhost/{image}" or _normalize_image(name) == wanted:
            return True
    return False


_CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_VOLUME_NAME = _CONTAINER_NAME


# --------------------------------------------------------------------------- runtime


class ContainerRuntime:
    """The docker CLI (``docker`` or ``podman``) on the nodes, over ``ssh``.

    Every method takes the node ``address`` first and is safe to run again
    (§L.8): removing what is absent or creating what exists is not an error.
    """

    def __init__(
        self,
        ssh: SSHPool,
        cli: Literal["docker", "podman"] | str = "docker",
        log_driver: str = "journald",
        tools_image: str | None = None,
        *,
        pull_retries: int = 3,
        pull_interval: float = 10.0,
        selinux: bool | None = None,
    ) -> None:
        if not cli or cli.startswith("-") or any(c.isspace() for c in cli):
            raise ValueError(f"cli {cli!r}: give a program name or an absolute path")
        if pull_retries < 1:
            raise ValueError("pull_retries must be at least 1")
        self.ssh = ssh
        self.cli = cli
        self.log_driver = log_driver
        self.tools_image = tools_image
        self.pull_retries = pull_retries
        self.pull_interval = pull_interval
        self.selinux = selinux
        self._selinux: dict[str, bool] = {}

    # ----------------------------------------------------------- plumbing

    async def _run(
        self,
        address: str,
        action: str,
        argv: Sequence[str],
        stdin: bytes | None = None,
        *,
        timeout: float | None = None,
    ) -> CommandOutput:
        """Run ``argv``; a non-zero exit is a :class:`RuntimeCommandError`."""
        try:
            return await self.ssh.run(address, argv, stdin, timeout=timeout)
        except CommandFailed as exc:
            raise RuntimeCommandError(address, action, _stderr_summary(exc.stderr)) from exc

    async def _cli(
        self, address: str, action: str, *args: str, stdin: bytes | None = None
    ) -> CommandOutput:
        return await self._run(address, action, [self.cli, *args], stdin)

    async def selinux_enforcing(self, address: str) -> bool:
        """Whether the node enforces SELinux (``getenforce`` prints ``Enforcing``);
        False where ``getenforce`` is absent. Asked once per node, unless the
        runtime was built with ``selinux=True|False`` (then that is the answer)."""
        if self.selinux is not None:
            return self.selinux
        known = self._selinux.get(address)
        if known is None:
            out = await self.ssh.run(address, ["getenforce"], check=False)
            known = out.ok and out.stdout.strip() == b"Enforcing"
            self._selinux[address] = known
        return known

    # ----------------------------------------------------------- images

    async def list_images(self, address: str) -> list[str]:
        """``{cli} image list --format {{.Repository}}:{{.Tag}}``."""
        out = await self._cli(
            address, "image-pull", "image", "list", "--format", "{{.Repository}}:{{.Tag}}"
        )
        return [line.strip() for line in out.stdout.decode().splitlines() if line.strip()]

    async def image_exists(self, address: str, image: str) -> bool:
        return image_listed(image, await self.list_images(address))

    async def pull_image(
        self,
        address: str,
        image: str,
        *,
        retries: int | None = None,
        interval: float | None = None,
    ) -> bool:
        """Pull ``image`` unless the node has it (CKE ``image-pull``).

        Up to ``retries`` attempts (default 3), ``interval`` seconds apart
        (default 10). Returns whether it pulled. Raises :class:`PullFailed`
        (a :class:`RuntimeCommandError`) with the last error after the last attempt.
        """
        self._check_image(address, "image-pull", image)
        if await self.image_exists(address, image):
            return False
        tries = self.pull_retries if retries is None else retries
        pause = self.pull_interval if interval is None else interval
        detail = ""
        for attempt in range(1, max(tries, 1) + 1):
            if attempt > 1:
                await asyncio.sleep(pause)
            out = await self.ssh.run(address, [self.cli, "image", "pull", image], check=False)
            if out.ok:
                return True
            detail = _stderr_summary(out.stderr)
        raise PullFailed(address, image, max(tries, 1), detail)

    @staticmethod
    def _check_image(address: str, action: str, image: str) -> None:
        if not image or image.startswith("-") or any(c.isspace() for c in image):
            raise RuntimeCommandError(address, action, f"invalid image name {image!r}")

    # ----------------------------------------------------------- containers

    @staticmethod
    def _check_name(address: str, action: str, name: str) -> None:
        if not _CONTAINER_NAME.fullmatch(name):
            raise RuntimeCommandError(
                address, action, f"invalid container name {name!r} (use [A-Za-z0-9_.-])"
            )

    async def container_names(self, address: str, action: str = "inspect") -> set[str]:
        """Names of every container on the node, running or not (``ps -a``)."""
        out = await self._cli(address, action, "ps", "-a", "--no-trunc", "--format", "{{.Names}}")
        names: set[str] = set()
        for line in out.stdout.decode().splitlines():
            names.update(n.strip().lstrip("/") for n in line.split(",") if n.strip())
        return names

    async def exists(self, address: str, name: str) -> bool:
        return name in await self.container_names(address)

    async def inspect(self, address: str, names: Iterable[str]) -> dict[str, ServiceStatus]:
        """Status of the containers ``names`` that exist on the node (CKE's
        ``Inspect``): ``running``, ``image`` (``Config.Image``) and the built-in
        and extra parameters recorded in the ``com.cybozu.cke`` label.

        Containers that do not exist are absent from the result (their status
        is the zero ``ServiceStatus``). A container without a valid CKE label is
        not ours: its status has ``running`` and ``image`` but empty parameters,
        so it never looks up to date. One ``ps -a`` and one ``container
        inspect``; retried (3 tries) if a container vanishes in between.
        """
        wanted = list(dict.fromkeys(names))
        for name in wanted:
            self._check_name(address, "inspect", name)
        for attempt in range(1, _INSPECT_TRIES + 1):
            present = await self.container_names(address)
            targets = [n for n in wanted if n in present]
            if not targets:
                return {}
            out = await self.ssh.run(
                address, [self.cli, "container", "inspect", *targets], check=False
            )
            if out.ok:
                return self._statuses(address, out.stdout, targets)
            if attempt == _INSPECT_TRIES:
                raise RuntimeCommandError(address, "inspect", _stderr_summary(out.stderr))
            await asyncio.sleep(_INSPECT_PAUSE)
        raise AssertionError("unreachable")  # pragma: no cover

    def _statuses(
        self, address: str, stdout: bytes, targets: list[str]
    ) -> dict[str, ServiceStatus]:
        try:
            documents = json.loads(stdout)
        except ValueError as exc:
            raise RuntimeCommandError(
                address, "inspect", f"{self.cli} container inspect printed no JSON: {exc}"
            ) from exc
        if not isinstance(documents, list):
            raise RuntimeCommandError(address, "inspect", "container inspect printed no list")
        statuses: dict[str, ServiceStatus] = {}
        for doc in documents:
            if not isinstance(doc, dict):
                continue
            name = str(doc.get("Name") or "").lstrip("/")
            if name not in targets:
                continue
            state = doc.get("State") or {}
            config = doc.get("Config") or {}
            labels = config.get("Labels") or {}
            image = config.get("Image") or doc.get("ImageName") or ""
            parsed = parse_label(labels.get(CKE_LABEL) if isinstance(labels, dict) else None)
            builtin, extra = parsed if parsed is not None else (ServiceParams(), ServiceParams())
            statuses[name] = ServiceStatus(
                running=bool(state.get("Running")) if isinstance(state, dict) else False,
                image=str(image),
                builtin_params=builtin,
                extra_params=extra,
            )
        return statuses

    async def _running(self, address: str, action: str, name: str) -> bool | None:
        """None if ``name`` does not exist, else whether it runs."""
        if name not in await self.container_names(address, action):
            return None
        out = await self.ssh.run(
            address,
            [self.cli, "container", "inspect", "--format", "{{.State.Running}}", name],
            check=False,
        )
        if not out.ok:
            if name not in await self.container_names(address, action):
                return None
            raise RuntimeCommandError(address, action, _stderr_summary(out.stderr))
        return out.stdout.strip() == b"true"

    async def _signal_and_remove(
        self, address: str, action: str, name: str, verb: str, extra: Sequence[str] = ()
    ) -> None:
        running = await self._running(address, action, name)
        if running is None:
            return
        if running:
            out = await self.ssh.run(
                address, [self.cli, "container", verb, *extra, name], check=False
            )
            # Tolerate losing a race with the container's own exit.
            if not out.ok and await self._running(address, action, name):
                raise RuntimeCommandError(address, action, _stderr_summary(out.stderr))
        await self._remove(address, action, name, settle=running)

    async def _remove(self, address: str, action: str, name: str, *, settle: bool = False) -> None:
        """``container rm``; with ``settle`` (just signalled) retry for a few
        seconds while the container is still on its way down."""
        for attempt in range(1, (_SETTLE_TRIES if settle else 1) + 1):
            out = await self.ssh.run(address, [self.cli, "container", "rm", name], check=False)
            if out.ok or name not in await self.container_names(address, action):
                return
            if attempt < _SETTLE_TRIES and settle and await self._running(address, action, name):
                await asyncio.sleep(_SETTLE_PAUSE)
                continue
            break
        raise RuntimeCommandError(address, action, _stderr_summary(out.stderr))

    async def stop_container(self, address: str, name: str, *, timeout: int | None = None) -> None:
        """CKE ``stop-container``: stop ``name`` if it runs (``--time=timeout``
        seconds before KILL; the CLI's default 10 s), then remove it if it exists."""
        self._check_name(address, "stop-container", name)
        extra = [f"--time={int(timeout)}"] if timeout is not None else []
        await self._signal_and_remove(address, "stop-container", name, "stop", extra)

    async def kill_container(self, address: str, name: str) -> None:
        """CKE ``kill-containers``: kill ``name`` if it runs, then remove it if it exists."""
        self._check_name(address, "kill-containers", name)
        await self._signal_and_remove(address, "kill-containers", name, "kill")

    async def remove_container(self, address: str, name: str) -> None:
        """Remove ``name`` if it exists (it must not be running)."""
        self._check_name(address, "remove-container", name)
        if name in await self.container_names(address, "remove-container"):
            await self._remove(address, "remove-container", name)

    async def _volume_args(self, address: str, binds: Sequence[Mount]) -> list[str]:
        selinux: bool | None = None
        args = []
        for m in binds:
            for what, path in (("source", m.source), ("destination", m.destination)):
                if not path or ":" in path or "\0" in path:
                    raise RuntimeCommandError(
                        address,
                        "run-container",
                        f"bind {what} {path!r} cannot be given to --volume (empty or has ':')",
                    )
            opts = ["ro" if m.read_only else "rw"]
            if m.propagation:
                opts.append(m.propagation)
            if m.selinux_label:
                if selinux is None:
                    selinux = await self.selinux_enforcing(address)
                if selinux:
                    opts.append(m.selinux_label)
            args.append(f"--volume={m.source}:{m.destination}:{','.join(opts)}")
        return args

    @staticmethod
    def _env_args(address: str, envs: Iterable[Mapping[str, str]]) -> list[str]:
        args = []
        for env in envs:
            for key, value in env.items():
                if not key or "=" in key or any(c.isspace() for c in key):
                    raise RuntimeCommandError(
                        address, "run-container", f"invalid environment variable name {key!r}"
                    )
                if "\r\n" in value:
                    # podman turns CR LF into LF in --env values (measured with
                    # podman 4.3); refuse rather than run with another value
                    # than the one recorded in the label.
                    raise RuntimeCommandError(
                        address,
                        "run-container",
                        f"environment variable {key}: CR LF in a value does not survive "
                        "the container CLI",
                    )
                args.append(f"--env={key}={value}")
        return args

    async def run_container(
        self,
        address: str,
        name: str,
        image: str,
        *,
        options: Sequence[str] = (),
        params: ServiceParams = ServiceParams(),  # noqa: B008 - immutable value
        extra: ServiceParams = ServiceParams(),  # noqa: B008
        restart: bool = False,
    ) -> None:
        """CKE ``run-container``: (re)create system container ``name``.

        ``params`` are the built-in parameters, ``extra`` cluster.yml's; both
        are recorded in the ``com.cybozu.cke`` label. With ``restart`` a running
        container is killed first; an existing container is removed.
        """
        action = "run-container"
        self._check_name(address, action, name)
        self._check_image(address, action, image)
        volumes = await self._volume_args(address, [*params.extra_binds, *extra.extra_binds])
        envs = self._env_args(address, [params.extra_env, extra.extra_env])
        label = f"{CKE_LABEL}={label_value(params, extra)}\n".encode()
        if len(label) >= _LABEL_LINE_MAX:
            # docker and podman read the label file with a bufio.Scanner (64 KiB lines).
            raise RuntimeCommandError(
                address,
                action,
                f"the {CKE_LABEL} label would be {len(label)} bytes; the container CLI "
                f"reads at most {_LABEL_LINE_MAX - 1} (parameters too large)",
            )

        running = await self._running(address, action, name)
        if restart and running:
            out = await self.ssh.run(address, [self.cli, "container", "kill", name], check=False)
            if not out.ok and await self._running(address, action, name):
                raise RuntimeCommandError(address, action, _stderr_summary(out.stderr))
        if running is not None:
            await self._remove(address, action, name, settle=bool(restart and running))

        made = await self._run(address, action, ["mktemp", "/tmp/cke-label.XXXXXXXXXX"])
        label_file = made.stdout.decode().strip()
        try:
            await self._run(address, action, ["tee", label_file], label)
            argv = [
                self.cli,
                "run",
                f"--log-driver={self.log_driver}",
                "-d",
                f"--name={name}",
                "--read-only",
                "--network=host",
                "--uts=host",
                *options,
                *volumes,
                *envs,
                f"--label-file={label_file}",
                image,
                *params.extra_args,
                *extra.extra_args,
            ]
            await self._run(address, action, argv)
        finally:
            with contextlib.suppress(Exception):
                await self.ssh.run(address, ["rm", "-f", "--", label_file], check=False)

    # ----------------------------------------------------------- volumes

    async def list_volumes(self, address: str, action: str = "volume-list") -> set[str]:
        """``{cli} volume ls -q``."""
        out = await self._cli(address, action, "volume", "ls", "-q")
        return {line.strip() for line in out.stdout.decode().splitlines() if line.strip()}

    @staticmethod
    def _check_volume(address: str, action: str, name: str) -> None:
        if not _VOLUME_NAME.fullmatch(name):
            raise RuntimeCommandError(address, action, f"invalid volume name {name!r}")

    async def volume_exists(self, address: str, name: str) -> bool:
        self._check_volume(address, "volume-list", name)
        return name in await self.list_volumes(address)

    async def etcd_volumes(self, address: str, volume_name: str = "etcd-cke") -> tuple[bool, bool]:
        """``(has_data, is_added_member)`` of §D.1 from one ``volume ls -q``:
        the etcd data volume exists; and so does ``etcd-added-member``."""
        self._check_volume(address, "volume-list", volume_name)
        volumes = await self.list_volumes(address)
        has_data = volume_name in volumes
        return has_data, has_data and ETCD_ADDED_MEMBER_VOLUME in volumes

    async def create_volume(self, address: str, name: str) -> None:
        """``{cli} volume create NAME`` unless it exists (podman refuses to
        create an existing volume; docker does not)."""
        action = "volume-create"
        self._check_volume(address, action, name)
        if name in await self.list_volumes(address, action):
            return
        out = await self.ssh.run(address, [self.cli, "volume", "create", name], check=False)
        if not out.ok and name not in await self.list_volumes(address, action):
            raise RuntimeCommandError(address, action, _stderr_summary(out.stderr))

    async def remove_volume(self, address: str, name: str) -> None:
        """``{cli} volume rm NAME`` only if ``volume ls`` lists it (§L.8)."""
        action = "volume-remove"
        self._check_volume(address, action, name)
        if name not in await self.list_volumes(address, action):
            return
        out = await self.ssh.run(address, [self.cli, "volume", "rm", name], check=False)
        if not out.ok and name in await self.list_volumes(address, action):
            raise RuntimeCommandError(address, action, _stderr_summary(out.stderr))

    # ----------------------------------------------------------- files

    @staticmethod
    def _check_path(address: str, action: str, path: str) -> str:
        if not isinstance(path, str) or not posixpath.isabs(path) or "\0" in path:
            raise RuntimeCommandError(address, action, f"{path!r} is not an absolute path")
        normal = posixpath.normpath(path)
        if normal in ("/", "//"):
            raise RuntimeCommandError(address, action, f"refusing to use {path!r}")
        return normal

    async def make_dirs(self, address: str, dirs: Iterable[str], mode: int | str = 0o755) -> None:
        """CKE ``make-dirs``: create each directory (and missing parents) and set
        its mode (``0o755``/``"755"`` or ``0o700``/``"700"``), also when it exists:
        ``install -d -m MODE -- DIR...``."""
        action = "make-dirs"
        paths = [self._check_path(address, action, d) for d in dirs]
        if not paths:
            return
        bits = int(mode, 8) if isinstance(mode, str) else int(mode)
        if not 0 <= bits <= 0o7777:
            raise RuntimeCommandError(address, action, f"invalid mode {mode!r}")
        await self._run(address, action, ["install", "-d", "-m", f"{bits:o}", "--", *paths])

    async def write_files(self, address: str, files: Iterable[FileToWrite]) -> None:
        """CKE ``make-files``: write every file atomically over SFTP (temporary
        file in the same directory, fsync, chmod, rename; parents created),
        then ``sync`` the directories so the renames survive a crash.

        A file's ``content`` may be ``str`` (written UTF-8) or ``bytes``.
        """
        action = "make-files"
        batch = []
        for f in files:
            if isinstance(f.path, str) and f.path.endswith("/"):
                raise RuntimeCommandError(address, action, f"{f.path!r} is not a file path")
            path = self._check_path(address, action, f.path)
            data = f.content.encode() if isinstance(f.content, str) else bytes(f.content)
            if not 0 <= f.mode <= 0o7777:
                raise RuntimeCommandError(address, action, f"{path}: invalid mode {f.mode:#o}")
            batch.append((path, data, f.mode))
        if not batch:
            return
        async with self.ssh.sftp(address) as sftp:
            for path, data, mode in batch:
                await self._write_one(sftp, address, path, data, mode)
        directories = sorted({posixpath.dirname(p) for p, _, _ in batch})
        await self._run(address, action, ["sync", "--", *directories])

    @staticmethod
    async def _write_one(
        sftp: asyncssh.SFTPClient, address: str, path: str, data: bytes, mode: int
    ) -> None:
        directory, name = posixpath.split(path)
        tmp = posixpath.join(directory, f".{name[:100]}.cke-{secrets.token_hex(8)}")
        try:
            await sftp.makedirs(directory, exist_ok=True)
            attrs = asyncssh.SFTPAttrs(permissions=mode & 0o777)
            async with sftp.open(tmp, "wb", attrs) as handle:
                await handle.write(data)
                await handle.fsync()
            await sftp.chmod(tmp, mode)
            await sftp.posix_rename(tmp, path)
        except (asyncssh.SFTPError, OSError) as exc:
            with contextlib.suppress(asyncssh.SFTPError, OSError):
                await sftp.remove(tmp)
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            raise RuntimeCommandError(address, "make-files", f"{path}: {reason}") from exc

    async def install_cni(self, address: str, image: str, target: str = "/opt/cni/bin") -> None:
        """CKE ``install-cni``: copy the tools image's CNI plugins
        (``/cni_plugins/bin/*``) to ``target`` on the node.

        The image is not *run* (see the note on foreground runs above): a
        container is created from it, the directory copied out with
        ``{cli} cp``, and the container removed.
        """
        action = "install-cni"
        self._check_image(address, action, image)
        path = self._check_path(address, action, target)
        name = f"cke-install-cni-{secrets.token_hex(6)}"
        await self._run(address, action, ["install", "-d", "-m", "755", "--", path])
        await self._cli(address, action, "create", f"--name={name}", image, "true")
        try:
            await self._cli(address, action, "cp", f"{name}:/cni_plugins/bin/.", path)
        finally:
            with contextlib.suppress(Exception):
                await self.ssh.run(address, [self.cli, "rm", "-f", name], check=False)

    async def empty_dir(self, address: str, directory: str) -> None:
        """CKE ``empty-dir``: remove everything inside ``directory`` (kept); nothing
        to do if it does not exist."""
        action = "empty-dir"
        path = self._check_path(address, action, directory)
        script = '[ -e "$1" ] || exit 0; exec find -H "$1" -mindepth 1 -delete'
        await self._run(address, action, ["sh", "-c", script, "sh", path])
