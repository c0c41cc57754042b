"""eventsourcing's JSON transcoder, decoding the event log's events faster.

``JSONTranscoder`` decodes with an ``object_hook`` that looks at every JSON
object for ``{"_type_": name, "_data_": value}`` (a UUID, a datetime ...).
The event log's events hold such objects only as top-level values (the
timestamp, ids), while their observations hold thousands of plain objects,
so the hook is almost always called for nothing. ``FastJSONTranscoder``
decodes without it when that gives the same result:

* the text has no ``\\u`` escape, so a key ``"_type_"`` can only be spelt
  literally, and
* every ``"_type_"`` in the text is the key of a top-level value (which is
  then converted exactly as the hook would);

otherwise it decodes with the hook. Encoding is unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from eventsourcing.persistence import JSONTranscoder

__all__ = ["FastJSONTranscoder"]

_TYPE_KEY = '"_type_"'


class FastJSONTranscoder(JSONTranscoder):
    """``JSONTranscoder`` with a fast path for decoding (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._plain = json.JSONDecoder()

    def decode(self, data: bytes) -> Any:
        text = data.decode("utf8")
        if "\\u" not in text:
            value = self._plain.decode(text)
            if type(value) is dict and "_type_" not in value:
                typed = [
                    key for key, item in value.items() if type(item) is dict and "_type_" in item
                ]
                if len(typed) == text.count(_TYPE_KEY):
                    for key in typed:
                        value[key] = self._decode_obj(value[key])
                    return value
        return self.decoder.decode(text)
