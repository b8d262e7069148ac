"""The pytest plugin's fixtures (``fastq.contrib.pytest``), used as a project's tests would."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from fastq import App, current_app, shared_task
from fastq.contrib.testing.worker import TestWorker


@shared_task(name="plugin.mul")
def mul(x: int, y: int) -> int:
    return x * y


@pytest.fixture
def fastq_worker_parameters() -> Mapping[str, Any]:
    return {"pool": "threads", "concurrency": 2}


def test_app_and_worker(fastq_app: App, fastq_worker: TestWorker) -> None:
    @fastq_app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert current_app() is fastq_app
    assert fastq_worker.concurrency == 2
    assert add.delay(2, 2).get(timeout=10) == 4
    assert mul.delay(3, 4).get(timeout=10) == 12  # a shared task, through the current app


def test_each_test_gets_a_new_app(fastq_app: App) -> None:
    assert fastq_app.conf.broker_url.startswith("memory://")
    assert "plugin.mul" in fastq_app.tasks
