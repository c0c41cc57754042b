"""The core reads no clock and draws no random numbers (ADR 0001).

import-linter keeps I/O modules out of ``cke_core``; this test catches what an
import contract cannot: calls such as ``datetime.now()`` or ``uuid4()`` on
modules the core may import for pure purposes (``datetime``, ``uuid``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "cke_core"

FORBIDDEN_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("uuid", "uuid1"),
    ("uuid", "uuid4"),
}
FORBIDDEN_NAMES = {"uuid1", "uuid4"}


def _offences(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if (name, node.attr) in FORBIDDEN_CALLS:
                found.append(f"line {node.lineno}: {name}.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "uuid":
            found += [
                f"line {node.lineno}: uuid.{a.name}"
                for a in node.names
                if a.name in FORBIDDEN_NAMES
            ]
    return found


def test_the_scanner_finds_clock_and_random_calls() -> None:
    assert _offences("import datetime\nx = datetime.datetime.now()") == ["line 2: datetime.now"]
    assert _offences("from uuid import uuid4") == ["line 1: uuid.uuid4"]
    assert _offences("import datetime\nx = datetime.timedelta(seconds=1)") == []


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_reads_no_clock_and_no_randomness(path: Path) -> None:
    assert _offences(path.read_text()) == []
