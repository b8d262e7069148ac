"""The in-process memory broker and backend, with a worker loop in a thread of the test."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from fastq import App
from fastq.errors import ConfigurationError, EncodeError
from fastq.worker import run_worker
from fastq.worker.loop import WorkerLoop


@pytest.fixture
def app() -> Iterator[App]:
    name = uuid.uuid4().hex  # a store of its own
    application = App("mem", broker=f"memory://{name}", set_as_current=False)
    yield application
    application.close()


@pytest.fixture
def worker(app: App) -> Iterator[WorkerLoop]:
    loop = WorkerLoop(app, ["celery"], prefetch=4, hostname="mem@test", consumer_id="mem-1")
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    yield loop
    loop.stop()
    thread.join(5)


def test_results_failures_and_retries(app: App, worker: WorkerLoop) -> None:
    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="fail")
    def fail() -> None:
        raise KeyError("missing")

    @app.task(name="flaky", bind=True, default_retry_delay=0.05)
    def flaky(self) -> int:  # type: ignore[no-untyped-def]
        if self.request.retries < 2:
            raise self.retry()
        return int(self.request.retries)

    assert [add.delay(i, 1).get(timeout=5) for i in range(5)] == [1, 2, 3, 4, 5]
    with pytest.raises(KeyError, match="missing"):
        fail.delay().get(timeout=5)
    assert flaky.delay().get(timeout=5) == 2


def test_the_backend_follows_the_broker_and_is_woken_by_stores(app: App) -> None:
    assert type(app.backend).__name__ == "MemoryBackend"
    threading.Timer(0.05, app.backend.mark_as_done, ("t", 7)).start()
    assert app.AsyncResult("t").get(timeout=2) == 7


def test_priority_eta_and_stores_kept_apart(app: App) -> None:
    app.send_task("t", task_id="later", countdown=0.2)
    app.send_task("t", task_id="low", priority=9)
    app.send_task("t", task_id="high", priority=0)
    other = App("x", broker="memory://another-store", set_as_current=False)
    assert other.broker.queue_length("celery") == 0
    consumer = app.broker.consumer(["celery"], prefetch=5, consumer_id="c", accept=["json"])
    assert [d.task_id for d in consumer.fetch(1.0)] == ["high", "low"]
    assert [d.task_id for d in consumer.fetch(2.0)] == ["later"]
    assert consumer.restore_unacked() == 3
    assert app.broker.queue_length("celery") == 3


def test_arguments_are_serialized_as_on_a_real_broker(app: App) -> None:
    with pytest.raises(EncodeError):
        app.send_task("t", (object(),))


def test_a_prefork_worker_refuses_it(app: App) -> None:
    with pytest.raises(ConfigurationError, match="use --pool threads or --pool solo"):
        run_worker(app, pool="prefork", concurrency=1)
