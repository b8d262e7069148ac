"""Publish retry (``apply_async(retry=..., retry_policy=...)``, ``task_publish_retry``,
``task_publish_retry_policy``): the same snippet on a fastq client and a Celery client whose
broker, a redis-server of the test's own, is down, then comes back during the retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.compat import apps
from tests.faults.redis_server import RedisServer

SIDES = ["fastq", "celery"]


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(params=SIDES)
def client(request: Any, server: RedisServer, backend_url: str) -> Iterator[SimpleNamespace]:
    """The compat tasks on ``side``'s client, whose broker is ``server`` (db 0)."""
    tasks = apps.build(request.param, server.url(0), backend_url)
    yield tasks
    tasks.app.close()


def _send_timed(client: SimpleNamespace, **options: Any) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        client.double.apply_async((1,), queue="retried", **options)
    except Exception as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


def test_retry_false_raises_operational_error_at_once(
    client: SimpleNamespace, server: RedisServer
) -> None:
    server.kill()
    took, error = _send_timed(client, retry=False)
    assert isinstance(error, client.double.OperationalError)
    if client.side == "fastq":  # Celery's client takes its connect timeout (~6 s) here
        assert took < 1.0


def test_the_policy_is_followed_then_operational_error(
    client: SimpleNamespace, server: RedisServer
) -> None:
    server.kill()
    policy = {"max_retries": 2, "interval_start": 0.4, "interval_step": 0.4, "interval_max": 5}
    took, error = _send_timed(client, retry=True, retry_policy=policy)
    assert isinstance(error, client.double.OperationalError)
    assert 1.1 <= took < 4.0  # waited 0.4 then 0.8


def test_the_setting_policy_applies(client: SimpleNamespace, server: RedisServer) -> None:
    client.app.conf.task_publish_retry_policy = {
        "max_retries": 1,
        "interval_start": 0.8,
        "interval_step": 0,
        "interval_max": 1,
    }
    server.kill()
    took, error = _send_timed(client)
    assert isinstance(error, client.double.OperationalError)
    assert 0.7 <= took < 3.0
    client.app.conf.task_publish_retry = False
    took, error = _send_timed(client)
    assert isinstance(error, client.double.OperationalError)
    if client.side == "fastq":  # Celery's client spends its connect timeout here
        assert took < 0.7


def test_a_broker_back_within_the_retries_takes_the_task(
    client: SimpleNamespace, server: RedisServer
) -> None:
    server.kill()
    back = threading.Timer(1.0, server.start)
    back.start()
    policy = {"max_retries": 20, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.5}
    try:
        took, error = _send_timed(client, retry_policy=policy)
    finally:
        back.join()
    assert error is None
    assert took >= 0.9
    assert server.client(0).llen("retried") == 1


def test_retry_errors_are_retried_too(client: SimpleNamespace, server: RedisServer) -> None:
    if client.side == "celery":
        pytest.skip("Celery's retry_errors only add to the errors of kombu's own connection")
    calls = []

    class Flaky(Exception):
        pass

    real = client.app.broker.publish

    def flaky(message: Any) -> None:
        calls.append(message)
        if len(calls) < 3:
            raise Flaky("not yet")
        real(message)

    client.app.broker.publish = flaky
    policy = {"max_retries": 3, "interval_start": 0, "retry_errors": (Flaky,)}
    _, error = _send_timed(client, retry_policy=policy)
    assert error is None and len(calls) == 3
    calls.clear()
    with pytest.raises(Flaky):
        client.double.apply_async((1,), retry_policy={"max_retries": 1, "retry_errors": [Flaky]})
