"""RQ: ``rq worker-pool -n 2 -w rq.worker.SimpleWorker``: two worker processes that run jobs in
the worker itself (RQ's default forks a work horse per job, documented as the safe choice, and
``SimpleWorker`` as the fast one for short trusted jobs). RQ always keeps a result unless
``result_ttl=0``, which results off passes. Batch: ``Queue.enqueue_many`` (one pipeline) in
batches of 1 000."""

from __future__ import annotations

from counting import task_done
from redis import Redis
from rq import Queue

from adapters import BROKER, QUEUE, RESULTS_ON, WARMUP, script
from adapters._timing import batched, latencies, timed_loop

DIST = "rq"
CONFIG = "`rq worker-pool -n 2 -w rq.worker.SimpleWorker` (no fork per job)"
BATCH = "Queue.enqueue_many"
RESULTS = True
STORED = {"how": "scan", "url": BROKER, "match": "rq:results:*"}
#: Results off: RQ deletes the job as it finishes. On: kept for 10 minutes.
RESULT_TTL = 600 if RESULTS_ON else 0

queue = Queue(QUEUE, connection=Redis.from_url(BROKER))


def work() -> None:
    task_done()


def worker_argv(results: bool) -> list[list[str]]:
    args = f"worker-pool {QUEUE} -n 2 -w rq.worker.SimpleWorker -u {BROKER} -q"
    return [script("rq", args)]


def enqueue(n: int) -> float:
    return timed_loop(n, lambda: queue.enqueue(work, result_ttl=RESULT_TTL))


def enqueue_batch(n: int) -> float:
    sizes = batched(n, 1000)

    def send() -> None:
        jobs = [Queue.prepare_data(work, result_ttl=RESULT_TTL) for _ in range(sizes.pop())]
        queue.enqueue_many(jobs)

    return timed_loop(len(sizes), send)


def latency(n: int) -> list[float]:
    def round_trip() -> None:
        job = queue.enqueue(work, result_ttl=RESULT_TTL)
        if job.latest_result(timeout=30) is None:
            raise TimeoutError("no result in 30 s")

    return latencies(n, WARMUP, round_trip)
