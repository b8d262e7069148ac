"""Timing helpers shared by the adapters."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def timed_loop(n: int, send: Callable[[], Any]) -> float:
    """Seconds taken by ``n`` calls of ``send``."""
    start = time.perf_counter()
    for _ in range(n):
        send()
    return time.perf_counter() - start


def latencies(n: int, warmup: int, round_trip: Callable[[], Any]) -> list[float]:
    """Milliseconds of each of ``n`` calls of ``round_trip`` (send one task, await its result),
    after ``warmup`` untimed ones."""
    out = []
    for i in range(warmup + n):
        start = time.perf_counter()
        round_trip()
        if i >= warmup:
            out.append((time.perf_counter() - start) * 1000)
    return out


def batched(n: int, size: int) -> list[int]:
    """n split into batches of at most ``size``."""
    return [min(size, n - i) for i in range(0, n, size)]
