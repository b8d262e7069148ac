"""fastq: ``fastq worker --pool prefork --concurrency 2`` (the README's setup), its defaults:
``worker_prefetch_multiplier`` unset, so each child's window adapts to the tasks' times (up to
128 for tasks this short). Batch enqueue: ``App.send_many`` in batches of 1 000."""

from __future__ import annotations

from counting import task_done
from fastq import App

from adapters import BACKEND, BROKER, QUEUE, RESULTS_ON, WARMUP, script
from adapters._timing import batched, latencies, timed_loop

DIST = "fastq-worker"
CONFIG = "prefork, `--concurrency 2`, adaptive prefetch window (default)"
BATCH = "send_many"
RESULTS = True
STORED = {"how": "dbsize", "url": BACKEND}
NAME = "bench.task"

app = App(
    "peers",
    broker=BROKER,
    backend=BACKEND if RESULTS_ON else None,
    set_as_current=False,
    task_default_queue=QUEUE,
    task_ignore_result=not RESULTS_ON,
)


@app.task(name=NAME)
def work() -> None:
    task_done()


def worker_argv(results: bool) -> list[list[str]]:
    args = "-A adapters.fastq worker --pool prefork --concurrency 2"
    args += f" -Q {QUEUE}"
    return [script("fastq", args + " --loglevel WARNING")]


def enqueue(n: int) -> float:
    return timed_loop(n, work.delay)


def enqueue_batch(n: int) -> float:
    sizes = batched(n, 1000)
    return timed_loop(len(sizes), lambda: app.send_many([(NAME, (), None)] * sizes.pop()))


def latency(n: int) -> list[float]:
    return latencies(n, WARMUP, lambda: work.delay().get(timeout=30))
