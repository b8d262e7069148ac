"""The same tasks as ``amqp_fastq_app`` under Celery: ``celery -A tests.interop.amqp_celery_app
worker -P solo``."""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery(
    "amqp_interop",
    broker=os.environ.get("FASTQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("FASTQ_TEST_RESULT_BACKEND", "rpc://"),
)
app.conf.update(
    task_default_queue=os.environ.get("FASTQ_TEST_QUEUE", "fastq_test_interop"),
    result_expires=600,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="interop.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="interop.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="interop.sleep")
def sleep(seconds: float, value: int = 0) -> int:
    time.sleep(seconds)
    return value


@app.task(name="interop.noop", ignore_result=True)
def noop() -> None:
    return None
