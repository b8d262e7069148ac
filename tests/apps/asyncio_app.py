"""A fastq app for the asyncio pool: ``fastq -A tests.apps.asyncio_app worker --pool asyncio``.

Its tasks record in the runs database (``tests.apps.shared``) when they start, how many ran at
once (``levels``: the count in flight as each started), and that they finished.
"""

import asyncio
import os
import time
from typing import Any

import redis.asyncio
from fastq import App
from fastq.errors import SoftTimeLimitExceeded

from tests.apps import shared

app = App(
    "aio",
    broker=os.environ.get("FASTQ_BROKER_URL", shared.redis_db(8)),
    backend=os.environ.get("FASTQ_RESULT_BACKEND", shared.redis_db(9)),
)
if os.environ.get("FASTQ_TEST_POOL"):  # the setting instead of --pool
    app.conf.worker_pool = os.environ["FASTQ_TEST_POOL"]
if os.environ.get("FASTQ_TEST_VISIBILITY_TIMEOUT"):  # a killed worker's messages come back soon
    app.conf.broker_transport_options = {
        "visibility_timeout": float(os.environ["FASTQ_TEST_VISIBILITY_TIMEOUT"])
    }
_runs: redis.asyncio.Redis | None = None
#: Tasks of this module in flight now, in this worker.
_in_flight = 0


def runs() -> redis.asyncio.Redis:
    """The runs database, from the worker's one event loop."""
    global _runs
    if _runs is None:
        # A few connections, shared: tasks wait for one rather than open hundreds at once.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            shared.runs_url(), max_connections=20, timeout=None
        )
        _runs = redis.asyncio.Redis(connection_pool=pool)
    return _runs


async def _sleep(token: str, seconds: float) -> str:
    global _in_flight
    _in_flight += 1  # one thread, one loop: no lock needed
    level = _in_flight
    try:
        client = runs()
        await client.rpush("levels", level)
        await client.hset("started", token, os.getpid())
        await asyncio.sleep(seconds)
    finally:
        _in_flight -= 1
    await client.hincrby("runs", token, 1)
    return token


@app.task(name="aio.sleep")
async def sleep(token: str, seconds: float) -> str:
    return await _sleep(token, seconds)


@app.task(name="aio.sleep_late", acks_late=True)
async def sleep_late(token: str, seconds: float) -> str:
    return await _sleep(token, seconds)


@app.task(name="aio.blocking")
def blocking(token: str, seconds: float) -> str:
    """A plain def task: it runs in the pool's threads, so it does not block the loop."""
    shared.runs().hset("started", token, os.getpid())
    time.sleep(seconds)
    shared.runs().hincrby("runs", token, 1)
    return token


@app.task(name="aio.whoami", bind=True)
async def whoami(self: Any, seconds: float) -> str | None:
    """Its own request after awaiting, while many others run: each coroutine has its own."""
    await asyncio.sleep(seconds)
    return self.request.id  # type: ignore[no-any-return]


@app.task(name="aio.soft", soft_time_limit=0.5)
async def soft(token: str) -> str:
    try:
        await asyncio.sleep(30)
    except SoftTimeLimitExceeded:
        await runs().hset("cleanup", token, "done")
        return "cleaned up"
    return "not interrupted"


@app.task(name="aio.hard", time_limit=1)
async def hard(token: str) -> str:
    await runs().hset("started", token, os.getpid())
    await asyncio.sleep(30)
    await runs().hincrby("runs", token, 1)
    return token


@app.task(name="aio.noop")
async def noop() -> None:
    return None


@app.task(name="aio.flaky", bind=True, max_retries=3, default_retry_delay=0.1)
async def flaky(self: Any, token: str, fail_times: int) -> int:
    await runs().hincrby("attempts", token, 1)
    if self.request.retries < fail_times:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries}"))
    return int(self.request.retries)


@app.task(name="aio.stamp")
async def stamp(token: str) -> float:
    await runs().hincrby("runs", token, 1)
    return time.time()


@app.task(name="aio.limited", rate_limit="5/s")
async def limited(token: str) -> float:
    return await stamp(token)  # type: ignore[no-any-return]
