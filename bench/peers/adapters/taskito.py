"""taskito (Rust core): its Redis backend, ``taskito worker --pool prefork`` with ``workers=2``
(two child processes) and ``scheduler_batch_size=32`` (its docs: higher values batch-claim for
greater throughput; the default claims one job per round). taskito keeps every job's result (an
archived job record) and has no switch to turn that off, so its results-off and results-on rows
measure the same configuration. Batch: ``Task.map`` (``enqueue_many``, one transaction) in
batches of 1 000.

Its prefork children are started with the base interpreter, not the virtualenv's, so the worker
command passes the virtualenv's site-packages in ``PYTHONPATH`` (without it no child starts).
"""

from __future__ import annotations

import os
import sysconfig

from counting import task_done
from taskito import Queue

from adapters import BROKER, QUEUE, WARMUP, script
from adapters._timing import batched, latencies, timed_loop

DIST = "taskito"
CONFIG = (
    "`taskito worker --pool prefork`, `workers=2`, `scheduler_batch_size=32`; results always kept"
)
BATCH = "Task.map"
RESULTS = True
STORED = {"how": "scard", "url": BROKER, "key": "taskito:archived:status:2"}

queue = Queue(backend="redis", db_url=BROKER, workers=2, scheduler_batch_size=32)


@queue.task(queue=QUEUE)
def work() -> None:
    task_done()


def worker_argv(results: bool) -> list[list[str]]:
    path = os.pathsep.join([sysconfig.get_paths()["purelib"], os.environ.get("PYTHONPATH", "")])
    args = f"worker --app adapters.taskito:queue --pool prefork --queues {QUEUE}"
    return [["env", f"PYTHONPATH={path}", *script("taskito", args)]]


def enqueue(n: int) -> float:
    return timed_loop(n, work.delay)


def enqueue_batch(n: int) -> float:
    sizes = batched(n, 1000)
    return timed_loop(len(sizes), lambda: work.map([()] * sizes.pop()))


def latency(n: int) -> list[float]:
    return latencies(n, WARMUP, lambda: work.delay().result(timeout=30, poll_interval=0.001))
