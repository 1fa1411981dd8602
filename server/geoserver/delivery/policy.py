"""Delivery decisions as pure functions: when to retry, when an event is too old, how a
timeout property is parsed. No clock and no randomness of their own: callers pass them in."""

from __future__ import annotations

RETRY_BASE = 0.5  # seconds: Tile38 retries a failed hook every 0.5 s
RETRY_CAP = 30.0  # the longest wait between attempts once an endpoint stays down
IDLE_CLOSE = 30.0  # seconds an unused endpoint connection is kept (Tile38: 30 s)


def retry_delay(failures: int, jitter: float, base: float = RETRY_BASE, cap: float = RETRY_CAP) -> float:
    """Seconds to wait after `failures` (>= 1) attempts in a row that reached no endpoint:
    exponential from `base`, capped at `cap`, scaled by `jitter` in [0.5, 1] (the caller draws it)
    so that many hooks failing together do not retry in step."""
    if failures < 1:
        return 0.0
    return min(cap, base * 2.0 ** min(failures - 1, 32)) * min(1.0, max(0.5, jitter))


def expired(queued_at: float, now: float, max_age: float) -> bool:
    """An event older than `hook-queue-max-age` seconds is dropped instead of sent (0: never)."""
    return max_age > 0 and now - queued_at > max_age


def parse_timeout(text: str) -> float:
    """Seconds, > 0 (fractions allowed): how long one send may take."""
    value = float(text)
    if not 0 < value <= 3600:
        raise ValueError(f"{text!r} is not within (0, 3600] seconds")
    return value
