"""Revoke over the control channel: skipped on arrival, or terminated while running."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from fastq import App, states
from fastq.errors import TaskRevokedError

from tests.processes import fastq_worker, wait_until

APP = "tests.apps.semantics_app"


pytestmark = pytest.mark.usefixtures("runs")


@pytest.fixture
def client(broker_url: str, backend_url: str) -> Iterator[App]:
    app = App("client", broker=broker_url, backend=backend_url, set_as_current=False)
    yield app
    app.close()


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_revoked_task_is_skipped_when_it_arrives(
    client: App, runs: redis.Redis, pool: str
) -> None:
    with fastq_worker("--pool", pool, "--concurrency", "2", app=APP):
        time.sleep(0.5)  # the workers' control listeners are subscribed
        doomed = client.send_task("sem.stamp", ("doomed",), countdown=3)
        doomed.revoke()
        kept = client.send_task("sem.stamp", ("kept",), countdown=3)
        assert kept.get(timeout=20)
        with pytest.raises(TaskRevokedError, match="revoked"):
            doomed.get(timeout=20)
        assert doomed.state == states.REVOKED
    assert not runs.hexists("runs", "doomed")


@pytest.mark.parametrize("sig", ["SIGKILL", None])
def test_terminate_kills_the_running_task_and_the_worker_keeps_serving(
    client: App, runs: redis.Redis, sig: str | None
) -> None:
    """``None``: Celery's default signal, SIGTERM, which a child otherwise takes as a warm stop."""
    with fastq_worker("--pool", "prefork", "--concurrency", "1", app=APP) as worker:
        long = client.send_task("sem.sleep", ("long", 30))
        wait_until(lambda: runs.hexists("started", "long"), timeout=15)
        if sig is None:
            long.revoke(terminate=True)
        else:
            client.control.revoke(long.id, terminate=True, signal=sig)
        with pytest.raises(TaskRevokedError, match="terminated"):
            long.get(timeout=15)
        assert client.send_task("sem.stamp", ("after",)).get(timeout=15)
        assert "terminating task" in worker.log()
        if sig is None:
            assert "terminated by revoke" in worker.log()
    assert not runs.hexists("runs", "long")
