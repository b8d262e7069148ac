"""The same tasks as ``amqp_fastq_app`` under Celery: ``celery -A tests.interop.amqp_celery_app
worker -P solo``."""

from __future__ import annotations

import os

from celery import Celery

from tests.interop.amqp_tasks import SHARED

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


for name, fn in SHARED.items():
    app.task(name=name)(fn)
