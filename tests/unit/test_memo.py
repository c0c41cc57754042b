"""``cke_core.memo``: results reused for the very same arguments (or equal
hashable ones), recomputed otherwise, bounded, forgotten by ``clear_caches``."""

from __future__ import annotations

from cke_core import memo


def test_by_identity_reuses_only_for_the_same_objects() -> None:
    calls: list[tuple[int, ...]] = []

    @memo.by_identity(size=2)
    def total(values: tuple[int, ...]) -> int:
        calls.append(values)
        return sum(values)

    a = (1, 2, 3)
    b = tuple(range(1, 4))  # equal, not the same object
    assert a is not b
    assert total(a) == total(a) == 6
    assert len(calls) == 1
    assert total(b) == 6
    assert len(calls) == 2  # recomputed for an equal but distinct argument
    c, d = (4,), (5,)
    total(c)
    total(d)  # a is now the least recently used of three: forgotten
    total(a)
    assert len(calls) == 5
    memo.clear_caches()
    total(d)
    assert len(calls) == 6


def test_by_identity_passes_keywords_through_uncached() -> None:
    calls = 0

    @memo.by_identity()
    def scaled(value: int, factor: int = 1) -> int:
        nonlocal calls
        calls += 1
        return value * factor

    assert scaled(3, factor=2) == scaled(3, factor=2) == 6
    assert calls == 2


def test_by_value_reuses_for_equal_arguments() -> None:
    calls = 0

    @memo.by_value(size=4)
    def joined(parts: tuple[str, ...]) -> str:
        nonlocal calls
        calls += 1
        return ",".join(parts)

    assert joined(("a", "b")) == joined(tuple("ab")) == "a,b"
    assert calls == 1
    memo.clear_caches()
    assert joined(("a", "b")) == "a,b"
    assert calls == 2
