"""Commands run on nodes over SSH (§C.1), and the requests that need the PKI.

Every command here runs on a list of nodes (``nodes``: addresses, in the
operation's order), as CKE's do (``common.ImagePullCommand(nodes, image)``,
``common.RunContainerCommand(nodes, name, image, ...)``, ``MakeFilesCommand``,
``KillContainersCommand(nodes, name)``), and its ``target`` is CKE's record
form: the addresses joined with ",". The exception is
``retaint-before-kubelet-boot``, which talks to the Node API and names Nodes
by their Kubernetes node names.

Running a multi-node command (what an executor must do):

* the per-node parts are independent; the shell runs them concurrently
  (bounded as it sees fit) and waits for all of them;
* the command succeeds when every node's part succeeded. Otherwise its result
  is ``ok=False`` with an ``error`` naming the failed nodes, and its ``value``
  may be a ``Mapping[str, str]`` from each failed address to that node's error
  (``ops.base.failed_nodes`` reads it; without it every node counts as
  failed);
* parts that succeeded are not undone: every command is safe to run again, so
  the next decision repeats the step on all nodes;
* where the payload differs per node, the command carries a mapping keyed by
  address (``RunContainer.params``, ``MakeFiles.files``, the ``prepare-*``
  requests' ``pki`` and ``kubeconfigs``); read it with the ``*_of(address)``
  accessors. Everything else is the same on every node.

Secrets and files:

* ``prepare-*`` commands are *requests*: for each node the shell issues the
  certificates and kubeconfigs they describe (``render.files`` values), copies
  the CA certificates and the service-account files, renders the encryption
  configuration, and **stages** the results for that node. No secret is a
  value of the core, so none reaches the event log.
* ``make-files`` then writes on each node, in one ``write_files`` run of the
  tools image, every file staged for that node by the operation's
  ``prepare-*`` command together with its own non-secret ``files_of(node)``
  (each atomically: temporary file, rename, fsync). This is CKE's split
  between ``prepare-*`` (fill the FilesBuilder) and ``make-files`` (write
  it). A staged file whose path also appears in ``files_of(node)`` is written
  with the content of ``files``.

Commands that start a helper container (``make-dirs``, ``make-files``,
``empty-dir``, ``install-cni``) carry the tools ``image`` because the images
are an input of the decision (``render.images.Images``), not a constant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

import attrs

from cke_core.cluster import ServiceParams, Taint
from cke_core.fields import tuple_field
from cke_core.frozen import FrozenDict, frozen_dict
from cke_core.ops.base import Command
from cke_core.render.files import File, KubeconfigRequest, PKIRequests

#: ``make-dirs`` modes CKE uses.
DirMode = Literal["755", "700"]


def node_list(value: Iterable[str]) -> tuple[str, ...]:
    """``nodes`` as a tuple; a lone string is a mistake (it would split into characters)."""
    if isinstance(value, str):
        raise TypeError(f"nodes must be a sequence, not the string {value!r}")
    return tuple(value)


def _per_node_keys(
    instance: Any, attribute: attrs.Attribute[Any], value: Mapping[str, Any]
) -> None:
    """A per-node mapping may only name the command's nodes."""
    nodes = frozenset(instance.nodes)
    if unknown := [a for a in value if a not in nodes]:
        raise ValueError(f"{attribute.name}: {unknown} are not among the command's nodes")


def _every_node(instance: Any, attribute: attrs.Attribute[Any], value: Mapping[str, Any]) -> None:
    """A per-node mapping that must name exactly the command's nodes."""
    _per_node_keys(instance, attribute, value)
    if missing := [a for a in instance.nodes if a not in value]:
        raise ValueError(f"{attribute.name}: no value for {missing}")


def _params_by_node(value: Mapping[str, ServiceParams]) -> FrozenDict[str, ServiceParams]:
    return frozen_dict(value)


def _files_by_node(value: Mapping[str, tuple[File, ...]]) -> FrozenDict[str, tuple[File, ...]]:
    return frozen_dict(value)


def _pki_by_node(value: Mapping[str, PKIRequests]) -> FrozenDict[str, PKIRequests]:
    return frozen_dict(value)


def _kubeconfigs_by_node(
    value: Mapping[str, tuple[KubeconfigRequest, ...]],
) -> FrozenDict[str, tuple[KubeconfigRequest, ...]]:
    return frozen_dict(value)


@attrs.frozen
class NodeCommand(Command):
    """A command on each node of ``nodes`` (addresses); fails if it fails on any."""

    nodes: tuple[str, ...] = attrs.field(default=(), converter=node_list)

    @property
    def target(self) -> str:
        return ",".join(self.nodes)


# ---------------------------------------------------------------------------
# Images and containers
# ---------------------------------------------------------------------------


@attrs.frozen
class ImagePull(NodeCommand):
    """On each node: pull ``image`` unless ``docker image list`` shows it (3 tries, 10 s apart)."""

    NAME: ClassVar[str] = "image-pull"
    image: str = ""


@attrs.frozen
class RunContainer(NodeCommand):
    """Run system container ``container`` from ``image`` on each node.

    (The field is not called ``name``: that is the command's name.)

    ``params`` holds each node's built-in parameters (by address, one for every
    node); ``options`` and ``extra`` are the same on every node. On each node
    the shell: when ``restart``, kills the container first; removes an
    existing container of that name; records the label
    ``com.cybozu.cke={"builtin": params_of(node), "extra": extra}`` (what
    observation reads back to find outdated containers); runs it detached with
    the base options of every system container (journald, read-only, host
    network and UTS), then ``options``, the binds and environment of the
    node's params and of ``extra``, the image, the params' ``extra_args`` and
    ``extra.extra_args``.
    """

    NAME: ClassVar[str] = "run-container"
    container: str = ""
    image: str = ""
    options: tuple[str, ...] = tuple_field()
    params: FrozenDict[str, ServiceParams] = attrs.field(
        factory=FrozenDict, converter=_params_by_node, validator=_every_node
    )
    extra: ServiceParams = ServiceParams()
    restart: bool = False

    def params_of(self, address: str) -> ServiceParams:
        """The built-in parameters of the container on ``address``."""
        return self.params[address]


@attrs.frozen
class StopContainer(NodeCommand):
    """On each node: stop ``container`` if it is running, then remove it if it exists."""

    NAME: ClassVar[str] = "stop-container"
    container: str = ""


@attrs.frozen
class KillContainers(NodeCommand):
    """On each node: kill ``container`` if running, then remove it if it exists."""

    NAME: ClassVar[str] = "kill-containers"
    container: str = ""


# ---------------------------------------------------------------------------
# Volumes
# ---------------------------------------------------------------------------


@attrs.frozen
class VolumeCreate(NodeCommand):
    """On each node: ``docker volume create``; creating an existing volume is not an error."""

    NAME: ClassVar[str] = "volume-create"
    volume: str = ""


@attrs.frozen
class VolumeRemove(NodeCommand):
    """On each node: remove ``volume`` only if ``docker volume list`` shows it (§L.8)."""

    NAME: ClassVar[str] = "volume-remove"
    volume: str = ""


# ---------------------------------------------------------------------------
# Directories and files (helper containers of the tools image)
# ---------------------------------------------------------------------------


@attrs.frozen
class MakeDirs(NodeCommand):
    """On each node: ``make_directories --mode=<mode>`` for each of ``dirs``
    (parents bound under /mnt)."""

    NAME: ClassVar[str] = "make-dirs"
    image: str = ""
    dirs: tuple[str, ...] = tuple_field()
    mode: DirMode = "755"


@attrs.frozen
class MakeFiles(NodeCommand):
    """On each node: write the files staged for it by the operation's ``prepare-*``
    command, and ``files_of(node)``, atomically, with ``write_files``.

    ``files``: the non-secret files by address; a node absent from it has none.
    """

    NAME: ClassVar[str] = "make-files"
    image: str = ""
    files: FrozenDict[str, tuple[File, ...]] = attrs.field(
        factory=FrozenDict, converter=_files_by_node, validator=_per_node_keys
    )

    def files_of(self, address: str) -> tuple[File, ...]:
        return self.files.get(address, ())


@attrs.frozen
class EmptyDir(NodeCommand):
    """On each node: remove everything inside ``directory`` (the CNI configuration
    directory before a bootstrap writes ``cni_conf_file``, so no stale configuration
    wins)."""

    NAME: ClassVar[str] = "empty-dir"
    image: str = ""
    directory: str = ""


@attrs.frozen
class InstallCNI(NodeCommand):
    """On each node: copy the tools image's CNI plugins (``/cni_plugins/bin/*``) to
    ``/opt/cni/bin``."""

    NAME: ClassVar[str] = "install-cni"
    image: str = ""


# ---------------------------------------------------------------------------
# PKI-backed requests (fulfilled and staged by the shell, written by make-files)
# ---------------------------------------------------------------------------


@attrs.frozen
class PrepareFiles(NodeCommand):
    """Base of the ``prepare-*`` requests: issue and stage what each node needs.

    By address (a node absent from a mapping needs none of it): ``pki``,
    certificates to issue, CA certificates and service-account files to copy;
    ``kubeconfigs``, kubeconfigs to render with
    ``render.files.render_kubeconfig``. ``encryption_config``: when not
    empty, the path where the shell writes, on every node,
    ``render.files.render_encryption_config`` of the cluster's encryption keys.
    """

    pki: FrozenDict[str, PKIRequests] = attrs.field(
        factory=FrozenDict, converter=_pki_by_node, validator=_per_node_keys
    )
    kubeconfigs: FrozenDict[str, tuple[KubeconfigRequest, ...]] = attrs.field(
        factory=FrozenDict, converter=_kubeconfigs_by_node, validator=_per_node_keys
    )
    encryption_config: str = ""

    def pki_of(self, address: str) -> PKIRequests:
        return self.pki.get(address, PKIRequests())

    def kubeconfigs_of(self, address: str) -> tuple[KubeconfigRequest, ...]:
        return self.kubeconfigs.get(address, ())


@attrs.frozen
class PrepareEtcdCertificates(PrepareFiles):
    NAME: ClassVar[str] = "prepare-etcd-certificates"


@attrs.frozen
class PrepareAPIServerFiles(PrepareFiles):
    NAME: ClassVar[str] = "prepare-apiserver-files"


@attrs.frozen
class PrepareControllerManagerFiles(PrepareFiles):
    NAME: ClassVar[str] = "prepare-controller-manager-files"


@attrs.frozen
class PrepareSchedulerFiles(PrepareFiles):
    NAME: ClassVar[str] = "prepare-scheduler-files"


@attrs.frozen
class PrepareKubeletFiles(PrepareFiles):
    NAME: ClassVar[str] = "prepare-kubelet-files"


@attrs.frozen
class PrepareKubeletConfig(PrepareFiles):
    """The kubelet-restart variant: a fresh certificate and kubeconfig, no CA copy."""

    NAME: ClassVar[str] = "prepare-kubelet-config"


@attrs.frozen
class PrepareProxyFiles(PrepareFiles):
    NAME: ClassVar[str] = "prepare-proxy-files"


# ---------------------------------------------------------------------------
# Kubelet boot helpers
# ---------------------------------------------------------------------------


@attrs.frozen
class WaitForKubeletReady(NodeCommand):
    """For each node: poll ``http://<node>:10248/healthz`` until it answers ``ok``
    (10 tries, 5 s apart)."""

    NAME: ClassVar[str] = "wait-for-kubelet-ready"


@attrs.frozen
class RetaintBeforeKubeletBoot(Command):
    """Before a kubelet boots, give already registered Nodes their boot taints.

    For each Node named in ``nodes`` (Kubernetes node names): a taint with the
    same key and effect gets the boot taint's value, a missing one is
    appended, and the Node is updated (retrying on conflict) only if
    something changed. ``register-with-taints`` applies only at first
    registration, so without this a rebooted node would run pods before its
    boot taints are back. ``api_server``: the address of the apiserver the
    decision found healthy (empty: the shell picks one). Not an SSH command.
    """

    NAME: ClassVar[str] = "retaint-before-kubelet-boot"
    nodes: tuple[str, ...] = attrs.field(default=(), converter=node_list)
    taints: tuple[Taint, ...] = tuple_field()
    api_server: str = ""

    @property
    def target(self) -> str:
        return ",".join(self.nodes)
