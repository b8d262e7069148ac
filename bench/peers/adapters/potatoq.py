"""potatoq (pure Python, Celery-compatible): ``potatoq worker -c 2`` (prefork, its default pool;
its other defaults kept: acks after the task, one task prefetched per idle process, processes
recycled every 1 000 tasks), Redis broker; results on: the Redis result backend in its own
database. No batch enqueue API."""

from __future__ import annotations

from counting import task_done
from potatoq import Potatoq

from adapters import BACKEND, BROKER, QUEUE, RESULTS_ON, WARMUP, script
from adapters._timing import latencies, timed_loop

DIST = "potatoq"
CONFIG = "prefork `-c 2`, its defaults (acks late, prefetch 1, recycle every 1 000 tasks)"
BATCH = None
RESULTS = True
STORED = {"how": "dbsize", "url": BACKEND}

app = Potatoq("peers", broker=BROKER, backend=BACKEND if RESULTS_ON else None)
app.conf.task_default_queue = QUEUE


@app.task(name="bench.task")
def work() -> None:
    task_done()


def worker_argv(results: bool) -> list[list[str]]:
    return [script("potatoq", f"-A adapters.potatoq worker -c 2 -Q {QUEUE}")]


def enqueue(n: int) -> float:
    return timed_loop(n, work.delay)


def latency(n: int) -> list[float]:
    return latencies(n, WARMUP, lambda: work.delay().get(timeout=30))
