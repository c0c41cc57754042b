"""Container images and engine-wide settings that decisions take as inputs.

CKE pins its images per release (§A.8) and compares the running container's
image with the pinned one to find outdated components. The pins are values
here, not globals, so a lab (or a test) can run other images and every
decision still says which image it expected.
"""

from __future__ import annotations

from typing import Final

import attrs

DEFAULT_ETCD_IMAGE: Final = "ghcr.io/cybozu/etcd:3.6.11.1"
DEFAULT_KUBERNETES_IMAGE: Final = "ghcr.io/cybozu/kubernetes:1.35.5.1"
DEFAULT_TOOLS_IMAGE: Final = "ghcr.io/cybozu-go/cke-tools:1.35.0"
DEFAULT_PAUSE_IMAGE: Final = "ghcr.io/cybozu/pause:3.10.1.5"
DEFAULT_COREDNS_IMAGE: Final = "ghcr.io/cybozu/coredns:1.14.2.1"
DEFAULT_UNBOUND_IMAGE: Final = "ghcr.io/cybozu/unbound:1.25.1.1"
DEFAULT_UNBOUND_EXPORTER_IMAGE: Final = "ghcr.io/cybozu/unbound_exporter:0.5.0.4"

DEFAULT_MAX_CONCURRENT_UPDATES: Final = 10


@attrs.frozen
class Images:
    """The image of every component CKE runs; defaults are CKE 1.35's pins.

    ``etcd``: the etcd container; ``kubernetes``: apiserver, controller
    manager, scheduler, kubelet and proxy; ``tools``: rivers, etcd-rivers and
    the helper containers (make-dirs, make-files, install-cni ...); the rest
    are referenced by static resources (pause by the kubelet config, CoreDNS,
    unbound and its exporter by the DNS manifests).
    """

    etcd: str = DEFAULT_ETCD_IMAGE
    kubernetes: str = DEFAULT_KUBERNETES_IMAGE
    tools: str = DEFAULT_TOOLS_IMAGE
    pause: str = DEFAULT_PAUSE_IMAGE
    coredns: str = DEFAULT_COREDNS_IMAGE
    unbound: str = DEFAULT_UNBOUND_IMAGE
    unbound_exporter: str = DEFAULT_UNBOUND_EXPORTER_IMAGE

    def all(self) -> tuple[str, ...]:
        """Every image, in field order (what ``ckecli images`` lists)."""
        return tuple(getattr(self, a.name) for a in attrs.fields(Images))


@attrs.frozen
class EngineSettings:
    """Engine settings that shape decisions but are not part of cluster.yml.

    ``max_concurrent_updates`` is ``cke --max-concurrent-updates``: the most
    nodes one rivers, kubelet or proxy operation may touch (must be > 0).
    """

    max_concurrent_updates: int = DEFAULT_MAX_CONCURRENT_UPDATES
    images: Images = Images()
