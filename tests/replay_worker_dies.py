"""A replay worker that does its first chunk, then dies as soon as it is
handed the second (tests/unit/test_replay_parallel.py)."""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from cke_adapters.eventlog import application


def main() -> None:
    chunks = 0
    read_frame = application.read_frame

    def read_then_die(stream: IO[bytes]) -> Any:
        nonlocal chunks
        chunk = read_frame(stream)
        chunks += 1
        if chunks == 2:
            os._exit(3)  # dies with the chunk it was handed
        return chunk

    application.read_frame = read_then_die
    application.serve_replay(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
