"""What CKE runs and writes on nodes: built-in parameters, documents, files, PKI requests.

The fixture is CKE's ``server/strategy_test.go`` cluster: CPs 10.0.0.11-13,
workers 10.0.0.14-16, service subnet 12.34.56.0/24, scheduler config
``parallelism: 999``. Expected argument lists are transcribed from CKE's code,
in its order, because CKE compares them in order.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import attrs
import pytest
import yaml

from cke_core.cluster import (
    APIServerParams,
    Cluster,
    CNIConfFile,
    EtcdParams,
    KubeletParams,
    Mount,
    Node,
    Options,
    ProxyParams,
    SchedulerParams,
    ServiceParams,
    Taint,
)
from cke_core.frozen import FrozenDict, freeze, thaw
from cke_core.render import components as rc
from cke_core.render import files as rf
from cke_core.render.images import EngineSettings, Images
from cke_core.status import EtcdStatus, ServiceStatus

PKI = "/etc/kubernetes/pki"
ETCD_PKI = "/etc/etcd/pki"


def make_cluster(**options: Any) -> Cluster:
    nodes = [Node(address=f"10.0.0.{i}", user="cybozu", control_plane=True) for i in (11, 12, 13)]
    nodes += [Node(address=f"10.0.0.{i}", user="cybozu") for i in (14, 15, 16)]
    scheduler = SchedulerParams(
        config=freeze(
            {
                "apiVersion": "kubescheduler.config.k8s.io/v1",
                "kind": "KubeSchedulerConfiguration",
                "parallelism": 999,
            }
        )
    )
    opts: dict[str, Any] = {"kube_scheduler": scheduler}
    opts.update(options)
    return Cluster(
        name="test",
        nodes=tuple(nodes),
        service_subnet="12.34.56.0/24",
        dns_servers=("8.8.8.8",),
        options=Options(**opts),
    )


CLUSTER = make_cluster()
CP = CLUSTER.nodes[0]
WORKER = CLUSTER.nodes[3]


def kubelet_options(**kwargs: Any) -> KubeletParams:
    config = kwargs.pop("config", None)
    if config is not None:
        config = freeze(
            {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration"} | config
        )
    return KubeletParams(config=config, **kwargs)


# ---------------------------------------------------------------------------
# Images and settings
# ---------------------------------------------------------------------------


def test_images_default_to_the_release_pins_and_can_be_overridden() -> None:
    images = Images()
    assert images.etcd == "ghcr.io/cybozu/etcd:3.6.11.1"
    assert images.kubernetes == "ghcr.io/cybozu/kubernetes:1.35.5.1"
    assert images.tools == "ghcr.io/cybozu-go/cke-tools:1.35.0"
    assert images.pause == "ghcr.io/cybozu/pause:3.10.1.5"
    assert images.coredns == "ghcr.io/cybozu/coredns:1.14.2.1"
    assert images.unbound == "ghcr.io/cybozu/unbound:1.25.1.1"
    assert images.unbound_exporter == "ghcr.io/cybozu/unbound_exporter:0.5.0.4"
    assert len(images.all()) == 7
    lab = attrs.evolve(images, kubernetes="localhost/kubernetes:dev")
    assert lab.kubernetes == "localhost/kubernetes:dev"
    assert EngineSettings() == EngineSettings(10, Images())


# ---------------------------------------------------------------------------
# Built-in parameters
# ---------------------------------------------------------------------------


def test_rivers_upstreams_are_all_control_planes_in_cluster_order() -> None:
    ups = "10.0.0.11:6443,10.0.0.12:6443,10.0.0.13:6443"
    assert rc.rivers_params(CLUSTER) == ServiceParams(
        extra_args=("rivers", f"--upstreams={ups}", "--listen=127.0.0.1:16443")
    )
    ups = "10.0.0.11:2379,10.0.0.12:2379,10.0.0.13:2379"
    assert rc.etcd_rivers_params(CLUSTER).extra_args == (
        "rivers",
        f"--upstreams={ups}",
        "--listen=127.0.0.1:12379",
    )


ETCD_ARGS = (
    "--name=10.0.0.11",
    "--listen-peer-urls=https://0.0.0.0:2380",
    "--listen-client-urls=https://0.0.0.0:2379",
    "--advertise-client-urls=https://10.0.0.11:2379",
    f"--cert-file={ETCD_PKI}/server.crt",
    f"--key-file={ETCD_PKI}/server.key",
    "--client-cert-auth=true",
    f"--trusted-ca-file={ETCD_PKI}/ca-client.crt",
    f"--peer-cert-file={ETCD_PKI}/peer.crt",
    f"--peer-key-file={ETCD_PKI}/peer.key",
    "--peer-client-cert-auth=true",
    f"--peer-trusted-ca-file={ETCD_PKI}/ca-peer.crt",
    "--enable-pprof=true",
    "--feature-gates=InitialCorruptCheck=true,CompactHashCheck=true",
    "--corrupt-check-time=3h",
)


def test_etcd_params_without_initial_flags() -> None:
    params = rc.etcd_params(CLUSTER, CP)
    assert params.extra_args == ETCD_ARGS
    assert params.extra_binds == (Mount(ETCD_PKI, ETCD_PKI, True, "", "Z"),)
    assert not params.extra_env


def test_etcd_initial_flags_only_when_requested() -> None:
    cps = CLUSTER.control_planes
    boot = rc.etcd_params(CLUSTER, CP, initial_cluster=cps, state="new")
    members = ",".join(f"10.0.0.{i}=https://10.0.0.{i}:2380" for i in (11, 12, 13))
    assert boot.extra_args == (
        *ETCD_ARGS,
        "--initial-advertise-peer-urls=https://10.0.0.11:2380",
        f"--initial-cluster={members}",
        "--initial-cluster-token=cke",
        "--initial-cluster-state=new",
    )
    # add-etcd-member passes ready "name=url" entries and state existing
    added = rc.etcd_params(
        CLUSTER, CP, initial_cluster=["10.0.0.12=https://10.0.0.12:2380"], state="existing"
    )
    assert "--initial-cluster=10.0.0.12=https://10.0.0.12:2380" in added.extra_args
    assert added.extra_args[-1] == "--initial-cluster-state=existing"
    # an empty member list means no --initial-* flags, like CKE's len() check
    assert rc.etcd_params(CLUSTER, CP, initial_cluster=[]).extra_args == ETCD_ARGS


def test_etcd_data_volume_is_a_container_option() -> None:
    assert rc.container_options(rc.ETCD, CLUSTER) == (
        "--mount",
        "type=volume,src=etcd-cke,dst=/var/lib/etcd",
    )
    custom = make_cluster(etcd=EtcdParams(volume_name="my-etcd"))
    assert rc.container_options(rc.ETCD, custom)[1] == "type=volume,src=my-etcd,dst=/var/lib/etcd"
    assert all("etcd-cke" not in m.source for m in rc.etcd_params(custom, CP).extra_binds)


APISERVER_ARGS = (
    "kube-apiserver",
    "--allow-privileged",
    "--etcd-servers=https://127.0.0.1:12379",
    f"--etcd-cafile={PKI}/etcd-ca.crt",
    f"--etcd-certfile={PKI}/apiserver-etcd-client.crt",
    f"--etcd-keyfile={PKI}/apiserver-etcd-client.key",
    "--etcd-compaction-interval=5m",
    "--bind-address=0.0.0.0",
    f"--client-ca-file={PKI}/ca.crt",
    f"--tls-cert-file={PKI}/apiserver.crt",
    f"--tls-private-key-file={PKI}/apiserver.key",
    f"--kubelet-certificate-authority={PKI}/ca.crt",
    f"--kubelet-client-certificate={PKI}/apiserver.crt",
    f"--kubelet-client-key={PKI}/apiserver.key",
    "--enable-admission-plugins=NodeRestriction,DenyServiceExternalIPs",
    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
    f"--service-account-key-file={PKI}/service-account.crt",
    f"--service-account-signing-key-file={PKI}/service-account.key",
    "--service-account-lookup",
    f"--requestheader-client-ca-file={PKI}/aggregation-ca.crt",
    "--requestheader-allowed-names=front-proxy-client",
    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
    "--requestheader-group-headers=X-Remote-Group",
    "--requestheader-username-headers=X-Remote-User",
    f"--proxy-client-cert-file={PKI}/aggregation.crt",
    f"--proxy-client-key-file={PKI}/aggregation.key",
    "--authorization-mode=Node,RBAC",
    "--advertise-address=10.0.0.11",
    "--endpoint-reconciler-type=none",
    "--service-cluster-ip-range=12.34.56.0/24",
    "--encryption-provider-config=/etc/kubernetes/apiserver/encryption.yml",
    "--feature-gates=CoordinatedLeaderElection=true",
    "--runtime-config=coordination.k8s.io/v1beta1=true",
)

CONTROL_PLANE_BINDS = (
    Mount("/etc/machine-id", "/etc/machine-id", True),
    Mount("/etc/kubernetes", "/etc/kubernetes", True, "", "z"),
)


def test_api_server_params_for_one_control_plane() -> None:
    params = rc.api_server_params(CLUSTER, CP)
    assert params.extra_args == APISERVER_ARGS
    assert params.extra_binds == CONTROL_PLANE_BINDS
    assert rc.container_options(rc.KUBE_APISERVER) == ("--mount", "type=tmpfs,dst=/run/kubernetes")


def test_service_account_issuer_follows_the_cluster_domain() -> None:
    cluster = make_cluster(kubelet=kubelet_options(config={"clusterDomain": "example.org"}))
    assert rc.cluster_domain(cluster) == "example.org"
    assert rc.cluster_domain(CLUSTER) == "cluster.local"
    args = rc.api_server_params(cluster, CP).extra_args
    assert "--service-account-issuer=https://kubernetes.default.svc.example.org" in args


def test_audit_args_only_when_enabled_and_named_after_the_policy() -> None:
    assert not any(a.startswith("--audit") for a in rc.api_server_params(CLUSTER, CP).extra_args)

    policy = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"
    enabled = make_cluster(
        kube_api=APIServerParams(audit_log_enabled=True, audit_log_policy=policy)
    )
    digest = hashlib.md5(policy.encode()).hexdigest()
    args = rc.api_server_params(enabled, CP).extra_args
    assert args[: len(APISERVER_ARGS)] == APISERVER_ARGS
    assert args[len(APISERVER_ARGS) :] == (
        "--audit-log-path=-",
        f"--audit-policy-file=/etc/kubernetes/apiserver/audit-policy-{digest}.yaml",
    )

    other = make_cluster(
        kube_api=APIServerParams(
            audit_log_enabled=True,
            audit_log_policy=policy + "- level: None\n",
            audit_log_path="/var/log/audit.log",
        )
    )
    other_args = rc.api_server_params(other, CP).extra_args
    assert other_args[-2] == "--audit-log-path=/var/log/audit.log"
    assert other_args[-1] != args[-1]
    # the file name change alone makes a running apiserver outdated
    running = ServiceStatus(True, "img", rc.api_server_params(enabled, CP), ServiceParams())
    assert rc.service_outdated(running, "img", rc.api_server_params(other, CP), ServiceParams())


def test_controller_manager_params() -> None:
    kubeconfig = "/etc/kubernetes/controller-manager/kubeconfig"
    params = rc.controller_manager_params(CLUSTER, CP)
    assert params.extra_args == (
        "kube-controller-manager",
        "--cluster-name=test",
        "--service-cluster-ip-range=12.34.56.0/24",
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--tls-cert-file={PKI}/apiserver.crt",
        f"--tls-private-key-file={PKI}/apiserver.key",
        f"--root-ca-file={PKI}/ca.crt",
        f"--service-account-private-key-file={PKI}/service-account.key",
        "--use-service-account-credentials=true",
    )
    assert params.extra_binds == CONTROL_PLANE_BINDS
    assert rc.container_options(rc.KUBE_CONTROLLER_MANAGER) == ()


def test_scheduler_params() -> None:
    kubeconfig = "/etc/kubernetes/scheduler/kubeconfig"
    params = rc.scheduler_params(CLUSTER, CP)
    assert params.extra_args == (
        "kube-scheduler",
        "--config=/etc/kubernetes/scheduler/config.yml",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--tls-cert-file={PKI}/apiserver.crt",
        f"--tls-private-key-file={PKI}/apiserver.key",
    )
    assert params.extra_binds == CONTROL_PLANE_BINDS


def test_kubelet_params() -> None:
    node = Node(address="10.0.0.14", hostname="worker-1", user="cybozu")
    params = rc.kubelet_params(CLUSTER, node)
    assert params.extra_args == (
        "kubelet",
        "--config=/etc/kubernetes/kubelet/config.yml",
        "--kubeconfig=/etc/kubernetes/kubelet/kubeconfig",
        "--hostname-override=worker-1",
        "--container-runtime-endpoint=/run/containerd/containerd.sock",
    )
    assert params.extra_binds == (
        Mount("/etc/machine-id", "/etc/machine-id", True),
        Mount("/etc/os-release", "/etc/os-release", True),
        Mount("/etc/kubernetes", "/etc/kubernetes", True, "", "z"),
        Mount("/var/lib/kubelet", "/var/lib/kubelet", False, "rshared", "z"),
        Mount("/var/lib/docker", "/var/lib/docker", False, "", "Z"),
        Mount("/opt/volume/bin", "/opt/volume/bin", False, "shared", "z"),
        Mount("/var/log/pods", "/var/log/pods", False, "", "z"),
        Mount("/var/log/containers", "/var/log/containers", False, "", "z"),
        Mount("/run", "/run", False),
        Mount("/sys", "/sys", False),
        Mount("/dev", "/dev", False),
        Mount("/opt/cni/bin", "/opt/cni/bin", True, "", "z"),
        Mount("/etc/cni/net.d", "/etc/cni/net.d", True, "", "z"),
        Mount("/var/lib/cni", "/var/lib/cni", False, "", "z"),
    )
    assert rc.container_options(rc.KUBELET) == ("--pid=host", "--privileged", "--tmpfs=/tmp")
    # without a hostname, the address is the node name
    assert "--hostname-override=10.0.0.14" in rc.kubelet_params(CLUSTER, WORKER).extra_args


def test_kubelet_runtime_change_is_detected() -> None:
    current = rc.kubelet_params(CLUSTER, WORKER)
    other = make_cluster(kubelet=KubeletParams(cri_endpoint="/run/crio/crio.sock"))
    assert not rc.kubelet_runtime_changed(current, current)
    assert rc.kubelet_runtime_changed(current, rc.kubelet_params(other, WORKER))


def test_proxy_params() -> None:
    params = rc.proxy_params(CLUSTER, WORKER)
    assert params.extra_args == ("kube-proxy", "--config=/etc/kubernetes/proxy/config.yml")
    assert params.extra_binds == (
        *CONTROL_PLANE_BINDS,
        Mount("/lib/modules", "/lib/modules", True),
    )
    assert rc.container_options(rc.KUBE_PROXY) == ("--tmpfs=/run", "--privileged")


def test_container_names_and_unknown_container() -> None:
    assert rc.CONTAINERS == (
        "rivers",
        "etcd-rivers",
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
    )
    assert rc.container_options(rc.RIVERS) == ()
    with pytest.raises(ValueError, match="unknown"):
        rc.container_options("nginx")
    with pytest.raises(ValueError, match="unknown"):
        rc.extra_params(CLUSTER, "nginx")


def test_extra_params_are_the_options_base_fields_only() -> None:
    etcd = EtcdParams(
        extra_args=("--quota-backend-bytes=8589934592",),
        extra_binds=(Mount("/mnt/a", "/mnt/a", True),),
        extra_env=FrozenDict({"GOMAXPROCS": "4"}),
        volume_name="my-etcd",
    )
    cluster = make_cluster(etcd=etcd, kube_proxy=ProxyParams(extra_args=("--v=2",), disable=True))
    extra = rc.extra_params(cluster, rc.ETCD)
    assert type(extra) is ServiceParams
    assert extra == ServiceParams(etcd.extra_args, etcd.extra_binds, etcd.extra_env)
    assert rc.extra_params(cluster, rc.KUBE_PROXY) == ServiceParams(extra_args=("--v=2",))
    assert rc.extra_params(cluster, rc.KUBE_SCHEDULER) == ServiceParams()
    # extra args are never folded into the built-in parameters
    assert "--quota-backend-bytes=8589934592" not in rc.etcd_params(cluster, CP).extra_args
    assert "--v=2" not in rc.proxy_params(cluster, WORKER).extra_args


# ---------------------------------------------------------------------------
# Equality and outdated
# ---------------------------------------------------------------------------


def test_params_equal_ignores_bind_propagation_and_label_only() -> None:
    a = ServiceParams(("x", "--a=1", "--b=2"), (Mount("/s", "/d", True, "rshared", "z"),))
    assert rc.params_equal(a, attrs.evolve(a, extra_binds=(Mount("/s", "/d", True),)))
    assert not rc.params_equal(a, attrs.evolve(a, extra_args=("x", "--b=2", "--a=1")))
    assert not rc.params_equal(a, attrs.evolve(a, extra_binds=(Mount("/s", "/d", False),)))
    assert not rc.params_equal(a, attrs.evolve(a, extra_binds=()))
    two = (Mount("/s", "/d", True), Mount("/t", "/t", False))
    assert not rc.params_equal(
        attrs.evolve(a, extra_binds=two), attrs.evolve(a, extra_binds=two[::-1])
    )
    assert not rc.params_equal(a, attrs.evolve(a, extra_env=FrozenDict({"A": "1"})))


def test_etcd_equality_ignores_initial_flags() -> None:
    booted = rc.etcd_params(CLUSTER, CP, initial_cluster=CLUSTER.control_planes, state="new")
    current = rc.etcd_params(CLUSTER, CP)
    assert not rc.params_equal(booted, current)
    assert rc.etcd_params_equal(booted, current)
    status = EtcdStatus(running=True, image=Images().etcd, builtin_params=booted)
    assert not rc.etcd_service_outdated(status, Images().etcd, current, ServiceParams())
    assert rc.etcd_service_outdated(status, "etcd:other", current, ServiceParams())
    moved = rc.etcd_params(CLUSTER, CLUSTER.nodes[1])
    assert rc.etcd_service_outdated(status, Images().etcd, moved, ServiceParams())


def test_service_outdated_needs_a_running_container_and_a_difference() -> None:
    image = Images().tools
    builtin = rc.rivers_params(CLUSTER)
    extra = ServiceParams(extra_args=("--dial-timeout=5s",))
    running = ServiceStatus(running=True, image=image, builtin_params=builtin, extra_params=extra)
    assert not rc.service_outdated(running, image, builtin, extra)
    assert rc.service_outdated(running, "tools:new", builtin, extra)
    assert rc.service_outdated(running, image, rc.etcd_rivers_params(CLUSTER), extra)
    assert rc.service_outdated(running, image, builtin, ServiceParams())
    stopped = attrs.evolve(running, running=False)
    assert not rc.service_outdated(stopped, "tools:new", builtin, ServiceParams())


# ---------------------------------------------------------------------------
# Configuration documents
# ---------------------------------------------------------------------------


def test_scheduler_config_forces_kubeconfig_and_leader_election() -> None:
    assert rc.scheduler_config(CLUSTER) == {
        "parallelism": 999,
        "clientConnection": {"kubeconfig": "/etc/kubernetes/scheduler/kubeconfig"},
        "leaderElection": {"leaderElect": True},
    }
    user = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": "/tmp/mine", "qps": 100},
        "leaderElection": {"leaderElect": False, "resourceName": "sched"},
    }
    cluster = make_cluster(kube_scheduler=SchedulerParams(config=freeze(user)))
    doc = rc.scheduler_config(cluster)
    assert doc["clientConnection"] == {
        "kubeconfig": "/etc/kubernetes/scheduler/kubeconfig",
        "qps": 100,
    }
    assert doc["leaderElection"] == {"leaderElect": True, "resourceName": "sched"}
    assert "apiVersion" not in doc
    assert "kind" not in doc
    assert isinstance(doc, FrozenDict)
    hash(doc)
    # without a user document, only the forced fields
    plain = make_cluster(kube_scheduler=SchedulerParams())
    assert set(rc.scheduler_config(plain)) == {"clientConnection", "leaderElection"}


def test_proxy_config_defaults_merge_and_forced_kubeconfig() -> None:
    node = Node(address="10.0.0.14", hostname="worker-1", user="cybozu")
    assert rc.proxy_config(CLUSTER, node) == {
        "hostnameOverride": "worker-1",
        "metricsBindAddress": "0.0.0.0",
        "conntrack": {"tcpEstablishedTimeout": "24h0m0s", "tcpCloseWaitTimeout": "1h0m0s"},
        "clientConnection": {"kubeconfig": "/etc/kubernetes/proxy/kubeconfig"},
    }
    user = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "ipvs",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {"tcpEstablishedTimeout": "1h0m0s"},
        "clientConnection": {"kubeconfig": "/tmp/mine"},
    }
    cluster = make_cluster(kube_proxy=ProxyParams(config=freeze(user)))
    doc = rc.proxy_config(cluster, node)
    assert doc["mode"] == "ipvs"
    assert doc["metricsBindAddress"] == "127.0.0.1:10249"
    assert doc["conntrack"] == {"tcpEstablishedTimeout": "1h0m0s", "tcpCloseWaitTimeout": "1h0m0s"}
    assert doc["clientConnection"] == {"kubeconfig": "/etc/kubernetes/proxy/kubeconfig"}
    assert "apiVersion" not in doc


FORCED_KUBELET = {
    "tlsCertFile": f"{PKI}/kubelet.crt",
    "tlsPrivateKeyFile": f"{PKI}/kubelet.key",
    "authentication": {
        "x509": {"clientCAFile": f"{PKI}/ca.crt"},
        "webhook": {"enabled": True},
        "anonymous": {"enabled": False},
    },
    "authorization": {"mode": "Webhook"},
}


def test_kubelet_config_defaults_and_forced_fields() -> None:
    assert rc.kubelet_config(CLUSTER, WORKER) == {
        "clusterDomain": "cluster.local",
        "runtimeRequestTimeout": "15m0s",
        "healthzBindAddress": "0.0.0.0",
        "volumePluginDir": "/opt/volume/bin",
        **FORCED_KUBELET,
        "clusterDNS": ("10.0.0.14",),
    }


def test_kubelet_config_user_values_over_defaults_and_forced_last() -> None:
    user = {
        "clusterDomain": "example.org",
        "containerLogMaxSize": "100Mi",
        "tlsCertFile": "/tmp/mine.crt",
        "authentication": {"anonymous": {"enabled": True}},
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDNS": ["1.1.1.1"],
        "cgroupDriver": "systemd",
    }
    cluster = make_cluster(kubelet=kubelet_options(config=user))
    doc = rc.kubelet_config(cluster, WORKER)
    assert doc["clusterDomain"] == "example.org"
    assert doc["containerLogMaxSize"] == "100Mi"
    assert doc["runtimeRequestTimeout"] == "15m0s"
    assert doc["cgroupDriver"] == "systemd"
    for key, value in FORCED_KUBELET.items():
        assert doc[key] == value
    assert doc["clusterDNS"] == ("10.0.0.14",)
    assert "apiVersion" not in doc
    assert "kind" not in doc


def test_kubelet_config_keeps_reboot_only_fields_from_the_running_config() -> None:
    user = {"cgroupDriver": "systemd", "cpuManagerPolicy": "static", "containerLogMaxFiles": 3}
    cluster = make_cluster(kubelet=kubelet_options(config=user))
    running = freeze({"cgroupDriver": "cgroupfs", "qosReserved": {"memory": "50%"}})
    doc = rc.kubelet_config(cluster, WORKER, running)
    assert doc["cgroupDriver"] == "cgroupfs"
    assert doc["qosReserved"] == {"memory": "50%"}
    assert "cpuManagerPolicy" not in doc  # absent while running: stays absent until a reboot
    assert doc["containerLogMaxFiles"] == 3  # other fields follow the spec
    # without a running config, the spec's values are used
    assert rc.kubelet_config(cluster, WORKER)["cpuManagerPolicy"] == "static"
    assert set(rc.KUBELET_KEPT_FIELDS) >= {"cgroupDriver", "cgroupsPerQOS", "cpuManagerPolicy"}


def test_kubelet_config_merges_boot_taints_into_register_with_taints() -> None:
    user = {
        "registerWithTaints": [
            {"key": "a", "value": "user", "effect": "NoSchedule"},
            {"key": "b", "effect": "NoExecute"},
        ]
    }
    boot = (Taint("a", "boot", "NoExecute"), Taint("c", "", "PreferNoSchedule"))
    cluster = make_cluster(kubelet=kubelet_options(config=user, boot_taints=boot))
    assert rc.kubelet_config(cluster, WORKER)["registerWithTaints"] == (
        {"key": "a", "value": "boot", "effect": "NoExecute"},
        {"key": "b", "effect": "NoExecute"},
        {"key": "c", "effect": "PreferNoSchedule"},
    )
    only_boot = make_cluster(kubelet=kubelet_options(boot_taints=boot[1:]))
    assert rc.kubelet_config(only_boot, WORKER)["registerWithTaints"] == (
        {"key": "c", "effect": "PreferNoSchedule"},
    )
    assert "registerWithTaints" not in rc.kubelet_config(CLUSTER, WORKER)


def test_rendered_documents_compare_with_observed_ones() -> None:
    # the observed documents are deep-frozen YAML without TypeMeta
    for doc in (
        rc.scheduler_config(CLUSTER),
        rc.proxy_config(CLUSTER, WORKER),
        rc.kubelet_config(CLUSTER, WORKER),
    ):
        observed = freeze(yaml.safe_load(yaml.safe_dump(thaw(doc))))
        assert observed == doc


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def test_config_files_carry_type_meta_and_are_deterministic() -> None:
    (scheduler,) = rf.scheduler_files(CLUSTER)
    assert scheduler.path == "/etc/kubernetes/scheduler/config.yml"
    assert scheduler.mode == 0o644
    assert yaml.safe_load(scheduler.content) == {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        **thaw(rc.scheduler_config(CLUSTER)),
    }
    assert rf.scheduler_files(CLUSTER) == rf.scheduler_files(make_cluster())
    assert scheduler.content.splitlines()[0].startswith("apiVersion:")  # sorted keys

    kubelet = rf.kubelet_config_file(CLUSTER, WORKER)
    assert kubelet.path == "/etc/kubernetes/kubelet/config.yml"
    loaded = yaml.safe_load(kubelet.content)
    assert loaded["kind"] == "KubeletConfiguration"
    assert loaded["apiVersion"] == "kubelet.config.k8s.io/v1beta1"
    assert loaded["clusterDNS"] == ["10.0.0.14"]
    assert kubelet == rf.kubelet_config_file(CLUSTER, WORKER, None)

    (proxy,) = rf.proxy_files(CLUSTER, WORKER)
    assert proxy.path == "/etc/kubernetes/proxy/config.yml"
    assert yaml.safe_load(proxy.content)["kind"] == "KubeProxyConfiguration"


def test_audit_policy_and_cni_files() -> None:
    assert rf.audit_policy_file(CLUSTER) is None
    policy = "apiVersion: audit.k8s.io/v1\nkind: Policy\n"
    enabled = make_cluster(
        kube_api=APIServerParams(audit_log_enabled=True, audit_log_policy=policy)
    )
    audit = rf.audit_policy_file(enabled)
    assert audit is not None
    assert audit.content == policy
    assert f"--audit-policy-file={audit.path}" in rc.api_server_params(enabled, CP).extra_args

    assert rf.cni_conf_file(CLUSTER) is None
    conf = CNIConfFile(name="10-bridge.conflist", content='{"cniVersion": "1.0.0"}')
    cni = rf.cni_conf_file(make_cluster(kubelet=KubeletParams(cni_conf_file=conf)))
    assert cni == rf.File("/etc/cni/net.d/10-bridge.conflist", conf.content)


# ---------------------------------------------------------------------------
# Certificates and kubeconfigs
# ---------------------------------------------------------------------------


def test_etcd_certificate_requests() -> None:
    node = Node(address="10.0.0.11", hostname="cp-1", user="cybozu", control_plane=True)
    reqs = rf.etcd_certificate_requests(CLUSTER, node)
    server, peer = reqs.certificates
    assert (server.ca, server.role, server.common_name) == ("server", "system", "cp-1")
    assert "cke-etcd.kube-system.svc" in server.alt_names
    assert server.ip_sans == ("127.0.0.1", "10.0.0.11")
    assert (server.server, server.client) == (True, False)
    assert (server.cert_path, server.key_path) == (
        f"{ETCD_PKI}/server.crt",
        f"{ETCD_PKI}/server.key",
    )
    assert (peer.ca, peer.common_name, peer.ip_sans) == ("etcd-peer", "cp-1", server.ip_sans)
    assert reqs.ca_copies == (
        rf.CACopy("etcd-peer", f"{ETCD_PKI}/ca-peer.crt"),
        rf.CACopy("etcd-client", f"{ETCD_PKI}/ca-client.crt"),
    )
    assert f"{ETCD_PKI}/peer.key" in reqs.paths()


def test_api_server_certificate_requests_include_the_service_ip() -> None:
    reqs = rf.api_server_certificate_requests(CLUSTER, CP)
    serving, etcd_client, aggregation = reqs.certificates
    assert serving.common_name == "kubernetes"
    assert serving.ip_sans == ("127.0.0.1", "10.0.0.11", "12.34.56.1")
    assert {"localhost", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"} <= set(
        serving.alt_names
    )
    assert serving.cert_path == f"{PKI}/apiserver.crt"
    assert (etcd_client.ca, etcd_client.common_name, etcd_client.server) == (
        "etcd-client",
        "kube-apiserver",
        False,
    )
    assert etcd_client.key_path == f"{PKI}/apiserver-etcd-client.key"
    assert (aggregation.ca, aggregation.common_name) == (
        "kubernetes-aggregation",
        "front-proxy-client",
    )
    assert [c.path for c in reqs.ca_copies] == [
        f"{PKI}/ca.crt",
        f"{PKI}/etcd-ca.crt",
        f"{PKI}/aggregation-ca.crt",
    ]
    assert [c.ca for c in reqs.ca_copies] == ["kubernetes", "server", "kubernetes-aggregation"]
    assert [s.path for s in reqs.service_account] == [
        f"{PKI}/service-account.crt",
        f"{PKI}/service-account.key",
    ]
    assert rf.kubernetes_service_ip("10.96.0.0/12") == "10.96.0.1"
    assert rf.kubernetes_service_ip("not a subnet") is None


def test_kubelet_certificate_and_kubeconfig_requests() -> None:
    node = Node(address="10.0.0.14", hostname="worker-1", user="cybozu")
    (cert,) = rf.kubelet_certificate_requests(CLUSTER, node).certificates
    assert (cert.common_name, cert.organization) == ("system:node:worker-1", "system:nodes")
    assert cert.alt_names == ("localhost", "worker-1")
    assert cert.ip_sans == ("127.0.0.1", "10.0.0.14")
    (only_address,) = rf.kubelet_certificate_requests(CLUSTER, WORKER).certificates
    assert only_address.alt_names == ("localhost",)

    kubeconfig = rf.kubelet_kubeconfig(CLUSTER, node)
    assert not kubeconfig.embed
    assert kubeconfig.path == "/etc/kubernetes/kubelet/kubeconfig"
    assert kubeconfig.user == "system:node:worker-1"
    assert kubeconfig.certificate == cert
    assert kubeconfig.ca_path == f"{PKI}/ca.crt"


def test_component_kubeconfig_requests_embed_credentials() -> None:
    cm = rf.controller_manager_kubeconfig(CLUSTER)
    sched = rf.scheduler_kubeconfig(CLUSTER)
    proxy = rf.proxy_kubeconfig(CLUSTER)
    assert cm.path == "/etc/kubernetes/controller-manager/kubeconfig"
    assert sched.path == "/etc/kubernetes/scheduler/kubeconfig"
    assert proxy.path == "/etc/kubernetes/proxy/kubeconfig"
    for req in (cm, sched, proxy):
        assert req.embed
        assert req.server == "https://localhost:16443"
        assert req.cluster_name == "test"
        assert req.certificate.ca == "kubernetes"
        assert req.certificate.cert_path == ""
    assert (cm.certificate.common_name, cm.certificate.organization) == (
        "system:kube-controller-manager",
        "system:kube-controller-manager",
    )
    assert (sched.user, sched.certificate.organization) == (
        "system:kube-scheduler",
        "system:kube-scheduler",
    )
    assert (proxy.certificate.common_name, proxy.certificate.organization) == (
        "system:kube-proxy",
        "system:node-proxier",
    )


def test_render_kubeconfig_embedded_and_referencing() -> None:
    text = rf.render_kubeconfig("test", "https://localhost:16443", "u", "CA", "CRT", "KEY")
    doc = yaml.safe_load(text)
    assert doc["current-context"] == "default"
    assert doc["contexts"] == [{"name": "default", "context": {"cluster": "test", "user": "u"}}]
    cluster = doc["clusters"][0]
    assert cluster["name"] == "test"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == b"CA"
    user = doc["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == b"CRT"
    assert base64.b64decode(user["client-key-data"]) == b"KEY"
    assert text == rf.render_kubeconfig("test", "https://localhost:16443", "u", "CA", "CRT", "KEY")

    ref = yaml.safe_load(
        rf.render_kubeconfig(
            "test",
            "https://localhost:16443",
            "system:node:n",
            None,
            cert_path=f"{PKI}/kubelet.crt",
            key_path=f"{PKI}/kubelet.key",
            ca_path=f"{PKI}/ca.crt",
        )
    )
    assert ref["clusters"][0]["cluster"] == {
        "server": "https://localhost:16443",
        "certificate-authority": f"{PKI}/ca.crt",
    }
    assert ref["users"][0]["user"] == {
        "client-certificate": f"{PKI}/kubelet.crt",
        "client-key": f"{PKI}/kubelet.key",
    }


def test_render_encryption_config() -> None:
    doc = yaml.safe_load(rf.render_encryption_config([("new", "c2VjcmV0"), ("old", "b2xk")]))
    assert doc == {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    {
                        "aescbc": {
                            "keys": [
                                {"name": "new", "secret": "c2VjcmV0"},
                                {"name": "old", "secret": "b2xk"},
                            ]
                        }
                    },
                    {"identity": {}},
                ],
            }
        ],
    }
    assert rf.ENCRYPTION_CONFIG_PATH == "/etc/kubernetes/apiserver/encryption.yml"
