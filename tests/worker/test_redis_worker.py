"""The fastq worker end to end on real Redis: results, bad input, crashes, warm shutdown."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastq import App, _core

from tests.processes import children_of, fastq_worker

pytestmark = pytest.mark.usefixtures("runs")


@pytest.fixture
def client_app(broker_url: str, backend_url: str) -> Iterator[App]:
    app = App("client", broker=broker_url, backend=backend_url, set_as_current=False)
    yield app
    app.close()


def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_results_come_back(worker_env: dict[str, str], client_app: App, pool: str) -> None:
    with fastq_worker("--pool", pool, "--concurrency", "2", env=worker_env):
        results = [client_app.send_task("interop.add", (i, i)) for i in range(20)]
        assert [r.get(timeout=20) for r in results] == [2 * i for i in range(20)]
        failing = client_app.send_task("interop.fail", ("boom",))
        with pytest.raises(ValueError, match="boom"):
            failing.get(timeout=20)
        assert "Traceback" in (failing.traceback or "")


def test_bad_input_is_logged_and_later_tasks_run(
    worker_env: dict[str, str],
    client_app: App,
    broker_redis: redis.Redis,
    backend_redis: redis.Redis,
) -> None:
    good = _core.encode_task_envelope({"task": "interop.add", "id": "later"}, (1, 2), {})
    unknown = _core.encode_task_envelope({"task": "no.such.task", "id": "unknown-id"}, (), {})
    pickled = json.loads(good)
    pickled["content-type"] = "application/x-python-serialize"
    pickled["headers"]["id"] = "pickle-id"
    pickled["properties"]["delivery_tag"] = str(uuid.uuid4())
    bad_body = json.loads(good)
    bad_body["body"] = base64.b64encode(b'{"not": "a list"}').decode()
    bad_body["headers"]["id"] = "shape-id"
    bad_body["properties"]["delivery_tag"] = str(uuid.uuid4())
    # Queue order: the consumer pops from the right, so push in the order they should arrive.
    for raw in [b"{not json", unknown, json.dumps(pickled), json.dumps(bad_body), good]:
        broker_redis.lpush("celery", raw)
    with fastq_worker("--pool", "solo", env=worker_env) as worker:
        assert client_app.AsyncResult("later").get(timeout=20) == 3
        log = worker.log()
    assert "no.such.task" in log and "unregistered" in log
    assert "pickle" in log
    assert "not valid kombu JSON" in log or "malformed" in log
    assert "args, kwargs, embed" in log
    # FAILURE stored for the ones with an id, as Celery does.
    for task_id in ("unknown-id", "pickle-id", "shape-id"):
        meta = json.loads(backend_redis.get(f"celery-task-meta-{task_id}") or b"{}")
        assert meta.get("status") == "FAILURE", task_id
    assert broker_redis.hlen("unacked") == 0


def test_sigkill_of_a_child_with_acks_late_reruns_the_task(
    worker_env: dict[str, str], client_app: App, broker_redis: redis.Redis, runs: redis.Redis
) -> None:
    with fastq_worker("--pool", "prefork", "--concurrency", "1", env=worker_env) as worker:
        result = client_app.send_task("interop.record_late", ("victim", 3.0))
        wait_until(lambda: runs.hexists("started", "victim"))
        child = int(runs.hget("started", "victim") or 0)
        assert child in children_of(worker.pid)
        os.kill(child, signal.SIGKILL)
        assert result.get(timeout=30) == "victim"
        assert int(runs.hget("runs", "victim") or 0) == 1  # the killed run never finished
        assert "died with signal SIGKILL" in worker.log()
    assert broker_redis.hlen("unacked") == 0


def test_warm_shutdown_finishes_in_flight_tasks(
    worker_env: dict[str, str], client_app: App, broker_redis: redis.Redis, runs: redis.Redis
) -> None:
    tokens = [f"t{i}" for i in range(12)]
    worker = fastq_worker("--pool", "prefork", "--concurrency", "2", env=worker_env)
    try:
        for token in tokens:
            client_app.send_task("interop.record_late", (token, 0.3))
        wait_until(lambda: runs.hlen("started") >= 2)
    finally:
        code = worker.stop()
    assert code == 0, worker.log()
    started = {k.decode() for k in runs.hkeys("started")}
    finished = {k.decode() for k in runs.hkeys("runs")}
    assert started == finished, "a started task was cut off by a warm shutdown"
    assert broker_redis.hlen("unacked") == 0
    assert broker_redis.zcard("unacked_index") == 0
    # What did not start is back in the queue, not lost.
    assert broker_redis.llen("celery") == len(tokens) - len(finished)


def test_max_tasks_per_child_replaces_the_child(
    worker_env: dict[str, str], client_app: App
) -> None:
    with fastq_worker(
        "--pool", "prefork", "--concurrency", "1", "--max-tasks-per-child", "3", env=worker_env
    ) as w:
        results = [client_app.send_task("interop.add", (i, 1)) for i in range(7)]
        assert [r.get(timeout=20) for r in results] == [i + 1 for i in range(7)]
        assert w.log().count("exited; starting a new one") >= 2


def test_max_memory_per_child_replaces_the_child(
    worker_env: dict[str, str], client_app: App
) -> None:
    # 1 KiB: every child is over it after its first task, so each task gets a new child.
    with fastq_worker(
        "--pool", "prefork", "--concurrency", "1", "--max-memory-per-child", "1", env=worker_env
    ) as w:
        results = [client_app.send_task("interop.add", (i, 1)) for i in range(3)]
        assert [r.get(timeout=20) for r in results] == [1, 2, 3]
        assert w.log().count("over max memory per child (1 KiB); exiting") >= 2
        assert w.log().count("exited; starting a new one") >= 2


def test_max_memory_per_child_needs_prefork() -> None:
    from fastq.errors import ConfigurationError
    from fastq.worker import run_worker

    app = App("mem", broker="memory://", set_as_current=False)
    with pytest.raises(ConfigurationError, match="needs --pool prefork"):
        run_worker(app, pool="threads", max_memory_per_child=1000)


def test_a_child_stops_when_its_supervisor_is_killed(
    worker_env: dict[str, str], client_app: App
) -> None:
    """SIGKILL of the worker's main process: its children stop too (warm: what they prefetched
    goes back to the queue), instead of running on with nobody to ack what they start."""
    with fastq_worker("--pool", "prefork", "--concurrency", "1", env=worker_env) as w:
        assert client_app.send_task("interop.add", (1, 2)).get(timeout=20) == 3
        [child] = children_of(w.proc.pid)
        w.proc.kill()
        w.proc.wait(10)
        wait_until(lambda: not os.path.exists(f"/proc/{child}"), timeout=10)
