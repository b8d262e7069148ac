"""Retries, ETA and chains on RabbitMQ (the same tasks as on Redis), with rpc:// results."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis
from fastq import App, chain
from fastq.canvas import signature
from fastq.errors import TimeLimitExceeded, WorkerLostError

from tests.amqp_support import AMQP_URL, delete, unique
from tests.processes import fastq_worker, wait_until

APP = "tests.apps.semantics_app"


pytestmark = pytest.mark.usefixtures("runs")


@pytest.fixture
def queue() -> Iterator[str]:
    name = unique("semantics")
    yield name
    delete(name)


@pytest.fixture
def env() -> dict[str, str]:
    return {"FASTQ_BROKER_URL": AMQP_URL, "FASTQ_RESULT_BACKEND": "rpc://"}


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[App]:
    app = App("client", broker=env["FASTQ_BROKER_URL"], backend="rpc://", set_as_current=False)
    yield app
    app.close()
    delete(app.oid)


def test_retries_eta_and_chains_on_rabbitmq(
    client: App, env: dict[str, str], queue: str, runs: redis.Redis
) -> None:
    with fastq_worker("--pool", "prefork", "--concurrency", "2", "-Q", queue, app=APP, env=env):
        retried = client.send_task("sem.flaky", ("amqp", 2), queue=queue)
        assert retried.get(timeout=30) == 2
        assert int(runs.hget("attempts", "amqp") or 0) == 3

        sent = time.time()
        delayed = client.send_task("sem.stamp", ("eta",), countdown=2, queue=queue)
        assert delayed.get(timeout=30) >= sent + 1.5

        first = signature("sem.stamp", ("c1",), options={"queue": queue}, app=client)
        then = signature("sem.pid", options={"queue": queue}, immutable=True, app=client)
        assert isinstance(chain(first, then).apply_async().get(timeout=30), int)
        assert runs.hexists("runs", "c1")


# The supervisor records these: the child that ran the task is gone. On rpc:// the result is a
# reply to the client's queue, which the child named when the task started.
def test_a_hard_time_limit_reaches_an_rpc_client(
    client: App, env: dict[str, str], queue: str
) -> None:
    with fastq_worker("--pool", "prefork", "-c", "1", "-Q", queue, app=APP, env=env) as worker:
        stuck = client.send_task("sem.hard", (30,), queue=queue)
        started = time.monotonic()
        with pytest.raises(TimeLimitExceeded):
            stuck.get(timeout=20)
        assert time.monotonic() - started < 10
        assert client.send_task("sem.hard", (0.01,), queue=queue).get(timeout=20) == "finished"
        assert "hard time limit" in worker.log()
        assert "has no reply_to" not in worker.log()


def test_a_child_killed_mid_task_fails_it_for_an_rpc_client(
    client: App, env: dict[str, str], queue: str, runs: redis.Redis
) -> None:
    with fastq_worker("--pool", "prefork", "-c", "1", "-Q", queue, app=APP, env=env) as worker:
        doomed = client.send_task("sem.sleep", ("doomed", 30), queue=queue)
        wait_until(lambda: runs.hexists("started", "doomed"), timeout=20)
        os.kill(int(runs.hget("started", "doomed") or 0), signal.SIGKILL)
        with pytest.raises(WorkerLostError, match="Worker exited prematurely"):
            doomed.get(timeout=20)
        assert client.send_task("sem.stamp", ("after",), queue=queue).get(timeout=20)
        assert "has no reply_to" not in worker.log()
    assert not runs.hexists("runs", "doomed")


def test_a_late_acked_task_killed_at_its_time_limit_does_not_run_again(
    client: App, env: dict[str, str], queue: str, runs: redis.Redis
) -> None:
    """RabbitMQ gives the message back when the killed child's connection closes; the child
    that gets it drops it (Celery acks it), instead of running and killing it forever."""
    with fastq_worker("--pool", "prefork", "-c", "2", "-Q", queue, app=APP, env=env) as worker:
        stuck = client.send_task("sem.hard_late", ("late",), queue=queue)
        with pytest.raises(TimeLimitExceeded):
            stuck.get(timeout=20)
        wait_until(lambda: "does not run again" in worker.log(), timeout=15)
        time.sleep(1.5)  # past its time limit, had it started again
        assert runs.hget("starts", "late") == b"1"
        assert worker.log().count("ran past its hard time limit") == 1
