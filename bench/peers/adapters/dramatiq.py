"""Dramatiq: ``dramatiq --processes 2 --threads 8`` (its defaults are 1 process per CPU and 8
threads), RedisBroker; with results on, the Results middleware and its RedisBackend in a database
of its own. No batch enqueue API (a group sends one message at a time)."""

from __future__ import annotations

import dramatiq
from counting import task_done
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from adapters import BACKEND, BROKER, QUEUE, RESULTS_ON, WARMUP, script
from adapters._timing import latencies, timed_loop

DIST = "dramatiq"
CONFIG = "`--processes 2 --threads 8`, RedisBroker; Results + RedisBackend when results are on"
BATCH = None
RESULTS = True
STORED = {"how": "dbsize", "url": BACKEND}

broker = RedisBroker(url=BROKER)
if RESULTS_ON:
    broker.add_middleware(Results(backend=RedisBackend(url=BACKEND)))
dramatiq.set_broker(broker)


# store_results is an option of the Results middleware: only there when results are on.
@dramatiq.actor(queue_name=QUEUE, max_retries=0, **({"store_results": True} if RESULTS_ON else {}))
def work() -> None:
    task_done()


def worker_argv(results: bool) -> list[list[str]]:
    return [script("dramatiq", f"adapters.dramatiq --processes 2 --threads 8 --queues {QUEUE}")]


def enqueue(n: int) -> float:
    return timed_loop(n, work.send)


def latency(n: int) -> list[float]:
    return latencies(n, WARMUP, lambda: work.send().get_result(block=True, timeout=30_000))
