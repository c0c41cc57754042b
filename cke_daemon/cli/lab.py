"""``ckecli lab up|status|down``: a local lab of CKE nodes (root only).

Nodes are network namespaces on a bridge, each with its own sshd and podman
(:mod:`cke_adapters.lab`); ``up`` also builds and loads the lab's container
images (:func:`cke_adapters.images.build_lab_images`) and writes cluster.yml
and lab.json, which the engine's wiring reads (:func:`cke_adapters.lab.info.load_lab`).

Every error is one line, ``ckecli lab: ...`` (exit 1), and so are bad
arguments (exit 2).
"""

from __future__ import annotations

from pathlib import Path

import click
from cke_adapters.images import DEFAULT_IMAGE_CACHE, KUBERNETES_BINARIES
from cke_adapters.lab.manage import (
    CLUSTER_FILE,
    DEFAULT_LAB_NAME,
    lab_down,
    lab_status,
    lab_up,
)

from cke_daemon import rivers
from cke_daemon.cli import lab_run
from cke_daemon.cli.lab_common import DIR_OPTION, LabUsageError, lab_errors


@click.group()
def lab() -> None:
    """A local lab: nodes in network namespaces with sshd and podman (root only)."""


@lab.command(short_help="Bring a lab up: nodes, images, cluster.yml, lab.json.")
@click.option(
    "--nodes",
    type=click.IntRange(1, 99),
    default=5,
    show_default=True,
    help="Number of nodes.",
)
@click.option(
    "--control-planes",
    type=click.IntRange(1, 99),
    default=3,
    show_default=True,
    help="How many of the nodes (the first ones) are control planes in cluster.yml.",
)
@DIR_OPTION
@click.option(
    "--k8s-bin",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory with " + ", ".join(KUBERNETES_BINARIES) + ": build a real "
    "Kubernetes image from them (default: a stand-in that accepts the components' "
    "arguments and idles).",
)
@click.option(
    "--name",
    default=DEFAULT_LAB_NAME,
    show_default=True,
    help="Cluster name in cluster.yml, and prefix of the namespaces and interfaces "
    "(lower-case letters and digits).",
)
@click.option(
    "--subnet",
    metavar="CIDR",
    help="Private IPv4 network of the nodes' bridge (node i gets .10+i) "
    "[default: the first /24 of 10.231.0.0/16 unused on this machine].",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_IMAGE_CACHE,
    show_default=True,
    help="Where built image tarballs are kept between runs (down keeps them).",
)
@lab_errors
def up(
    nodes: int,
    control_planes: int,
    directory: Path,
    k8s_bin: Path | None,
    name: str,
    subnet: str | None,
    cache_dir: Path,
) -> None:
    """Bring a lab up: nodes with sshd and podman, the lab's images loaded on
    each, and DIR/cluster.yml and DIR/lab.json written.

    All or nothing: on failure, what was made is removed. Refused when a lab
    is already up in DIR.
    """
    if control_planes > nodes:
        raise LabUsageError(
            "ckecli lab up",
            f"--control-planes {control_planes} exceeds --nodes {nodes}",
        )
    report = lab_up(
        directory,
        nodes=nodes,
        control_planes=control_planes,
        name=name,
        k8s_bin=k8s_bin,
        cache_dir=cache_dir,
        subnet=subnet,
        rivers_source=Path(rivers.__file__),
    )
    info = report.info
    click.echo(
        f"lab {info.name} is up in {info.directory}: {_count(len(info.nodes), 'node')} "
        f"({_count(len(info.control_planes), 'control plane')}), "
        f"subnet {info.subnet}, bridge {info.bridge}"
    )
    for node in info.nodes:
        role = "control plane" if node.control_plane else "worker"
        click.echo(f"  {node.hostname:<8} {node.address:<15} {node.netns:<14} {role}")
    kind = "stand-in" if info.kubernetes_stand_in else "real"
    images = info.images
    click.echo(f"images: {images.etcd}, {images.tools}, {images.kubernetes} ({kind})")
    click.echo(
        f"took {report.build_seconds:.1f} s to build images (cache {cache_dir}), "
        f"{report.network_seconds:.1f} s for the nodes, {report.load_seconds:.1f} s to load "
        f"{report.imported} images"
    )
    click.echo(f"cluster.yml: {info.directory / CLUSTER_FILE}")
    click.echo(
        f"ssh: ssh -i {info.ssh_key} -o UserKnownHostsFile={info.known_hosts} "
        f"root@{info.nodes[0].address}"
    )


@lab.command(short_help="Show each node: address, role, sshd, running containers.")
@DIR_OPTION
@lab_errors
def status(directory: Path) -> None:
    """Each node of the lab in DIR: address, role, whether its sshd is up,
    and the containers running on it (podman ps over SSH)."""
    info, reports = lab_status(directory)
    click.echo(f"lab {info.name} in {info.directory}: subnet {info.subnet}, bridge {info.bridge}")
    click.echo(f"{'NODE':<8} {'ADDRESS':<15} {'ROLE':<13} {'SSHD':<5} CONTAINERS")
    for report in reports:
        node = report.node
        role = "control-plane" if node.control_plane else "worker"
        sshd = "up" if report.sshd else "down"
        if report.containers is not None:
            running = ", ".join(name for name, _, _ in report.containers) or "-"
        elif report.error:
            running = f"? ({report.error})"
        else:
            running = "?" if report.netns else "? (namespace missing)"
        click.echo(f"{node.hostname:<8} {node.address:<15} {role:<13} {sshd:<5} {running}")


@lab.command(short_help="Remove the lab and everything up made (keeps the image cache).")
@DIR_OPTION
@lab_errors
def down(directory: Path) -> None:
    """Remove the lab in DIR: its containers, namespaces and every process in
    them, veths, bridge, node storage and DIR itself. Idempotent; also cleans
    up after an interrupted up. The image cache is kept."""
    report = lab_down(directory)
    if not report.found:
        click.echo(f"no lab in {report.directory}: nothing to remove")
        return
    for problem in report.problems:
        click.echo(f"ckecli lab: warning: {problem}", err=True)
    click.echo(
        f"lab {report.name} removed from {report.directory} "
        f"({_count(report.nodes, 'node')}, {_count(report.containers_removed, 'container')})"
    )


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


lab.add_command(lab_run.run)
