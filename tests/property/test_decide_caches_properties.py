"""``decide()`` remembers renders and node facts across decisions
(``cke_core.nodefilter``): a decision made with warm caches equals the one made
from cold caches, over generated specs and reachable, faulty statuses."""

from __future__ import annotations

import json

import attrs
from hypothesis import given
from strategies_decide import Scenario, scenarios

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
