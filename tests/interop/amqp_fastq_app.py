"""A fastq app for the RabbitMQ tests, configured from the environment by the test that starts
its worker: ``fastq -A tests.interop.amqp_fastq_app worker``."""

from __future__ import annotations

import os
import time

from fastq import App

from tests.interop.amqp_tasks import SHARED

app = App(
    "amqp_interop",
    broker=os.environ.get("FASTQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("FASTQ_TEST_RESULT_BACKEND", "rpc://"),
    task_default_queue=os.environ.get("FASTQ_TEST_QUEUE", "fastq_test_interop"),
    task_default_queue_type=os.environ.get("FASTQ_TEST_QUEUE_TYPE", "classic"),
    task_acks_late=os.environ.get("FASTQ_TEST_ACKS_LATE") == "1",
    result_expires=600,
    broker_heartbeat=float(os.environ["FASTQ_TEST_HEARTBEAT"])
    if os.environ.get("FASTQ_TEST_HEARTBEAT")
    else None,
)
#: Where ``record`` appends the ids of the tasks it ran (duplicates show as repeated lines).
RECORD = os.environ.get("FASTQ_TEST_RECORD", "")


for name, fn in SHARED.items():
    app.task(name=name)(fn)


@app.task(name="interop.record", bind=True)
def record(self, value: int, seconds: float = 0.0) -> int:
    time.sleep(seconds)
    if RECORD:
        with open(RECORD, "a") as f:
            f.write(f"{self.request.id} {value}\n")
    return value


@app.task(name="interop.started_sleep", bind=True)
def started_sleep(self, seconds: float, value: int = 0) -> int:
    """Records its start (so a test knows when to kill the worker), then sleeps."""
    if RECORD:
        with open(RECORD, "a") as f:
            f.write(f"{self.request.id} started\n")
    time.sleep(seconds)
    return value
