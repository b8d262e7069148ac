"""The wait between tries of something that keeps failing: a reconnect, a store, a restart."""

from __future__ import annotations

import random


class Backoff:
    """Waits from ``first`` seconds, doubling up to ``cap``; each wait gets up to ``jitter`` of
    itself (a fraction) added at random, so workers that lost the same broker do not come back
    in step. ``reset()`` once the thing works again."""

    __slots__ = ("_delay", "cap", "failures", "first", "jitter")

    def __init__(self, first: float, cap: float, jitter: float = 0.0) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter
        #: Failures since the last reset (``next()`` calls): 0 while the thing works.
        self.failures = 0
        self._delay = first

    def next(self) -> float:
        """The wait after one more failure."""
        delay = self._delay
        self._delay = min(delay * 2, self.cap)
        self.failures += 1
        if self.jitter:
            return delay + random.uniform(0, delay * self.jitter)
        return delay

    def reset(self) -> None:
        self.failures = 0
        self._delay = self.first
