"""``decide()`` remembers renders and node facts across decisions
(``cke_core.nodefilter``): a decision made with warm caches equals the one made
from cold caches, over generated specs and reachable, faulty statuses."""

from __future__ import annotations

import inspect
import json
import re

import attrs
from hypothesis import given
from hypothesis import strategies as st
from strategies_decide import Scenario, base_specs, scenarios

from cke_core import nodefilter
from cke_core.cluster import Cluster, Taint
from cke_core.frozen import FrozenDict
from cke_core.render import components as rc
from cke_core.status import ClusterStatus, status_from_json, status_to_json
from cke_core.strategy import clear_caches, decide


def observe(status: ClusterStatus) -> ClusterStatus:
    return status_from_json(json.loads(json.dumps(status_to_json(status))))


@given(scenarios())
def test_warm_decisions_equal_cold_ones(scenario: Scenario) -> None:
    inputs = scenario.inputs
    clear_caches()
    cold = decide(inputs)
    # Warm every cache with the status before the faults (most node statuses are
    # the same objects), then decide again, and on new observations of both.
    before = attrs.evolve(inputs, status=scenario.base)
    cold_before = decide(before)
    assert decide(inputs) == cold
    observed = attrs.evolve(inputs, status=observe(inputs.status))
    assert decide(observed) == cold
    assert decide(attrs.evolve(before, status=observe(scenario.base))) == cold_before
    assert decide(observed) == cold
    clear_caches()
    assert decide(observed) == cold


#: Every render node facts use (``cke_core.nodefilter``): of the cluster, and
#: of the cluster and one node.
CLUSTER_RENDERS = (rc.rivers_params, rc.etcd_rivers_params, rc.scheduler_config)
NODE_RENDERS = (
    rc.etcd_params,
    rc.api_server_params,
    rc.controller_manager_params,
    rc.scheduler_params,
    rc.kubelet_params,
    rc.proxy_params,
    rc.proxy_config,
)

_names = st.sampled_from(["a", "cke.cybozu.com/role", "node-role.kubernetes.io/x", "k8s.io/z"])
_metadata = st.dictionaries(_names, st.sampled_from(["", "1", "true", "x y"]), max_size=3)
_taints = st.lists(
    st.builds(
        Taint,
        key=_names,
        value=st.sampled_from(["", "v"]),
        effect=st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
    ),
    max_size=2,
)


@given(base_specs(), st.data())
def test_node_facts_do_not_depend_on_node_metadata(cluster: Cluster, data: st.DataObject) -> None:
    """Node facts are computed from the cluster's basis, its nodes without
    labels, annotations and taints, and shared by every cluster with that
    basis (a cluster.yml change of node labels keeps them): each render they
    use gives the same value with and without that metadata."""
    nodes = tuple(
        attrs.evolve(
            node,
            labels=FrozenDict(data.draw(_metadata)),
            annotations=FrozenDict(data.draw(_metadata)),
            taints=tuple(data.draw(_taints)),
        )
        for node in cluster.nodes
    )
    decorated = attrs.evolve(cluster, nodes=nodes)
    basis_nodes = tuple(map(nodefilter.basis_node, nodes))
    basis = attrs.evolve(cluster, nodes=basis_nodes)
    for render in CLUSTER_RENDERS:
        assert render(decorated) == render(basis)
    for name in rc.CONTAINERS:
        assert rc.extra_params(decorated, name) == rc.extra_params(basis, name)
    for node, bare in zip(nodes, basis_nodes, strict=True):
        assert not bare.labels
        assert not bare.annotations
        assert not bare.taints
        for node_render in NODE_RENDERS:
            assert node_render(decorated, node) == node_render(basis, bare)
        assert rc.kubelet_config(decorated, node, None) == rc.kubelet_config(basis, bare, None)


def test_the_renders_listed_are_those_node_facts_use() -> None:
    """The list above stays complete: every ``rc.`` function ``nodefilter``
    calls is a render checked above or a comparison of rendered values."""
    used = set(re.findall(r"\brc\.([a-z][a-z_]*)", inspect.getsource(nodefilter)))
    checked = {f.__name__ for f in (*CLUSTER_RENDERS, *NODE_RENDERS)}
    checked |= {"extra_params", "kubelet_config"}
    comparisons = {"service_outdated", "etcd_service_outdated", "kubelet_runtime_changed"}
    assert used == checked | comparisons
