"""Per-task rate limits (``rate_limit="100/s"``): a token bucket per task name per worker process.

A limited task is not slept on: the loop schedules it for when a token is due, so other tasks run.
"""

from __future__ import annotations

import time

from fastq.errors import ConfigurationError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str | float | int | None) -> float | None:
    """Tasks per second from ``"100/s"``, ``"10/m"``, ``"5/h"`` or a number (per second)."""
    if rate is None or rate == "" or rate == 0:
        return None
    if isinstance(rate, (int, float)):
        return float(rate)
    count, _, unit = str(rate).partition("/")
    try:
        per_second = float(count) / _UNITS[unit.strip().lower()[:1] or "s"]
    except (ValueError, KeyError):
        raise ConfigurationError(
            f"invalid rate limit {rate!r}: use '<n>/s', '<n>/m' or '<n>/h'"
        ) from None
    return per_second or None


class TokenBucket:
    """``rate`` tokens per second, bursts up to ``capacity`` (one second's worth, at least 1)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Takes a token; returns 0 when one was available, else seconds until one is."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    def __init__(self, default: str | float | None = None) -> None:
        self.default = parse_rate(default)
        self._buckets: dict[str, TokenBucket | None] = {}

    def delay_for(self, name: str, rate: str | float | None) -> float:
        """0 if the task may run now, else how long to wait for its next token."""
        bucket = self._buckets.get(name, False)
        if bucket is False:
            per_second = parse_rate(rate) if rate is not None else self.default
            bucket = self._buckets[name] = TokenBucket(per_second) if per_second else None
        return 0.0 if bucket is None else bucket.take()  # type: ignore[union-attr]

    def forget(self, name: str) -> None:
        """Drops ``name``'s bucket: its next task reads the task's (changed) rate limit."""
        self._buckets.pop(name, None)
