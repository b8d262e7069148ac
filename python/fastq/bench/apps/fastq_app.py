"""The fastq side: ``fastq -A fastq.bench.apps.fastq_app worker``."""

from __future__ import annotations

from fastq import App
from fastq.bench import probe
from fastq.bench.apps import settings_from_env
from fastq.bench.spec import QUEUE, TASK_NAME
from fastq.task import Task


def make_app(
    broker: str,
    backend: str | None,
    acks_late: bool = False,
    queue: str = QUEUE,
    queue_type: str = "classic",
) -> tuple[App, Task]:
    """A fastq app with the benchmark task; no backend means results are off. ``queue_type``
    ("quorum") matters on RabbitMQ only."""
    app = App(
        "fastq-bench",
        broker=broker,
        backend=backend,
        set_as_current=False,
        task_default_queue=queue,
        task_acks_late=acks_late,
        task_ignore_result=backend is None,
        task_default_queue_type=queue_type,
    )
    task = app.task(name=TASK_NAME)(probe.run)
    return app, task


app, work = make_app(**settings_from_env())
