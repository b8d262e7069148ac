"""A fastq app for worker and interop tests: ``fastq -A tests.apps.fastq_app worker``."""

import os
from typing import Any

from fastq import App, group

from tests.apps import shared
from tests.apps.shared import redis_db

app = App(
    "interop",
    broker=os.environ.get("FASTQ_BROKER_URL", redis_db(8)),
    backend=os.environ.get("FASTQ_RESULT_BACKEND", redis_db(9)),
)


@app.task(name="interop.add")
def add(x: int, y: int) -> int:
    return shared.add(x, y)


@app.task(name="interop.fail")
def fail(message: str) -> None:
    shared.fail(message)


@app.task(name="interop.record")
def record(token: str, seconds: float = 0.0) -> str:
    return shared.record(token, seconds)


@app.task(name="interop.record_late", acks_late=True)
def record_late(token: str, seconds: float = 0.0) -> str:
    return shared.record(token, seconds)


@app.task(name="interop.mul")
def mul(x: int, y: int) -> int:
    return shared.mul(x, y)


@app.task(name="interop.tsum")
def tsum(values: list[int]) -> int:
    return shared.tsum(values)


@app.task(name="interop.tsum_once")
def tsum_once(values: list[int], token: str) -> int:
    return shared.tsum_once(values, token)


@app.task(name="interop.identity")
def identity(value: Any) -> Any:
    return shared.identity(value)


@app.task(name="interop.replace_with", bind=True)
def replace_with(self: Any, x: int, how: str) -> Any:
    return shared.replace_with(self, x, how, group)


@app.task(name="interop.errback")
def errback(task_id: str) -> str:
    return shared.errback(task_id)


@app.task(name="interop.errback_request")
def errback_request(request: Any, exc: BaseException, traceback: Any) -> None:
    shared.errback_request(request, exc, traceback)
