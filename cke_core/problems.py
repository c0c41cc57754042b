"""Problems found in operator input, each named by the path of the field.

A path reads like the document: ``nodes[3].address``,
``options.kube-api.audit_log_policy``, ``nodes[0].labels["app/x"]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import attrs

Severity = Literal["error", "warning"]


@attrs.frozen
class Problem:
    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        where = f"{self.path}: " if self.path else ""
        return f"{prefix}{where}{self.message}"


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def warnings(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "warning"]


class ConfigError(ValueError):
    """Raised when input cannot be accepted; carries every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def join_path(base: str, segment: str | int) -> str:
    """Append a field name, list index or mapping key to a path."""
    if isinstance(segment, int):
        return f"{base}[{segment}]"
    if not base:
        return segment
    return f"{base}.{segment}"


def key_path(base: str, key: str) -> str:
    """Path of a mapping entry whose key is data (a label name, an env var ...)."""
    return f'{base}["{key}"]'


def is_under(path: str, ancestor: str) -> bool:
    """Whether ``path`` is ``ancestor`` or lies inside it."""
    if not ancestor:
        return True
    return path == ancestor or (path.startswith(ancestor) and path[len(ancestor)] in ".[")
