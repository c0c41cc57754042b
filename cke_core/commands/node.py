"""Commands run on one node over SSH (§C.1), and the requests that need the PKI.

Every command names one node by address (``target``), except ``kill-containers``
and ``retaint-before-kubelet-boot``, which CKE runs over a set of nodes and
whose target is the joined list (of addresses; of Kubernetes node names for
the retaint, which talks to the Node API). CKE runs one command over all the nodes of an
operation in parallel; here an operation issues one command per node, so each
node's step is recorded and fails on its own (see ``ops``).

Secrets and files:

* ``prepare-*`` commands are *requests*: the shell issues the certificates
  and kubeconfigs they describe (``render.files`` values), copies the CA
  certificates and the service-account files, renders the encryption
  configuration, and **stages** the results for that node. No secret is a
  value of the core, so none reaches the event log.
* ``make-files`` then writes, in one ``write_files`` run of the tools image,
  every file staged for its node by the operation's ``prepare-*`` command
  together with its own non-secret ``files`` (each atomically: temporary file,
  rename, fsync). This is CKE's split between ``prepare-*`` (fill the
  FilesBuilder) and ``make-files`` (write it). A staged file whose path also
  appears in ``files`` is written with the content of ``files``.

Commands that start a helper container (``make-dirs``, ``make-files``,
``empty-dir``, ``install-cni``) carry the tools ``image`` because the images
are an input of the decision (``render.images.Images``), not a constant.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import attrs

from cke_core.cluster import ServiceParams, Taint
from cke_core.fields import tuple_field
from cke_core.ops.base import Command
from cke_core.render.files import File, KubeconfigRequest, PKIRequests

#: ``make-dirs`` modes CKE uses.
DirMode = Literal["755", "700"]


@attrs.frozen
class NodeCommand(Command):
    """A command on the node at ``node`` (an address)."""

    node: str = ""

    @property
    def target(self) -> str:
        return self.node


# ---------------------------------------------------------------------------
# Images and containers
# ---------------------------------------------------------------------------


@attrs.frozen
class ImagePull(NodeCommand):
    """Pull ``image`` unless ``docker image list`` shows it (3 tries, 10 s apart)."""

    NAME: ClassVar[str] = "image-pull"
    image: str = ""


@attrs.frozen
class RunContainer(NodeCommand):
    """Run system container ``container`` from ``image``.

    (The field is not called ``name``: that is the command's name.)

    The shell: when ``restart``, kills the container first; removes an
    existing container of that name; records the label
    ``com.cybozu.cke={"builtin": params, "extra": extra}`` (what observation
    reads back to find outdated containers); runs it detached with the base
    options of every system container (journald, read-only, host network and
    UTS), then ``options``, the binds and environment of ``params`` and
    ``extra``, the image, ``params.extra_args`` and ``extra.extra_args``.
    """

    NAME: ClassVar[str] = "run-container"
    container: str = ""
    image: str = ""
    options: tuple[str, ...] = tuple_field()
    params: ServiceParams = ServiceParams()
    extra: ServiceParams = ServiceParams()
    restart: bool = False


@attrs.frozen
class StopContainer(NodeCommand):
    """Stop ``container`` if it is running, then remove it if it exists."""

    NAME: ClassVar[str] = "stop-container"
    container: str = ""


@attrs.frozen
class KillContainers(Command):
    """On each of ``nodes``: kill ``container`` if running, then remove it if it exists."""

    NAME: ClassVar[str] = "kill-containers"
    nodes: tuple[str, ...] = tuple_field()
    container: str = ""

    @property
    def target(self) -> str:
        return ",".join(self.nodes)


# ---------------------------------------------------------------------------
# Volumes
# ---------------------------------------------------------------------------


@attrs.frozen
class VolumeCreate(NodeCommand):
    """``docker volume create``; creating an existing volume is not an error."""

    NAME: ClassVar[str] = "volume-create"
    volume: str = ""


@attrs.frozen
class VolumeRemove(NodeCommand):
    """Remove ``volume`` only if ``docker volume list`` shows it (§L.8)."""

    NAME: ClassVar[str] = "volume-remove"
    volume: str = ""


# ---------------------------------------------------------------------------
# Directories and files (helper containers of the tools image)
# ---------------------------------------------------------------------------


@attrs.frozen
class MakeDirs(NodeCommand):
    """``make_directories --mode=<mode>`` for each of ``dirs`` (parents bound under /mnt)."""

    NAME: ClassVar[str] = "make-dirs"
    image: str = ""
    dirs: tuple[str, ...] = tuple_field()
    mode: DirMode = "755"


@attrs.frozen
class MakeFiles(NodeCommand):
    """Write the files staged for this node by the operation's ``prepare-*`` command,
    and ``files``, atomically, with ``write_files``."""

    NAME: ClassVar[str] = "make-files"
    image: str = ""
    files: tuple[File, ...] = tuple_field()


@attrs.frozen
class EmptyDir(NodeCommand):
    """Remove everything inside ``directory`` (the CNI configuration directory before a
    bootstrap writes ``cni_conf_file``, so no stale configuration wins)."""

    NAME: ClassVar[str] = "empty-dir"
    image: str = ""
    directory: str = ""


@attrs.frozen
class InstallCNI(NodeCommand):
    """Copy the tools image's CNI plugins (``/cni_plugins/bin/*``) to ``/opt/cni/bin``."""

    NAME: ClassVar[str] = "install-cni"
    image: str = ""


# ---------------------------------------------------------------------------
# PKI-backed requests (fulfilled and staged by the shell, written by make-files)
# ---------------------------------------------------------------------------


@attrs.frozen
class PrepareFiles(NodeCommand):
    """Base of the ``prepare-*`` requests: issue and stage what ``node`` needs.

    ``pki``: certificates to issue, CA certificates and service-account files
    to copy; ``kubeconfigs``: kubeconfigs to render with
    ``render.files.render_kubeconfig``; ``encryption_config``: when not empty,
    the path where the shell writes ``render.files.render_encryption_config``
    of the cluster's encryption keys.
    """

    pki: PKIRequests = PKIRequests()
    kubeconfigs: tuple[KubeconfigRequest, ...] = tuple_field()
    encryption_config: str = ""


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
    """Poll ``http://<node>:10248/healthz`` until it answers ``ok`` (10 tries, 5 s apart)."""

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
    decision found healthy (empty: the shell picks one).
    """

    NAME: ClassVar[str] = "retaint-before-kubelet-boot"
    nodes: tuple[str, ...] = tuple_field()
    taints: tuple[Taint, ...] = tuple_field()
    api_server: str = ""

    @property
    def target(self) -> str:
        return ",".join(self.nodes)
