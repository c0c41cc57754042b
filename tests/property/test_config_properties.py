"""Properties of loading cluster.yml: valid input round-trips, bad input never crashes.

(a) a valid configuration written as YAML or JSON reads back as the same
    value with no problem at all;
(b) the normalised YAML is a fixed point of load-then-dump;
(c) random damage to a valid document gives problems, never an exception,
    and every problem names a field;
(d) random text gives problems, never an exception.

The number of examples comes from the Hypothesis profile (tests/conftest.py):
``HYPOTHESIS_PROFILE=deep`` runs many more.
"""

from __future__ import annotations

import copy
import json
import string
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st
from strategies_config import clusters

from cke_core import codec
from cke_core.cluster import Cluster
from cke_core.config import Checked, check_cluster, check_raw
from cke_core.documents import dump_json, dump_yaml
from cke_core.validation import validate_cluster

# --- (a) and (b): valid configurations ---------------------------------------------------


@given(clusters())
def test_yaml_round_trip_and_fixed_point(cluster: Cluster) -> None:
    assert validate_cluster(cluster) == []  # the strategy draws valid values only
    text = dump_yaml(codec.unstructure(cluster))
    checked = check_cluster(text)
    assert checked.problems == ()
    assert checked.value == cluster
    # (b) what was read writes back to the very same text
    assert dump_yaml(codec.unstructure(checked.value)) == text


@given(clusters())
def test_json_round_trip_and_fixed_point(cluster: Cluster) -> None:
    data = codec.unstructure(cluster)
    text = dump_json(data)
    assert json.loads(text) == data
    checked = check_cluster(text)
    assert checked.problems == ()
    assert checked.value == cluster
    assert dump_json(codec.unstructure(checked.value)) == text


# --- (c): damaged documents --------------------------------------------------------------

Location = tuple[Any, Any]  # (container, key or index)

#: Values of every type a YAML document can give.
ANY_VALUE = st.one_of(
    st.integers(-5, 2**64),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
    st.lists(st.integers() | st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=3), max_size=3),
    st.just({"address": "10.0.0.11", "user": "u"}),
)

#: Keys a mistyped or invented entry may have; YAML keys need not be strings.
ANY_KEY = st.one_of(
    st.text(min_size=1, max_size=10),
    st.sampled_from(["name", "nodes", "address", "control_plane", "config", "kube-api", "etc"]),
    st.integers(-2, 2),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)


def locations(document: Any) -> list[Location]:
    """Every (container, key) in ``document``, at every depth."""
    found: list[Location] = []
    stack = [document]
    while stack:
        container = stack.pop()
        keys = list(container) if isinstance(container, dict) else range(len(container))
        for key in keys:
            found.append((container, key))
            child = container[key]
            if isinstance(child, dict | list):
                stack.append(child)
    return found


def containers(document: Any) -> list[Any]:
    return [document] + [c[k] for c, k in locations(document) if isinstance(c[k], dict | list)]


def typo(draw: st.DrawFn, key: str) -> str:
    """Delete, double, swap or replace one character, or change its case or separator."""
    if not key:
        return "x"
    i = draw(st.integers(0, len(key) - 1))
    kind = draw(st.sampled_from(["delete", "double", "swap", "replace", "case", "separator"]))
    if kind == "delete":
        return key[:i] + key[i + 1 :] or "y"
    if kind == "double":
        return key[:i] + key[i] + key[i:]
    if kind == "swap" and len(key) > 1:
        j = min(i + 1, len(key) - 1)
        i = j - 1
        return key[:i] + key[j] + key[i] + key[j + 1 :]
    if kind == "case":
        return key.swapcase() if key.swapcase() != key else key + "X"
    if kind == "separator":
        swapped = key.replace("_", "-") if "_" in key else key.replace("-", "_")
        return swapped if swapped != key else key + "_"
    return key[:i] + draw(st.sampled_from(string.ascii_letters + "-_")) + key[i + 1 :]


@st.composite
def damaged_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with one to four random changes at random depths."""
    document: dict[str, Any] = codec.unstructure(draw(clusters()))
    for _ in range(draw(st.integers(1, 4))):
        places = locations(document)
        action = draw(st.sampled_from(["delete", "rename", "retype", "insert", "append"]))
        if action in ("delete", "rename", "retype") and places:
            container, key = draw(st.sampled_from(places))
            if action == "retype":
                container[key] = draw(ANY_VALUE)
            elif isinstance(container, list) or action == "delete":
                del container[key]
            else:
                value = container.pop(key)
                new_key = typo(draw, key) if isinstance(key, str) else draw(ANY_KEY)
                container[new_key] = value
        else:
            target = draw(st.sampled_from(containers(document)))
            if isinstance(target, dict):
                target[draw(ANY_KEY)] = draw(ANY_VALUE)
            else:
                target.append(draw(ANY_VALUE))
    return document


def assert_problems_are_well_formed(checked: Checked[Cluster], *, root_ok: bool) -> None:
    for problem in checked.problems:
        assert isinstance(problem.path, str)
        assert isinstance(problem.message, str)
        assert problem.message
        assert "\n" not in problem.message
        assert problem.severity in ("error", "warning")
        if not root_ok:
            assert problem.path, problem
    if not checked.errors:
        # Whatever is accepted can be printed, in both formats.
        assert checked.value is not None
        data = codec.unstructure(checked.value)
        dump_yaml(data)
        dump_json(data)


@given(damaged_documents())
def test_damaged_documents_give_problems_not_exceptions(document: dict[str, Any]) -> None:
    checked = check_raw(copy.deepcopy(document), Cluster, validate_cluster)
    assert_problems_are_well_formed(checked, root_ok=False)
    # The same damage written as YAML text reads back to the same problems.
    from_text = check_cluster(dump_yaml(document))
    assert_problems_are_well_formed(from_text, root_ok=False)
    assert from_text.problems == checked.problems
    # Damage that is accepted must read back as what was written: nothing is
    # silently dropped (the normalised form only adds defaults).
    event("damage rejected" if checked.errors else "damage accepted")
    if not checked.errors:
        assert checked.value is not None
        normalised = codec.unstructure(checked.value)
        assert _subset(document, normalised), (document, normalised)


def _subset(given_data: Any, normalised: Any) -> bool:
    """Everything the operator wrote is in the normalised form (which adds defaults)."""
    if isinstance(given_data, dict):
        if not isinstance(normalised, dict):
            return False
        for key, value in given_data.items():
            if value is None:
                continue  # null means "the default"
            if key in normalised and (_subset(value, normalised[key]) or value == ""):
                continue  # present; "" may mean the default (volume_name, cri_endpoint ...)
            return False
        return True
    if isinstance(given_data, list):
        return (
            isinstance(normalised, list)
            and len(given_data) == len(normalised)
            and all(_subset(g, n) for g, n in zip(given_data, normalised, strict=True))
        )
    return bool(given_data == normalised)


# --- (d): random text --------------------------------------------------------------------

YAML_PIECES = st.sampled_from(
    [
        "name:", "nodes:", "- ", "  ", "\n", ":", " ", "[", "]", "{", "}", ",", "&a ", "*a",
        "!!str ", "!!binary ", "'", '"', "#", "\t", "? ", "|\n", ">\n", "---\n", "...\n",
        "address: 10.0.0.1", "control_plane: true", "null", "~", "1e3", "0x1F", "2001-01-01",
        "options:", "kube-api:", "config:", "%YAML 1.1\n", "<<: *a", "\\u0000", "\x00", "\ufeff",
    ]
)  # fmt: skip


@given(st.text())
def test_random_text_never_raises(text: str) -> None:
    assert_problems_are_well_formed(check_cluster(text), root_ok=True)


@given(st.binary())
def test_random_bytes_as_text_never_raise(data: bytes) -> None:
    for text in (data.decode("latin-1"), data.decode("utf-8", "surrogateescape")):
        assert_problems_are_well_formed(check_cluster(text), root_ok=True)


@given(st.lists(YAML_PIECES, max_size=40).map("".join))
def test_random_yaml_like_text_never_raises(text: str) -> None:
    assert_problems_are_well_formed(check_cluster(text), root_ok=True)


@given(st.lists(YAML_PIECES | st.sampled_from(['{"', '":', '"a"', "[1,", "]}"]), max_size=30))
def test_random_json_like_text_never_raises(pieces: list[str]) -> None:
    assert_problems_are_well_formed(check_cluster("{" + "".join(pieces)), root_ok=True)
