"""A replay worker: ``python -m cke_adapters.eventlog.replay_worker URL``.

``EventLog.replay`` starts one per extra process. It re-derives the chunks
of decisions of the log at URL that the replaying process hands out over its
standard input, answering the rows of each on its standard output
(``application.serve_replay``, frames of ``parallel``). Any failure other
than a problem with the log is a non-zero exit or a closed pipe; the other
processes then take over its work.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from cke_adapters.eventlog.application import serve_replay

    return serve_replay(argv[0], sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
