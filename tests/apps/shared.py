"""What the test apps' tasks do, shared by the fastq and the Celery app so both behave alike."""

from __future__ import annotations

import os
import time

import redis

#: Where tasks record that they ran: a hash token -> run count (a database tests own).
RUNS_URL = os.environ.get("FASTQ_TEST_RUNS", "redis://127.0.0.1:6379/10")
_client: redis.Redis | None = None


def runs() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(RUNS_URL)
    return _client


def add(x: int, y: int) -> int:
    return x + y


def fail(message: str) -> None:
    raise ValueError(message)


def record(token: str, seconds: float = 0.0) -> str:
    runs().hset("started", token, os.getpid())
    if seconds:
        time.sleep(seconds)
    runs().hincrby("runs", token, 1)
    return token
