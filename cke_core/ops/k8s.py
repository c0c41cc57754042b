"""Kubernetes components on nodes (§C.2): apiserver, controller manager, scheduler,
kubelet and kube-proxy, all from the kubernetes image.

Each operation runs CKE's steps in CKE's order; a step is one command for all
the operation's nodes, as in CKE (the shell runs its per-node parts
concurrently), and a step finishes on every node before the next one starts
(so every node has its files before any container is restarted). An
operation therefore issues the same number of commands whatever its number of
nodes (at most nine, for a kubelet bootstrap). Certificates, kubeconfigs and the encryption
configuration are ``prepare-*`` requests; ``make-files`` writes them with the
non-secret files the core renders (``commands.node``).

``nodes`` is already capped by the decision (``--max-concurrent-updates`` for
the kubelet and proxy). Targets are the nodes' addresses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import ClassVar

import attrs

from cke_core.cluster import Cluster, ConfigDocument, Node, ServiceParams
from cke_core.commands.node import (
    EmptyDir,
    ImagePull,
    InstallCNI,
    MakeDirs,
    MakeFiles,
    PrepareAPIServerFiles,
    PrepareControllerManagerFiles,
    PrepareKubeletConfig,
    PrepareKubeletFiles,
    PrepareProxyFiles,
    PrepareSchedulerFiles,
    RetaintBeforeKubeletBoot,
    RunContainer,
    StopContainer,
    WaitForKubeletReady,
)
from cke_core.fields import mapping_field, tuple_field
from cke_core.frozen import FrozenDict
from cke_core.ops.base import Command, CommandResult, Operation, nth
from cke_core.render import components, files
from cke_core.render.images import Images


@attrs.frozen
class _ComponentOp(Operation):
    """A fixed plan over ``nodes``; subclasses define ``_plan``."""

    CONTAINER: ClassVar[str] = ""

    cluster: Cluster
    images: Images
    nodes: tuple[Node, ...] = tuple_field()

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(n.address for n in self.nodes)

    @property
    def _plan(self) -> tuple[Command, ...]:
        raise NotImplementedError

    def next_command(self, results: Sequence[CommandResult]) -> Command | None:
        return nth(self._plan, results)

    def _pull(self) -> ImagePull:
        return ImagePull(self.targets, self.images.kubernetes)

    def _write(self, files_of: Callable[[Node], Sequence[files.File]] | None = None) -> MakeFiles:
        """``make-files``: the staged files, and ``files_of(node)`` on each node (a node
        without files of its own is left out of ``files``)."""
        by_node = {n.address: tuple(files_of(n)) for n in self.nodes} if files_of else {}
        return MakeFiles(self.targets, self.images.tools, {a: f for a, f in by_node.items() if f})

    def _run(
        self, params_of: Callable[[Cluster, Node], ServiceParams], *, restart: bool
    ) -> RunContainer:
        return RunContainer(
            self.targets,
            self.CONTAINER,
            self.images.kubernetes,
            components.container_options(self.CONTAINER, self.cluster),
            {n.address: params_of(self.cluster, n) for n in self.nodes},
            components.extra_params(self.cluster, self.CONTAINER),
            restart,
        )

    def _same_kubeconfigs(
        self, *kubeconfigs: files.KubeconfigRequest
    ) -> dict[str, tuple[files.KubeconfigRequest, ...]]:
        """The same kubeconfig requests for every node."""
        return dict.fromkeys(self.targets, kubeconfigs)


# ---------------------------------------------------------------------------
# Control plane
# ---------------------------------------------------------------------------


@attrs.frozen
class KubeAPIServerRestartOp(_ComponentOp):
    """Start or restart kube-apiserver (CKE boots the apiserver with this operation too).

    The directory of the encryption configuration is made 700 before the
    files are written; the old container is stopped gracefully, not killed.
    """

    NAME: ClassVar[str] = "kube-apiserver-restart"
    CONTAINER: ClassVar[str] = components.KUBE_APISERVER

    @functools.cached_property
    def _plan(self) -> tuple[Command, ...]:
        audit = files.audit_policy_file(self.cluster)
        audit_files = (audit,) if audit is not None else ()
        targets = self.targets
        return (
            self._pull(),
            MakeDirs(targets, self.images.tools, (files.APISERVER_DIR,), "700"),
            PrepareAPIServerFiles(
                targets,
                {
                    n.address: files.api_server_certificate_requests(self.cluster, n)
                    for n in self.nodes
                },
                encryption_config=files.ENCRYPTION_CONFIG_PATH,
            ),
            self._write(lambda n: audit_files),
            StopContainer(targets, self.CONTAINER),
            self._run(components.api_server_params, restart=False),
        )


@attrs.frozen
class KubeControllerManagerBootstrapOp(_ComponentOp):
    NAME: ClassVar[str] = "kube-controller-manager-bootstrap"
    CONTAINER: ClassVar[str] = components.KUBE_CONTROLLER_MANAGER

    @functools.cached_property
    def _plan(self) -> tuple[Command, ...]:
        kubeconfig = files.controller_manager_kubeconfig(self.cluster)
        return (
            self._pull(),
            PrepareControllerManagerFiles(
                self.targets,
                {
                    n.address: files.controller_manager_pki_requests(self.cluster, n)
                    for n in self.nodes
                },
                self._same_kubeconfigs(kubeconfig),
            ),
            self._write(),
            self._run(components.controller_manager_params, restart=False),
        )


@attrs.frozen
class KubeControllerManagerRestartOp(_ComponentOp):
    """Only the container changes: its kubeconfig and key were written at bootstrap."""

    NAME: ClassVar[str] = "kube-controller-manager-restart"
    CONTAINER: ClassVar[str] = components.KUBE_CONTROLLER_MANAGER

    @functools.cached_property
    def _plan(self) -> tuple[Command, ...]:
        return (
            self._pull(),
            self._run(components.controller_manager_params, restart=True),
        )


@attrs.frozen
class _SchedulerOp(_ComponentOp):
    RESTART: ClassVar[bool] = False
    CONTAINER: ClassVar[str] = components.KUBE_SCHEDULER

    @functools.cached_property
    def _plan(self) -> tuple[Command, ...]:
        kubeconfig = files.scheduler_kubeconfig(self.cluster)
        config = files.scheduler_files(self.cluster)
        return (
            self._pull(),
            PrepareSchedulerFiles(self.targets, kubeconfigs=self._same_kubeconfigs(kubeconfig)),
            self._write(lambda n: config),
            self._run(components.scheduler_params, restart=self.RESTART),
        )


@attrs.frozen
class KubeSchedulerBootstrapOp(_SchedulerOp):
    NAME: ClassVar[str] = "kube-scheduler-bootstrap"


@attrs.frozen
class KubeSchedulerRestartOp(_SchedulerOp):
    """Rewrites the kubeconfig and configuration, then kills and runs the scheduler."""

    NAME: ClassVar[str] = "kube-scheduler-restart"
    RESTART: ClassVar[bool] = True


# ---------------------------------------------------------------------------
# Node components
# ---------------------------------------------------------------------------


@attrs.frozen
class _KubeletOp(_ComponentOp):
    """``running_configs``: the kubelet configuration read from each node (by address);
    the fields that need a node reboot to change are kept from it."""

    CONTAINER: ClassVar[str] = components.KUBELET

    running_configs: FrozenDict[str, ConfigDocument] = mapping_field()

    def _config_file(self, node: Node) -> files.File:
        return files.kubelet_config_file(self.cluster, node, self.running_configs.get(node.address))

    def _wait(self) -> WaitForKubeletReady:
        return WaitForKubeletReady(self.targets)

    def _kubeconfigs(self) -> dict[str, tuple[files.KubeconfigRequest, ...]]:
        """Each node's kubelet kubeconfig."""
        return {n.address: (files.kubelet_kubeconfig(self.cluster, n),) for n in self.nodes}


@attrs.frozen
class KubeletBootstrapOp(_KubeletOp):
    """Boot kubelets: directories, files, CNI plugins, boot taints, container, readiness.

    With ``cni_conf_file`` set, ``/etc/cni/net.d`` is emptied first and the
    file written, so it is the only CNI configuration. ``registered``: the
    addresses of those ``nodes`` whose Node object already exists; they get
    their ``boot_taints`` back (by Kubernetes node name, through the
    apiserver at ``apiserver``) before the kubelet starts, because
    ``registerWithTaints`` applies only at first registration.
    """

    NAME: ClassVar[str] = "kubelet-bootstrap"

    registered: tuple[str, ...] = tuple_field()
    apiserver: str = ""

    @functools.cached_property
    def _plan(self) -> tuple[Command, ...]:
        tools, targets = self.images.tools, self.targets
        cni = files.cni_conf_file(self.cluster)
        boot_taints = self.cluster.options.kubelet.boot_taints
        registered_addresses = frozenset(self.registered)
        registered = tuple(n.nodename for n in self.nodes if n.address in registered_addresses)

        def node_files(node: Node) -> tuple[files.File, ...]:
            return (cni, self._config_file(node)) if cni else (self._config_file(node),)

        return (
            self._pull(),
            *((EmptyDir(targets, tools, files.CNI_CONF_DIR),) if cni else ()),
            MakeDirs(targets, tools, files.KUBELET_BOOT_DIRS),
            PrepareKubeletFiles(
                targets,
                {
                    n.address: files.kubelet_certificate_requests(self.cluster, n)
                    for n in self.nodes
                },
                self._kubeconfigs(),
            ),
            self._write(node_files),
            InstallCNI(targets, tools),
            *(
                (RetaintBeforeKubeletBoot(registered, boot_taints, self.apiserver),)
                if registered and boot_taints
                else ()
            ),
            self._run(components.kubelet_params, restart=False),
            self._wait(),
        )


@attrs.frozen
class KubeletRestartOp(_KubeletOp):
    """Restart kubelets in place (``in_place_update``): new configuration, certificate
    and kubeconfig, then kill, run and wait for readiness. The CA is not rewritten."""

    NAME: ClassVar[str] = "kubelet-restart"

    @functools.cached_property
    def _plan(self) -> tuple[Command, ...]:
        return (
            self._pull(),
            PrepareKubeletConfig(
                self.targets,
                {
                    n.address: attrs.evolve(
                        files.kubelet_certificate_requests(self.cluster, n), ca_copies=()
                    )
                    for n in self.nodes
                },
                self._kubeconfigs(),
            ),
            self._write(lambda n: (self._config_file(n),)),
            self._run(components.kubelet_params, restart=True),
            self._wait(),
        )


@attrs.frozen
class _ProxyOp(_ComponentOp):
    RESTART: ClassVar[bool] = False
    CONTAINER: ClassVar[str] = components.KUBE_PROXY

    @functools.cached_property
    def _plan(self) -> tuple[Command, ...]:
        kubeconfig = files.proxy_kubeconfig(self.cluster)
        return (
            self._pull(),
            PrepareProxyFiles(self.targets, kubeconfigs=self._same_kubeconfigs(kubeconfig)),
            self._write(lambda n: files.proxy_files(self.cluster, n)),
            self._run(components.proxy_params, restart=self.RESTART),
        )


@attrs.frozen
class KubeProxyBootstrapOp(_ProxyOp):
    NAME: ClassVar[str] = "kube-proxy-bootstrap"


@attrs.frozen
class KubeProxyRestartOp(_ProxyOp):
    NAME: ClassVar[str] = "kube-proxy-restart"
    RESTART: ClassVar[bool] = True
