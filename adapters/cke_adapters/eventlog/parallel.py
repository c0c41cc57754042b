"""``replay`` over several processes: decisions handed out by work stealing.

The decisions to re-derive, positions 1 to N of the decision log, are split
into one contiguous *region* per worker process. A process works through its
region from the front, a chunk (a few hundred decisions) at a time, and asks
for the next chunk when it has finished one, sending the rows it found. A
process whose region is empty steals the back half of the largest region left
(or, near the end, nothing: the owner finishes its last chunk). The replaying
process (``EventLog.replay``) first reads and folds the whole log, then joins
as a thief. So every process stays busy until the last chunk, whatever the
machine's load, and the processes finish within about one chunk of each other.

A process re-derives consecutive chunks as one observation chain: only the
first decision of a region needs the decisions from the observation snapshot
before it (``EventLog._decision_tail``). ``WorkQueue`` holds the regions;
``rederive_claimed`` is what every process runs; ``WorkerLink`` talks to one
worker (``python -m cke_adapters.eventlog.replay_worker URL``) over its
standard input and output, in frames (``write_frame``/``read_frame``): the
worker sends ``("rows", rows)`` and receives the next chunk or None, and ends
with ``("done",)`` or ``("error", kind, message)``.

A worker that dies (or cannot start) gives its region and the chunk it was
working on back to the queue, unowned; another process takes them whole. The
report does not depend on who re-derived what.
"""

from __future__ import annotations

import datetime
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import IO, Any, ClassVar, Final

from cke_adapters.eventlog.replaying import Rederiver
from cke_core.history import DecisionRecorded

__all__ = [
    "Chunk",
    "Row",
    "WorkQueue",
    "WorkerLink",
    "read_frame",
    "rederive_claimed",
    "write_frame",
]

#: (first, last) decision positions, both included.
Chunk = tuple[int, int]
#: A re-derived decision: position, time, recorded engine, recorded phase, differences.
Row = tuple[int, datetime.datetime, str, str, tuple[str, ...]]
#: Hands out the next chunk, given the rows found since the last call (None: no more).
Claim = Callable[[list[Row]], "Chunk | None"]

_LENGTH: Final = struct.Struct(">I")


def write_frame(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    """The next frame (EOFError at the end of the stream or in a frame)."""
    head = _read_exactly(stream, _LENGTH.size)
    (size,) = _LENGTH.unpack(head)
    return pickle.loads(_read_exactly(stream, size))  # our own process's frames


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            raise EOFError("the stream ended in a frame")
        data += more
    return data


class WorkQueue:
    """The decisions not yet handed out, as contiguous regions [lo, hi], each
    owned by the process working through it, or by nobody (a dead worker's).

    Thread-safe: the replaying process claims from its own thread while its
    ``WorkerLink`` threads claim for the workers."""

    def __init__(self, regions: Iterable[tuple[Hashable, int, int]], chunk: int) -> None:
        self.chunk = max(1, chunk)
        self._regions: dict[Hashable, list[int]] = {
            owner: [lo, hi] for owner, lo, hi in regions if lo <= hi
        }
        self._unowned: list[list[int]] = []
        self._links = 0
        self._aborted = False
        self._changed = threading.Condition()

    def claim(self, owner: Hashable) -> Chunk | None:
        """The next chunk for ``owner``: the front of its region, else of a
        region it steals (an unowned one whole, or the back half of the
        largest one). None when there is nothing left to take."""
        with self._changed:
            if self._aborted:
                return None
            region = self._regions.get(owner)
            if region is None or region[0] > region[1]:
                region = self._steal()
                if region is None:
                    self._regions.pop(owner, None)
                    return None
                self._regions[owner] = region
            first = region[0]
            last = min(region[1], first + self.chunk - 1)
            region[0] = last + 1
            return first, last

    def _steal(self) -> list[int] | None:
        if self._unowned:
            return self._unowned.pop(0)
        victim = max(self._regions.values(), key=_size, default=None)
        if victim is None or _size(victim) <= self.chunk:
            return None  # its owner takes what is left in one chunk
        middle = victim[0] + _size(victim) // 2
        stolen = [middle, victim[1]]
        victim[1] = middle - 1
        return stolen

    def release(self, owner: Hashable, in_flight: Chunk | None) -> None:
        """``owner`` died: its region and the chunk it had become unowned."""
        with self._changed:
            region = self._regions.pop(owner, None)
            for lo, hi in (region or (1, 0), in_flight or (1, 0)):
                if lo <= hi:
                    self._unowned.append([lo, hi])
            self._unowned.sort()
            self._changed.notify_all()

    def limit(self, last: int) -> None:
        """Hand out nothing after decision ``last``."""
        with self._changed:
            for region in (*self._regions.values(), *self._unowned):
                region[1] = min(region[1], last)
            self._unowned = [r for r in self._unowned if r[0] <= r[1]]

    def abort(self) -> None:
        """Hand out nothing more (a worker found the log broken)."""
        with self._changed:
            self._aborted = True
            self._changed.notify_all()

    def link_started(self) -> None:
        with self._changed:
            self._links += 1

    def link_finished(self) -> None:
        with self._changed:
            self._links -= 1
            self._changed.notify_all()

    def wait_for_work(self) -> bool:
        """Block until unowned work appears (True) or every link has finished
        (False)."""
        with self._changed:
            while True:
                if self._unowned and not self._aborted:
                    return True
                if self._links == 0:
                    return False
                self._changed.wait()


def _size(region: list[int]) -> int:
    return region[1] - region[0] + 1


def rederive_claimed(
    rederiver: Rederiver,
    claim: Claim,
    tail: Callable[[int], Sequence[DecisionRecorded]],
    between: Callable[[int, int], Iterable[DecisionRecorded]],
) -> None:
    """Re-derive the chunks ``claim`` hands out until it hands out None.

    ``tail(first)``: the decisions from the observation snapshot at or before
    ``first`` to ``first``; ``between(first, last)``: decisions ``first`` to
    ``last``. Consecutive chunks continue one observation chain; each call
    of ``claim`` gets the rows of the chunks finished since the last one.
    """
    done: list[Row] = []

    def decisions(current: Chunk, following: list[Chunk | None]) -> Iterator[DecisionRecorded]:
        """The chain from ``current`` on, claiming chunks while they follow
        on; ``following`` gets the first chunk that does not (or None)."""
        yield from tail(current[0])
        yield from between(current[0] + 1, current[1])
        while True:
            finished = done[:]
            done.clear()
            upcoming = claim(finished)
            if upcoming is None or upcoming[0] != current[1] + 1:
                following.append(upcoming)
                return
            current = upcoming
            yield from between(*current)

    chunk = claim([])
    while chunk is not None:
        start = chunk[0]
        following: list[Chunk | None] = []
        for rederived in rederiver.run(decisions(chunk, following)):
            event = rederived.event
            if event.position >= start:
                done.append(
                    (
                        event.position,
                        event.now,
                        event.engine_version,
                        event.phase,
                        rederived.differences,
                    )
                )
        chunk = following[0] if following else None


class WorkerLink(threading.Thread):
    """One worker process, served from a thread of the replaying process:
    chunks from ``queue`` out, rows in. ``error`` is the worker's one-line
    (kind, message) when it found the log broken.

    The worker is kept ``AHEAD`` chunks ahead: the next chunk is already in
    its pipe when it finishes one, so it never waits for this thread (which
    shares this process's interpreter lock with the replay)."""

    AHEAD: ClassVar[int] = 2

    def __init__(self, queue: WorkQueue, owner: Hashable, url: str, module: str) -> None:
        super().__init__(name=f"replay-worker-{owner}", daemon=True)
        self.queue = queue
        self.owner = owner
        self.rows: list[Row] = []
        self.error: tuple[str, str] | None = None
        #: Chunks handed out and not yet answered, oldest first.
        self._in_flight: deque[Chunk] = deque()
        self._command = [sys.executable, "-m", module, url]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the worker process (a worker that cannot start leaves its
        work to the others) and this thread."""
        self.queue.link_started()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        try:
            self._process = subprocess.Popen(  # our own module, fixed arguments
                self._command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        except OSError:
            self._process = None
        try:
            super().start()
        except BaseException:
            self.queue.link_finished()
            raise

    def run(self) -> None:
        process = self._process
        try:
            if process is None or process.stdin is None or process.stdout is None:
                raise EOFError("no worker")
            first, exhausted = True, False
            while True:
                frame = read_frame(process.stdout)
                if frame[0] == "rows":
                    self.rows.extend(frame[1])
                    if not first and self._in_flight:
                        self._in_flight.popleft()  # answered
                    for _ in range(self.AHEAD if first else 1):
                        if exhausted:
                            break
                        chunk = self.queue.claim(self.owner)
                        if chunk is None:
                            exhausted = True
                        else:
                            self._in_flight.append(chunk)
                        write_frame(process.stdin, chunk)
                    first = False
                elif frame[0] == "error":
                    self.error = (str(frame[1]), str(frame[2]))
                    self._in_flight.clear()
                    self.queue.abort()
                    return
                else:  # "done"
                    self._in_flight.clear()
                    return
        except Exception:  # died, or answered nonsense: the others take its work
            for chunk in self._in_flight:
                self.queue.release(self.owner, chunk)
            self.queue.release(self.owner, None)
            self._in_flight.clear()
        finally:
            self.queue.link_finished()

    def stop(self) -> None:
        """Kill the worker process if it still runs, and wait for it and for
        this thread (which then sees the end of the pipe)."""
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
        if self.ident is not None:
            self.join()
        if process is not None:
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
