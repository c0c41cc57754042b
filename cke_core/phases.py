"""CKE's operation phases: the ``phase`` of ``status`` and the phase metric's label."""

from __future__ import annotations

import enum


class Phase(enum.StrEnum):
    UPGRADE_ABORTED = "upgrade-aborted"
    UPGRADE = "upgrade"
    RIVERS = "rivers"
    ETCD_BOOT_ABORTED = "etcd-boot-aborted"
    ETCD_BOOT = "etcd-boot"
    ETCD_START = "etcd-start"
    ETCD_WAIT = "etcd-wait"
    K8S_START = "k8s-start"
    ETCD_MAINTAIN = "etcd-maintain"
    K8S_MAINTAIN = "k8s-maintain"
    STOP_CP = "stop-control-plane"
    UNCORDON_NODES = "uncordon-nodes"
    REPAIR_MACHINES = "repair-machines"
    REBOOT_NODES = "reboot-nodes"
    COMPLETED = "completed"
