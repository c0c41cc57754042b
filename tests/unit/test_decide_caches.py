"""The memoisation behind ``decide()`` changes no result.

``cke_core.nodefilter`` remembers renders and node facts per cluster object,
``render.kubernetes`` the Node verdicts and static resources,
``render.components`` the proxy configuration templates, and
``status_from_json`` shares the values of identical node documents. Every test
here compares a decision made with warm caches (after other decisions on the
same or other clusters) with the one made from cold caches
(``strategy.clear_caches``), or a cached value with a freshly computed one.
"""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from cke_core import status as status_module
from cke_core.cluster import Cluster, Mount, Node, ProxyParams, ServiceParams, Taint
from cke_core.codec import structure
from cke_core.frozen import FrozenDict, freeze
from cke_core.nodefilter import NodeFilter
from cke_core.phases import Phase
from cke_core.problems import ConfigError
from cke_core.render import components as rc
from cke_core.render import kubernetes as rk
from cke_core.render.images import EngineSettings
from cke_core.status import (
    ClusterStatus,
    KubernetesNode,
    NodeStatus,
    ServiceStatus,
    status_from_json,
    status_to_json,
)
from cke_core.strategy import Decision, DecisionInputs, clear_caches, decide
from cke_core.testing import WORKER_ADDRESSES, StatusBuilder

W1, W2, W3 = WORKER_ADDRESSES
READY = StatusBuilder().with_k8s_resource_ready()


@pytest.fixture(autouse=True)
def cold() -> Iterator[None]:
    clear_caches()
    yield
    clear_caches()


def cold_decide(inputs: DecisionInputs) -> Decision:
    clear_caches()
    return decide(inputs)


def observe(status: ClusterStatus) -> ClusterStatus:
    """``status`` as an observation yields it: parsed anew from its JSON text."""
    return status_from_json(json.loads(json.dumps(status_to_json(status))))


def with_node(cluster: Cluster, address: str, **changes: Any) -> Cluster:
    return attrs.evolve(
        cluster,
        nodes=tuple(
            attrs.evolve(n, **changes) if n.address == address else n for n in cluster.nodes
        ),
    )


# --- decisions ------------------------------------------------------------------------


def test_converged_decision_is_the_same_warm_and_cold() -> None:
    inputs = READY.inputs()
    assert decide(inputs).phase is Phase.COMPLETED
    for _ in range(3):
        observed = attrs.evolve(inputs, status=observe(inputs.status))
        assert decide(observed) == cold_decide(observed) == Decision(Phase.COMPLETED)


def test_a_changed_node_status_is_seen_by_a_warm_cache() -> None:
    inputs = READY.inputs()
    decide(inputs)
    # Only W2's proxy changes; every other node status is the very same object.
    changed = READY.with_component(W2, "proxy", image="old").inputs()
    assert changed.cluster is inputs.cluster
    assert changed.status.nodes[W1] is inputs.status.nodes[W1]
    decision = decide(changed)
    assert [(op.name, op.targets) for op in decision.operations] == [("kube-proxy-restart", (W2,))]
    assert decision == cold_decide(changed)
    # And back: the remembered answers for the first status are still right.
    assert decide(inputs) == Decision(Phase.COMPLETED)


def test_each_status_change_is_decided_as_from_cold_caches() -> None:
    variants = [
        READY,
        READY.with_component(W1, "kubelet", running=False, is_healthy=False),
        READY.with_component(W3, "rivers", image="old"),
        READY.with_ssh_not_connected(W2),
        READY.with_component(W2, "api_server", running=True),
        READY.with_component(W3, "scheduler", running=True),
        READY.with_component(W1, "etcd_rivers", running=True),
        READY.with_node(W1, labels=FrozenDict({"cke.cybozu.com/stale": "x"})),
        READY.without_nodes(W3),
        READY.with_node(
            W2, unschedulable=True, annotations=FrozenDict({rk.ANNOTATION_REBOOT: "true"})
        ),
    ]
    warm = [decide(b.inputs()) for b in variants + variants[::-1]]
    cold_ = [cold_decide(b.inputs()) for b in variants + variants[::-1]]
    assert warm == cold_
    assert len(set(warm)) > 4  # the variants do decide differently


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            lambda c: with_node(c, W1, labels=FrozenDict({"cke.test/new": "yes"})),
            [("update-node", 1)],
            id="node-labels",
        ),
        pytest.param(
            lambda c: with_node(c, W2, taints=(Taint("cke.test/t", "", "NoSchedule"),)),
            [("update-node", 1)],
            id="node-taints",
        ),
        pytest.param(
            lambda c: attrs.evolve(
                c,
                options=attrs.evolve(
                    c.options, kube_proxy=ProxyParams(config=FrozenDict({"mode": "ipvs"}))
                ),
            ),
            [("kube-proxy-restart", 6)],
            id="proxy-config",
        ),
        pytest.param(
            lambda c: attrs.evolve(
                c,
                options=attrs.evolve(c.options, rivers=ServiceParams(extra_args=("--new-flag",))),
            ),
            [("rivers-restart", 6)],
            id="rivers-extra-args",
        ),
        pytest.param(
            lambda c: with_node(c, W3, hostname="renamed"),
            None,
            id="node-hostname",
        ),
    ],
)
def test_a_new_cluster_object_is_decided_afresh(
    change: Callable[[Cluster], Cluster], expected: list[tuple[str, int]] | None
) -> None:
    """Same status object, a changed spec: nothing remembered for the old spec leaks."""
    inputs = READY.inputs()
    assert decide(inputs) == Decision(Phase.COMPLETED)
    changed = attrs.evolve(inputs, cluster=change(inputs.cluster))
    decision = decide(changed)
    assert decision == cold_decide(changed)
    assert decision.phase is not Phase.COMPLETED
    if expected is not None:
        names = [(op.name, len(op.targets)) for op in decision.operations]
        for item in expected:
            assert item in names
    # The old spec is still decided as before (its memo is its own).
    assert decide(inputs) == Decision(Phase.COMPLETED)
    assert decide(changed) == decision


def test_two_clusters_never_share_answers() -> None:
    a = READY.inputs()
    b_cluster = with_node(a.cluster, W1, labels=FrozenDict({"cke.test/b": "1"}))
    b = attrs.evolve(a, cluster=b_cluster)
    # Interleave: every decision must equal its cold one.
    for inputs in (a, b, a, b, b, a):
        assert decide(inputs) == cold_decide(inputs)
        decide(a)
        decide(b)


def test_equal_but_distinct_cluster_objects_decide_alike() -> None:
    inputs = READY.inputs()
    first = decide(inputs)
    copy = attrs.evolve(inputs, cluster=attrs.evolve(inputs.cluster))
    assert copy.cluster == inputs.cluster
    assert copy.cluster is not inputs.cluster
    assert decide(copy) == first


def test_settings_change_invalidates() -> None:
    inputs = READY.inputs()
    decide(inputs)
    images = attrs.evolve(inputs.settings.images, tools="ghcr.io/cybozu-go/cke-tools:next")
    changed = attrs.evolve(inputs, settings=attrs.evolve(inputs.settings, images=images))
    decision = decide(changed)
    assert decision == cold_decide(changed)
    assert decision.phase is Phase.RIVERS


# --- NodeFilter --------------------------------------------------------------------------


def test_predicates_answer_alike_for_equal_but_distinct_nodes() -> None:
    inputs = READY.with_component(W2, "proxy", image="old").inputs()
    nf = NodeFilter(inputs.cluster, inputs.status, inputs.settings)
    for node in inputs.cluster.nodes:
        twin = attrs.evolve(node)
        assert twin is not node
        for name in ("proxy_outdated", "rivers_outdated", "kubelet_outdated", "ssh_connected"):
            assert getattr(nf, name)(twin) == getattr(nf, name)(node)
    outsider = Node(address="10.0.0.99")
    assert not nf.ssh_connected(outsider)
    assert not nf.proxy_outdated(outsider)


def test_select_over_all_nodes_matches_a_plain_scan() -> None:
    inputs = (
        READY.with_component(W2, "proxy", image="old")
        .with_component(W1, "api_server", running=True)
        .with_ssh_not_connected(W3)
        .inputs()
    )
    nf = NodeFilter(inputs.cluster, inputs.status, inputs.settings)
    assert [n.address for n in nf.select(nf.stray_any, nf.nodes)] == [W1]
    predicates = [
        nf.ssh_connected,
        nf.ssh_not_connected,
        nf.rivers_stopped,
        nf.rivers_outdated,
        nf.proxy_outdated,
        nf.proxy_stopped,
        nf.kubelet_stopped,
        nf.stray_api_server,
        nf.stray_any,
    ]
    for _ in range(2):  # the second round answers from the remembered selections
        again = NodeFilter(inputs.cluster, inputs.status, inputs.settings)
        for predicate in predicates:
            bound = getattr(again, predicate.__name__)
            plain = tuple(n for n in inputs.cluster.nodes if bound(n))
            assert again.select(bound, again.nodes) == plain
            assert again.select(bound, list(again.nodes)) == plain
    assert nf.select(nf.proxy_outdated, nf.nodes) == tuple(
        n for n in inputs.cluster.nodes if n.address == W2
    )


def test_unrecognized_kubelets() -> None:
    inputs = READY.without_nodes(W1).inputs()
    nf = NodeFilter(inputs.cluster, inputs.status, inputs.settings)
    expected = tuple(n for n in inputs.cluster.nodes if nf.kubelet_unrecognized(n))
    assert [n.address for n in expected] == [W1]
    assert nf.unrecognized_kubelets(nf.nodes) == expected
    assert nf.unrecognized_kubelets(list(nf.nodes)) == expected


# --- render caches -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        None,
        {},
        {"hostnameOverride": "fixed"},
        {"hostnameOverride": None},
        {"hostnameOverride": {"a": 1}},
        {"mode": "ipvs", "conntrack": {"maxPerCore": 0}},
        {"clientConnection": 3, "metricsBindAddress": None},
    ],
)
def test_proxy_config_from_its_template_is_the_direct_rendering(config: object) -> None:
    user = freeze(config) if config is not None else None
    cluster = Cluster(
        nodes=(Node(address="10.0.0.1"), Node(address="10.0.0.2", hostname="two")),
        options=attrs.evolve(Cluster().options, kube_proxy=ProxyParams(config=user)),
    )
    for node in cluster.nodes:
        for _ in range(2):
            got = rc.proxy_config(cluster, node)
            direct = rc._render_proxy_config(node.nodename, user)
            assert got == direct
            assert repr(got) == repr(direct)  # same key order, same types


def test_proxy_config_follows_the_users_document() -> None:
    node = Node(address="10.0.0.1")
    base = Cluster(nodes=(node,))
    first = rc.proxy_config(base, node)
    changed = attrs.evolve(
        base,
        options=attrs.evolve(
            base.options, kube_proxy=ProxyParams(config=FrozenDict({"mode": "ipvs"}))
        ),
    )
    assert rc.proxy_config(changed, node)["mode"] == "ipvs"
    assert "mode" not in rc.proxy_config(base, node)
    assert rc.proxy_config(base, node) == first


def test_params_equal_keeps_ckes_semantics() -> None:
    a = ServiceParams(extra_args=("x",), extra_binds=(Mount("/a", "/a", True, "shared", "z"),))
    b = ServiceParams(extra_args=("x",), extra_binds=(Mount("/a", "/a", True),))
    assert a != b
    assert rc.params_equal(a, b)
    assert rc.params_equal(a, a)
    assert not rc.params_equal(a, attrs.evolve(a, extra_args=("y",)))
    init = ServiceParams(extra_args=("--name=x", "--initial-cluster=a"))
    assert rc.etcd_params_equal(init, ServiceParams(extra_args=("--name=x",)))
    assert rc.etcd_params_equal(init, init)


def test_static_resources_are_memoised_by_image() -> None:
    settings = EngineSettings()
    first = rk.static_resources(settings.images)
    assert rk.static_resources(settings.images) is first
    other = attrs.evolve(settings.images, coredns="coredns:next")
    changed = rk.static_resources(other)
    assert changed != first
    rk.clear_caches()
    assert rk.static_resources(settings.images) == first


def test_outdated_attrs_nodes_follows_cluster_and_nodes() -> None:
    inputs = READY.inputs()
    cluster, k8s_nodes = inputs.cluster, inputs.status.kubernetes.nodes
    assert rk.outdated_attrs_nodes(cluster, k8s_nodes) == ()
    assert rk.outdated_attrs_nodes(cluster, k8s_nodes) == ()
    relabelled = with_node(cluster, W1, labels=FrozenDict({"cke.test/x": "y"}))
    (outdated,) = rk.outdated_attrs_nodes(relabelled, k8s_nodes)
    assert outdated.labels["cke.test/x"] == "y"
    # Same cluster, a Node object that lost a label cluster.yml sets.
    stale = tuple(attrs.evolve(n, labels=FrozenDict()) if n.name == W1 else n for n in k8s_nodes)
    assert [n.name for n in rk.outdated_attrs_nodes(cluster, stale)] == [W1]
    assert rk.outdated_attrs_nodes(cluster, k8s_nodes) == ()


# --- status_from_json sharing --------------------------------------------------------------------


def test_identical_node_documents_give_the_same_objects() -> None:
    status = READY.status
    doc = json.loads(json.dumps(status_to_json(status)))
    first = status_from_json(doc)
    second = status_from_json(json.loads(json.dumps(doc)))
    assert first == second == status
    for address, node in first.nodes.items():
        assert second.nodes[address] is node
    for a, b in zip(first.kubernetes.nodes, second.kubernetes.nodes, strict=True):
        assert a is b


def test_shared_parse_equals_full_structuring() -> None:
    doc = json.loads(json.dumps(status_to_json(READY.status)))
    value, problems, _ = structure(doc["status"], ClusterStatus)
    assert not problems
    assert status_from_json(doc) == value
    assert value is not None
    assert list(status_from_json(doc).nodes) == list(value.nodes)


def test_value_types_are_kept_apart() -> None:
    """``1``, ``1.0``, ``true`` and ``"1"`` are different documents."""
    base = json.loads(json.dumps(status_to_json(READY.status)))

    def with_config_value(value: object) -> ClusterStatus:
        doc = json.loads(json.dumps(base))
        doc["status"]["nodes"][W1]["proxy"]["config"]["x"] = value
        return status_from_json(doc)

    seen = [with_config_value(v).nodes[W1].proxy.config["x"] for v in (1, 1.0, True, "1", 1)]  # type: ignore[index]
    assert [type(v) for v in seen] == [int, float, bool, str, int]


def test_problems_are_still_reported_after_a_good_parse() -> None:
    doc = json.loads(json.dumps(status_to_json(READY.status)))
    status_from_json(doc)
    bad = json.loads(json.dumps(doc))
    bad["status"]["nodes"][W1]["sssh_connected"] = True
    with pytest.raises(ConfigError) as error:
        status_from_json(bad)
    assert any("sssh_connected" in p.path for p in error.value.problems)
    bad = json.loads(json.dumps(doc))
    bad["status"]["kubernetes"]["nodes"][0]["ready"] = "yes"
    with pytest.raises(ConfigError):
        status_from_json(bad)
    bad = json.loads(json.dumps(doc))
    bad["status"]["nodes"][W1] = None
    with pytest.raises(ConfigError):
        status_from_json(bad)
    bad = json.loads(json.dumps(doc))
    bad["status"]["reboot_queue"]["next_candidates"] = [7]
    with pytest.raises(ConfigError) as error:
        status_from_json(bad)
    assert [p.path for p in error.value.problems] == ["status.reboot_queue.next_candidates[0]"]


def test_a_non_string_key_is_not_confused_with_a_string_key() -> None:
    doc = json.loads(json.dumps(status_to_json(READY.status)))
    doc["status"]["nodes"][W1]["proxy"]["config"]["1"] = "x"
    status_from_json(doc)
    bad = json.loads(json.dumps(doc))
    config = bad["status"]["nodes"][W1]["proxy"]["config"]
    config[1] = config.pop("1")
    with pytest.raises(ConfigError):
        status_from_json(bad)


def test_zero_node_status_is_shared_too() -> None:
    status = ClusterStatus(nodes=FrozenDict({a: NodeStatus(ssh_connected=True) for a in "abc"}))
    parsed = observe(status)
    assert parsed == status
    assert parsed.nodes["a"] is parsed.nodes["b"] is parsed.nodes["c"]
    assert isinstance(parsed.kubernetes.nodes, tuple)
    assert KubernetesNode() == KubernetesNode()


# --- FrozenDict ------------------------------------------------------------------------------


def test_frozen_dict_mapping_methods() -> None:
    d: FrozenDict[str, int] = FrozenDict({"a": 1, "b": 2})
    assert d.get("a") == 1
    assert d.get("z") is None
    assert d.get("z", 3) == 3
    assert "a" in d
    assert "z" not in d
    assert list(d.keys()) == ["a", "b"]
    assert d.keys() == {"a", "b"}
    assert list(d.items()) == [("a", 1), ("b", 2)]
    assert list(d.values()) == [1, 2]
    assert dict(d) == {"a": 1, "b": 2}
    assert d == {"a": 1, "b": 2}
    assert d == FrozenDict({"b": 2, "a": 1})
    with pytest.raises(TypeError):
        _ = ([],) in d  # type: ignore[comparison-overlap]  # unhashable, as for a dict


def test_shared_documents_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_module, "SHARED_MEMO_SLACK", 2)
    for version in range(5):
        nodes = {
            f"10.0.{version}.{i}": NodeStatus(
                ssh_connected=True, rivers=ServiceStatus(running=True, image=f"i:{version}.{i}")
            )
            for i in range(4)
        }
        parsed = observe(ClusterStatus(nodes=FrozenDict(nodes)))
        assert parsed.nodes == nodes
        assert len(status_module._node_memo) <= 4 + 2
    # The latest status's documents are all kept: parsing it again shares them.
    again = observe(ClusterStatus(nodes=FrozenDict(nodes)))
    assert all(again.nodes[a] is parsed.nodes[a] for a in nodes)


def test_caches_do_not_keep_observations_alive() -> None:
    inputs = READY.inputs()
    fresh = FrozenDict({a: attrs.evolve(s) for a, s in inputs.status.nodes.items()})
    observed = attrs.evolve(inputs, status=attrs.evolve(inputs.status, nodes=fresh))
    assert decide(observed) == Decision(Phase.COMPLETED)
    ref = weakref.ref(fresh[W1])
    del observed, fresh
    gc.collect()
    assert ref() is None
