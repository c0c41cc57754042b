"""SSHPool against real sshds: a 3-node lab of network namespaces (cke_adapters.lab).

One lab per module (prefix ``ckt<pid % 1000>``, its own 10.231.x.0/24), torn down at the
end even when a test fails. Every test makes its own pool on its own event loop and
runs under a wall-clock bound. Tests that stop a node's sshd start it again.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cke_adapters.lab import Lab, free_subnet, reap_stale_labs
from cke_adapters.ssh import (
    CommandFailed,
    CommandInterrupted,
    CommandTimeout,
    FileKeySource,
    HostKeyRejected,
    NodeUnreachable,
    SSHPool,
)
from missing import component_missing

pytestmark = pytest.mark.integration

PID = os.getpid() % 1000
PREFIX = f"ckt{PID}"


def run(factory: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(factory(), timeout)

    return asyncio.run(bounded())


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        component_missing("the SSH lab needs root (network namespaces, veths, sshd)")
    reap_stale_labs()  # leftovers of crashed runs (their owner process is gone)
    subnet = free_subnet(start=100 + PID % 100)
    lab = Lab(tmp_path_factory.mktemp("sshlab") / "lab", nodes=3, prefix=PREFIX, subnet=subnet)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@asynccontextmanager
async def pool_for(
    lab: Lab, known_hosts: Path | None = None, **kwargs: Any
) -> AsyncIterator[SSHPool]:
    kwargs.setdefault("connect_timeout", 5.0)
    pool = SSHPool(
        FileKeySource(lab.client_key_path), known_hosts or lab.known_hosts_path, **kwargs
    )
    try:
        yield pool
    finally:
        await pool.close()


def ssh_connection(output: bytes) -> str:
    return output.decode().strip()


# ------------------------------------------------------------------ commands


def test_commands_run_concurrently_on_all_nodes(lab: Lab) -> None:
    """Each command waits until all three have started: only concurrent runs finish."""
    barrier = Path("/tmp") / f"ckt-barrier-{secrets.token_hex(6)}"
    barrier.mkdir()
    script = 'touch "$1/$2"; while [ "$(ls "$1" | wc -l)" -lt 3 ]; do sleep 0.02; done; hostname'

    async def main() -> list[bytes]:
        async with pool_for(lab) as pool:
            outs = await asyncio.gather(
                *(
                    pool.run(
                        node.address,
                        ["sh", "-c", script, "sh", str(barrier), node.hostname],
                        timeout=10,
                    )
                    for node in lab.nodes
                )
            )
            return [out.stdout for out in outs]

    try:
        assert run(main) == [b"node1\n", b"node2\n", b"node3\n"]
    finally:
        shutil.rmtree(barrier)


def test_hostname_differs_per_node(lab: Lab) -> None:
    async def main() -> set[str]:
        async with pool_for(lab) as pool:
            outs = await asyncio.gather(*(pool.run(a, ["hostname"]) for a in lab.addresses))
            return {out.stdout.decode().strip() for out in outs}

    assert run(main) == {"node1", "node2", "node3"}


def test_connection_is_reused_across_calls(lab: Lab) -> None:
    node = lab.node(1)

    async def main() -> tuple[list[str], int, int, int]:
        async with pool_for(lab) as pool:
            seen = []
            for _ in range(3):
                out = await pool.run(node.address, ["sh", "-c", 'echo "$SSH_CONNECTION"'])
                seen.append(ssh_connection(out.stdout))
            sshd_before = len(lab.sshd_pids(node))
            await asyncio.gather(*(pool.run(node.address, ["true"]) for _ in range(6)))
            seen.append(
                ssh_connection(
                    (await pool.run(node.address, ["sh", "-c", 'echo "$SSH_CONNECTION"'])).stdout
                )
            )
            sshd_after = len(lab.sshd_pids(node))
            return seen, pool.connects[node.address], sshd_before, sshd_after

    seen, connects, sshd_before, sshd_after = run(main)
    assert len(set(seen)) == 1, seen  # same client port: one TCP connection
    assert seen[0].split()[0] == lab.bridge_address
    assert connects == 1
    assert sshd_before == sshd_after  # no new sshd session process per command


def test_exit_status_stdout_stderr_and_signal(lab: Lab) -> None:
    address = lab.addresses[0]

    async def main() -> None:
        async with pool_for(lab) as pool:
            out = await pool.run(
                address, ["sh", "-c", "echo out; echo err >&2; exit 3"], check=False
            )
            assert (out.exit_status, out.stdout, out.stderr) == (3, b"out\n", b"err\n")
            assert not out.ok
            with pytest.raises(CommandFailed) as failed:
                await pool.run(address, ["sh", "-c", "echo boom >&2; exit 7"])
            assert failed.value.exit_status == 7
            assert failed.value.stderr == b"boom\n"
            assert "boom" in str(failed.value)
            assert "\n" not in str(failed.value)
            killed = await pool.run(address, ["sh", "-c", "kill -TERM $$"], check=False)
            assert killed.exit_signal == "TERM"
            assert killed.exit_status == -1
            missing = await pool.run(address, ["no-such-program-ckt"], check=False)
            assert missing.exit_status == 127

    run(main)


def test_stdin_is_passed_byte_for_byte(lab: Lab) -> None:
    address = lab.addresses[1]
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value

    async def main() -> None:
        async with pool_for(lab) as pool:
            assert (await pool.run(address, ["cat"], stdin=payload)).stdout == payload
            assert (await pool.run(address, ["wc", "-c"], stdin=payload)).stdout.strip() == (
                str(len(payload)).encode()
            )
            # Without stdin the command sees EOF at once.
            assert (await pool.run(address, ["cat"], timeout=5)).stdout == b""

    run(main)


# ------------------------------------------------------------------ hostile arguments


def hostile_values(marker: Path) -> list[str]:
    m = str(marker)
    crafted = [
        f"'; touch {m}'",
        f"; touch {m}",
        f"'; touch {m}; echo '",
        f"$(touch {m})",
        f"`touch {m}`",
        f'"; touch {m}; "',
        f'"$(touch {m})"',
        f"\ntouch {m}\n",
        f"a\nb\r\nc; touch {m}",
        f"&& touch {m}",
        f"|| touch {m}",
        f"| touch {m}",
        f"> {m}",
        f"$(touch {m}) `touch {m}` ${{IFS}}touch${{IFS}}{m}",
        "*",
        "/*",
        "~",
        "~root",
        "$HOME",
        "${PATH}",
        "$$",
        "!!",
        "a b  c\td",
        " leading and trailing ",
        "",
        "'",
        '"',
        "\\",
        "\\'",
        "'\"'\"'",
        "#comment",
        "-n",
        "--",
        "%s%d%n",
        "{a,b}",
        "[abc]",
        "(subshell)",
        "<(process)",
        "héllo wörld ☃ 日本",
        "\x01\x02\x1b[31mred\x7f",
        "x" * 100_000,
    ]
    rng = random.Random(20240601)
    alphabet = [chr(c) for c in range(1, 128)] + ["é", "☃", "\u2028"]
    crafted += ["".join(rng.choices(alphabet, k=rng.randint(1, 40))) for _ in range(150)]
    return crafted


def test_hostile_arguments_reach_the_program_literally(lab: Lab) -> None:
    marker = Path("/tmp") / f"pwned-{secrets.token_hex(8)}"
    values = hostile_values(marker)
    address = lab.addresses[2]

    async def main() -> None:
        async with pool_for(lab) as pool:
            outs = await asyncio.gather(*(pool.run(address, ["printf", "%s", v]) for v in values))
            for value, out in zip(values, outs, strict=True):
                assert out.stdout == value.encode(), value[:80]
            # Many hostile arguments in one command line, each one word.
            several = [v for v in values if len(v) < 1000]
            out = await pool.run(address, ["printf", "%s\\0", *several])
            assert out.stdout.split(b"\0")[:-1] == [v.encode() for v in several]
            # A hostile program name is looked up literally, not run through the shell.
            hostile_prog = await pool.run(address, [f"true; touch {marker}"], check=False)
            assert hostile_prog.exit_status == 127
            remote = await pool.run(address, ["test", "-e", str(marker)], check=False)
            assert remote.exit_status == 1
            with pytest.raises(ValueError, match="NUL"):
                await pool.run(address, ["printf", "%s", "a\0b"])

    run(main)
    assert not marker.exists()


# ------------------------------------------------------------------ timeouts and failures


def test_per_command_timeout_kills_the_command(lab: Lab) -> None:
    address = lab.addresses[0]
    duration = f"29.{random.randint(100000, 999999)}"

    async def main() -> tuple[float, bytes, int]:
        async with pool_for(lab) as pool:
            await pool.run(address, ["true"])
            start = time.monotonic()
            with pytest.raises(CommandTimeout) as timed_out:
                await pool.run(address, ["sh", "-c", f"sleep {duration}; echo late"], timeout=1)
            elapsed = time.monotonic() - start
            assert timed_out.value.timeout == 1
            assert address in str(timed_out.value)
            left = b""
            for _ in range(50):  # the kill is asynchronous on the node
                left = (await pool.run(address, ["ps", "-eo", "args"])).stdout
                if duration.encode() not in left:
                    break
                await asyncio.sleep(0.05)
            # The connection is still usable and was not replaced.
            await pool.run(address, ["true"])
            return elapsed, left, pool.connects[address]

    elapsed, left, connects = run(main)
    assert elapsed < 5
    assert duration.encode() not in left, "timed-out command still runs on the node"
    assert connects == 1


def test_reconnect_after_sshd_restart(lab: Lab) -> None:
    node = lab.node(2)

    async def main() -> tuple[list[str], int]:
        async with pool_for(lab) as pool:
            cmd = ["sh", "-c", 'echo "$SSH_CONNECTION"']
            seen = [ssh_connection((await pool.run(node.address, cmd)).stdout)]
            # Restart while the event loop is blocked: the pool still holds the dead
            # connection, the session open fails, and it reconnects once.
            lab.restart_sshd(node.index)
            seen.append(ssh_connection((await pool.run(node.address, cmd)).stdout))
            # Restart while the loop runs: the drop is noticed while idle.
            await asyncio.to_thread(lab.restart_sshd, node.index)
            seen.append(ssh_connection((await pool.run(node.address, cmd)).stdout))
            return seen, pool.connects[node.address]

    seen, connects = run(main)
    assert len(set(seen)) == 3  # a new TCP connection after each restart
    assert connects == 3


def test_unreachable_node_is_reported_quickly_and_recovers(lab: Lab) -> None:
    node = lab.node(3)

    async def main() -> None:
        async with pool_for(lab) as pool:
            assert await pool.check(node.address)
            await asyncio.to_thread(lab.stop_sshd, node.index)
            try:
                start = time.monotonic()
                with pytest.raises(NodeUnreachable) as unreachable:
                    await pool.run(node.address, ["true"])
                assert time.monotonic() - start < 4  # refused, not the 5 s connect timeout
                assert unreachable.value.address == node.address
                assert "\n" not in str(unreachable.value)
                assert not await pool.check(node.address)
                assert not pool.connected(node.address)
                # The other nodes are unaffected.
                assert await pool.check(lab.node(1).address)
            finally:
                await asyncio.to_thread(lab.start_sshd, node.index)
            assert await pool.check(node.address)

    run(main)


def test_connection_lost_mid_command_is_not_rerun(lab: Lab) -> None:
    node = lab.node(1)
    counter = Path("/tmp") / f"ckt-counter-{secrets.token_hex(6)}"

    async def main() -> None:
        async with pool_for(lab) as pool:
            await pool.run(node.address, ["true"])
            task = asyncio.create_task(
                pool.run(
                    node.address, ["sh", "-c", 'echo ran >> "$1"; sleep 3', "sh", str(counter)]
                )
            )
            for _ in range(100):
                if counter.exists():
                    break
                await asyncio.sleep(0.02)
            await asyncio.to_thread(lab.stop_sshd, node.index)
            try:
                with pytest.raises(CommandInterrupted) as interrupted:
                    await task
                assert "may or may not" in str(interrupted.value)
            finally:
                await asyncio.to_thread(lab.start_sshd, node.index)
            assert await pool.check(node.address)

    try:
        run(main)
        assert counter.read_text() == "ran\n"  # executed once, never retried
    finally:
        counter.unlink(missing_ok=True)


def test_concurrency_is_bounded(lab: Lab) -> None:
    address = lab.addresses[1]

    async def main() -> float:
        async with pool_for(lab, max_concurrency=2) as pool:
            await pool.run(address, ["true"])
            start = time.monotonic()
            await asyncio.gather(*(pool.run(address, ["sleep", "0.4"]) for _ in range(4)))
            return time.monotonic() - start

    # Four 0.4 s sleeps two at a time cannot take less than 0.8 s.
    assert run(main) >= 0.8


# ------------------------------------------------------------------ host keys


def test_wrong_host_key_is_rejected_with_one_line_naming_host_and_file(
    lab: Lab, tmp_path: Path
) -> None:
    target, other = lab.node(1), lab.node(2)
    other_key = other.host_key.with_name(other.host_key.name + ".pub").read_text().strip()
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(f"{target.address} {other_key}\n")
    unknown = tmp_path / "known_hosts_unknown"
    unknown.write_text(f"{other.address} {other_key}\n")

    async def main() -> list[str]:
        messages = []
        for known in (wrong, unknown):
            async with pool_for(lab, known_hosts=known) as pool:
                with pytest.raises(HostKeyRejected) as rejected:
                    await pool.run(target.address, ["true"])
                assert isinstance(rejected.value, NodeUnreachable)
                assert rejected.value.known_hosts == known
                assert not await pool.check(target.address)
                messages.append(str(rejected.value))
        return messages

    for message, known in zip(run(main), (wrong, unknown), strict=True):
        assert "\n" not in message
        assert target.address in message
        assert str(known) in message


def test_missing_known_hosts_file_is_refused_up_front(lab: Lab, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="known-hosts"):
        SSHPool(FileKeySource(lab.client_key_path), tmp_path / "absent")


# ------------------------------------------------------------------ files


def test_write_file_is_atomic_with_mode_and_hostile_name(lab: Lab) -> None:
    address = lab.addresses[0]
    directory = f"/tmp/ckt-files-{secrets.token_hex(6)}/sub dir"
    path = f"{directory}/a b;$(touch x)'\"`"

    async def main() -> None:
        async with pool_for(lab) as pool:
            await pool.write_file(address, path, b"one\n", 0o600, make_parents=True)
            assert await pool.read_file(address, path) == b"one\n"
            await pool.write_file(address, path, b"two\n" * 1000, 0o640)
            assert await pool.read_file(address, path) == b"two\n" * 1000
            mode = await pool.run(address, ["stat", "-c", "%a", path])
            assert mode.stdout == b"640\n"
            listing = await pool.run(address, ["ls", "-A", directory])
            assert listing.stdout == b"a b;$(touch x)'\"`\n"  # no temporary file left

    try:
        run(main)
    finally:
        shutil.rmtree(Path(directory).parent, ignore_errors=True)


# ------------------------------------------------------------------ podman on a node


def test_podman_info_over_ssh(lab: Lab) -> None:
    if shutil.which("podman") is None:
        component_missing("podman is not installed")

    async def main() -> list[dict[str, Any]]:
        async with pool_for(lab) as pool:
            outs = await asyncio.gather(
                *(
                    pool.run(n.address, ["podman", "info", "--format", "json"], timeout=30)
                    for n in lab.nodes[:2]
                )
            )
            return [json.loads(out.stdout) for out in outs]

    infos = run(main, timeout=40)
    for node, info in zip(lab.nodes[:2], infos, strict=True):
        assert info["host"]["ociRuntime"]["name"] == "runc"
        assert info["store"]["graphRoot"] == str(node.directory / "storage")
        assert info["host"]["hostname"] == node.hostname


# ------------------------------------------------------------------ the lab itself


def test_lab_status_and_crash_cleanup(lab: Lab, tmp_path: Path) -> None:
    assert [s.listening for s in lab.status()] == [True, True, True]
    prefix, subnet = f"{PREFIX}x", free_subnet(start=200 + PID % 50)
    base = tmp_path / "second"
    crashed = Lab(base, nodes=1, prefix=prefix, subnet=subnet).up()
    # A new lab with the same prefix (as after a crash) cleans the leftovers and starts.
    again = Lab(base, nodes=1, prefix=prefix, subnet=subnet)
    try:
        again.up()
        assert [s.listening for s in again.status()] == [True]
        assert [s.listening for s in lab.status()] == [True, True, True]  # coexisting
    finally:
        again.down()
        again.down()  # idempotent
        crashed.down()
    assert not base.exists()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"{prefix}-" not in netns
    assert f"{prefix}v" not in links
    assert f"{prefix}0" not in links
