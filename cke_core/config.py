"""Loading operator documents: text in, a validated value and every problem out.

``check_*`` never raises on bad input: it returns what could be understood and
all problems found (syntax, structure, then semantics), so a tool can print
them together. ``load_*`` is the strict form for callers that need a valid
value or an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

from cke_core import codec
from cke_core.cluster import Cluster
from cke_core.constraints import Constraints
from cke_core.documents import parse_document
from cke_core.problems import ConfigError, Problem, is_under
from cke_core.validation import validate_cluster, validate_constraints

T = TypeVar("T")


@attrs.frozen
class Checked(Generic[T]):
    """The outcome of checking a document: the value (if usable) and its problems."""

    value: T | None
    problems: tuple[Problem, ...] = ()

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")

    def unwrap(self) -> T:
        """The value, or ConfigError with every error."""
        if self.errors or self.value is None:
            raise ConfigError(self.errors or (Problem("", "empty document"),))
        return self.value


def check_raw(raw: object, cls: type[T], validate: Callable[[T], list[Problem]]) -> Checked[T]:
    """Structure and validate an already-parsed document."""
    if raw is None:
        return Checked(None, (Problem("", "the document is empty"),))
    value, problems, broken = codec.structure(raw, cls)
    if value is None:
        return Checked(None, tuple(problems))
    semantic = codec.silence_under(validate(value), broken)
    # A warning about a section whose input was partly discarded may be caused by
    # the discarding (a dropped `control_plane: "true"` leaves no control plane).
    semantic = [
        p for p in semantic if p.severity == "error" or not any(is_under(b, p.path) for b in broken)
    ]
    return Checked(value, tuple(problems + semantic))


def _check_text(text: str, cls: type[T], validate: Callable[[T], list[Problem]]) -> Checked[T]:
    try:
        raw = parse_document(text)
    except ConfigError as exc:
        return Checked(None, exc.problems)
    return check_raw(raw, cls, validate)


def check_cluster(text: str) -> Checked[Cluster]:
    """Parse, apply CKE's defaults and validate a cluster.yml (YAML or JSON)."""
    return _check_text(text, Cluster, validate_cluster)


def check_constraints(text: str) -> Checked[Constraints]:
    """Parse and validate constraints (CKE's hyphenated names; missing ones take defaults)."""
    return _check_text(text, Constraints, validate_constraints)


def load_cluster(text: str) -> Cluster:
    return check_cluster(text).unwrap()


def load_constraints(text: str) -> Constraints:
    return check_constraints(text).unwrap()
