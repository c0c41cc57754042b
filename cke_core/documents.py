"""Text to raw documents: YAML (CKE's format) or JSON, with precise syntax errors.

Parsing a string is not I/O, so it lives in the core; reading files is the
caller's job. Beyond what CKE's YAML reader does, a key given twice in one
mapping is an error (the second would silently win), and every syntax error
names its line and column.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

import yaml

from cke_core.problems import ConfigError, Problem


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
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc) from None


def parse_yaml_all(text: str) -> list[Any]:
    """Parse a multi-document YAML stream (user resources); empty documents are dropped."""
    try:
        return [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except yaml.YAMLError as exc:
        raise _syntax_error(exc) from None


def _syntax_error(exc: yaml.YAMLError) -> ConfigError:
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
        return json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [Problem("", f"JSON syntax error: line {exc.lineno}, column {exc.colno}: {exc.msg}")]
        ) from None
    except ValueError as exc:
        raise ConfigError([Problem("", f"JSON syntax error: {exc}")]) from None


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


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (audit policy, CNI content) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_str(value)


_Dumper.add_representer(str, _represent_str)
