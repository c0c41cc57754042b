"""cke_core.render.kubernetes: static resources, ranks, DNS, endpoints, node attributes (§I)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from cke_core.cluster import Cluster, Node, Taint
from cke_core.frozen import FrozenDict, freeze, thaw
from cke_core.problems import ConfigError
from cke_core.render import kubernetes as k
from cke_core.status import (
    EndpointPort,
    Endpoints,
    EndpointSlice,
    EndpointSliceEndpoint,
    EndpointSubset,
    KubernetesNode,
    ResourceStatus,
    Service,
    ServicePort,
)


@attrs.frozen
class FakeImages:
    coredns: str = "example/coredns:1"
    unbound: str = "example/unbound:1"
    unbound_exporter: str = "example/unbound_exporter:1"


IMAGES = FakeImages()


def _status(**annotations: str) -> ResourceStatus:
    return ResourceStatus(annotations=FrozenDict(annotations), has_been_ssa=True)


# ---------------------------------------------------------------------------
# Static resources (§I.1)
# ---------------------------------------------------------------------------

EXPECTED_STATIC = [
    ("ServiceAccount/kube-system/cke-cluster-dns", 20, "1"),
    ("ClusterRole/system:cluster-dns", 40, "2"),
    ("ClusterRole/system:kube-apiserver-to-kubelet", 40, "2"),
    ("ClusterRoleBinding/system:cluster-dns", 50, "1"),
    ("ClusterRoleBinding/system:kube-apiserver", 50, "1"),
    ("DaemonSet/kube-system/node-dns", 3000, "4"),
    ("Deployment/kube-system/cluster-dns", 3000, "5"),
    ("PodDisruptionBudget/kube-system/cluster-dns-pdb", 3000, "1"),
    ("Service/kube-system/cluster-dns", 3000, "1"),
]


def test_static_resources_keys_ranks_revisions_in_apply_order() -> None:
    resources = k.static_resources(IMAGES)
    assert [(r.key, r.rank, r.revision) for r in resources] == EXPECTED_STATIC


def test_static_documents_are_frozen_and_annotated() -> None:
    for resource in k.static_resources(IMAGES):
        assert isinstance(resource.document, FrozenDict)
        assert k.resource_key(resource.document) == resource.key
        annotations = resource.document["metadata"]["annotations"]
        assert annotations[k.ANNOTATION_REVISION] == resource.revision
        assert hash(resource)  # deep-frozen: hashable all the way down


def test_static_images() -> None:
    by_key = {r.key: r for r in k.static_resources(IMAGES)}
    ds = by_key["DaemonSet/kube-system/node-dns"]
    deploy = by_key["Deployment/kube-system/cluster-dns"]
    assert ds.image == "example/unbound:1,example/unbound_exporter:1"
    assert ds.document["metadata"]["annotations"][k.ANNOTATION_IMAGE] == ds.image
    assert deploy.image == "example/coredns:1"
    assert deploy.document["metadata"]["annotations"][k.ANNOTATION_IMAGE] == deploy.image
    others = [r for r in by_key.values() if r.kind not in ("DaemonSet", "Deployment")]
    assert all(r.image == "" for r in others)
    assert all(k.ANNOTATION_IMAGE not in r.document["metadata"]["annotations"] for r in others)

    containers = ds.document["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [
        ("unbound", "example/unbound:1"),
        ("reload", "example/unbound:1"),
        ("exporter", "example/unbound_exporter:1"),
    ]
    (coredns,) = deploy.document["spec"]["template"]["spec"]["containers"]
    assert coredns["image"] == "example/coredns:1"


def test_static_daemonset_and_deployment_shape() -> None:
    by_key = {r.key: thaw(r.document) for r in k.static_resources(IMAGES)}
    ds = by_key["DaemonSet/kube-system/node-dns"]["spec"]
    assert ds["updateStrategy"]["rollingUpdate"] == {"maxSurge": "35%", "maxUnavailable": 0}
    assert ds["template"]["spec"]["hostNetwork"] is True
    assert ds["template"]["spec"]["tolerations"] == [{"operator": "Exists"}]

    deploy = by_key["Deployment/kube-system/cluster-dns"]["spec"]
    assert deploy["replicas"] == 2
    pod = deploy["template"]["spec"]
    ports = {(p["containerPort"], p["protocol"]) for p in pod["containers"][0]["ports"]}
    assert ports == {(1053, "UDP"), (1053, "TCP"), (9153, "TCP")}
    assert pod["affinity"]["podAntiAffinity"]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"

    pdb = by_key["PodDisruptionBudget/kube-system/cluster-dns-pdb"]["spec"]
    assert pdb["maxUnavailable"] == 1
    svc = by_key["Service/kube-system/cluster-dns"]["spec"]
    assert {(p["port"], p["targetPort"], p["protocol"]) for p in svc["ports"]} == {
        (53, 1053, "UDP"),
        (53, 1053, "TCP"),
    }


def test_static_rbac() -> None:
    by_key = {r.key: thaw(r.document) for r in k.static_resources(IMAGES)}
    dns_role = by_key["ClusterRole/system:cluster-dns"]
    granted = {
        (g, res)
        for rule in dns_role["rules"]
        for g in rule["apiGroups"]
        for res in rule["resources"]
    }
    assert granted == {
        ("", "services"),
        ("", "pods"),
        ("", "namespaces"),
        ("discovery.k8s.io", "endpointslices"),
    }
    assert all(rule["verbs"] == ["list", "watch"] for rule in dns_role["rules"])
    kubelet_role = by_key["ClusterRole/system:kube-apiserver-to-kubelet"]
    assert kubelet_role["rules"][0]["verbs"] == ["*"]
    assert "nodes/proxy" in kubelet_role["rules"][0]["resources"]
    binding = by_key["ClusterRoleBinding/system:kube-apiserver"]
    assert binding["subjects"][0]["kind"] == "User"
    assert binding["subjects"][0]["name"] == "kubernetes"
    assert binding["roleRef"]["name"] == "system:kube-apiserver-to-kubelet"


def test_static_resources_accept_the_real_images_class() -> None:
    images_module = pytest.importorskip("cke_core.render.images")
    images = images_module.Images()
    by_key = {r.key: r for r in k.static_resources(images)}
    assert by_key["Deployment/kube-system/cluster-dns"].image == images.coredns


# ---------------------------------------------------------------------------
# Keys, ranks, ordering (§I.5)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "namespaced", "rank"),
    [
        ("Namespace", False, 10),
        ("ServiceAccount", True, 20),
        ("CustomResourceDefinition", False, 30),
        ("ClusterRole", False, 40),
        ("ClusterRoleBinding", False, 50),
        ("PriorityClass", False, 1000),
        ("Role", True, 2000),
        ("RoleBinding", True, 2010),
        ("NetworkPolicy", True, 2020),
        ("Secret", True, 2030),
        ("ConfigMap", True, 2040),
        ("Deployment", True, 3000),
    ],
)
def test_resource_rank(kind: str, namespaced: bool, rank: int) -> None:
    assert k.resource_rank(kind, namespaced) == rank


def test_resource_rank_explicit_in_range_only() -> None:
    assert k.resource_rank("PriorityClass", False, 5) == 5
    assert k.resource_rank("Deployment", True, 2500) == 2500
    assert k.resource_rank("Deployment", True, 5) == 3000
    assert k.resource_rank("PriorityClass", False, 2500) == 1000


def test_resource_key() -> None:
    assert k.resource_key({"kind": "Namespace", "metadata": {"name": "a"}}) == "Namespace/a"
    doc = {"kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}}
    assert k.resource_key(doc) == "ConfigMap/ns/c"


def _user(kind: str, name: str, namespace: str = "", revision: int = 7) -> k.UserResource:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    document = freeze({"apiVersion": "v1", "kind": kind, "metadata": metadata})
    return k.UserResource(key=k.resource_key(document), revision=revision, document=document)


def test_sort_mixed_user_and_static_resources() -> None:
    users = [
        _user("Deployment", "app", "team"),
        _user("ConfigMap", "conf", "team"),
        _user("Namespace", "team"),
        _user("PriorityClass", "high"),
        _user("ClusterRole", "aaa"),
        _user("Secret", "s", "team"),
    ]
    ordered = k.sort_resources([*users, *k.static_resources(IMAGES)])
    assert [(r.rank, r.key) for r in ordered] == [
        (10, "Namespace/team"),
        (20, "ServiceAccount/kube-system/cke-cluster-dns"),
        (40, "ClusterRole/aaa"),
        (40, "ClusterRole/system:cluster-dns"),
        (40, "ClusterRole/system:kube-apiserver-to-kubelet"),
        (50, "ClusterRoleBinding/system:cluster-dns"),
        (50, "ClusterRoleBinding/system:kube-apiserver"),
        (1000, "PriorityClass/high"),
        (2030, "Secret/team/s"),
        (2040, "ConfigMap/team/conf"),
        (3000, "DaemonSet/kube-system/node-dns"),
        (3000, "Deployment/kube-system/cluster-dns"),
        (3000, "Deployment/team/app"),
        (3000, "PodDisruptionBudget/kube-system/cluster-dns-pdb"),
        (3000, "Service/kube-system/cluster-dns"),
    ]


# ---------------------------------------------------------------------------
# parse_user_resources
# ---------------------------------------------------------------------------

GOOD = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  namespace: team
---
apiVersion: v1
kind: Namespace
metadata:
  name: team
---
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: reader
  annotations:
    cke.cybozu.com/rank: "5"
"""


def test_parse_user_resources_sorted_with_revision() -> None:
    resources = k.parse_user_resources(GOOD, revision=42)
    assert [(r.key, r.rank) for r in resources] == [
        ("ClusterRole/reader", 5),
        ("Namespace/team", 10),
        ("Deployment/team/app", 3000),
    ]
    assert all(r.revision == 42 for r in resources)
    assert resources[2].kind == "Deployment"
    assert resources[2].namespace == "team"
    assert resources[2].name == "app"
    assert isinstance(resources[0].document, FrozenDict)


def test_parse_user_resources_empty_input() -> None:
    assert k.parse_user_resources("") == ()
    assert k.parse_user_resources("---\n---\n") == ()


def test_parse_user_resources_reports_every_problem_with_paths() -> None:
    text = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: fine
---
kind: ConfigMap
metadata:
  name: no-api-version
---
apiVersion: v1
kind: ConfigMap
metadata:
  namespace: x
---
apiVersion: v1
metadata:
  name: no-kind
---
- a
- list
---
apiVersion: v1
kind: Secret
metadata:
  name: s
  namespace: ns
  annotations:
    cke.cybozu.com/rank: "10"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: fine
"""
    with pytest.raises(ConfigError) as info:
        k.parse_user_resources(text)
    paths = [p.path for p in info.value.problems]
    assert paths == [
        "documents[1].apiVersion",
        "documents[2].metadata.name",
        "documents[3].kind",
        "documents[4]",
        'documents[5].metadata.annotations["cke.cybozu.com/rank"]',
        "documents[6]",
    ]
    assert "documents[0]" in str(info.value)  # the duplicate names the first definition


def test_parse_user_resources_missing_metadata() -> None:
    with pytest.raises(ConfigError) as info:
        k.parse_user_resources("apiVersion: v1\nkind: Namespace\n")
    assert [p.path for p in info.value.problems] == ["documents[0].metadata.name"]


def test_parse_user_resources_yaml_syntax_error() -> None:
    with pytest.raises(ConfigError, match="YAML syntax error"):
        k.parse_user_resources("kind: [unclosed\n")


# ---------------------------------------------------------------------------
# Needs apply, apply document
# ---------------------------------------------------------------------------


def test_user_resource_needs_apply() -> None:
    res = _user("ConfigMap", "c", "ns", revision=7)
    assert k.resource_needs_apply(res, None)
    assert k.resource_needs_apply(res, _status())
    assert k.resource_needs_apply(res, _status(**{k.ANNOTATION_REVISION: "6"}))
    assert not k.resource_needs_apply(res, _status(**{k.ANNOTATION_REVISION: "7"}))


def test_static_resource_needs_apply_compares_image() -> None:
    by_key = {r.key: r for r in k.static_resources(IMAGES)}
    deploy = by_key["Deployment/kube-system/cluster-dns"]
    rev = {k.ANNOTATION_REVISION: "5"}
    assert k.resource_needs_apply(deploy, _status(**rev))
    assert k.resource_needs_apply(deploy, _status(**rev, **{k.ANNOTATION_IMAGE: "old"}))
    assert not k.resource_needs_apply(deploy, _status(**rev, **{k.ANNOTATION_IMAGE: deploy.image}))
    sa = by_key["ServiceAccount/kube-system/cke-cluster-dns"]
    assert not k.resource_needs_apply(sa, _status(**{k.ANNOTATION_REVISION: "1"}))


def test_needs_apply_and_ssa() -> None:
    res = _user("ConfigMap", "c", "ns", revision=7)
    not_ssa = ResourceStatus(annotations=FrozenDict({k.ANNOTATION_REVISION: "7"}))
    assert not k.resource_needs_apply(res, not_ssa)  # CKE: the revision is enough
    assert k.resource_needs_apply(res, not_ssa, require_ssa=True)
    assert not k.resource_needs_apply(
        res, _status(**{k.ANNOTATION_REVISION: "7"}), require_ssa=True
    )


def test_apply_document_sets_revision() -> None:
    res = _user("ConfigMap", "c", "ns", revision=7)
    doc = k.apply_document(res)
    assert isinstance(doc, FrozenDict)
    assert doc["metadata"]["annotations"] == {k.ANNOTATION_REVISION: "7"}
    assert doc["metadata"]["name"] == "c"
    assert "annotations" not in res.document["metadata"]  # the input is unchanged

    with_annotations = k.UserResource(
        key="ConfigMap/ns/c",
        revision=8,
        document=freeze(
            {
                "kind": "ConfigMap",
                "metadata": {"name": "c", "annotations": {"a": "b", k.ANNOTATION_REVISION: "1"}},
            }
        ),
    )
    assert k.apply_document(with_annotations)["metadata"]["annotations"] == {
        "a": "b",
        k.ANNOTATION_REVISION: "8",
    }
    static = k.static_resources(IMAGES)[0]
    assert k.apply_document(static) == static.document


# ---------------------------------------------------------------------------
# DNS (§I.2, §A.6)
# ---------------------------------------------------------------------------


def test_dns_upstreams() -> None:
    cluster = Cluster(dns_servers=("8.8.8.8", "1.1.1.1"))
    assert k.dns_upstreams(cluster, None) == ("8.8.8.8", "1.1.1.1")
    assert k.dns_upstreams(cluster, "") == ("8.8.8.8", "1.1.1.1")
    assert k.dns_upstreams(cluster, "None") == ("8.8.8.8", "1.1.1.1")
    assert k.dns_upstreams(cluster, "10.0.0.53") == ("10.0.0.53",)
    assert k.dns_upstreams(Cluster(), None) == ()


def test_corefile_with_upstreams() -> None:
    assert k.corefile("cluster.local", ["8.8.8.8", "1.1.1.1"]) == (
        ".:1053 {\n"
        "    errors\n"
        "    health\n"
        "    ready\n"
        "    log\n"
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
        "      pods verified\n"
        "      fallthrough in-addr.arpa ip6.arpa\n"
        "    }\n"
        "    forward . 8.8.8.8 1.1.1.1\n"
        "    prometheus :9153\n"
        "    cache 30\n"
        "    reload\n"
        "    loadbalance\n"
        "}\n"
    )


def test_corefile_without_upstreams() -> None:
    text = k.corefile("example.test", [])
    assert "kubernetes example.test in-addr.arpa ip6.arpa {" in text
    assert "forward" not in text
    assert "fallthrough" not in text
    assert "prometheus :9153" in text


def test_cluster_dns_configmap() -> None:
    cm = k.cluster_dns_configmap("cluster.local", ["8.8.8.8"])
    assert (cm.namespace, cm.name) == ("kube-system", "cluster-dns")
    assert cm.data == {"Corefile": k.corefile("cluster.local", ["8.8.8.8"])}


def test_unbound_conf_zones() -> None:
    text = k.unbound_conf("cluster.local", "10.68.0.10", ["8.8.8.8", "1.1.1.1"])
    assert 'stub-zone:\n  name: "cluster.local"\n  stub-addr: 10.68.0.10\n' in text
    assert 'forward-zone:\n  name: "in-addr.arpa."\n  forward-addr: 10.68.0.10\n' in text
    assert 'forward-zone:\n  name: "ip6.arpa."\n  forward-addr: 10.68.0.10\n' in text
    assert text.endswith(
        'forward-zone:\n  name: "."\n  forward-addr: 8.8.8.8\n  forward-addr: 1.1.1.1\n'
    )
    assert "control-interface: /var/run/unbound/unbound.sock\n" in text
    assert 'domain-insecure: "cluster.local"' in text
    for zone in ("10.in-addr.arpa.", "168.192.in-addr.arpa.", "16.172.in-addr.arpa."):
        assert f'local-zone: "{zone}" transparent' in text
        assert f'domain-insecure: "{zone}"' in text
    assert '"31.172.in-addr.arpa."' in text
    assert '"32.172.in-addr.arpa."' not in text
    assert text.startswith("server:\n  do-daemonize: no\n  interface: 0.0.0.0\n")


def test_unbound_conf_without_upstreams() -> None:
    text = k.unbound_conf("cluster.local", "10.68.0.10", ())
    assert 'name: "."' not in text
    assert text.count("forward-zone:") == 2


def test_node_dns_configmap() -> None:
    cm = k.node_dns_configmap("cluster.local", "10.68.0.10", ["8.8.8.8"])
    assert (cm.namespace, cm.name) == ("kube-system", "node-dns")
    assert cm.data == {"unbound.conf": k.unbound_conf("cluster.local", "10.68.0.10", ["8.8.8.8"])}


# ---------------------------------------------------------------------------
# Endpoints (§I.3)
# ---------------------------------------------------------------------------


def test_master_endpoints_sorted_and_deduplicated() -> None:
    ep = k.master_endpoints(["10.0.0.3", "10.0.0.1", "10.0.0.3"], ["10.0.0.2", "10.0.0.2"])
    assert (ep.namespace, ep.name) == ("default", "kubernetes")
    assert ep.labels == {"endpointslice.kubernetes.io/skip-mirror": "true"}
    (subset,) = ep.subsets
    assert subset.addresses == ("10.0.0.1", "10.0.0.3")
    assert subset.not_ready_addresses == ("10.0.0.2",)
    assert subset.ports == (EndpointPort(name="https", protocol="TCP", port=6443),)


def test_ready_wins_over_not_ready() -> None:
    ep = k.master_endpoints(["10.0.0.1"], ["10.0.0.1", "10.0.0.2"])
    assert ep.subsets[0].not_ready_addresses == ("10.0.0.2",)


def test_master_endpoint_slice() -> None:
    eps = k.master_endpoint_slice(["10.0.0.3", "10.0.0.1"], ["10.0.0.2", "10.0.0.2"])
    assert (eps.namespace, eps.name) == ("default", "kubernetes")
    assert eps.labels == {
        "endpointslice.kubernetes.io/managed-by": "cke.cybozu.com",
        "kubernetes.io/service-name": "kubernetes",
    }
    assert eps.address_type == "IPv4"
    assert eps.endpoints == (
        EndpointSliceEndpoint(addresses=("10.0.0.1",), ready=True),
        EndpointSliceEndpoint(addresses=("10.0.0.3",), ready=True),
        EndpointSliceEndpoint(addresses=("10.0.0.2",), ready=False),
    )
    assert eps.ports == (EndpointPort(name="https", protocol="TCP", port=6443),)


def test_etcd_objects() -> None:
    svc = k.etcd_service()
    assert (svc.namespace, svc.name, svc.cluster_ip) == ("kube-system", "cke-etcd", "None")
    assert k.etcd_service_ok(svc)
    ep = k.etcd_endpoints(["10.0.0.2", "10.0.0.1"])
    assert (ep.namespace, ep.name) == ("kube-system", "cke-etcd")
    assert ep.subsets[0].addresses == ("10.0.0.1", "10.0.0.2")
    assert ep.subsets[0].ports[0].name == ""
    assert ep.subsets[0].ports[0].port == 2379
    eps = k.etcd_endpoint_slice(["10.0.0.1"], ["10.0.0.9"])
    assert eps.name == "cke-etcd"
    assert eps.labels["kubernetes.io/service-name"] == "cke-etcd"
    assert eps.ports == (EndpointPort(name="", protocol="TCP", port=2379),)
    assert [e.ready for e in eps.endpoints] == [True, False]


def test_etcd_service_ok() -> None:
    good = k.etcd_service()
    assert not k.etcd_service_ok(None)
    assert not k.etcd_service_ok(attrs.evolve(good, cluster_ip="10.0.0.5"))
    assert not k.etcd_service_ok(attrs.evolve(good, type="NodePort"))
    assert not k.etcd_service_ok(attrs.evolve(good, ports=(ServicePort(port=2380),)))
    two = (ServicePort(port=2379), ServicePort(port=2380))
    assert not k.etcd_service_ok(attrs.evolve(good, ports=two))
    live = Service(
        name="cke-etcd",
        namespace="kube-system",
        type="ClusterIP",
        cluster_ip="None",
        ports=(ServicePort(name="", protocol="TCP", port=2379),),
    )
    assert k.etcd_service_ok(live)


def test_endpoints_equal() -> None:
    want = k.master_endpoints(["10.0.0.1", "10.0.0.2"], ["10.0.0.3"])
    assert not k.endpoints_equal(None, want)
    assert k.endpoints_equal(want, want)
    live = Endpoints(
        name="kubernetes",
        namespace="default",
        labels=FrozenDict({"endpointslice.kubernetes.io/skip-mirror": "true", "extra": "x"}),
        subsets=(
            EndpointSubset(
                addresses=("10.0.0.2", "10.0.0.1"),
                not_ready_addresses=("10.0.0.3",),
                ports=(EndpointPort(name="https", protocol="", port=6443),),
            ),
        ),
    )
    assert k.endpoints_equal(live, want)  # order, extra labels and protocol do not count
    assert not k.endpoints_equal(attrs.evolve(live, labels=FrozenDict()), want)
    assert not k.endpoints_equal(attrs.evolve(live, subsets=()), want)
    assert not k.endpoints_equal(attrs.evolve(live, subsets=live.subsets * 2), want)
    subset = live.subsets[0]

    def with_subset(**changes: Any) -> Endpoints:
        return attrs.evolve(live, subsets=(attrs.evolve(subset, **changes),))

    assert not k.endpoints_equal(with_subset(addresses=("10.0.0.1",)), want)
    assert not k.endpoints_equal(with_subset(addresses=("10.0.0.1", "10.0.0.1")), want)
    assert not k.endpoints_equal(with_subset(addresses=("10.0.0.1", "10.0.0.3")), want)
    assert not k.endpoints_equal(with_subset(not_ready_addresses=()), want)
    assert not k.endpoints_equal(with_subset(ports=(EndpointPort(name="https", port=443),)), want)
    assert not k.endpoints_equal(with_subset(ports=(EndpointPort(name="x", port=6443),)), want)
    assert not k.endpoints_equal(with_subset(ports=()), want)


def test_endpoint_slice_equal() -> None:
    want = k.master_endpoint_slice(["10.0.0.1", "10.0.0.2"], ["10.0.0.3"])
    assert not k.endpoint_slice_equal(None, want)
    assert k.endpoint_slice_equal(want, want)
    live = attrs.evolve(
        want,
        labels=want.labels.set("extra", "x"),
        ports=(EndpointPort(name="https", protocol="", port=6443),),
    )
    assert k.endpoint_slice_equal(live, want)
    assert not k.endpoint_slice_equal(attrs.evolve(live, labels=FrozenDict()), want)
    assert not k.endpoint_slice_equal(attrs.evolve(live, address_type="IPv6"), want)
    assert not k.endpoint_slice_equal(attrs.evolve(live, endpoints=live.endpoints[:2]), want)
    reordered = (live.endpoints[1], live.endpoints[0], live.endpoints[2])
    assert not k.endpoint_slice_equal(attrs.evolve(live, endpoints=reordered), want)
    unset = (attrs.evolve(live.endpoints[0], ready=None), *live.endpoints[1:])
    assert not k.endpoint_slice_equal(attrs.evolve(live, endpoints=unset), want)
    flipped = (*live.endpoints[:2], attrs.evolve(live.endpoints[2], ready=True))
    assert not k.endpoint_slice_equal(attrs.evolve(live, endpoints=flipped), want)
    assert not k.endpoint_slice_equal(attrs.evolve(live, ports=()), want)
    assert not k.endpoint_slice_equal(
        attrs.evolve(live, ports=(EndpointPort(name="https", port=443),)), want
    )
    assert not k.endpoint_slice_equal(EndpointSlice(), want)


# ---------------------------------------------------------------------------
# Node attributes (§I.4, §A.2)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "internal"),
    [
        ("cke.cybozu.com/master", True),
        ("cke.cybozu.com/role", True),
        ("sabakan.cke.cybozu.com/serial", True),
        ("node-role.kubernetes.io/master", True),
        ("node-role.kubernetes.io/control-plane", True),
        ("cke.cybozu.com/reboot", False),
        ("node-role.kubernetes.io/worker", False),
        ("example.com/x", False),
        ("topology.kubernetes.io/zone", False),
    ],
)
def test_is_internal_key(key: str, internal: bool) -> None:
    assert k.is_internal_key(key) is internal


def test_node_role_labels_from_the_spec_are_internal() -> None:
    node = Node(labels=FrozenDict({"node-role.kubernetes.io/worker": "true"}))
    assert k.is_internal_key("node-role.kubernetes.io/worker", node)
    assert not k.is_internal_key("node-role.kubernetes.io/other", node)


def _kn(
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    taints: tuple[Taint, ...] = (),
) -> KubernetesNode:
    return KubernetesNode(
        name="10.0.0.1",
        labels=FrozenDict(labels or {}),
        annotations=FrozenDict(annotations or {}),
        taints=taints,
        ready=True,
    )


MASTER_TAINT = Taint(key="cke.cybozu.com/master", effect="PreferNoSchedule")


def test_desired_node_labels() -> None:
    node = Node(
        address="10.0.0.1", control_plane=True, labels=FrozenDict({"spec": "1", "shared": "new"})
    )
    current = _kn(
        labels={
            "kubernetes.io/hostname": "n1",  # non-internal: kept
            "shared": "old",  # overwritten by the spec
            "cke.cybozu.com/stale": "x",  # internal, not in spec: removed
            "node-role.kubernetes.io/master": "",  # internal: removed
        }
    )
    want = k.desired_node(Cluster(nodes=(node,)), node, current)
    assert want.labels == {
        "kubernetes.io/hostname": "n1",
        "shared": "new",
        "spec": "1",
        "cke.cybozu.com/master": "true",
    }
    assert want.name == current.name
    assert want.ready  # other fields unchanged


def test_desired_node_worker_has_no_master_label() -> None:
    node = Node(address="10.0.0.1")
    current = _kn(labels={"cke.cybozu.com/master": "true", "a": "b"})
    want = k.desired_node(Cluster(nodes=(node,)), node, current)
    assert want.labels == {"a": "b"}


def test_desired_node_annotations_keep_reboot() -> None:
    node = Node(address="10.0.0.1", annotations=FrozenDict({"spec": "1"}))
    current = _kn(
        annotations={
            "cke.cybozu.com/reboot": "true",
            "cke.cybozu.com/internal": "x",
            "other": "y",
        }
    )
    want = k.desired_node(Cluster(nodes=(node,)), node, current)
    assert want.annotations == {"cke.cybozu.com/reboot": "true", "other": "y", "spec": "1"}


def test_desired_node_taints() -> None:
    spec_taint = Taint(key="dedicated", value="db", effect="NoSchedule")
    node = Node(address="10.0.0.1", control_plane=True, taints=(spec_taint,))
    current = _kn(
        taints=(
            Taint(key="dedicated", value="old", effect="NoExecute"),  # overridden by key
            Taint(key="node.kubernetes.io/unschedulable", effect="NoSchedule"),  # kept
            Taint(key="cke.cybozu.com/foo", effect="NoSchedule"),  # internal: removed
            MASTER_TAINT,
        )
    )
    tainted = Cluster(nodes=(node,), taint_control_plane=True)
    assert k.desired_node(tainted, node, current).taints == (
        spec_taint,
        Taint(key="node.kubernetes.io/unschedulable", effect="NoSchedule"),
        MASTER_TAINT,
    )
    untainted = Cluster(nodes=(node,))
    assert k.desired_node(untainted, node, current).taints == (
        spec_taint,
        Taint(key="node.kubernetes.io/unschedulable", effect="NoSchedule"),
    )
    worker = attrs.evolve(node, control_plane=False)
    assert MASTER_TAINT not in k.desired_node(tainted, worker, current).taints


def test_desired_node_is_not_outdated() -> None:
    node = Node(
        address="10.0.0.1",
        control_plane=True,
        labels=FrozenDict({"a": "1"}),
        annotations=FrozenDict({"b": "2"}),
        taints=(Taint(key="t", value="v", effect="NoSchedule"),),
    )
    cluster = Cluster(nodes=(node,), taint_control_plane=True)
    current = _kn(
        labels={"cke.cybozu.com/x": "y", "keep": "me"},
        annotations={"cke.cybozu.com/x": "y"},
        taints=(Taint(key="cke.cybozu.com/x", effect="NoSchedule"),),
    )
    assert k.node_outdated(cluster, node, current)
    want = k.desired_node(cluster, node, current)
    assert not k.node_outdated(cluster, node, want)


def _synced(node: Node, cluster: Cluster) -> KubernetesNode:
    return k.desired_node(cluster, node, _kn())


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"labels": {"a": "other"}}, id="spec label differs"),
        pytest.param({"labels": {}}, id="spec label missing"),
        pytest.param({"labels": {"a": "1", "cke.cybozu.com/x": "y"}}, id="internal label extra"),
        pytest.param(
            {"labels": {"a": "1", "node-role.kubernetes.io/control-plane": ""}}, id="role label"
        ),
        pytest.param({"annotations": {}}, id="spec annotation missing"),
        pytest.param(
            {"annotations": {"b": "2", "cke.cybozu.com/x": "y"}}, id="internal annotation"
        ),
        pytest.param({"taints": ()}, id="spec taint missing"),
        pytest.param(
            {"taints": (Taint(key="t", value="w", effect="NoSchedule"),)}, id="taint value"
        ),
        pytest.param(
            {"taints": (Taint(key="t", value="v", effect="NoExecute"),)}, id="taint effect"
        ),
        pytest.param(
            {
                "taints": (
                    Taint(key="t", value="v", effect="NoSchedule"),
                    Taint(key="x.cke.cybozu.com/y", effect="NoSchedule"),
                )
            },
            id="internal taint",
        ),
        pytest.param(
            {"taints": (Taint(key="t", value="v", effect="NoSchedule"), MASTER_TAINT)},
            id="master taint without taint_control_plane",
        ),
    ],
)
def test_node_outdated_true(change: dict[str, Any]) -> None:
    node = Node(
        address="10.0.0.1",
        labels=FrozenDict({"a": "1"}),
        annotations=FrozenDict({"b": "2"}),
        taints=(Taint(key="t", value="v", effect="NoSchedule"),),
    )
    cluster = Cluster(nodes=(node,))
    synced = _synced(node, cluster)
    assert not k.node_outdated(cluster, node, synced)
    changes: dict[str, Any] = {
        field: FrozenDict(value) if isinstance(value, dict) else value
        for field, value in change.items()
    }
    changed = attrs.evolve(synced, **changes)
    assert k.node_outdated(cluster, node, changed)


def test_node_outdated_false_with_foreign_attributes() -> None:
    node = Node(address="10.0.0.1", labels=FrozenDict({"a": "1"}))
    cluster = Cluster(nodes=(node,))
    current = _kn(
        labels={"a": "1", "kubernetes.io/os": "linux"},
        annotations={"cke.cybozu.com/reboot": "true", "node.alpha.kubernetes.io/ttl": "0"},
        taints=(Taint(key="node.kubernetes.io/unschedulable", effect="NoSchedule"),),
    )
    assert not k.node_outdated(cluster, node, current)


def test_node_outdated_master_label_and_taint() -> None:
    cp = Node(address="10.0.0.1", control_plane=True)
    tainted = Cluster(nodes=(cp,), taint_control_plane=True)
    plain = Cluster(nodes=(cp,))
    assert k.node_outdated(plain, cp, _kn())  # no master label
    assert not k.node_outdated(plain, cp, _kn(labels={"cke.cybozu.com/master": "true"}))
    assert k.node_outdated(plain, cp, _kn(labels={"cke.cybozu.com/master": "false"}))
    assert k.node_outdated(tainted, cp, _kn(labels={"cke.cybozu.com/master": "true"}))
    ok = _kn(labels={"cke.cybozu.com/master": "true"}, taints=(MASTER_TAINT,))
    assert not k.node_outdated(tainted, cp, ok)
    wrong_effect = _kn(
        labels={"cke.cybozu.com/master": "true"},
        taints=(Taint(key="cke.cybozu.com/master", effect="NoSchedule"),),
    )
    assert k.node_outdated(tainted, cp, wrong_effect)
    worker = Node(address="10.0.0.1")
    assert k.node_outdated(plain, worker, _kn(labels={"cke.cybozu.com/master": "true"}))


def test_outdated_attrs_nodes() -> None:
    n1 = Node(address="10.0.0.1", labels=FrozenDict({"a": "1"}))
    n2 = Node(address="10.0.0.2", hostname="host2", labels=FrozenDict({"a": "1"}))
    n3 = Node(address="10.0.0.3")  # no Node object yet: skipped
    cluster = Cluster(nodes=(n1, n2, n3))
    current = [
        attrs.evolve(_kn(labels={"a": "1"}), name="10.0.0.1"),
        attrs.evolve(_kn(labels={"a": "0"}), name="host2"),
        attrs.evolve(_kn(), name="not-in-cluster"),
    ]
    (updated,) = k.outdated_attrs_nodes(cluster, current)
    assert updated.name == "host2"
    assert updated.labels == {"a": "1"}
