"""Tasks for worker-semantics tests: retries, time limits, rate limits, ETA."""

import os
import time

from fastq import App, signals
from fastq.errors import SoftTimeLimitExceeded

from tests.apps import shared
from tests.apps.shared import redis_db

app = App(
    "semantics",
    broker=os.environ.get("FASTQ_BROKER_URL", redis_db(8)),
    backend=os.environ.get("FASTQ_RESULT_BACKEND", redis_db(9)),
    broker_transport_options={"visibility_timeout": 2},
    result_extended=os.environ.get("FASTQ_TEST_RESULT_EXTENDED") == "1",
)


@signals.worker_process_init.connect
def slow_child_start(**_: object) -> None:
    """A child that takes its time to start, to stop a worker while one is starting."""
    time.sleep(float(os.environ.get("FASTQ_TEST_CHILD_START_DELAY") or 0))


@app.task(name="sem.flaky", bind=True, max_retries=3, default_retry_delay=0.1)
def flaky(self, token: str, fail_times: int) -> int:  # type: ignore[no-untyped-def]
    shared.runs().hincrby("attempts", token, 1)
    if self.request.retries < fail_times:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries}"))
    return int(self.request.retries)


@app.task(name="sem.soft", soft_time_limit=0.3)
def soft() -> str:
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        return "soft limit caught"
    return "not interrupted"


@app.task(name="sem.hard", time_limit=0.5)
def hard(seconds: float) -> str:
    time.sleep(seconds)
    return "finished"


@app.task(name="sem.hard_late", time_limit=1, acks_late=True)
def hard_late(token: str) -> str:
    shared.runs().hincrby("starts", token, 1)
    time.sleep(30)
    return "finished"


@app.task(name="sem.limited", rate_limit="4/s")
def limited(token: str) -> float:
    now = time.time()
    shared.runs().rpush("limited", now)
    return now


@app.task(name="sem.stamp")
def stamp(token: str) -> float:
    shared.runs().rpush("order", token)
    shared.record(token)
    return time.time()


@app.task(name="sem.pid")
def pid() -> int:
    return os.getpid()


@app.task(name="sem.sleep")
def sleep(token: str, seconds: float) -> str:
    return shared.record(token, seconds)
