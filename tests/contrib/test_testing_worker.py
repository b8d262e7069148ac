"""``start_worker`` runs a worker in this process for tests (``fastq.contrib.testing.worker``)."""

from __future__ import annotations

import threading
import uuid

import pytest
from fastq import App
from fastq.contrib.testing.worker import start_worker
from fastq.errors import ConfigurationError


def _app() -> App:
    store = uuid.uuid4().hex
    return App("tw", broker=f"memory://{store}", backend=f"cache+memory://{store}",
               set_as_current=False)  # fmt: skip


def test_tasks_run_and_the_worker_stops_with_the_block() -> None:
    app = _app()

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(app, pool="threads", concurrency=2) as worker:
        assert worker.concurrency == 2
        assert [add.delay(i, i).get(timeout=10) for i in range(5)] == [0, 2, 4, 6, 8]
    assert not [t for t in threading.enumerate() if t.name.startswith("fastq-testworker")]


def test_celerys_arguments_and_refusals() -> None:
    app = _app()
    with start_worker(app, perform_ping_check=False) as worker:  # Celery's, meaningless here
        assert worker.concurrency == 1
    with (
        pytest.raises(ConfigurationError, match="'solo' or 'threads'"),
        start_worker(app, pool="prefork"),
    ):
        pass
    with pytest.raises(ConfigurationError, match="does not take"), start_worker(app, bogus=1):
        pass


def test_loglevel_applies_while_it_runs_and_logfile_is_refused() -> None:
    import logging

    app = _app()
    before = logging.getLogger("fastq").level
    with start_worker(app, loglevel="ERROR"):
        assert logging.getLogger("fastq").level == logging.ERROR
    assert logging.getLogger("fastq").level == before
    with (
        pytest.raises(ConfigurationError, match="does not take"),
        start_worker(app, logfile="/tmp/x.log"),
    ):
        pass
