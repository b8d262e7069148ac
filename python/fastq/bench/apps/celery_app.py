"""The Celery side: ``celery -A fastq.bench.apps.celery_app:app worker``.

Importing this module needs Celery (``pip install fastq-worker[compare]``).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from fastq.bench import probe
from fastq.bench.apps import settings_from_env
from fastq.bench.spec import QUEUE, TASK_NAME


def make_app(
    broker: str,
    backend: str | None,
    acks_late: bool = False,
    queue: str = QUEUE,
    queue_type: str = "classic",
) -> tuple[Any, Any]:
    """A Celery app with the benchmark task, configured like the fastq one."""
    app = Celery("fastq-bench", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_default_queue_type=queue_type,
        task_acks_late=acks_late,
        task_ignore_result=backend is None,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    task = app.task(name=TASK_NAME)(probe.run)
    return app, task


app, work = make_app(**settings_from_env())
