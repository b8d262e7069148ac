"""What the test apps' tasks do, shared by the fastq and the Celery app so both behave alike."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

_client: redis.Redis | None = None


def redis_db(db: int) -> str:
    """Database ``db`` of the tests' Redis server (FASTQ_TEST_REDIS, which a pytest-xdist worker
    sets to a server of its own), for the test apps' defaults."""
    return f"{os.environ.get('FASTQ_TEST_REDIS', 'redis://127.0.0.1:6379')}/{db}"


def runs_url() -> str:
    """Where tasks record that they ran: a hash token -> run count (a database tests own).
    Read when used: a pytest-xdist worker sets it after this module is imported."""
    return os.environ.get("FASTQ_TEST_RUNS", redis_db(10))


def runs() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(runs_url())
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


def mul(x: int, y: int) -> int:
    return x * y


def tsum(values: list[int]) -> int:
    return sum(values)


def tsum_once(values: list[int], token: str) -> int:
    """A chord body that counts its runs, to check it ran exactly once."""
    runs().hincrby("runs", token, 1)
    return sum(values)


def identity(value: Any) -> Any:
    return value


def replace_with(task: Any, x: int, how: str, group: Any) -> Any:
    """A bound task's body that replaces the task (``group``: the app's canvas group class)."""
    add, mul = task.app.tasks["interop.add"], task.app.tasks["interop.mul"]
    if how == "task":
        return task.replace(add.s(x, 1))
    if how == "chain":
        return task.replace(add.s(x, 1) | mul.s(10))
    if how == "group":
        return task.replace(group(add.s(x, i) for i in range(3)))
    if how == "fail":
        return task.replace(task.app.tasks["interop.fail"].si(f"replaced {x}"))
    raise ValueError(how)


def errback(task_id: str) -> str:
    """An old-style errback: Celery and fastq send it the failed task's id."""
    runs().rpush("errbacks", task_id)
    return task_id


def errback_request(request: Any, exc: BaseException, traceback: Any) -> None:
    """A new-style errback (more than one argument): called in the worker with the request."""
    runs().rpush("errbacks", json.dumps([request.id, type(exc).__name__, str(exc)]))


#: The tasks both test apps define, by their short name (``interop.<name>``).
TASKS = (
    "add",
    "mul",
    "fail",
    "record",
    "tsum",
    "tsum_once",
    "identity",
    "errback",
    "errback_request",
)


def register(app: Any) -> Any:
    """Gives a client app (fastq or Celery) the test tasks, to build signatures with them."""
    for name in TASKS:
        app.task(name=f"interop.{name}")(globals()[name])
    # Never run by the client; its parameters differ from the worker's bound task: unchecked.
    app.task(name="interop.replace_with", typing=False)(replace_with)
    return app


def errbacks() -> list[str]:
    """What the errback tasks recorded, in order."""
    return [v.decode() for v in runs().lrange("errbacks", 0, -1)]
