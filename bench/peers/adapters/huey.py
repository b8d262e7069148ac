"""Huey: ``huey_consumer -k process -w 2`` (two worker processes), RedisHuey with blocking pops
(BRPOP, its default, so no polling delay). Results are stored only when on (``results=``), and
``store_none`` so the no-op task's None is stored too. No batch enqueue API (``map`` enqueues
one task at a time)."""

from __future__ import annotations

from counting import task_done
from huey import RedisHuey

from adapters import BROKER, QUEUE, RESULTS_ON, WARMUP, script
from adapters._timing import latencies, timed_loop

DIST = "huey"
CONFIG = "`huey_consumer -k process -w 2`, RedisHuey (blocking pops)"
BATCH = None
RESULTS = True
STORED = {"how": "hlen", "url": BROKER, "key": f"huey.results.{QUEUE}"}

huey = RedisHuey(QUEUE, url=BROKER, results=RESULTS_ON, store_none=True)


@huey.task()
def work() -> None:
    task_done()


def worker_argv(results: bool) -> list[list[str]]:
    return [script("huey_consumer", "adapters.huey.huey -k process -w 2 -q")]


def enqueue(n: int) -> float:
    return timed_loop(n, work)


def latency(n: int) -> list[float]:
    return latencies(n, WARMUP, lambda: work()(blocking=True, timeout=30))
