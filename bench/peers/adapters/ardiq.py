"""ardiq (Rust core, Redis streams): ``ardiq run -w 2`` (two supervised worker processes), its
defaults otherwise (concurrency 16, prefetch 32); results off is ``result_ttl_ms=0`` (its
documented "0 drops"). The task is ``async`` (ardiq runs sync tasks in a thread pool); it counts
with the same blocking redis-py call as every other system. Batch: ``Ardiq.enqueue_many`` in
batches of 1 000."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ardiq import Ardiq
from counting import task_done

from adapters import BROKER, QUEUE, RESULTS_ON, WARMUP, script
from adapters._timing import batched

DIST = "ardiq"
CONFIG = "`ardiq run -w 2`, concurrency 16, prefetch 32 (defaults); async task"
BATCH = "Ardiq.enqueue_many"
RESULTS = True
STORED = {"how": "scan", "url": BROKER, "match": f"ardiq:{QUEUE}:task:results:*"}

app = Ardiq(redis_url=BROKER, queue_name=QUEUE, result_ttl_ms=300_000 if RESULTS_ON else 0)


@app.task()
async def work() -> None:
    task_done()


def worker_argv(results: bool) -> list[list[str]]:
    return [script("ardiq", "run adapters.ardiq:app -w 2 -q")]


def _timed(n: int, send: Callable[[], Awaitable[Any]]) -> float:
    async def run() -> float:
        start = time.perf_counter()
        for _ in range(n):
            await send()
        return time.perf_counter() - start

    return asyncio.run(run())


def enqueue(n: int) -> float:
    return _timed(n, work.enqueue)


def enqueue_batch(n: int) -> float:
    sizes = batched(n, 1000)

    async def send() -> None:
        await app.enqueue_many([work.prepare() for _ in range(sizes.pop())])

    return _timed(len(sizes), send)


def latency(n: int) -> list[float]:
    async def measure() -> list[float]:
        out = []
        for i in range(WARMUP + n):
            start = time.perf_counter()
            job = await work.enqueue()
            await job.result(timeout=30)
            if i >= WARMUP:
                out.append((time.perf_counter() - start) * 1000)
        return out

    return asyncio.run(measure())
