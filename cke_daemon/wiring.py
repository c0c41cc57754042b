"""The composition root: which adapter stands behind each seam.

Everything that builds an ``Engine`` does it here, once, so the choice of
adapters is visible in one place (cosmicpython's ``bootstrap``). For a lab
made by ``ckecli lab up``:

* nodes: ``SSHPool`` with the lab's key and known-hosts file, and
  ``ContainerRuntime`` with the lab's container CLI and log driver;
* PKI: ``LocalCA`` in ``<lab>/pki`` (the Vault issuer of §H plugs in behind
  the same ``Issuer`` seam);
* etcd: ``EtcdCluster`` with the engine's ``root`` client certificate,
  re-issued every half hour (it lives one hour, as CKE's);
* Kubernetes: ``StandInKubernetes`` with its state in ``<lab>/kubernetes.json``
  (no apiserver can run here: ADR 0010);
* event log: SQLite in ``<lab>/events.db`` unless a store URL is given;
* decision inputs: cluster.yml of the lab (stored when it changed), the
  constraint ``control-plane-count``, the lab's images.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
from cke_adapters.etcd_cluster import RenewingEtcdCluster
from cke_adapters.eventlog.application import EventLog, open_event_log
from cke_adapters.executor import Executor
from cke_adapters.kubernetes.standin import StandInKubernetes
from cke_adapters.lab.info import LabInfo, LabInfoError
from cke_adapters.observe import Observer
from cke_adapters.pki import LocalCA, etcd_client_credentials
from cke_adapters.runtime import ContainerRuntime
from cke_adapters.service import Engine, Progress

from cke_core.config import check_cluster
from cke_core.constraints import Constraints
from cke_core.problems import ConfigError
from cke_core.render.images import EngineSettings

__all__ = ["lab_engine", "lab_event_log", "lab_store_url"]


def lab_store_url(lab: LabInfo) -> str:
    """The lab's default event log."""
    return f"sqlite:///{lab.directory / 'events.db'}"


def lab_event_log(lab: LabInfo, store: str | None = None) -> EventLog:
    """The event log of ``lab`` with its cluster.yml stored, and the constraint
    ``control-plane-count`` set to the control planes that cluster.yml names
    (``ConfigError`` for an invalid cluster.yml, nothing stored then)."""
    text = Path(lab.cluster_yml).read_text()
    checked = check_cluster(text)
    if checked.value is None or any(p.severity == "error" for p in checked.problems):
        raise ConfigError([p for p in checked.problems if p.severity == "error"])
    log = open_event_log(store or lab_store_url(lab))
    try:
        # The lab's constraint follows its cluster.yml, so promoting a node is one edit.
        current = log.constraints() or Constraints()
        count = len(checked.value.control_planes)
        log.set_cluster_and_constraints(text, attrs.evolve(current, control_plane_count=count))
    except BaseException:
        log.close()
        raise
    return log


@contextlib.asynccontextmanager
async def lab_engine(
    lab: LabInfo,
    *,
    store: str | None = None,
    progress: Progress | None = None,
    leader: str | None = None,
    etcd_add_member_pause: float = 10.0,
) -> AsyncIterator[Engine]:
    """An ``Engine`` for ``lab``; everything it opened is closed on exit.

    A new leadership term starts (``leader``: this host's name by default), which
    cancels a record left ``new`` or ``running`` by an engine that died (§L.1).
    """
    if not lab.kubernetes_stand_in:
        # Real kube-apiserver binaries (--k8s-bin) need a client of the real API behind
        # KubernetesPort; answering for them with the in-memory stand-in would be a lie.
        raise LabInfoError(
            f"{lab.directory}: the lab runs real Kubernetes binaries (--k8s-bin), and the "
            "engine has no client for a real Kubernetes API yet; use a lab without --k8s-bin"
        )
    log = lab_event_log(lab, store)
    issuer = LocalCA(lab.directory / "pki")
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(log.close)
        ssh = lab.ssh_pool()
        stack.push_async_callback(ssh.close)
        runtime = ContainerRuntime(
            ssh, lab.runtime_cli, log_driver=lab.log_driver, tools_image=lab.images.tools
        )
        etcd = RenewingEtcdCluster(
            lambda: etcd_client_credentials(issuer), add_member_pause=etcd_add_member_pause
        )
        stack.push_async_callback(etcd.close)
        kubernetes = StandInKubernetes(lab.directory / "kubernetes.json")
        start = log.start_term(leader or socket.gethostname())
        engine = Engine(
            log,
            Observer(ssh, runtime, etcd, kubernetes),
            Executor(runtime, etcd, issuer, kubernetes, log),
            settings=EngineSettings(images=lab.images),
            term=start.term,
        )
        if progress is not None:
            engine.progress = progress
        if start.cancelled_record:
            engine.progress("record-cancelled", record=start.cancelled_record)
        yield engine
