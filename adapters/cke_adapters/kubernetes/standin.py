"""A stand-in for the Kubernetes API: CKE's view of it, kept in memory.

No kube-apiserver or kubelet can run on this project's machines, yet lab nodes
run the Kubernetes system containers for real (an image that accepts CKE's
exact arguments and does nothing). ``StandInKubernetes`` answers the engine's
Kubernetes questions and runs its Kubernetes commands so that decisions go on
past ``k8s-start`` to ``etcd-maintain`` and ``completed``. It is a stand-in for
the *API as CKE uses it*, not a Kubernetes: there is no scheduler, no
controller, no pod, no watch, no authentication.

State: one ``cke_core.status.KubernetesStatus``, the subset of API objects
CKE reads (§D.2 step 5). Commands edit it through the core's model,
``cke_core.simulation.apply_command``, so the stand-in and the simulator can
never disagree on what a command does. Given a path, the state is also kept in
a JSON file (``{"format": "cke-py/standin-kubernetes", "version": 1,
"kubernetes": ...}``, the status codec's form), written atomically after every
change and re-read whenever another process replaced it, so an engine
restarted in another process sees the same API objects.

What is emulated, each rule derived from the containers that run on the
nodes (``nodes``, observed over SSH in the same round):

* Component health (§D.1): the controller manager, scheduler, proxy and
  kubelet are healthy iff their container runs; the apiserver iff its
  container runs and an etcd runs on some control plane of cluster.yml (a
  real apiserver needs etcd; quorum is not checked, a real one would need it
  for the namespace list CKE's check reads). An unreachable node is left as
  observed (zero).
* The API answers (``observe``, ``run``) only through an apiserver that is
  healthy by that rule: ``observe`` raises ``KubernetesAPIError`` otherwise
  (an observation error, §L.6), a command fails.
* Nodes: a cluster.yml node whose kubelet runs has a Node (registered with
  the boot taints on the first observation or command that sees the kubelet
  run, as a kubelet registers at start); a Node of a cluster.yml node is
  Ready iff that kubelet runs. A Node stays when its kubelet stops (NotReady)
  and is removed only by ``remove-node``.
* ``wait-kubernetes`` makes the control plane ready (ServiceAccount
  ``kube-system/default`` exists) once a controller manager runs anywhere,
  and it stays ready.
* ``apply-resource`` records the resource's annotations (server-side applied);
  Service ``kube-system/cluster-dns`` gets the tenth address of the service
  subnet as its ClusterIP once applied. ConfigMaps ``cluster-dns`` and
  ``node-dns``, Service, Endpoints and EndpointSlice ``cke-etcd``, Endpoints
  and EndpointSlice ``default/kubernetes``, Node labels, annotations, taints,
  cordons and removal are stored as the commands carry them; an update of a
  Node that does not exist fails, as a real one does.
* Drains: there are no pods, so evictions and DaemonSet pod deletions succeed
  at once and every draining reboot or repair entry has completed its drain
  (``queue_status``); no drain ever times out.

Not emulated: any object not listed above (applied resources are not stored
beyond their annotations, so e.g. a Deployment never has pods), the other
ServiceAccounts, Secrets and certificate issuance for Secrets, webhooks, REST
mappings and discovery (every type is served), admission, conflicts and
resource versions, ``status.volumesInUse`` (always empty), protected
namespaces and PodDisruptionBudgets, etcd quorum as the apiserver sees it,
anything Kubernetes does on its own (controllers, garbage collection, the
kubelet's node status loop). The queue fields that do not come from
Kubernetes (next candidates, boot and health checks, dequeues) are left as
given.

The methods are asynchronous, as a real client's are, but never await:
each call reads, changes and saves the state without interleaving with
another (file I/O is small and synchronous).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from cke_core.cluster import Cluster
from cke_core.codec import describe, structure, unstructure
from cke_core.commands import kube as kc
from cke_core.commands.node import RetaintBeforeKubeletBoot
from cke_core.frozen import FrozenDict
from cke_core.ops.base import Command, CommandResult
from cke_core.problems import Problem, join_path
from cke_core.simulation import (
    SimulationError,
    apply_command,
    kubernetes_health,
    node_health,
    reboot_drain_completed,
    register_nodes,
    repair_drain_completed,
)
from cke_core.status import (
    ClusterStatus,
    KubernetesStatus,
    NodeStatus,
    RebootQueueStatus,
    RepairQueueStatus,
)

__all__ = ["STATE_FORMAT", "KubernetesAPIError", "StandInKubernetes", "StandInStateError"]

#: The ``format`` of the state file; ``STATE_VERSION`` its version.
STATE_FORMAT: Final = "cke-py/standin-kubernetes"
STATE_VERSION: Final = 1

#: Every command class of ``cke_core.commands.kube``, plus the one Node command
#: that talks to the API rather than over SSH.
_API_COMMANDS: Final[tuple[type[Command], ...]] = (
    *(
        value
        for value in vars(kc).values()
        if isinstance(value, type)
        and issubclass(value, Command)
        and value.__module__ == kc.__name__
    ),
    RetaintBeforeKubeletBoot,
)


class StandInStateError(Exception):
    """The state file cannot be read or written; the message is one line."""


class KubernetesAPIError(Exception):
    """The stand-in API does not answer (no healthy apiserver at the address)."""


def _fail(error: str) -> CommandResult:
    return CommandResult(ok=False, error=error)


def _etcd_runs(cluster: Cluster, nodes: Mapping[str, NodeStatus]) -> bool:
    """Whether an etcd runs on some reachable control plane of cluster.yml."""
    for cp in cluster.control_planes:
        st = nodes.get(cp.address)
        if st is not None and st.ssh_connected and st.etcd.running:
            return True
    return False


def _serves(cluster: Cluster, address: str, nodes: Mapping[str, NodeStatus]) -> bool:
    """Whether the apiserver on ``address`` answers: it runs and has an etcd."""
    st = nodes.get(address)
    return (
        st is not None and st.ssh_connected and st.api_server.running and _etcd_runs(cluster, nodes)
    )


def _apiserver_of(command: Command) -> str:
    """The apiserver a command talks through; "" lets the shell pick one."""
    address = getattr(command, "apiserver", None) or getattr(command, "api_server", "")
    return str(address)


class StandInKubernetes:
    """``KubernetesPort`` over an in-memory ``KubernetesStatus`` (see the module).

    ``path``: a JSON file that keeps the state across processes; it is read
    when it exists and written after every change. Without it, the state
    lives as long as the object. A file that cannot be read raises
    ``StandInStateError``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self._state = KubernetesStatus()
        self._stamp: tuple[int, int, int] | None = None
        self._refresh()

    @property
    def path(self) -> Path | None:
        """The state file, if any."""
        return self._path

    @property
    def state(self) -> KubernetesStatus:
        """The API objects as stored now (Ready flags as of the last derivation)."""
        self._refresh()
        return self._state

    # --- KubernetesPort ----------------------------------------------------------

    async def component_health(
        self,
        cluster: Cluster,
        address: str,
        node: NodeStatus,
        *,
        nodes: Mapping[str, NodeStatus] | None = None,
    ) -> NodeStatus:
        """``node`` with the components' health: each healthy iff it runs, the
        apiserver only if an etcd also runs on some control plane, judged from
        ``nodes`` (with ``node`` as ``address``); without ``nodes``, from
        ``node`` alone (its own etcd)."""
        known = {**(nodes or {}), address: node}
        return node_health(node, _etcd_runs(cluster, known))

    async def observe(
        self, cluster: Cluster, living_master: str, nodes: Mapping[str, NodeStatus]
    ) -> KubernetesStatus:
        """The stored objects as the API shows them now: Nodes registered for the
        running kubelets of cluster.yml, Ready iff their kubelet runs, and the
        ``cluster-dns`` ClusterIP. Raises ``KubernetesAPIError`` when the
        apiserver on ``living_master`` does not answer, ``StandInStateError``
        when the state file cannot be read or saved."""
        self._refresh()
        if not _serves(cluster, living_master, nodes):
            raise KubernetesAPIError(
                f"the Kubernetes API on {living_master} does not answer: "
                f"{self._why_not(cluster, living_master, nodes)}"
            )
        state = self._synced(cluster, nodes)
        self._commit(state)
        return state

    async def queue_status(
        self,
        cluster: Cluster,
        reboot: RebootQueueStatus,
        repair: RepairQueueStatus,
        nodes: Mapping[str, NodeStatus],
    ) -> tuple[RebootQueueStatus, RepairQueueStatus]:
        """The queues with the drain fields filled in (§D.2 steps 6-7): there are
        no pods, so every draining entry has drained; none timed out. The other
        fields are left as given."""
        del nodes
        return (
            attrs.evolve(
                reboot,
                drain_completed=reboot_drain_completed(reboot, cluster),
                drain_timedout=(),
            ),
            attrs.evolve(repair, drain_completed=repair_drain_completed(repair)),
        )

    def handles(self, command: Command) -> bool:
        """True for ``cke_core.commands.kube`` commands and ``retaint-before-kubelet-boot``."""
        return isinstance(command, _API_COMMANDS)

    async def run(
        self, cluster: Cluster, command: Command, nodes: Mapping[str, NodeStatus]
    ) -> CommandResult:
        """Run ``command`` against the stored objects as the core's model does
        (``simulation.apply_command``) and save them. Never raises: a command
        this port does not handle, an apiserver that does not answer, a command
        the model does not know or a state file that cannot be saved is a
        failed result with a one-line error (the state is then unchanged)."""
        name = command.name or type(command).__name__
        if not self.handles(command):
            return _fail(f"{name}: not a Kubernetes API command; the stand-in API does not run it")
        try:
            self._refresh()
            apiserver = _apiserver_of(command)
            if apiserver and not _serves(cluster, apiserver, nodes):
                why = self._why_not(cluster, apiserver, nodes)
                return _fail(f"{name}: the Kubernetes API on {apiserver} does not answer: {why}")
            if not apiserver and not any(_serves(cluster, a, nodes) for a in nodes):
                return _fail(f"{name}: no Kubernetes API answers: no apiserver with an etcd runs")
            world = ClusterStatus(nodes=FrozenDict(nodes), kubernetes=self._synced(cluster, nodes))
            after, result = apply_command(world, cluster, command)
            self._commit(after.kubernetes)
        except (SimulationError, StandInStateError) as exc:
            return _fail(f"{name}: {exc}")
        except Exception as exc:  # a bug in the model must not stop the engine
            return _fail(f"{name}: the stand-in Kubernetes API failed: {type(exc).__name__}: {exc}")
        return result

    # --- state -------------------------------------------------------------------

    def _synced(self, cluster: Cluster, nodes: Mapping[str, NodeStatus]) -> KubernetesStatus:
        """The stored objects with the kubelets' registrations and readiness."""
        return kubernetes_health(register_nodes(self._state, cluster, nodes), cluster, nodes)

    @staticmethod
    def _why_not(cluster: Cluster, address: str, nodes: Mapping[str, NodeStatus]) -> str:
        st = nodes.get(address)
        if st is None or not st.ssh_connected:
            return "the node is not reachable"
        if not st.api_server.running:
            return "kube-apiserver is not running there"
        return "no etcd runs on any control plane"

    def _commit(self, state: KubernetesStatus) -> None:
        """Keep ``state`` (and save it) when it differs from the stored one."""
        if state == self._state:
            return
        if self._path is not None:
            self._write(state)
        self._state = state

    def _refresh(self) -> None:
        """Re-read the file when another process (or nobody yet) wrote it."""
        if self._path is None:
            return
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return
        self._state = self._read()
        self._stamp = stamp

    def _file_stamp(self) -> tuple[int, int, int] | None:
        assert self._path is not None
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StandInStateError(f"cannot read {self._path}: {exc.strerror}") from None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> KubernetesStatus:
        assert self._path is not None
        try:
            doc = json.loads(self._path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise StandInStateError(f"cannot read {self._path}: {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise StandInStateError(f"{self._path}: not JSON: {exc}") from None
        return _state_from_json(doc, str(self._path))

    def _write(self, state: KubernetesStatus) -> None:
        """Write atomically: a temporary file in the same directory, fsync, rename."""
        assert self._path is not None
        text = json.dumps(_state_to_json(state), indent=1, sort_keys=True) + "\n"
        directory = self._path.parent
        tmp = ""
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self._path)
            tmp = ""
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StandInStateError(f"cannot save {self._path}: {exc.strerror}") from None
        finally:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        self._stamp = self._file_stamp()


def _state_to_json(state: KubernetesStatus) -> dict[str, Any]:
    return {"format": STATE_FORMAT, "version": STATE_VERSION, "kubernetes": unstructure(state)}


def _state_from_json(doc: Any, where: str) -> KubernetesStatus:
    if not isinstance(doc, Mapping):
        raise StandInStateError(f"{where}: expected a {STATE_FORMAT} document, got {describe(doc)}")
    if doc.get("format") != STATE_FORMAT or doc.get("version") != STATE_VERSION:
        raise StandInStateError(
            f"{where}: not a {STATE_FORMAT} version {STATE_VERSION} document "
            f"(format {describe(doc.get('format'))}, version {describe(doc.get('version'))})"
        )
    if "kubernetes" not in doc:
        raise StandInStateError(f"{where}: kubernetes: missing")
    value, problems, _ = structure(doc["kubernetes"], KubernetesStatus)
    if problems or value is None:
        first = problems[0] if problems else Problem("", "unusable")
        path = join_path("kubernetes", first.path) if first.path else "kubernetes"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StandInStateError(f"{where}: {path}: {first.message}{more}")
    return value
