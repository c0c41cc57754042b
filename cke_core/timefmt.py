"""Times on the wire: RFC 3339 in UTC, as CKE (Go) writes them.

Go's zero ``time.Time`` (``0001-01-01T00:00:00Z``) means "never"; it is the
default of every time field, so "is the backoff over?" is an ordinary
comparison without a None case.
"""

from __future__ import annotations

import datetime
import re
from typing import Final

UTC: Final = datetime.UTC

#: Go's zero ``time.Time``: "never set".
ZERO_TIME: Final = datetime.datetime(1, 1, 1, tzinfo=UTC)


def to_utc(value: datetime.datetime) -> datetime.datetime:
    """Normalise an aware datetime to UTC; a naive one is a programming error."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}: times must be timezone-aware")
    return value.astimezone(UTC)


_RFC3339: Final = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<fraction>\d+))?(?P<zone>[Zz]|[+-]\d{2}:\d{2})\Z",
    re.ASCII,
)


def parse_rfc3339(text: str) -> datetime.datetime:
    """Parse an RFC 3339 timestamp to an aware UTC datetime.

    Go writes up to nanoseconds; digits beyond microseconds are dropped.
    Raises ValueError with an operator-readable message.
    """
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"expected an RFC 3339 time such as 2024-05-01T10:00:00Z, got {text!r}")
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    zone = "+00:00" if match["zone"] in ("Z", "z") else match["zone"]
    try:
        parsed = datetime.datetime.fromisoformat(
            f"{match['date']}T{match['time']}.{fraction}{zone}"
        )
    except ValueError as exc:
        raise ValueError(f"invalid RFC 3339 time {text!r}: {exc}") from None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"RFC 3339 time {text!r} is out of range in UTC") from None


def format_rfc3339(value: datetime.datetime) -> str:
    """Format as RFC 3339 in UTC like Go's RFC3339Nano: ``Z``, no trailing zeros."""
    utc = to_utc(value)
    text = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    )
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"
