"""A replay worker: ``python -m cke_adapters.eventlog.replay_worker URL FIRST LAST``.

``EventLog.replay`` starts one per range of decisions it hands out. It
re-derives decisions FIRST to LAST of the log at URL
(``application.replay_range``) and writes the result, pickled, to its
standard output: a list of (position, time, engine, phase, differences), or
("history" | "log", message) for a problem with the log. Any other failure
is a non-zero exit; the replay then does the work itself.
"""

from __future__ import annotations

import pickle
import sys


def main(argv: list[str]) -> int:
    from cke_adapters.eventlog.application import replay_range

    url, first, last = argv[0], int(argv[1]), int(argv[2])
    result = replay_range(url, first, last)
    sys.stdout.buffer.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
