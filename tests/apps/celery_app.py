"""The same tasks on real Celery: ``celery -A tests.apps.celery_app worker``."""

import os

from celery import Celery

from tests.apps import shared

app = Celery(
    "interop",
    broker=os.environ.get("FASTQ_BROKER_URL", "redis://127.0.0.1:6379/8"),
    backend=os.environ.get("FASTQ_RESULT_BACKEND", "redis://127.0.0.1:6379/9"),
)
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


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
