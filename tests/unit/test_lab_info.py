"""lab.json (``cke_adapters.lab.info``) and the lab's cluster.yml, without a lab."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cke_adapters.lab.info import LAB_FORMAT, LabInfo, LabInfoError, LabNodeInfo, load_lab
from cke_adapters.lab.manage import LAB_SERVICE_SUBNET, lab_cluster_yml
from cke_adapters.lab.netns import LabError

from cke_core.config import check_cluster
from cke_core.render.images import DEFAULT_PAUSE_IMAGE, Images


def node(base: Path, index: int, control_plane: bool) -> LabNodeInfo:
    directory = base / f"node{index}"
    return LabNodeInfo(
        index=index,
        hostname=f"node{index}",
        address=f"10.231.7.{10 + index}",
        netns=f"ckt-{index}",
        control_plane=control_plane,
        directory=directory,
        containers_conf=directory / "containers.conf",
        storage_conf=directory / "storage.conf",
    )


def make_info(base: Path) -> LabInfo:
    return LabInfo(
        name="ckt",
        directory=base,
        prefix="ckt",
        subnet="10.231.7.0/24",
        bridge="ckt0",
        bridge_address="10.231.7.1",
        nodes=(node(base, 1, True), node(base, 2, False)),
        ssh_user="root",
        ssh_port=22,
        ssh_key=base / "id_ed25519",
        known_hosts=base / "known_hosts",
        runtime_cli="/usr/bin/podman",
        log_driver="k8s-file",
        images=Images(
            etcd="localhost/cke-lab/etcd:3.4.23-0123456789ab",
            tools="localhost/cke-lab/tools:0123456789ab",
            kubernetes="localhost/cke-lab/kubernetes-stand-in:0123456789ab",
        ),
        kubernetes_stand_in=True,
        cluster_yml=base / "cluster.yml",
    )


def test_lab_json_round_trips(tmp_path: Path) -> None:
    info = make_info(tmp_path)
    info.save()
    loaded = load_lab(tmp_path)
    assert loaded == info
    assert loaded.addresses == ["10.231.7.11", "10.231.7.12"]
    assert loaded.control_planes == ["10.231.7.11"]
    assert loaded.images.pause == DEFAULT_PAUSE_IMAGE
    assert json.loads((tmp_path / "lab.json").read_text())["format"] == LAB_FORMAT
    lab = loaded.lab()
    assert lab.addresses == loaded.addresses
    assert [n.netns for n in lab.nodes] == ["ckt-1", "ckt-2"]
    assert lab.client_key_path == info.ssh_key


def test_missing_lab_json_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(LabInfoError) as failed:
        load_lab(tmp_path)
    assert str(failed.value) == (
        f"no lab in {tmp_path}: lab.json not found (ckecli lab up --dir {tmp_path})"
    )
    assert isinstance(failed.value, LabError)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="cke-lab/99"), "format 'cke-lab/99' is not 'cke-lab/1'"),
        (lambda d: d.pop("subnet"), "subnet: missing"),
        (lambda d: d["ssh"].update(port="22"), "ssh.port: expected int"),
        (lambda d: d["ssh"].update(port=True), "ssh.port: expected int"),
        (lambda d: d["ssh"].update(key="relative/key"), "ssh.key: invalid value 'relative/key'"),
        (
            lambda d: d["nodes"][1].update(control_plane="yes"),
            "nodes[1].control_plane: expected bool",
        ),
        (lambda d: d.update(nodes=[]), "nodes: invalid value []"),
        (lambda d: d["images"].pop("etcd"), "images.etcd: missing"),
        (lambda d: d.update(runtime=[]), "runtime: expected dict"),
        (lambda d: d["nodes"].__setitem__(0, "x"), "nodes[0] must be an object"),
    ],
)
def test_invalid_lab_json_is_one_line_naming_the_field(
    tmp_path: Path, edit: Callable[[dict[str, Any]], object], message: str
) -> None:
    info = make_info(tmp_path)
    data = json.loads(info.to_json())
    edit(data)
    (tmp_path / "lab.json").write_text(json.dumps(data))
    with pytest.raises(LabInfoError) as failed:
        load_lab(tmp_path)
    assert str(failed.value) == f"{tmp_path / 'lab.json'}: {message}"


def test_lab_json_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "lab.json").write_text("{")
    with pytest.raises(LabInfoError, match=r"lab.json: not JSON: "):
        load_lab(tmp_path)


def test_lab_cluster_yml_is_valid_and_marks_the_control_planes(tmp_path: Path) -> None:
    info = make_info(tmp_path)
    text = lab_cluster_yml("ckt", info.nodes)
    checked = check_cluster(text)
    assert checked.problems == ()
    cluster = checked.unwrap()
    assert cluster.name == "ckt"
    assert [(n.address, n.user, n.control_plane, n.hostname) for n in cluster.nodes] == [
        ("10.231.7.11", "root", True, "node1"),
        ("10.231.7.12", "root", False, "node2"),
    ]
    assert cluster.service_subnet == LAB_SERVICE_SUBNET
    assert text.startswith("# cluster.yml of the lab 'ckt'")


def test_a_cluster_yml_the_validator_refuses_is_not_written(tmp_path: Path) -> None:
    info = make_info(tmp_path)
    twice = (info.nodes[0], info.nodes[0])
    with pytest.raises(LabError, match=r"generated cluster.yml is invalid: nodes\[1\]"):
        lab_cluster_yml("ckt", twice)


def test_the_engine_refuses_a_lab_with_real_kubernetes_binaries(tmp_path: Path) -> None:
    import asyncio

    import attrs

    from cke_daemon.wiring import lab_engine

    info = attrs.evolve(make_info(tmp_path), kubernetes_stand_in=False)

    async def open_engine() -> None:
        async with lab_engine(info):
            pass

    with pytest.raises(LabInfoError, match="no client for a real Kubernetes API"):
        asyncio.run(open_engine())
    assert not (tmp_path / "events.db").exists()  # nothing was opened or written
