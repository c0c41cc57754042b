"""(De)serialisation of the core's values with cattrs, strictly and with good errors.

Rules of the wire format, which is CKE's:

* keys are CKE's names (``fields.wire_name``), unknown keys are rejected and
  the closest known one is suggested, so ``control-plane: true`` cannot
  silently produce a worker;
* scalars are typed strictly: ``"3"`` is not an integer, ``yes`` (a YAML
  boolean) is not a string, a string is not a list of characters;
* ``null`` means "not given" (CKE's nil pointers and empty Go values), so the
  default applies;
* output omits ``None`` and lists every other field, so the normalised form
  shows every value the engine uses.

``structure`` never stops at the first problem: it reports every problem in
the document, then repairs the raw data (drops unknown or mistyped fields,
replaces mistyped list items by empty values) so the caller can still run
semantic validation over everything that was well formed.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import enum
import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, get_args, get_origin

import attrs
from cattrs import Converter
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from cke_core.fields import INT_AS_STRING, wire_name
from cke_core.frozen import FrozenDict, freeze
from cke_core.problems import Problem, is_under, join_path, key_path
from cke_core.timefmt import format_rfc3339, parse_rfc3339, to_utc

T = TypeVar("T")

#: A raw path: wire keys, list indices and mapping keys from the root.
RawPath = tuple[str | int, ...]

_MAX_REPAIR_ROUNDS = 16


def describe(value: Any) -> str:
    """Name a raw value's kind the way an operator reads YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


class _TypeMismatch(TypeError):
    def __init__(self, expected: str, value: Any) -> None:
        hint = ""
        if expected == "a string" and isinstance(value, bool | int | float):
            hint = " (quote it)"
        super().__init__(f"expected {expected}, got {describe(value)}{hint}")


def _structure_str(value: Any, _: Any) -> str:
    if isinstance(value, str):
        return value
    raise _TypeMismatch("a string", value)


def _structure_bool(value: Any, _: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _TypeMismatch("true or false", value)


def _structure_int(value: Any, _: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _TypeMismatch("an integer", value)


def _structure_any(value: Any, _: Any) -> Any:
    """Free-form data (a partial Kubernetes configuration): JSON values only.

    YAML can also give dates, binary, sets and non-string keys, which Kubernetes'
    JSON documents cannot hold (and which ``-o json`` could not print).
    """
    _check_json_value(value, "")
    return freeze(value)


def _check_json_value(value: Any, where: str) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float) and math.isfinite(value):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NotJSON(f"a key {describe(key)}", where)
            _check_json_value(item, f"{where}.{key}")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]")
        return
    raise _NotJSON(describe(value), where)


class _NotJSON(TypeError):
    def __init__(self, found: str, where: str) -> None:
        at = f" at {where.lstrip('.')}" if where else ""
        super().__init__(f"expected JSON data, got {found}{at} (quote it if it is text)")


def _structure_datetime(value: Any, _: Any) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return to_utc(value)
    if not isinstance(value, str):
        raise TypeError(f"expected an RFC 3339 time string, got {describe(value)}")
    return parse_rfc3339(value)


def _structure_str_enum(value: Any, cl: type[enum.StrEnum]) -> enum.StrEnum:
    choices = ", ".join(member.value for member in cl)
    if isinstance(value, str):
        try:
            return cl(value)
        except ValueError:
            raise ValueError(f"expected one of {choices}, got {value!r}") from None
    raise TypeError(f"expected one of {choices}, got {describe(value)}")


_DECIMAL = re.compile(r"[0-9]+\Z")


def _structure_int_as_string(value: Any, _: Any) -> int:
    if isinstance(value, str) and _DECIMAL.match(value):
        return int(value)
    raise ValueError(
        f'expected a decimal integer in a string (as CKE writes "index": "12"), '
        f"got {describe(value)}"
    )


def _is_homogeneous_tuple(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_frozen_dict(t: Any) -> bool:
    return get_origin(t) is FrozenDict or t is FrozenDict


def _optional_inner(t: Any) -> Any | None:
    """``X`` for ``X | None``, else None."""
    if get_origin(t) in (typing.Union, types.UnionType):
        args = [a for a in get_args(t) if a is not type(None)]
        if len(args) == 1 and len(get_args(t)) == 2:
            return args[0]
    return None


def zero_value(t: Any) -> Any:
    """The raw value that structures to an empty ``t``; used to repair a mistyped item."""
    if attrs.has(t) or _is_frozen_dict(t):
        return {}
    if _is_homogeneous_tuple(t):
        return []
    return {str: "", bool: False, int: 0}.get(t)


def make_converter() -> Converter:
    """The converter for every model of the core."""
    conv = Converter()
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(typing.Any, _structure_any)
    # StrEnum subclasses str: without its own hook the str hook would accept any value.
    conv.register_structure_hook(enum.StrEnum, _structure_str_enum)
    conv.register_unstructure_hook(enum.StrEnum, lambda value: str(value.value))
    conv.register_structure_hook(datetime.datetime, _structure_datetime)
    conv.register_unstructure_hook(datetime.datetime, format_rfc3339)

    def structure_tuple(value: Any, t: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise _TypeMismatch("a list", value)
        element = get_args(t)[0]
        items: list[Any] = []
        failures: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(conv.structure(item, element))
            except Exception as exc:
                exc.add_note(IterableValidationNote(f"@ index {index}", index, element))
                failures.append(exc)
        if failures:
            raise IterableValidationError(f"While structuring {t!r}", failures, t)
        return tuple(items)

    def structure_mapping(value: Any, t: Any) -> FrozenDict[Any, Any]:
        if not isinstance(value, Mapping):
            raise _TypeMismatch("a mapping", value)
        args = get_args(t) or (str, typing.Any)
        result: dict[Any, Any] = {}
        failures: list[Exception] = []
        for key, item in value.items():
            try:
                if not isinstance(key, str):
                    raise _TypeMismatch("a string key", key)
                result[key] = conv.structure(item, args[1])
            except Exception as exc:
                exc.add_note(IterableValidationNote(f"@ key {key!r}", str(key), args[1]))
                failures.append(exc)
        if failures:
            raise IterableValidationError(f"While structuring {t!r}", failures, t)
        return FrozenDict(result)

    def attrs_structure_factory(cl: Any) -> Callable[[Any, Any], Any]:
        attrs.resolve_types(cl)
        overrides = {
            a.name: override(
                rename=wire_name(a),
                struct_hook=_structure_int_as_string if a.metadata.get(INT_AS_STRING) else None,
            )
            for a in attrs.fields(cl)
            if wire_name(a) != a.name or a.metadata.get(INT_AS_STRING)
        }
        generated = make_dict_structure_fn(
            cl,
            conv,
            _cattrs_forbid_extra_keys=True,
            _cattrs_detailed_validation=True,
            **overrides,  # type: ignore[arg-type]
        )

        def structure(value: Any, t: Any) -> Any:
            if not isinstance(value, Mapping):
                raise _TypeMismatch("a mapping", value)
            return generated({k: v for k, v in value.items() if v is not None}, t)

        return structure

    def attrs_unstructure_factory(cl: Any) -> Callable[[Any], dict[str, Any]]:
        names = [
            (a.name, wire_name(a), bool(a.metadata.get(INT_AS_STRING))) for a in attrs.fields(cl)
        ]

        def unstructure(obj: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name, key, as_string in names:
                value = getattr(obj, name)
                if value is not None:
                    out[key] = str(value) if as_string else conv.unstructure(value)
            return out

        return unstructure

    conv.register_structure_hook_func(_is_homogeneous_tuple, structure_tuple)
    conv.register_structure_hook_func(_is_frozen_dict, structure_mapping)
    conv.register_structure_hook_factory(attrs.has, attrs_structure_factory)
    conv.register_unstructure_hook_factory(attrs.has, attrs_unstructure_factory)
    conv.register_unstructure_hook(
        FrozenDict, lambda m: {k: conv.unstructure(v) for k, v in m.items()}
    )
    conv.register_unstructure_hook(tuple, lambda t: [conv.unstructure(v) for v in t])
    return conv


CONVERTER = make_converter()


def unstructure(value: Any) -> Any:
    """Plain dicts, lists and scalars with CKE's keys, ready for JSON or YAML."""
    return CONVERTER.unstructure(value)


@attrs.frozen
class StructureFailure:
    """One structural problem, with where it is in the raw document."""

    raw_path: RawPath
    path: str
    message: str
    expected: Any = None
    unknown_key: bool = False

    def problem(self) -> Problem:
        return Problem(self.path, self.message)


def structure(raw: Any, cls: type[T]) -> tuple[T | None, list[Problem], list[str]]:
    """Structure ``raw`` into ``cls``, reporting every structural problem.

    Returns the value (built from the repaired document; None when the root
    itself is unusable), the problems, and the paths under which later
    validation should stay silent because the input there was discarded.
    """
    data = copy.deepcopy(raw)
    problems: list[Problem] = []
    broken: list[str] = []
    for _ in range(_MAX_REPAIR_ROUNDS):
        try:
            return CONVERTER.structure(data, cls), problems, broken
        except Exception as exc:  # cattrs raises several kinds; all are reported
            failures = list(_failures(exc, (), "", cls))
        for failure in failures:
            problems.append(failure.problem())
            broken.append(failure.path)
            if not failure.raw_path or not _repair(data, failure):
                return None, problems, broken
    return None, problems, broken


def _failures(exc: BaseException, raw: RawPath, path: str, cl: Any) -> Iterator[StructureFailure]:
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [wire_name(a) for a in attrs.fields(exc.cl)]
        for key in sorted(exc.extra_fields, key=_key_text):
            yield StructureFailure(
                (*raw, key),
                join_path(path, _key_text(key)),
                _unknown_field_message(key, known),
                unknown_key=True,
            )
        return
    if isinstance(exc, ClassValidationError | IterableValidationError):
        owner = exc.cl if isinstance(exc, ClassValidationError) else None
        for sub in exc.exceptions:
            yield from _failures_of_child(sub, raw, path, owner)
        return
    yield StructureFailure(raw, path, str(exc), expected=cl)


def _failures_of_child(
    exc: BaseException, raw: RawPath, path: str, owner: Any
) -> Iterator[StructureFailure]:
    note = next(
        (
            n
            for n in getattr(exc, "__notes__", ())
            if isinstance(n, AttributeValidationNote | IterableValidationNote)
        ),
        None,
    )
    if isinstance(note, AttributeValidationNote) and owner is not None:
        key = _wire_name_of(owner, note.name)
        yield from _failures(exc, (*raw, key), join_path(path, key), note.type)
    elif isinstance(note, IterableValidationNote):
        index = note.index
        child_path = join_path(path, index) if isinstance(index, int) else key_path(path, index)
        yield from _failures(exc, (*raw, index), child_path, note.type)
    else:
        yield from _failures(exc, raw, path, None)


def _wire_name_of(cl: Any, attribute: str) -> str:
    for a in attrs.fields(cl):
        if a.name == attribute:
            return wire_name(a)
    return attribute


def _key_text(key: Any) -> str:
    """A raw mapping key as text for a path; YAML can give numbers, booleans and null."""
    if isinstance(key, str):
        return key
    return describe(key).removeprefix("number ").removeprefix("boolean ")


def _unknown_field_message(key: str, known: list[str]) -> str:
    normalised = {k.replace("-", "_").lower(): k for k in known}
    guess = normalised.get(str(key).replace("-", "_").lower())
    if guess is None:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        guess = close[0] if close else None
    suffix = f"; did you mean {guess!r}?" if guess else f"; known fields: {', '.join(known)}"
    return f"unknown field {key!r}{suffix}"


def _repair(data: Any, failure: StructureFailure) -> bool:
    """Remove or neutralise the offending raw value; False if that is impossible."""
    parent = data
    for segment in failure.raw_path[:-1]:
        try:
            parent = parent[segment]
        except (KeyError, IndexError, TypeError):
            return False
    last = failure.raw_path[-1]
    if isinstance(parent, dict) and last not in parent:
        # A mapping entry is named by its key's text; the raw key may be 1 or true.
        last = next((k for k in parent if not isinstance(k, str) and str(k) == last), last)
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    if isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        expected = _optional_inner(failure.expected) or failure.expected
        parent[last] = zero_value(expected)
        return True
    return False


def silence_under(problems: list[Problem], broken: list[str]) -> list[Problem]:
    """Drop problems inside input that structuring already reported and discarded."""
    return [p for p in problems if not any(is_under(p.path, b) for b in broken)]
