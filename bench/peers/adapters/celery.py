"""Celery: prefork ``-c 2``, ``--without-gossip --without-mingle --without-heartbeat``,
prefetch multiplier 64 (its docs' "Optimizing" guide for many short tasks: "say 64, or 128");
the Redis result backend in its own database when results are on. No batch publish API (a group
still publishes one message per task)."""

from __future__ import annotations

from celery import Celery
from counting import task_done

from adapters import BACKEND, BROKER, QUEUE, RESULTS_ON, WARMUP, script
from adapters._timing import latencies, timed_loop

DIST = "celery"
CONFIG = "prefork `-c 2`, prefetch multiplier 64, without gossip/mingle/heartbeat"
BATCH = None
RESULTS = True
STORED = {"how": "dbsize", "url": BACKEND}

app = Celery("peers", broker=BROKER, backend=BACKEND if RESULTS_ON else None)
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=not RESULTS_ON,
    worker_prefetch_multiplier=64,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.task")
def work() -> None:
    task_done()


def worker_argv(results: bool) -> list[list[str]]:
    args = f"-A adapters.celery worker -P prefork -c 2 -Q {QUEUE} --loglevel WARNING"
    return [script("celery", args + " --without-gossip --without-mingle --without-heartbeat")]


def enqueue(n: int) -> float:
    return timed_loop(n, work.delay)


def latency(n: int) -> list[float]:
    return latencies(n, WARMUP, lambda: work.delay().get(timeout=30))
