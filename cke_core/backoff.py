"""Deterministic jitter and CKE's two drain backoff formulas (§F).

CKE draws the jitter of a drain backoff from ``math/rand``. The core has no
randomness: the jitter is a hash (``hashlib.blake2b``) of the decision's
``seed`` and of what identifies the backoff (the queue, the entry index and
the backoff count), so the same inputs always give the same expiry and a
recorded decision replays exactly. Different seeds, entries or counts give
values spread uniformly over the range.

* Reboot queue (``drainBackOff``): ``now + min(300·2^(count-1), 1200) + jitter[0, 300)`` s.
* Repair queue (``repairDrainBackOff``): ``now + 300 + jitter[0, 300·count)`` s.

``count`` is the ``drain_backoff_count`` *after* the increment, so it is at
least 1.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Final

#: CKE's ``drainBackOffBaseSeconds``.
DRAIN_BACKOFF_BASE_SECONDS: Final = 300
#: CKE's ``drainBackOffMaxSeconds`` (reboot queue only).
DRAIN_BACKOFF_MAX_SECONDS: Final = 1200

_SEPARATOR: Final = b"\x1f"


def jitter(seed: int, *parts: object, upper: int) -> int:
    """A deterministic integer in ``[0, upper)`` derived from ``seed`` and ``parts``.

    ``parts`` should be plain values (str, int, bool, None) whose ``repr`` is
    stable; they are encoded with their type name so ``1`` and ``"1"`` differ.
    Raises ValueError when ``upper`` is not positive.
    """
    if upper <= 0:
        raise ValueError(f"jitter upper bound must be positive, got {upper}")
    digest = hashlib.blake2b(digest_size=16, person=b"cke-jitter")
    digest.update(repr(int(seed)).encode())
    for part in parts:
        digest.update(_SEPARATOR)
        digest.update(f"{type(part).__name__}:{part!r}".encode())
    return int.from_bytes(digest.digest(), "big") % upper


def reboot_backoff_seconds(count: int, seed: int, index: int) -> int:
    """Seconds of the reboot-queue drain backoff (exponential, capped, jittered)."""
    _check_count(count)
    base = min(DRAIN_BACKOFF_BASE_SECONDS << min(count - 1, 16), DRAIN_BACKOFF_MAX_SECONDS)
    return base + jitter(
        seed, "reboot-drain-backoff", index, count, upper=DRAIN_BACKOFF_BASE_SECONDS
    )


def repair_backoff_seconds(count: int, seed: int, index: int) -> int:
    """Seconds of the repair-queue drain backoff (linear jitter range)."""
    _check_count(count)
    upper = DRAIN_BACKOFF_BASE_SECONDS * count
    return DRAIN_BACKOFF_BASE_SECONDS + jitter(
        seed, "repair-drain-backoff", index, count, upper=upper
    )


def reboot_drain_backoff_expire(
    now: datetime.datetime, count_after_increment: int, seed: int, index: int
) -> datetime.datetime:
    """``drain_backoff_expire`` of a reboot entry backed off at ``now``."""
    seconds = reboot_backoff_seconds(count_after_increment, seed, index)
    return now + datetime.timedelta(seconds=seconds)


def repair_drain_backoff_expire(
    now: datetime.datetime, count_after_increment: int, seed: int, index: int
) -> datetime.datetime:
    """``drain_backoff_expire`` of a repair entry backed off at ``now``."""
    seconds = repair_backoff_seconds(count_after_increment, seed, index)
    return now + datetime.timedelta(seconds=seconds)


def _check_count(count: int) -> None:
    if count < 1:
        raise ValueError(f"backoff count after the increment must be at least 1, got {count}")
