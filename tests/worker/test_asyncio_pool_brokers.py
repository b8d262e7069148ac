"""``--pool asyncio`` on RabbitMQ (rpc:// results) and on the embedded SQLite broker, and a
Celery client sending to a fastq asyncio worker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery
import pytest
import redis
from fastq import App

from tests.amqp_support import AMQP_URL, delete, requires_rabbitmq, unique
from tests.processes import fastq_worker, wait_until

APP = "tests.apps.asyncio_app"

pytestmark = pytest.mark.usefixtures("runs")


def levels(runs: redis.Redis) -> list[int]:
    return [int(level) for level in runs.lrange("levels", 0, -1)]


@requires_rabbitmq
def test_coroutines_in_flight_together_on_rabbitmq(runs: redis.Redis) -> None:
    queue = unique("asyncio")
    env = {"FASTQ_BROKER_URL": AMQP_URL, "FASTQ_RESULT_BACKEND": "rpc://"}
    client = App("client", broker=AMQP_URL, backend="rpc://", set_as_current=False)
    try:
        args = ("--pool", "asyncio", "--concurrency", "100", "-Q", queue)
        with fastq_worker(*args, app=APP, env=env):
            started = time.monotonic()
            tasks = [(f"r{i}", 0.5) for i in range(100)]
            results = [client.send_task("aio.sleep", t, queue=queue) for t in tasks]
            late = [
                client.send_task("aio.sleep_late", (f"l{i}", 0.2), queue=queue) for i in range(5)
            ]
            blocking = client.send_task("aio.blocking", ("b", 0.5), queue=queue)
            assert [r.get(timeout=30) for r in results] == [t for t, _ in tasks]
            assert [r.get(timeout=30) for r in late] == [f"l{i}" for i in range(5)]
            assert blocking.get(timeout=30) == "b"
            elapsed = time.monotonic() - started
        assert elapsed < 10, elapsed  # one after another: 50 s
        assert max(levels(runs)) > 50
    finally:
        client.close()
        delete(queue, client.oid)


def test_coroutines_in_flight_together_on_sqlite(tmp_path: Path, runs: redis.Redis) -> None:
    url = f"sqlite:///{tmp_path}/fastq.db"
    env = {"FASTQ_BROKER_URL": url, "FASTQ_RESULT_BACKEND": url}
    client = App("client", broker=url, backend=url, set_as_current=False)
    try:
        with fastq_worker("--pool", "asyncio", "--concurrency", "100", app=APP, env=env):
            started = time.monotonic()
            results = client.send_many([("aio.sleep", (f"s{i}", 0.5), None) for i in range(100)])
            late = client.send_task("aio.sleep_late", ("late", 0.1))
            assert [r.get(timeout=30) for r in results] == [f"s{i}" for i in range(100)]
            assert late.get(timeout=30) == "late"
            elapsed = time.monotonic() - started
        assert elapsed < 10, elapsed
        assert max(levels(runs)) > 50
    finally:
        client.close()


@pytest.fixture
def celery_client(broker_url: str, backend_url: str) -> Iterator[celery.Celery]:
    app = celery.Celery("client", broker=broker_url, backend=backend_url, set_as_current=False)
    yield app
    app.close()


def test_a_celery_client_sends_to_a_fastq_asyncio_worker(
    celery_client: celery.Celery, worker_env: dict[str, str], runs: redis.Redis
) -> None:
    with fastq_worker("--pool", "asyncio", "--concurrency", "50", app=APP, env=worker_env):
        results = [celery_client.send_task("aio.sleep", (f"c{i}", 0.3)) for i in range(50)]
        assert [r.get(timeout=30) for r in results] == [f"c{i}" for i in range(50)]
        mine = celery_client.send_task("aio.whoami", (0.1,))
        assert mine.get(timeout=30) == mine.id
        soft = celery_client.send_task("aio.soft", ("celery",))
        assert soft.get(timeout=30) == "cleaned up"
    assert max(levels(runs)) > 20


@pytest.fixture(params=["redis", pytest.param("amqp", marks=requires_rabbitmq)])
def held_transport(request: pytest.FixtureRequest, broker_url: str) -> str:
    return AMQP_URL if request.param == "amqp" else broker_url


def test_what_waits_behind_a_running_coroutine_is_listed_at_once(
    held_transport: str, backend_url: str, runs: redis.Redis
) -> None:
    """``inspect reserved``/``scheduled`` list what the worker holds while its one slot runs a
    long coroutine, within about a second. On RabbitMQ that includes what the broker pushed to
    it meanwhile (an ETA task, plain and rate-limited ones), and a revoked one is settled then;
    on Redis the worker takes nothing while every slot is busy: it lists only the task it
    fetched before, the rest waits in the queue."""
    amqp = held_transport == AMQP_URL
    queue = unique("held")
    node = f"held-{queue[-8:]}@asyncio"
    env = {"FASTQ_BROKER_URL": held_transport, "FASTQ_RESULT_BACKEND": backend_url}
    client = celery.Celery(
        "client", broker=held_transport, backend=backend_url, set_as_current=False
    )

    def send(name: str, *args: Any, **options: Any) -> str:
        return str(client.send_task(name, args, queue=queue, **options).id)

    def listed() -> tuple[list[str], list[str]]:
        inspector = client.control.inspect([node], timeout=1)
        reserved = sorted(r["id"] for r in (inspector.reserved() or {}).get(node, []))
        scheduled = [s["request"]["id"] for s in (inspector.scheduled() or {}).get(node, [])]
        return reserved, scheduled

    try:
        # A window of 8 (RabbitMQ pushes no more unacknowledged messages): room for all.
        args = (
            "-n",
            node,
            "--pool",
            "asyncio",
            "-c",
            "1",
            "--prefetch-multiplier",
            "8",
            "-Q",
            queue,
        )
        with fastq_worker(*args, app=APP, env=env):
            client.send_task("aio.sleep", ("long", 8.0), queue=queue)
            wait_until(lambda: runs.hexists("started", "long"), timeout=20)
            first = send("aio.sleep", "first", 0.1)
            wait_until(lambda: listed() == ([first], []), timeout=5)
            # Revoked before it is sent: skipped (stored REVOKED) as soon as the worker takes it.
            gone = str(uuid.uuid4())
            client.control.revoke(gone, destination=[node])
            wait_until(lambda: gone in client.control.inspect([node]).revoked()[node], 5)
            # Sent while "first" waits for the slot "long" holds.
            send("aio.sleep", "gone", 0.1, task_id=gone)
            later = send("aio.sleep", "later", 0.1, countdown=30)
            plain = send("aio.sleep", "plain", 0.1)
            limited = [send("aio.limited", f"limited{i}") for i in range(2)]
            if amqp:
                expected = (sorted([first, plain, *limited]), [later])
            else:
                expected = ([first], [])
            sent = time.monotonic()
            seen: list[tuple[list[str], list[str]]] = []
            while time.monotonic() - sent < 1.5 and (not seen or seen[-1] != expected):
                seen.append(listed())
            assert seen[-1] == expected, seen
            assert client.AsyncResult(gone).state == ("REVOKED" if amqp else "PENDING")
            assert runs.hget("runs", "long") is None  # all of it while "long" still ran
    finally:
        client.control.purge()
        client.close()
        if amqp:
            delete(queue)
