"""Field helpers shared by every model: CKE's wire names and immutable defaults.

CKE's documents mix snake_case (``control_plane``) with hyphenated keys
(``kube-api``, ``control-plane-count``). Python attributes cannot carry a
hyphen, so a field that is spelt differently on the wire records its CKE name
in its metadata and the codec uses it in both directions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from cke_core.frozen import FrozenDict, frozen_dict

WIRE_NAME = "cke.wire_name"
#: An integer that travels as a decimal string (Go's ``json:",string"``).
INT_AS_STRING = "cke.int_as_string"


def wire_name(attribute: attrs.Attribute[Any]) -> str:
    """The key under which ``attribute`` appears in CKE's YAML and JSON."""
    return str(attribute.metadata.get(WIRE_NAME, attribute.name))


def mapping_field(key: str | None = None) -> Any:
    """A ``FrozenDict`` field defaulting to empty; ``key`` overrides the wire name."""
    return attrs.field(factory=FrozenDict, converter=frozen_dict, metadata=_meta(key))


def tuple_field(key: str | None = None) -> Any:
    """A tuple field defaulting to empty; lists given by callers become tuples."""
    return attrs.field(factory=tuple, converter=tuple, metadata=_meta(key))


def defaulted_str(default: str, key: str | None = None) -> Any:
    """A string field where CKE treats the empty string as "use the default"."""
    return attrs.field(default=default, converter=_or_default(default), metadata=_meta(key))


def named(key: str, **kwargs: Any) -> Any:
    """Any attrs field whose wire name is ``key``."""
    return attrs.field(metadata=_meta(key), **kwargs)


def _or_default(default: str) -> Callable[[str], str]:
    def convert(value: str) -> str:
        return value or default

    return convert


def _meta(key: str | None) -> dict[str, str]:
    return {WIRE_NAME: key} if key else {}
