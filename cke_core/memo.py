"""Memoising pure functions of immutable values across decisions.

Consecutive decisions see mostly the same values: the daemon keeps its
``Cluster`` while the spec is unchanged, and a status part that did not change
is very often the very same object from one observation to the next (the
status codecs and the replay share equal parts). Rendering what CKE expects
from such values again, and comparing it with what was observed, is pure work
repeated; these memos skip it.

* ``by_identity``: the result for the very same argument objects (compared
  with ``is``; each entry holds its arguments, so their ids cannot be reused
  while it exists). Equal but distinct arguments are simply recomputed.
* ``by_value``: ``functools.lru_cache`` for hashable arguments (strings and
  tuples of strings; lists are passed on as tuples).

Both are bounded (least recently used first out) and registered, so
``clear_caches`` forgets them all. ``trim`` bounds the hand-made memos of the
same kind elsewhere (dicts kept in least-recently-used order by moving an
entry to the end when it is used). Nothing here changes a result: a memoised
function must be pure and its arguments and result immutable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

#: Entries each memo keeps by default.
DEFAULT_SIZE: Final = 64

_clearers: list[Callable[[], None]] = []


def by_identity(size: int = DEFAULT_SIZE) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Memoise a pure function of positional arguments by their identity."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        entries: dict[tuple[int, ...], tuple[tuple[Any, ...], R]] = {}

        @functools.wraps(fn)
        def memoised(*args: P.args, **kwargs: P.kwargs) -> R:
            if kwargs:
                return fn(*args, **kwargs)
            key = tuple(map(id, args))
            entry = entries.pop(key, None)
            if entry is not None and all(map(_is, entry[0], args)):
                entries[key] = entry  # the most recently used last
                return entry[1]
            result = fn(*args, **kwargs)  # no keywords here
            entries[key] = (args, result)
            trim(entries, size)
            return result

        _clearers.append(entries.clear)
        return memoised

    return decorate


def by_value(size: int = DEFAULT_SIZE) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Memoise a pure function of hashable positional arguments by their value;
    a list argument is passed on as a tuple (for functions of sequences)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        cached = functools.lru_cache(maxsize=size)(fn)
        _clearers.append(cached.cache_clear)

        @functools.wraps(fn)
        def memoised(*args: Any) -> R:
            for arg in args:
                if type(arg) is list:
                    return cached(*[tuple(a) if type(a) is list else a for a in args])
            return cached(*args)

        return memoised  # type: ignore[return-value]

    return decorate


def trim(table: dict[Any, Any], size: int) -> None:
    """Drop the oldest entries of ``table`` (insertion order: least recently
    used first) until at most ``size`` are left."""
    while len(table) > size:
        del table[next(iter(table))]


def clear_caches() -> None:
    """Forget every memoised result (tests and benchmarks)."""
    for clear in _clearers:
        clear()


def _is(a: object, b: object) -> bool:
    return a is b
