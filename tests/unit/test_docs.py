"""The documentation stays true to the code: every configuration field is documented."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from cke_core.cluster import Cluster
from cke_core.constraints import Constraints
from cke_core.fields import wire_name

ROOT = Path(__file__).resolve().parents[2]


def _wire_names(cls: type) -> set[str]:
    """Every wire name reachable from ``cls`` through attrs-typed fields."""
    names: set[str] = set()
    stack: list[type] = [cls]
    seen: set[type] = set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        attrs.resolve_types(current)
        for field in attrs.fields(current):
            names.add(wire_name(field))
            for candidate in _classes_in(field.type):
                stack.append(candidate)
    return names


def _classes_in(annotation: object) -> list[type]:
    if isinstance(annotation, type) and attrs.has(annotation):
        return [annotation]
    return [c for arg in getattr(annotation, "__args__", ()) for c in _classes_in(arg)]


@pytest.mark.parametrize("model", [Cluster, Constraints])
def test_every_configuration_field_is_in_the_reference(model: type) -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`([A-Za-z_-]+)`", text))
    missing = sorted(_wire_names(model) - documented)
    assert not missing, f"docs/configuration.md does not mention: {missing}"


def _subclasses(base: type) -> list[type]:
    found: list[type] = []
    for sub in base.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def test_every_phase_operation_and_command_is_in_the_operations_reference() -> None:
    import importlib
    import pkgutil

    import cke_core.commands
    import cke_core.ops
    from cke_core.ops.base import Command, Operation
    from cke_core.phases import Phase

    for package in (cke_core.ops, cke_core.commands):
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
    text = (ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`([a-z0-9-]+)`", text))
    names = {phase.value for phase in Phase}
    names |= {
        cls.NAME
        for cls in _subclasses(Operation) + _subclasses(Command)
        if cls.NAME and cls.__module__.startswith(("cke_core.ops.", "cke_core.commands."))
    }
    missing = sorted(names - documented)
    assert not missing, f"docs/operations.md does not mention: {missing}"
