"""The work queue of a shared replay (``cke_adapters.eventlog.parallel``):
every decision is handed out, and re-derived once, whatever the order in
which processes claim, and whichever of them die."""

from __future__ import annotations

import io
import itertools

import pytest
from cke_adapters.eventlog.parallel import WorkQueue, read_frame, write_frame
from hypothesis import given
from hypothesis import strategies as st

MAIN = 0


@given(
    decisions=st.integers(1, 400),
    workers=st.integers(1, 3),
    chunk=st.integers(1, 50),
    steps=st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=200),
)
def test_every_decision_is_done_once(
    decisions: int, workers: int, chunk: int, steps: list[tuple[int, bool]]
) -> None:
    """Processes claim in the order ``steps`` gives; a worker whose step says
    so dies holding its chunk (its work goes back to the queue). The main
    process never dies and claims last until nothing is left."""
    bounds = [round(decisions * i / workers) for i in range(workers + 1)]
    queue = WorkQueue(
        [(o, lo + 1, hi) for o, (lo, hi) in enumerate(itertools.pairwise(bounds), start=1)], chunk
    )
    done: list[int] = []
    dead: set[int] = set()
    for owner, dies in steps:
        if owner > workers or owner in dead:
            continue
        got = queue.claim(owner)
        if got is None:
            continue
        first, last = got
        assert first <= last
        assert last - first < chunk
        if owner != MAIN and dies:
            dead.add(owner)
            queue.release(owner, got)
        else:
            done.extend(range(first, last + 1))
    # The survivors finish; the main process takes whatever is left.
    for owner in [o for o in range(1, workers + 1) if o not in dead] + [MAIN]:
        while (got := queue.claim(owner)) is not None:
            done.extend(range(got[0], got[1] + 1))
    assert sorted(done) == list(range(1, decisions + 1))


def test_a_thief_takes_the_back_half_and_leaves_the_last_chunk() -> None:
    queue = WorkQueue([(1, 1, 100)], chunk=10)
    assert queue.claim(1) == (1, 10)
    assert queue.claim(MAIN) == (56, 65)  # 11..100 split: the back half from 56
    assert queue.claim(1) == (11, 20)
    queue.limit(60)  # the main process's region is now 66..60: empty
    assert queue.claim(MAIN) == (38, 47)  # 21..55 split again
    assert queue.claim(1) == (21, 30)
    assert queue.claim(1) == (31, 37)
    assert queue.claim(MAIN) == (48, 55)  # 56..60 went out before the limit
    assert queue.claim(1) is None
    assert queue.claim(MAIN) is None


def test_a_region_of_one_chunk_is_left_to_its_owner() -> None:
    queue = WorkQueue([(1, 1, 25)], chunk=10)
    assert queue.claim(1) == (1, 10)
    assert queue.claim(MAIN) == (18, 25)  # 11..25: more than a chunk, split
    assert queue.claim(MAIN) is None  # 11..17 is one chunk: its owner's
    assert queue.claim(1) == (11, 17)


def test_limit_and_abort() -> None:
    queue = WorkQueue([(1, 1, 30)], chunk=10)
    queue.limit(12)
    assert queue.claim(1) == (1, 10)
    assert queue.claim(1) == (11, 12)
    assert queue.claim(1) is None
    queue = WorkQueue([(1, 1, 30)], chunk=10)
    queue.abort()
    assert queue.claim(1) is None
    assert queue.claim(MAIN) is None


def test_frames_round_trip_and_a_cut_frame_is_an_end() -> None:
    stream = io.BytesIO()
    write_frame(stream, ("rows", [(1, None, "e", "p", ())]))
    write_frame(stream, None)
    data = stream.getvalue()
    stream = io.BytesIO(data)
    assert read_frame(stream) == ("rows", [(1, None, "e", "p", ())])
    assert read_frame(stream) is None
    cut = io.BytesIO(data[:-3])
    read_frame(cut)
    with pytest.raises(EOFError):
        read_frame(cut)
