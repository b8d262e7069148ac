"""arq: two ``arq`` worker processes (it has no multi-process option), each with
``poll_delay=0.01`` (the default 0.5 s leaves a worker idle between reads once it has run what
one read gave it) and ``max_jobs=20``; results off is ``keep_result=0`` (its documented "not
kept"). The task is ``async`` (arq runs only coroutines); it counts with the same blocking
redis-py call as every other system. No batch enqueue API (``enqueue_job`` is one transaction
per job)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from counting import task_done

from adapters import BROKER, QUEUE, RESULTS_ON, WARMUP, script

DIST = "arq"
CONFIG = "2 `arq` processes, `max_jobs=20`, `poll_delay=0.01`; async task"
BATCH = None
RESULTS = True
STORED = {"how": "scan", "url": BROKER, "match": "arq:result:*"}
SETTINGS = RedisSettings.from_dsn(BROKER)
QUEUE_NAME = f"arq:{QUEUE}"


async def work(ctx: dict[str, Any]) -> None:
    task_done()


class WorkerSettings:
    functions = [work]  # noqa: RUF012  (arq reads class attributes)
    redis_settings = SETTINGS
    queue_name = QUEUE_NAME
    max_jobs = 20
    poll_delay = 0.01
    keep_result = 3600 if RESULTS_ON else 0
    handle_signals = True


def worker_argv(results: bool) -> list[list[str]]:
    return [script("arq", "adapters.arq.WorkerSettings")] * 2


def enqueue(n: int) -> float:
    async def send() -> float:
        pool = await create_pool(SETTINGS, default_queue_name=QUEUE_NAME)
        start = time.perf_counter()
        for _ in range(n):
            await pool.enqueue_job("work")
        elapsed = time.perf_counter() - start
        await pool.aclose()
        return elapsed

    return asyncio.run(send())


def latency(n: int) -> list[float]:
    async def measure() -> list[float]:
        pool = await create_pool(SETTINGS, default_queue_name=QUEUE_NAME)
        out = []
        for i in range(WARMUP + n):
            start = time.perf_counter()
            job = await pool.enqueue_job("work")
            assert job is not None
            await job.result(timeout=30, poll_delay=0.001)
            if i >= WARMUP:
                out.append((time.perf_counter() - start) * 1000)
        await pool.aclose()
        return out

    return asyncio.run(measure())
