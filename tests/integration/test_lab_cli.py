"""``ckecli lab up|status|down`` as an operator runs it: the real command line in a
subprocess, a real 2-node lab, and afterwards a check of the machine itself
(namespaces, links, processes, files) that ``down`` left nothing behind.

Labs here use their own prefix (``ckl<pid % 1000>``), subnet and image cache,
so they never touch an operator's lab in /run/cke-lab.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cke_adapters.images import find_busybox
from cke_adapters.lab import free_subnet, reap_stale_labs
from cke_adapters.lab.info import load_lab
from missing import component_missing

from cke_core.config import check_cluster

pytestmark = pytest.mark.integration

CKECLI = str(Path(sys.executable).with_name("ckecli"))
PID = os.getpid() % 1000
PREFIX = f"ckl{PID}"
ROOT_ERROR = "ckecli lab: must run as root (network namespaces, sshd, podman)\n"


def ckecli(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [CKECLI, "lab", *args]
    if user == "nobody":
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def require_root() -> None:
    if os.geteuid() != 0:
        component_missing("the lab needs root (network namespaces, veths, sshd)")


def require_lab_tools() -> None:
    require_root()
    for tool in ("podman", "etcd", "sshd"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            component_missing(f"{tool} is not installed (scripts/bootstrap installs it)")
    if find_busybox() is None:
        component_missing("no static busybox: apt-get install busybox-static")


def netns_with(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.startswith(f"{prefix}-")]


def links_with(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True)
    return [
        link["ifname"]
        for link in json.loads(out.stdout or "[]")
        if link.get("ifname", "").startswith(prefix)
    ]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def assert_nothing_left(prefix: str, directory: Path) -> None:
    assert netns_with(prefix) == []
    assert links_with(prefix) == []
    assert not directory.exists()
    assert not Path(f"/run/ckelab/{prefix}.owner").exists()
    assert processes_mentioning(str(directory)) == []


# --------------------------------------------------------------------------- refusals


def test_non_root_is_refused_with_one_line(tmp_path: Path) -> None:
    require_root()  # to become nobody
    if shutil.which("setpriv") is None:
        component_missing("setpriv (util-linux) is needed to run the CLI as another user")
    directory = tmp_path / "lab"
    for args in (["up", "--dir", str(directory)], ["status"], ["down", "--dir", str(directory)]):
        result = ckecli(*args, user="nobody")
        assert (result.returncode, result.stderr, result.stdout) == (1, ROOT_ERROR, "")
    assert not directory.exists()


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (
            ["up", "--nodes", "0"],
            2,
            "ckecli lab up: Invalid value for '--nodes': 0 is not in the range 1<=x<=99.",
        ),
        (["up", "--nodes", "2", "--control-planes", "3"], 2, "ckecli lab up: "
         "--control-planes 3 exceeds --nodes 2"),
        (["up", "--bogus"], 2, "ckecli lab up: No such option '--bogus'."),
        (["up", "--k8s-bin", "/nonexistent/k8s"], 2, "ckecli lab up: Invalid value for "
         "'--k8s-bin': Directory '/nonexistent/k8s' does not exist."),
        (["frobnicate"], 2, "ckecli lab: No such command 'frobnicate'."),
        (["up", "--name", "Bad-Name"], 1, "ckecli lab: --name 'Bad-Name': use lower-case "
         "letters and digits, starting with a letter"),
        (["up", "--name", "averyverylongname", "--nodes", "3"], 1, "ckecli lab: --name "
         "'averyverylongname' is too long for 3 nodes: interface 'averyverylongnamev3' "
         "exceeds Linux's 15 characters"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_errors(
    tmp_path: Path, args: list[str], code: int, error: str
) -> None:
    require_root()
    directory = tmp_path / "lab"
    result = ckecli(*args, "--dir", str(directory)) if args[0] == "up" else ckecli(*args)
    assert (result.returncode, result.stderr, result.stdout) == (code, error + "\n", "")
    assert not directory.exists()


def test_k8s_bin_without_the_binaries_fails_before_anything_is_made(tmp_path: Path) -> None:
    require_lab_tools()
    k8s = tmp_path / "k8s"
    k8s.mkdir()
    (k8s / "kube-apiserver").write_text("#!/bin/sh\n")
    (k8s / "kube-apiserver").chmod(0o755)
    directory = tmp_path / "lab"
    result = ckecli("up", "--dir", str(directory), "--k8s-bin", str(k8s),
                    "--cache-dir", str(tmp_path / "cache"), "--name", PREFIX)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        f"ckecli lab: --k8s-bin {k8s}: no executable kube-controller-manager, kube-scheduler, "
        "kubelet, kube-proxy (needs kube-apiserver, kube-controller-manager, kube-scheduler, "
        "kubelet, kube-proxy)\n"
    )
    assert not directory.exists()
    assert netns_with(PREFIX) == []


def test_status_and_down_of_a_directory_without_a_lab(tmp_path: Path) -> None:
    require_root()
    missing = tmp_path / "none"
    status = ckecli("status", "--dir", str(missing))
    assert (status.returncode, status.stderr) == (
        1,
        f"ckecli lab: no lab in {missing}: lab.json not found (ckecli lab up --dir {missing})\n",
    )
    down = ckecli("down", "--dir", str(missing))
    assert (down.returncode, down.stdout) == (0, f"no lab in {missing}: nothing to remove\n")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("keep me")
    refused = ckecli("down", "--dir", str(precious))
    assert (refused.returncode, refused.stderr) == (
        1,
        f"ckecli lab: {precious} holds no lab (no lab.json, no .ckelab marker): not removed\n",
    )
    assert (precious / "data").read_text() == "keep me"


# --------------------------------------------------------------------------- up, status, down


async def _on_nodes(directory: Path, commands: dict[str, list[list[str]]]) -> dict[str, list[str]]:
    info = load_lab(directory)
    out: dict[str, list[str]] = {}
    async with info.ssh_pool(connect_timeout=5.0) as pool:
        for address, argvs in commands.items():
            for argv in argvs:
                result = await pool.run(address, argv, timeout=60)
                out.setdefault(address, []).append(result.stdout.decode())
    return out


def test_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    require_lab_tools()
    reap_stale_labs()
    directory = tmp_path / "lab"
    subnet = free_subnet(start=140 + PID % 40)
    cache = str(tmp_path / "cache")
    up = ckecli("up", "--nodes", "2", "--control-planes", "1", "--dir", str(directory),
                "--name", PREFIX, "--subnet", subnet, "--cache-dir", cache)  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.splitlines()[0] == (
            f"lab {PREFIX} is up in {directory}: 2 nodes (1 control plane), "
            f"subnet {subnet}, bridge {PREFIX}0"
        )
        info = load_lab(directory)
        assert info.name == PREFIX
        assert [n.control_plane for n in info.nodes] == [True, False]
        assert info.runtime_cli == shutil.which("podman")
        assert info.log_driver == "k8s-file"
        assert info.ssh_key.stat().st_mode & 0o777 == 0o600
        assert info.known_hosts.read_text().count("ssh-ed25519") == 2
        cluster = check_cluster(info.cluster_yml.read_text())
        assert cluster.errors == ()
        assert [(n.address, n.control_plane) for n in cluster.unwrap().nodes] == [
            (info.nodes[0].address, True),
            (info.nodes[1].address, False),
        ]
        first, second = info.addresses
        stand_in = info.images.kubernetes
        # One container on the host network, one in its own network namespace:
        # only podman knows the second (killing the node's processes misses it).
        outputs = asyncio.run(
            _on_nodes(
                directory,
                {
                    first: [
                        ["podman", "image", "list", "--format", "{{.Repository}}:{{.Tag}}"],
                        ["podman", "run", "-d", "--name", "kube-apiserver", "--network=host",
                         "--read-only", stand_in, "kube-apiserver", "--x"],
                    ],
                    second: [
                        ["podman", "run", "-d", "--name", "isolated", "--network=none",
                         stand_in, "kubelet"],
                        ["podman", "container", "inspect", "--format", "{{.State.Pid}}",
                         "isolated"],
                    ],
                },
            )
        )  # fmt: skip
        listed = set(outputs[first][0].split())
        assert {info.images.etcd, info.images.tools, info.images.kubernetes} <= listed
        isolated_pid = int(outputs[second][1])
        assert alive(isolated_pid)

        status = ckecli("status", "--dir", str(directory))
        assert status.returncode == 0, status.stderr
        rows = [line.split() for line in status.stdout.splitlines()[2:]]
        assert rows == [
            ["node1", first, "control-plane", "up", "kube-apiserver"],
            ["node2", second, "worker", "up", "isolated"],
        ]

        again = ckecli("up", "--dir", str(directory), "--name", PREFIX)
        assert (again.returncode, again.stderr) == (
            1,
            f"ckecli lab: a lab ({PREFIX}) is already up in {directory}: "
            f"run ckecli lab down --dir {directory} first\n",
        )
        # The lab outlives `up`: a test suite reaping crashed labs leaves it alone.
        assert PREFIX not in reap_stale_labs()
        assert len(netns_with(PREFIX)) == 2
    finally:
        down = ckecli("down", "--dir", str(directory))
    assert (down.returncode, down.stderr) == (0, "")
    assert down.stdout == (f"lab {PREFIX} removed from {directory} (2 nodes, 2 containers)\n")
    assert_nothing_left(PREFIX, directory)
    assert not alive(isolated_pid)
    again = ckecli("down", "--dir", str(directory))
    assert (again.returncode, again.stdout) == (0, f"no lab in {directory}: nothing to remove\n")


INTERRUPTED_UP = """
import os, sys
from cke_adapters.lab import Lab
Lab(sys.argv[1], nodes=2, prefix=sys.argv[2], subnet=sys.argv[3]).up()
os._exit(0)  # as if `ckecli lab up` were killed before writing lab.json
"""


def test_down_cleans_up_after_an_interrupted_up(tmp_path: Path) -> None:
    require_lab_tools()
    reap_stale_labs()
    prefix = f"cku{PID}"
    directory = tmp_path / "lab"
    subnet = free_subnet(start=180 + PID % 40)
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(INTERRUPTED_UP), str(directory), prefix, subnet],
        check=True,
        timeout=60,
    )
    try:
        assert len(netns_with(prefix)) == 2
        assert processes_mentioning(str(directory))  # sshd and holders still run
        assert not (directory / "lab.json").exists()
    finally:
        down = ckecli("down", "--dir", str(directory))
    assert (down.returncode, down.stderr) == (0, "")
    assert down.stdout == f"lab {prefix} removed from {directory} (2 nodes, 0 containers)\n"
    assert_nothing_left(prefix, directory)
