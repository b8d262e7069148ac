"""Celery and fastq on one RabbitMQ, with ``rpc://`` results: a Celery client's tasks run on a
fastq worker, and a fastq client's tasks run on a Celery worker, success and failure both ways."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastq import App

from tests.amqp_support import AMQP_URL, delete, requires_rabbitmq, unique, worker

pytestmark = [requires_rabbitmq, pytest.mark.interop]


@pytest.fixture
def queue() -> Iterator[str]:
    name = unique("interop")
    yield name
    delete(name)


def test_celery_client_fastq_worker(queue: str, tmp_path: Path) -> None:
    from celery import Celery

    client = Celery("client", broker=AMQP_URL, backend="rpc://")
    client.conf.task_default_queue = queue
    try:
        with worker("fastq", queue, tmp_path / "w.log", "-c", "2", consumers=2):
            results = [client.send_task("interop.add", (i, i)) for i in range(10)]
            assert [r.get(timeout=15) for r in results] == [2 * i for i in range(10)]
            failing = client.send_task("interop.fail", ("from fastq",))
            with pytest.raises(ValueError, match="from fastq"):
                failing.get(timeout=15)
            assert failing.state == "FAILURE"
            assert "ValueError" in (failing.traceback or "")
    finally:
        client.close()
        delete(client.backend.oid)


def test_fastq_client_celery_worker(queue: str, tmp_path: Path) -> None:
    client = App("client", broker=AMQP_URL, backend="rpc://", set_as_current=False)
    client.conf.task_default_queue = queue
    try:
        with worker("celery", queue, tmp_path / "w.log"):
            results = [client.send_task("interop.add", (i, 1)) for i in range(10)]
            assert [r.get(timeout=15) for r in results] == [i + 1 for i in range(10)]
            failing = client.send_task("interop.fail", ("from celery",))
            with pytest.raises(ValueError, match="from celery"):
                failing.get(timeout=15)
            assert failing.state == "FAILURE"
    finally:
        client.close()
        delete(client.oid)
