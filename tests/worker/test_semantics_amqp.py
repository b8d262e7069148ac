"""Retries, ETA and chains on RabbitMQ (the same tasks as on Redis), with rpc:// results."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from fastq import App, chain
from fastq.canvas import signature

from tests.amqp_support import AMQP_URL, delete, unique
from tests.processes import fastq_worker

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
