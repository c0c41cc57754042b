"""ContainerRuntime against podman on real SSH nodes (a 2-node namespace lab).

One lab per module (prefix ``ckr<pid % 1000>``), torn down at the end even when a
test fails. A tiny image (Debian's static busybox, ``cke_adapters.images``) is
imported into each node's podman storage; no registry is reachable, so pulls of
absent images fail (fast: a refused connection). Containers run their command
through ``sh -c CONSTANT sh ARGS...`` and write what they received (arguments,
environment, bind contents) to a bind-mounted directory, which the test reads
back: every hostile value must arrive byte for byte, and the marker files its
shell fragments would create must never appear.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cke_adapters.images import busybox_rootfs, find_busybox, load_image_everywhere
from cke_adapters.lab import Lab, free_subnet, reap_stale_labs
from cke_adapters.runtime import (
    CKE_LABEL,
    ContainerRuntime,
    NodeFile,
    PullFailed,
    RuntimeCommandError,
    label_value,
)
from labnodes import make_pool, remove_all_containers, run
from missing import component_missing

from cke_core.cluster import Mount, ServiceParams
from cke_core.status import ServiceStatus

pytestmark = pytest.mark.integration

PID = os.getpid() % 1000
PREFIX = f"ckr{PID}"
IMAGE = "localhost/cke-test/busybox:1"

# The container's command: record arguments and environment (NUL separated),
# and each bind's "id" file, then wait for TERM (sh as PID 1 with a trap stops
# at once instead of waiting for the stop timeout).
RECORDER = (
    'printf "%s\\0" "$@" > /out/args; env -0 > /out/env; '
    'for d in /binds/*; do [ -f "$d/id" ] && cat "$d/id" && printf "\\0"; done > /out/binds; '
    'trap "exit 0" TERM; sleep 3600 & wait'
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        component_missing("the lab needs root (network namespaces, veths, sshd)")
    if find_busybox() is None:
        component_missing("no static busybox for the test image: apt-get install busybox-static")
    reap_stale_labs()
    subnet = free_subnet(start=60 + PID % 40)
    lab = Lab(tmp_path_factory.mktemp("rtlab") / "lab", nodes=2, prefix=PREFIX, subnet=subnet)
    try:
        lab.up()

        async def load() -> None:
            async with make_pool(lab) as pool:
                await load_image_everywhere(pool, lab.addresses, busybox_rootfs(), IMAGE)

        run(load, timeout=60)
        yield lab
    finally:
        remove_all_containers(lab)
        lab.down()


def recording_cli(lab: Lab) -> tuple[str, Path]:
    """A ``podman`` wrapper that logs each invocation's argv (``$#`` then the
    arguments, NUL-terminated) before running it: what the runtime really passed."""
    log = lab.base_dir / f"cli-{secrets.token_hex(4)}.log"
    wrapper = log.with_suffix(".sh")
    wrapper.write_text(f'#!/bin/sh\nprintf \'%s\\0\' "$#" "$@" >> \'{log}\'\nexec podman "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), log


def invocations(log: Path) -> list[list[str]]:
    words = log.read_bytes().split(b"\0")[:-1]
    calls, i = [], 0
    while i < len(words):
        count = int(words[i])
        calls.append([w.decode() for w in words[i + 1 : i + 1 + count]])
        i += 1 + count
    return calls


@asynccontextmanager
async def runtime_for(
    lab: Lab, cli: str = "podman", **kwargs: Any
) -> AsyncIterator[ContainerRuntime]:
    pool = make_pool(lab)
    try:
        yield ContainerRuntime(pool, cli, log_driver="k8s-file", **kwargs)
    finally:
        await pool.close()


def out_dir(lab: Lab, label: str) -> Path:
    """A fresh host directory (the nodes share the host's file system)."""
    path = lab.base_dir / f"out-{label}-{secrets.token_hex(4)}"
    path.mkdir()
    return path


def recorder(out: Path, *binds: Mount, env: dict[str, str] | None = None) -> ServiceParams:
    return ServiceParams(
        extra_args=("sh", "-c", RECORDER, "sh"),
        extra_binds=(Mount(str(out), "/out"), *binds),
        extra_env=env or {"BUILTIN": "1"},
    )


async def wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} was not written by the container")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)  # the file is complete when the next one appears; be generous


async def wait_recorded(out: Path) -> None:
    await wait_for(out / "binds")


async def container_id(rt: ContainerRuntime, address: str, name: str) -> str:
    out = await rt.ssh.run(address, ["podman", "container", "inspect", "--format", "{{.Id}}", name])
    return out.stdout.decode().strip()


async def podman_inspect(rt: ContainerRuntime, address: str, name: str) -> dict[str, Any]:
    out = await rt.ssh.run(address, ["podman", "container", "inspect", name])
    doc: dict[str, Any] = json.loads(out.stdout)[0]
    return doc


# ------------------------------------------------------------------ images


def test_absent_image_pull_fails_cleanly_after_retries_and_present_one_is_not_pulled(
    lab: Lab,
) -> None:
    address = lab.addresses[0]
    # Nothing listens on port 1 of the bridge: each podman pull is refused.
    absent = f"{lab.bridge_address}:1/cke-test/absent:1"

    async def main() -> None:
        async with runtime_for(lab) as rt:
            assert await rt.image_exists(address, IMAGE)
            assert await rt.image_exists(address, "cke-test/busybox:1")  # podman's localhost/
            assert not await rt.image_exists(address, absent)
            before = await rt.ssh.run(address, ["podman", "image", "inspect", IMAGE])
            assert await rt.pull_image(address, IMAGE) is False  # present: not pulled
            after = await rt.ssh.run(address, ["podman", "image", "inspect", IMAGE])
            assert json.loads(before.stdout)[0]["Id"] == json.loads(after.stdout)[0]["Id"]

            start = time.monotonic()
            with pytest.raises(PullFailed) as failed:
                await rt.pull_image(address, absent, retries=2, interval=0.3)
            elapsed = time.monotonic() - start
            assert failed.value.attempts == 2
            assert elapsed >= 0.3  # it waited between the attempts
            message = str(failed.value)
            assert "\n" not in message
            assert message.startswith(f"{address}: image-pull: {absent}: Error")
            assert "connection refused" in message
            assert "failed 2 attempts" in message
            assert isinstance(failed.value, RuntimeCommandError)
            assert not await rt.image_exists(address, absent)

    run(main)


# ------------------------------------------------------------------ containers


def test_run_container_and_inspect_round_trip(lab: Lab) -> None:
    address = lab.addresses[0]
    out = out_dir(lab, "roundtrip")
    data = out_dir(lab, "data")
    (data / "id").write_text("data")
    params = recorder(out, Mount(str(data), "/binds/data", read_only=True), env={"B": "1"})
    extra = ServiceParams(
        extra_args=("--flag=1", "two words"),
        extra_binds=(Mount(str(data), "/binds/again", True, "rprivate", "z"),),
        extra_env={"E": "x", "B": "extra wins"},
    )

    cli, log = recording_cli(lab)

    async def main() -> tuple[ServiceStatus, dict[str, Any], dict[str, ServiceStatus]]:
        async with runtime_for(lab, cli) as rt:
            await rt.run_container(
                address, "roundtrip", IMAGE, options=["--pid=host"], params=params, extra=extra
            )
            statuses = await rt.inspect(address, ["roundtrip", "absent-one", "roundtrip"])
            await wait_recorded(out)
            doc = await podman_inspect(rt, address, "roundtrip")
            await rt.stop_container(address, "roundtrip")
            return statuses["roundtrip"], doc, await rt.inspect(address, ["roundtrip"])

    status, doc, after = run(main)
    calls = invocations(log)
    (run_argv,) = [c for c in calls if c[:1] == ["run"]]
    (label_file,) = [a.split("=", 1)[1] for a in run_argv if a.startswith("--label-file=")]
    assert run_argv == [
        "run", "--log-driver=k8s-file", "-d", "--name=roundtrip", "--read-only",
        "--network=host", "--uts=host", "--pid=host",
        f"--volume={out}:/out:rw", f"--volume={data}:/binds/data:ro",
        f"--volume={data}:/binds/again:ro,rprivate",  # no ",z": SELinux is not enforcing
        "--env=B=1", "--env=E=x", "--env=B=extra wins",
        f"--label-file={label_file}", IMAGE,
        "sh", "-c", RECORDER, "sh", "--flag=1", "two words",
    ]  # fmt: skip
    assert label_file.startswith("/tmp/cke-label.")
    assert not Path(label_file).exists()  # removed after the run
    # Status is one "ps -a" and one "container inspect" of the names that exist.
    after_run = calls[calls.index(run_argv) + 1 :]
    assert after_run[:2] == [
        ["ps", "-a", "--no-trunc", "--format", "{{.Names}}"],
        ["container", "inspect", "roundtrip"],
    ]
    assert set(after) == set()  # stopped and removed
    assert status.running
    assert status.image == IMAGE
    assert status.builtin_params == params
    assert status.extra_params == extra
    assert doc["Config"]["Labels"][CKE_LABEL] == label_value(params, extra)
    host = doc["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["NetworkMode"] == "host"
    assert host["UTSMode"] == "host"
    assert host["PidMode"] == "host"
    assert host["LogConfig"]["Type"] == "k8s-file"
    # SELinux labels only where getenforce says Enforcing (not here: no getenforce).
    binds = {b.split(":")[1]: b.split(":")[2].split(",") for b in host["Binds"]}
    assert binds["/binds/again"][:2] == ["ro", "rprivate"]
    assert "z" not in binds["/binds/again"]
    mounts = {m["Destination"]: m for m in doc["Mounts"]}
    assert mounts["/binds/again"]["RW"] is False
    assert mounts["/binds/again"]["Propagation"] == "rprivate"
    assert mounts["/out"]["RW"] is True
    # Built-in arguments, then extra ones; built-in env then extra env (extra wins).
    assert (out / "args").read_bytes().split(b"\0")[:-1] == [b"--flag=1", b"two words"]
    env = dict(e.split(b"=", 1) for e in (out / "env").read_bytes().split(b"\0")[:-1])
    assert env[b"E"] == b"x"
    assert env[b"B"] == b"extra wins"
    assert env[b"HOSTNAME"] == b"node1"  # --uts=host: the node's name
    assert (out / "binds").read_bytes() == b"data\0data\0"


def test_selinux_labels_only_when_enforcing(lab: Lab) -> None:
    address = lab.addresses[1]
    data = out_dir(lab, "selinux")
    extra = ServiceParams(
        extra_args=("true",),
        extra_binds=(Mount(str(data), "/a", True, "", "z"), Mount(str(data), "/b", False, "", "Z")),
    )

    async def volumes_with(selinux: bool | None) -> tuple[bool, list[str]]:
        cli, log = recording_cli(lab)
        async with runtime_for(lab, cli, selinux=selinux) as rt:
            enforcing = await rt.selinux_enforcing(address)
            await rt.run_container(address, "labels", IMAGE, extra=extra)
            await rt.kill_container(address, "labels")
        (run_argv,) = [c for c in invocations(log) if c[:1] == ["run"]]
        return enforcing, [a for a in run_argv if a.startswith("--volume=")]

    # No getenforce on these nodes: not enforcing, no label option.
    enforcing, plain = run(lambda: volumes_with(None))
    assert not enforcing
    assert plain == [f"--volume={data}:/a:ro", f"--volume={data}:/b:rw"]
    # Told that SELinux enforces: ",z" / ",Z" are passed to the CLI.
    enforcing, labelled = run(lambda: volumes_with(True))
    assert enforcing
    assert labelled == [f"--volume={data}:/a:ro,z", f"--volume={data}:/b:rw,Z"]


def test_restart_replaces_the_container(lab: Lab) -> None:
    address = lab.addresses[1]
    out = out_dir(lab, "restart")

    async def main() -> None:
        async with runtime_for(lab) as rt:
            first_params = recorder(out)
            await rt.run_container(address, "restart", IMAGE, params=first_params)
            first = await container_id(rt, address, "restart")
            # Running and not restart: refusing to replace a running container is
            # CKE's behaviour (rm fails); the error is one line with the CLI's reason.
            with pytest.raises(RuntimeCommandError) as refused:
                await rt.run_container(address, "restart", IMAGE, params=first_params)
            assert refused.value.action == "run-container"
            assert "\n" not in str(refused.value)
            assert "running" in str(refused.value)
            assert await container_id(rt, address, "restart") == first

            new_extra = ServiceParams(extra_args=("second",))
            await rt.run_container(
                address, "restart", IMAGE, params=first_params, extra=new_extra, restart=True
            )
            second = await container_id(rt, address, "restart")
            assert second != first
            status = (await rt.inspect(address, ["restart"]))["restart"]
            assert status.running
            assert status.extra_params == new_extra

            # A stopped container is replaced without restart (rm-before-run).
            await rt.ssh.run(address, ["podman", "container", "kill", "restart"])
            assert not (await rt.inspect(address, ["restart"]))["restart"].running
            await rt.run_container(address, "restart", IMAGE, params=first_params)
            third = await container_id(rt, address, "restart")
            assert third not in (first, second)
            assert (await rt.inspect(address, ["restart"]))["restart"].running
            # restart=True on an absent container just runs it.
            await rt.kill_container(address, "restart")
            await rt.run_container(address, "restart", IMAGE, params=first_params, restart=True)
            assert (await rt.inspect(address, ["restart"]))["restart"].running
            await rt.kill_container(address, "restart")

    run(main)


def test_stop_kill_remove_are_idempotent(lab: Lab) -> None:
    address = lab.addresses[0]
    sleeper = ServiceParams(extra_args=("sleep", "3600"))  # PID 1 ignores TERM

    async def main() -> None:
        async with runtime_for(lab) as rt:
            # stop: TERM honoured by the recorder's trap, so it is quick.
            await rt.run_container(address, "stopme", IMAGE, params=recorder(out_dir(lab, "s")))
            start = time.monotonic()
            await rt.stop_container(address, "stopme")
            assert time.monotonic() - start < 5
            assert not await rt.exists(address, "stopme")
            await rt.stop_container(address, "stopme")  # absent: nothing to do
            # stop with a timeout on a container that ignores TERM.
            await rt.run_container(address, "stopme", IMAGE, params=sleeper)
            await rt.stop_container(address, "stopme", timeout=0)
            assert not await rt.exists(address, "stopme")

            await rt.run_container(address, "killme", IMAGE, params=sleeper)
            await rt.kill_container(address, "killme")
            assert not await rt.exists(address, "killme")
            await rt.kill_container(address, "killme")

            # An exited container is removed by all three, without signalling it.
            for method in (rt.stop_container, rt.kill_container, rt.remove_container):
                await rt.run_container(
                    address, "exited", IMAGE, params=ServiceParams(extra_args=("true",))
                )
                for _ in range(100):
                    status = (await rt.inspect(address, ["exited"]))["exited"]
                    if not status.running:
                        break
                    await asyncio.sleep(0.05)
                await method(address, "exited")
                assert not await rt.exists(address, "exited")
                await method(address, "exited")
            await rt.remove_container(address, "never-existed")

            # Removing a running container is an error, one line, the CLI's reason.
            await rt.run_container(address, "busy", IMAGE, params=sleeper)
            with pytest.raises(RuntimeCommandError) as busy:
                await rt.remove_container(address, "busy")
            assert busy.value.action == "remove-container"
            assert "\n" not in str(busy.value)
            await rt.kill_container(address, "busy")

    run(main)


def test_container_without_the_label_is_not_ours(lab: Lab) -> None:
    address = lab.addresses[1]

    async def main() -> None:
        async with runtime_for(lab) as rt:
            await rt.ssh.run(
                address,
                ["podman", "run", "-d", "--log-driver=k8s-file", "--network=host",
                 "--name=foreign", "--label", f"{CKE_LABEL}=not json", IMAGE, "sleep", "3600"],
            )  # fmt: skip
            await rt.ssh.run(
                address,
                ["podman", "run", "-d", "--log-driver=k8s-file", "--network=host",
                 "--name=unlabelled", IMAGE, "sleep", "3600"],
            )  # fmt: skip
            statuses = await rt.inspect(address, ["foreign", "unlabelled"])
            for name in ("foreign", "unlabelled"):
                assert statuses[name] == ServiceStatus(running=True, image=IMAGE), name
            await rt.kill_container(address, "foreign")
            await rt.kill_container(address, "unlabelled")

    run(main)


def test_containers_are_per_node(lab: Lab) -> None:
    one, two = lab.addresses

    async def main() -> None:
        async with runtime_for(lab) as rt:
            await rt.run_container(one, "solo", IMAGE, params=recorder(out_dir(lab, "solo")))
            try:
                assert (await rt.inspect(one, ["solo"]))["solo"].running
                assert await rt.inspect(two, ["solo"]) == {}
                assert not await rt.exists(two, "solo")
                await rt.kill_container(two, "solo")  # nothing there: no effect on node 1
                assert (await rt.inspect(one, ["solo"]))["solo"].running
            finally:
                await rt.kill_container(one, "solo")

    run(main)


def test_invalid_values_are_refused_before_running_anything(lab: Lab) -> None:
    address = lab.addresses[0]

    async def main() -> None:
        async with runtime_for(lab) as rt:
            cases: list[tuple[str, Awaitable[Any]]] = [
                ("container name", rt.run_container(address, "a;b", IMAGE)),
                ("container name", rt.stop_container(address, "x\ny")),
                ("image", rt.run_container(address, "ok", "--privileged")),
                (
                    "bind source",
                    rt.run_container(
                        address,
                        "ok",
                        IMAGE,
                        extra=ServiceParams(extra_binds=(Mount("/a:/b", "/c"),)),
                    ),
                ),
                (
                    "environment",
                    rt.run_container(
                        address, "ok", IMAGE, extra=ServiceParams(extra_env={"A=B": "c"})
                    ),
                ),
                (
                    "CR LF",
                    rt.run_container(
                        address, "ok", IMAGE, extra=ServiceParams(extra_env={"A": "b\r\nc"})
                    ),
                ),
                (
                    "label would be",
                    rt.run_container(
                        address, "ok", IMAGE, extra=ServiceParams(extra_args=("x" * 70_000,))
                    ),
                ),
                ("volume name", rt.create_volume(address, "v;rm -rf /")),
                ("absolute path", rt.make_dirs(address, ["relative/dir"])),
                ("absolute path", rt.write_files(address, [NodeFile("x", b"")])),
            ]
            for expected, call in cases:
                with pytest.raises(RuntimeCommandError) as refused:
                    await call
                assert expected in str(refused.value), str(refused.value)
                assert "\n" not in str(refused.value)
            assert not await rt.exists(address, "ok")
            # A failing CLI command: its error line, one line, with the address.
            with pytest.raises(RuntimeCommandError) as failed:
                await rt.run_container(address, "ok", "localhost/cke-test/missing:1")
            message = str(failed.value)
            assert message.startswith(f"{address}: run-container: Error")
            assert "\n" not in message

    run(main)


# ------------------------------------------------------------------ volumes


def test_volumes_create_exists_remove_are_idempotent(lab: Lab) -> None:
    one, two = lab.addresses

    async def main() -> None:
        async with runtime_for(lab) as rt:
            assert not await rt.volume_exists(one, "etcd-cke")
            assert await rt.etcd_volumes(one) == (False, False)
            await rt.create_volume(one, "etcd-added-member")
            assert await rt.etcd_volumes(one) == (False, False)  # no data: not a member
            await rt.create_volume(one, "etcd-cke")
            assert await rt.etcd_volumes(one) == (True, True)
            await rt.remove_volume(one, "etcd-added-member")
            assert await rt.etcd_volumes(one) == (True, False)
            await rt.create_volume(one, "etcd-cke")
            await rt.create_volume(one, "etcd-cke")  # exists: no error
            assert await rt.volume_exists(one, "etcd-cke")
            assert not await rt.volume_exists(two, "etcd-cke")  # per node
            await asyncio.gather(*(rt.create_volume(two, "raced") for _ in range(3)))
            assert await rt.volume_exists(two, "raced")
            await rt.remove_volume(one, "etcd-cke")
            await rt.remove_volume(one, "etcd-cke")  # absent: no error
            await rt.remove_volume(two, "raced")
            await rt.remove_volume(two, "never-created")
            assert not await rt.volume_exists(one, "etcd-cke")
            assert not await rt.volume_exists(two, "raced")

    run(main)


# ------------------------------------------------------------------ directories and files


def test_make_dirs_creates_parents_and_sets_modes(lab: Lab) -> None:
    address = lab.addresses[1]
    base = lab.base_dir / f"dirs-{secrets.token_hex(4)}"
    hostile = "a b;$(touch x)'\"`*\nz"

    async def main() -> None:
        async with runtime_for(lab) as rt:
            await rt.make_dirs(address, [f"{base}/opt/cni/bin", f"{base}/{hostile}/in"], "755")
            await rt.make_dirs(address, [f"{base}/etc/kubernetes/apiserver"], 0o700)
            await rt.make_dirs(address, [f"{base}/opt/cni/bin"], "700")  # existing: mode set
            await rt.make_dirs(address, [f"{base}/opt/cni/bin"], "700")
            await rt.make_dirs(address, [])

    run(main)
    mode = lambda p: (base / p).stat().st_mode & 0o7777  # noqa: E731
    assert mode("opt/cni/bin") == 0o700
    assert mode("opt/cni") == 0o755
    assert mode("etc/kubernetes/apiserver") == 0o700
    assert mode("etc/kubernetes") == 0o755
    assert mode(f"{hostile}/in") == 0o755
    assert sorted(p.name for p in base.iterdir()) == sorted(["opt", "etc", hostile])


def test_write_files_atomically_with_modes_and_empty_dir(lab: Lab) -> None:
    address = lab.addresses[0]
    base = lab.base_dir / f"files-{secrets.token_hex(4)}"
    directory = base / "deep" / "er"
    names = ["plain.yml", "a b;$(touch x)'\"`*", "new\nline", "-rf", "*"]
    contents = [b"", b"\0\xff binary\n", "ünïcode ☃\n$(x) `y` 'z'".encode(), b"x" * 300_000]
    files = [
        NodeFile(f"{directory}/{name}", contents[i % len(contents)], 0o600 + i)
        for i, name in enumerate(names)
    ]

    async def write() -> None:
        async with runtime_for(lab) as rt:
            await rt.write_files(address, files)  # parents created
            # Text content (the core's render.files.File has str content); replace.
            await rt.write_files(address, [NodeFile(f"{directory}/plain.yml", "v: 2\n", 0o640)])
            await rt.write_files(address, [])

    run(write)
    assert sorted(p.name for p in directory.iterdir()) == sorted(names)  # no temporary file
    for i, name in enumerate(names):
        path = directory / name
        if name == "plain.yml":
            assert path.read_bytes() == b"v: 2\n"
            assert path.stat().st_mode & 0o7777 == 0o640
        else:
            assert path.read_bytes() == contents[i % len(contents)], name
            assert path.stat().st_mode & 0o7777 == 0o600 + i

    async def empty() -> None:
        async with runtime_for(lab) as rt:
            await rt.empty_dir(address, f"{base}/deep")
            await rt.empty_dir(address, f"{base}/deep")
            await rt.empty_dir(address, f"{base}/absent")  # nothing to empty

    run(empty)
    assert (base / "deep").is_dir()
    assert list((base / "deep").iterdir()) == []
    assert not (base / "absent").exists()


def test_concurrent_reader_never_sees_a_partial_file(lab: Lab) -> None:
    address = lab.addresses[1]
    base = lab.base_dir / f"atomic-{secrets.token_hex(4)}"
    path = base / "big.bin"
    stop = base / "stop"
    versions = [bytes([i]) * (4 << 20) for i in range(1, 9)]  # 8 x 4 MiB
    known = {hashlib.sha256(v).hexdigest() for v in versions}
    reader = (
        'while [ ! -e "$2" ]; do '
        'if [ -e "$1" ]; then sha256sum < "$1" | cut -d" " -f1; else echo missing; fi; '
        "done"
    )

    async def main() -> list[str]:
        async with runtime_for(lab) as rt:
            await rt.write_files(address, [NodeFile(str(path), versions[0])])
            task = asyncio.create_task(
                rt.ssh.run(address, ["sh", "-c", reader, "sh", str(path), str(stop)])
            )
            await asyncio.sleep(0.2)
            for version in versions[1:] * 2:
                await rt.write_files(address, [NodeFile(str(path), version)])
            stop.touch()
            return (await task).stdout.decode().split()

    seen = run(main, timeout=60)
    assert len(seen) >= 10, seen
    assert set(seen) <= known, set(seen) - known  # never a partial or mixed file
    assert len(set(seen)) >= 2  # the reader did see the file change
    assert sorted(p.name for p in base.iterdir()) == ["big.bin", "stop"]


# ------------------------------------------------------------------ hostile values


def hostile_values(marker: str) -> list[str]:
    return [
        f"'; touch {marker}'",
        f"; touch {marker}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        f'"; touch {marker}; "',
        f"\ntouch {marker}\n",
        f"a\nb\r\nc; touch {marker}",
        f"&& touch {marker} || touch {marker} | touch {marker} > {marker}",
        f"${{IFS}}touch${{IFS}}{marker}",
        "*",
        "/*",
        "~",
        "$HOME",
        "$$",
        "a b  c\td",
        " leading and trailing ",
        "",
        "'",
        '"',
        "\\",
        "'\"'\"'",
        "#comment",
        "-n",
        "--",
        "%s%d%n",
        "{a,b}",
        "héllo wörld ☃ 日本 \u2028",
        "\x01\x1b[31mred\x7f",
        "key=value=more",
        "x" * 10_000,
    ]


def test_hostile_values_arrive_literally(lab: Lab) -> None:
    address = lab.addresses[0]
    tag = secrets.token_hex(6)
    host_marker = Path("/tmp") / f"ckr-pwned-{tag}"
    out = out_dir(lab, "hostile")
    out_marker = out / f"pwned-{tag}"  # /out/pwned-<tag> in the container
    values = hostile_values(str(host_marker)) + hostile_values(f"/out/pwned-{tag}")
    # Bind paths: every hostile character but ':' (which --volume cannot carry).
    path_chars = ["a b", ";", "$(touch x)", "`touch y`", "'", '"', "*", "\nnl", ",", "=", "é☃"]
    bind_root = out_dir(lab, "binds")
    binds = []
    for i, piece in enumerate(path_chars):
        source = bind_root / f"src{i}{piece}"
        source.mkdir()
        (source / "id").write_text(f"bind{i}")
        binds.append(Mount(str(source), f"/binds/dst{i}{piece}", read_only=bool(i % 2)))
    # CR LF is refused in environment values (podman would turn it into LF).
    env = {f"V{i}": v for i, v in enumerate(values) if "\r\n" not in v}
    params = recorder(out, env={"BUILTIN": values[0]})
    extra = ServiceParams(extra_args=tuple(values), extra_binds=tuple(binds), extra_env=env)
    # File names: no '/', and a relative marker (a shell would create it in its cwd).
    relative_marker = f"ckr-pwned-{tag}"
    candidates = values + hostile_values(relative_marker)
    file_names = list(dict.fromkeys(v for v in candidates if v and "/" not in v and len(v) < 200))
    file_dir = out_dir(lab, "hostilefiles")

    async def main() -> ServiceStatus:
        async with runtime_for(lab) as rt:
            await rt.run_container(address, "hostile", IMAGE, params=params, extra=extra)
            try:
                await wait_recorded(out)
                status = (await rt.inspect(address, ["hostile"]))["hostile"]
            finally:
                await rt.stop_container(address, "hostile")
            await rt.write_files(
                address,
                [NodeFile(f"{file_dir}/{n}", n.encode(), 0o600) for n in file_names],
            )
            await rt.make_dirs(address, [f"{file_dir}/dir {v}" for v in file_names[:5]])
            marker_check = await rt.ssh.run(
                address, ["ls", "-d", str(host_marker), str(out_marker)], check=False
            )
            assert marker_check.exit_status != 0  # neither exists on the node
            return status

    status = run(main, timeout=60)
    # Arguments: built-in then extra, each exactly one argument, byte for byte.
    args = (out / "args").read_bytes().split(b"\0")[:-1]
    assert args == [v.encode() for v in values]
    # Environment values, including newlines, quotes and '='.
    recorded = (out / "env").read_bytes().split(b"\0")[:-1]
    env_seen = dict(e.decode().split("=", 1) for e in recorded)
    for key, value in env.items():
        assert env_seen[key] == value, key
    assert env_seen["BUILTIN"] == values[0]
    # Every hostile bind path was mounted where asked.
    assert sorted((out / "binds").read_bytes().split(b"\0")[:-1]) == sorted(
        f"bind{i}".encode() for i in range(len(path_chars))
    )
    # The label carried all of it and came back equal.
    assert status.builtin_params == params
    assert status.extra_params == extra
    # File names and contents, as given.
    assert sorted(p.name for p in file_dir.iterdir()) == sorted(
        file_names + [f"dir {v}" for v in file_names[:5]]
    )
    for name in file_names:
        assert (file_dir / name).read_bytes() == name.encode(), name
    for place in (Path("/tmp"), out, file_dir, lab.node(1).home, Path.cwd()):
        assert not (place / f"ckr-pwned-{tag}").exists(), place
        assert not (place / f"pwned-{tag}").exists(), place
