"""mayu (Rust core): ``mayu worker --mode process --processes 2`` (process mode is what it runs
on a GIL build such as 3.13; thread mode needs free-threaded Python), its defaults otherwise
(prefetch multiplier 2); results off is ``result_ttl=None`` (no results kept). No batch enqueue
API."""

from __future__ import annotations

from counting import task_done
from mayu import App

from adapters import BROKER, QUEUE, RESULTS_ON, WARMUP, script
from adapters._timing import latencies, timed_loop

DIST = "mayu"
CONFIG = "`mayu worker --mode process --processes 2`, prefetch multiplier 2 (default)"
BATCH = None
RESULTS = True
STORED = {"how": "scan", "url": BROKER, "match": "mayu:result:*"}

app = App(broker=BROKER, result_ttl=600 if RESULTS_ON else None, default_queue=QUEUE)


@app.task
def work() -> None:
    task_done()


def worker_argv(results: bool) -> list[list[str]]:
    args = f"worker adapters.mayu:app --mode process --processes 2 --queues {QUEUE}"
    return [script("mayu", args + " --log-level WARNING")]


def enqueue(n: int) -> float:
    return timed_loop(n, work.delay)


def latency(n: int) -> list[float]:
    return latencies(n, WARMUP, lambda: work.delay().result(timeout=30))
