"""The lab's images on a real 2-node lab, started the way the engine starts CKE's
system containers (``ContainerRuntime.run_container``: ``--read-only
--network=host --uts=host``, CKE's label, the rendered arguments).

* etcd from the etcd image with the arguments ``etcd_params`` renders (TLS
  dropped, http instead: the flags that matter here are etcd 3.6's, which the
  image's shim must translate) and its data volume mounted as CKE mounts it;
  it must answer ``/health`` on the node's address.
* rivers from the tools image with ``rivers_params``' arguments, proxying from
  127.0.0.1:16443 in node 1's namespace to an echo server in node 2's (node 1's
  own upstream is down).
* The Kubernetes stand-in with kube-apiserver's real arguments: it must stop
  with exit code 0 on ``podman stop`` (TERM honoured, not KILLed after the
  timeout), and a real-Kubernetes image built from fake binaries must run the
  program named by the first argument.

Images are built into a per-module cache (the first build is measured in the
report); one lab per module (prefix ``cki<pid % 1000>``), torn down at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cke_adapters.images import (
    KUBERNETES_BINARIES,
    LabImages,
    build_lab_images,
    find_busybox,
    load_lab_images,
)
from cke_adapters.lab import Lab, free_subnet, reap_stale_labs
from cke_adapters.runtime import ContainerRuntime
from labnodes import make_pool, remove_all_containers, run
from missing import component_missing

from cke_core.cluster import Cluster, Node, ServiceParams
from cke_core.render.components import (
    ETCD,
    KUBE_APISERVER,
    RIVERS,
    RIVERS_LISTEN_PORT,
    RIVERS_UPSTREAM_PORT,
    api_server_params,
    container_options,
    etcd_params,
    rivers_params,
)

pytestmark = pytest.mark.integration

PID = os.getpid() % 1000
PREFIX = f"cki{PID}"

ECHO_SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
"""

CLIENT = """
import socket, sys, time
deadline = time.monotonic() + 30
while True:
    try:
        conn = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
        conn.sendall(sys.argv[2].encode())
        conn.shutdown(socket.SHUT_WR)
        received = b""
        while data := conn.recv(65536):
            received += data
        if received:
            print(received.decode(), end="")
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("no answer through rivers")
    time.sleep(0.2)
"""


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as response:
        body: bytes = response.read()
    return body


def cluster_of(lab: Lab) -> Cluster:
    nodes = tuple(Node(address=a, user="root", control_plane=True) for a in lab.addresses)
    return Cluster(name="cki", nodes=nodes, service_subnet="10.68.0.0/16")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> LabImages:
    if find_busybox() is None:
        component_missing("no static busybox for the lab images: apt-get install busybox-static")
    if shutil.which("etcd") is None:
        component_missing("no etcd for the lab's etcd image: apt-get install etcd-server")
    if not Path("/usr/bin/python3").exists():
        component_missing("no system python3 for the tools image: apt-get install python3")
    return build_lab_images(tmp_path_factory.mktemp("image-cache"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, images: LabImages) -> Iterator[Lab]:
    if os.geteuid() != 0:
        component_missing("the lab needs root (network namespaces, veths, sshd)")
    if shutil.which("podman") is None:
        component_missing("podman is not installed: apt-get install podman runc")
    reap_stale_labs()
    subnet = free_subnet(start=20 + PID % 40)
    lab = Lab(tmp_path_factory.mktemp("imglab") / "lab", nodes=2, prefix=PREFIX, subnet=subnet)
    try:
        lab.up()

        async def load() -> dict[str, tuple[str, ...]]:
            async with make_pool(lab) as pool:
                return await load_lab_images(pool, lab.addresses, "podman", images)

        loaded = run(load, timeout=120)
        assert all(len(names) == 3 for names in loaded.values())
        yield lab
    finally:
        remove_all_containers(lab)
        lab.down()


def test_loading_again_skips_nodes_that_list_the_images(lab: Lab, images: LabImages) -> None:
    async def main() -> dict[str, tuple[str, ...]]:
        async with make_pool(lab) as pool:
            listed = await pool.run(lab.addresses[0], ["podman", "image", "list"])
            for image in images.all():
                assert image.name.encode().split(b":")[0] in listed.stdout
            return await load_lab_images(pool, lab.addresses, "podman", images)

    assert run(main, timeout=60) == dict.fromkeys(lab.addresses, ())


def test_etcd_image_runs_etcd_with_ckes_36_flags_and_answers_health(
    lab: Lab, images: LabImages
) -> None:
    cluster = cluster_of(lab)
    node = cluster.nodes[0]
    rendered = etcd_params(cluster, node, initial_cluster=[node])
    tls = ("--cert-file", "--key-file", "--client-cert-auth", "--trusted-ca-file", "--peer-")
    args = tuple(
        a.replace("https://", "http://") for a in rendered.extra_args if not a.startswith(tls)
    )
    assert "--feature-gates=InitialCorruptCheck=true,CompactHashCheck=true" in args
    assert "--corrupt-check-time=3h" in args
    options = container_options(ETCD, cluster)
    assert options == ("--mount", "type=volume,src=etcd-cke,dst=/var/lib/etcd")

    async def main() -> tuple[dict[str, Any], bytes, bytes]:
        async with make_pool(lab) as pool:
            rt = ContainerRuntime(pool, "podman", log_driver="k8s-file")
            await rt.create_volume(node.address, "etcd-cke")
            await rt.run_container(
                node.address,
                ETCD,
                images.etcd.name,
                options=options,
                params=ServiceParams(extra_args=args),
            )
            health = b""
            for _ in range(150):
                try:
                    health = await asyncio.to_thread(fetch, f"http://{node.address}:2379/health")
                    break
                except OSError:
                    await asyncio.sleep(0.2)
            inspected = await pool.run(node.address, ["podman", "container", "inspect", ETCD])
            files = await pool.run(
                node.address,
                ["podman", "exec", ETCD, "ls", "/var/lib/etcd/member"],
            )
            await rt.stop_container(node.address, ETCD)
            doc: dict[str, Any] = json.loads(inspected.stdout)[0]
            return doc, health, files.stdout

    doc, health, files = run(main, timeout=60)
    assert json.loads(health) == {"health": "true"}
    assert doc["HostConfig"]["ReadonlyRootfs"] is True
    assert doc["HostConfig"]["NetworkMode"] == "host"
    assert doc["Config"]["Entrypoint"] in (
        ["/usr/local/bin/etcd-shim"],
        "/usr/local/bin/etcd-shim",
    )
    assert doc["Args"] == list(args)  # what the label records is what ran
    mounts = {m["Destination"]: m for m in doc["Mounts"]}
    assert mounts["/var/lib/etcd"]["Name"] == "etcd-cke"
    assert b"wal" in files.split()


def test_tools_image_runs_rivers_proxying_to_an_upstream_in_another_node(
    lab: Lab, images: LabImages
) -> None:
    cluster = cluster_of(lab)
    node1, node2 = lab.nodes
    params = rivers_params(cluster)
    assert params.extra_args[0] == "rivers"
    upstream = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{node2.netns}", sys.executable, "-c", ECHO_SERVER,
         node2.address, str(RIVERS_UPSTREAM_PORT)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert upstream.stdout is not None
        assert upstream.stdout.readline() == b"ready\n"

        async def start() -> None:
            async with make_pool(lab) as pool:
                rt = ContainerRuntime(pool, "podman", log_driver="k8s-file")
                await rt.run_container(node1.address, RIVERS, images.tools.name, params=params)

        run(start, timeout=60)
        payload = "hello through rivers: ' \" $(x) \n"
        client = subprocess.run(
            ["nsenter", f"--net=/run/netns/{node1.netns}", sys.executable, "-c", CLIENT,
             str(RIVERS_LISTEN_PORT), payload],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert client.returncode == 0, client.stderr

        async def logs() -> str:
            async with make_pool(lab) as pool:
                out = await pool.run(node1.address, ["podman", "logs", RIVERS])
                rt = ContainerRuntime(pool, "podman", log_driver="k8s-file")
                await rt.stop_container(node1.address, RIVERS)
                return (out.stdout + out.stderr).decode()

        log = run(logs, timeout=60)
        assert client.stdout == payload
        assert f"{node2.address}:{RIVERS_UPSTREAM_PORT}" in log
        assert "type=access" in log
    finally:
        upstream.kill()
        upstream.wait()


def test_stand_in_takes_kube_apiserver_arguments_and_stops_on_term(
    lab: Lab, images: LabImages
) -> None:
    cluster = cluster_of(lab)
    node = cluster.nodes[1]
    params = api_server_params(cluster, node)
    args_only = ServiceParams(extra_args=params.extra_args)  # the binds need CKE's files

    async def main() -> tuple[str, str, bytes]:
        async with make_pool(lab) as pool:
            rt = ContainerRuntime(pool, "podman", log_driver="k8s-file")
            await rt.run_container(
                node.address,
                KUBE_APISERVER,
                images.kubernetes.name,
                options=container_options(KUBE_APISERVER, cluster),
                params=args_only,
            )
            status = await rt.inspect(node.address, [KUBE_APISERVER])
            assert status[KUBE_APISERVER].running
            assert status[KUBE_APISERVER].builtin_params == args_only
            await pool.run(node.address, ["podman", "stop", "--time=60", KUBE_APISERVER])
            code = await pool.run(
                node.address,
                ["podman", "container", "inspect", "--format", "{{.State.ExitCode}}",
                 KUBE_APISERVER],
            )  # fmt: skip
            logs = await pool.run(node.address, ["podman", "logs", KUBE_APISERVER])
            await rt.remove_container(node.address, KUBE_APISERVER)
            return code.stdout.decode().strip(), logs.stdout.decode(), logs.stderr

    code, logs, _ = run(main, timeout=120)
    # 0: the trap ran on TERM; podman's KILL after --time would give 137.
    assert code == "0"
    count = len(params.extra_args) - 1
    assert logs == (
        f"cke-lab kubernetes stand-in: not running kube-apiserver ({count + 1} arguments ignored)\n"
    )


def test_real_kubernetes_image_runs_the_program_named_by_the_first_argument(
    lab: Lab, tmp_path: Path
) -> None:
    k8s = tmp_path / "k8s-bin"
    k8s.mkdir()
    for name in KUBERNETES_BINARIES:
        fake = k8s / name
        fake.write_text(
            "#!/bin/sh\ntrap 'exit 0' TERM\nprintf '%s|' \"$0\" \"$@\"; echo\n"
            "while :; do sleep 3600 & wait $!; done\n"
        )
        fake.chmod(0o755)
    real = build_lab_images(tmp_path / "cache", k8s_bin=k8s)
    cluster = cluster_of(lab)
    node = cluster.nodes[0]
    params = api_server_params(cluster, node)

    async def main() -> str:
        async with make_pool(lab) as pool:
            loaded = await load_lab_images(pool, [node.address], "podman", real)
            assert loaded[node.address] == (real.kubernetes.name,)  # etcd, tools: same names
            rt = ContainerRuntime(pool, "podman", log_driver="k8s-file")
            await rt.run_container(
                node.address,
                "kube-apiserver-real",
                real.kubernetes.name,
                params=ServiceParams(extra_args=params.extra_args),
            )
            out = b""
            for _ in range(100):
                out = (
                    await pool.run(node.address, ["podman", "logs", "kube-apiserver-real"])
                ).stdout
                if out:
                    break
                await asyncio.sleep(0.1)
            await rt.stop_container(node.address, "kube-apiserver-real")
            return out.decode()

    logged = run(main, timeout=60)
    program, *args = logged.rstrip("\n").rstrip("|").split("|")
    assert program == "/usr/local/kubernetes/bin/kube-apiserver"
    assert args == list(params.extra_args[1:])
