"""Text to raw documents: YAML (CKE's format) or JSON, with precise syntax errors.

Parsing a string is not I/O, so it lives in the core; reading files is the
caller's job. Beyond what CKE's YAML reader does, a key given twice in one
mapping is an error (the second would silently win), and every syntax error
names its line and column.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any, Final

import yaml

from cke_core.problems import ConfigError, Problem

#: Deepest nesting of mappings and lists accepted; cluster.yml needs about 15.
MAX_DEPTH: Final = 100
#: Most values (after YAML aliases are expanded) accepted in one document.
MAX_VALUES: Final = 1_000_000


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)
    seen: dict[Hashable, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, Hashable) and key in seen:
            first = seen[key].start_mark
            mark = key_node.start_mark
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r} (first given on line {first.line + 1})",
                problem_mark=mark,
            )
        if isinstance(key, Hashable):
            seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def parse_yaml(text: str) -> Any:
    """Parse one YAML document; raise ConfigError with line and column on bad syntax."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text) from None
    except RecursionError:
        raise _too_deep("YAML") from None
    _check_shape(document, "YAML")
    return document


def parse_yaml_all(text: str) -> list[Any]:
    """Parse a multi-document YAML stream (user resources); empty documents are dropped."""
    try:
        documents = [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text) from None
    except RecursionError:
        raise _too_deep("YAML") from None
    for document in documents:
        _check_shape(document, "YAML")
    return documents


def _too_deep(kind: str) -> ConfigError:
    return ConfigError([Problem("", f"{kind} error: nested deeper than {MAX_DEPTH} levels")])


def _check_shape(document: Any, kind: str) -> None:
    """Reject what later recursive code cannot handle: deep, self-referential or huge data.

    YAML aliases can make a value contain itself, or expand a small text into
    an exponential number of values; both are rejected here.
    """
    stack: list[tuple[Any, int]] = [(document, 1)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError([Problem("", f"{kind} error: more than {MAX_VALUES} values")])
        if isinstance(value, str):
            _check_text(value, kind)
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise _too_deep(kind)
            if isinstance(value, dict):
                for key in value:
                    if isinstance(key, str):
                        _check_text(key, kind)
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


def _check_text(value: str, kind: str) -> None:
    """A string must be Unicode text: ``"\\udc80"`` escapes a lone surrogate, which is not."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        raise ConfigError(
            [Problem("", f"{kind} error: a string holds a lone surrogate \\u{code:04x}")]
        ) from None


def _syntax_error(exc: yaml.YAMLError, text: str) -> ConfigError:
    if isinstance(exc, yaml.reader.ReaderError):
        # A character YAML does not allow (a control character, say): the reader
        # gives only the offset, so the line and column are computed here.
        position = min(max(exc.position, 0), len(text))
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        character = (
            f"byte #x{exc.character[0]:02x}"
            if isinstance(exc.character, bytes)
            else f"character #x{exc.character:04x}"
        )
        return ConfigError(
            [
                Problem(
                    "",
                    f"YAML syntax error: line {line}, column {column}: "
                    f"unacceptable {character}: {exc.reason}",
                )
            ]
        )
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(m for m in (exc.context, exc.problem) if m) or "invalid YAML"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return ConfigError([Problem("", f"YAML syntax error: {where}{message}")])
    return ConfigError([Problem("", f"YAML syntax error: {exc}")])


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def parse_json(text: str) -> Any:
    """Parse JSON; raise ConfigError with line and column on bad syntax."""
    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [Problem("", f"JSON syntax error: line {exc.lineno}, column {exc.colno}: {exc.msg}")]
        ) from None
    except ValueError as exc:
        raise ConfigError([Problem("", f"JSON syntax error: {exc}")]) from None
    except RecursionError:
        raise _too_deep("JSON") from None
    _check_shape(document, "JSON")
    return document


def parse_document(text: str) -> Any:
    """Parse JSON when the text is a JSON object, else YAML (of which JSON is nearly a subset)."""
    if text.lstrip().startswith("{"):
        return parse_json(text)
    return parse_yaml(text)


def dump_yaml(data: Any) -> str:
    """Block-style YAML in field order, the way operators write cluster.yml."""
    return yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1000,
    )


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


_UNSAFE_BREAKS: Final = ("\x85", "\u2028", "\u2029")


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (audit policy, CNI content) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if any(c in value for c in _UNSAFE_BREAKS):
        # PyYAML writes these line breaks raw in plain, single-quoted and block
        # scalars, and reads them back folded or changed; escaped, they survive.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_str(value)


_Dumper.add_representer(str, _represent_str)
