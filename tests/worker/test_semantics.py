"""Retries, ETA, expiry, time limits, rate limits and priorities on a real worker and Redis."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis
from fastq import App, states
from fastq.errors import TimeLimitExceeded, WorkerLostError

from tests.processes import children_of, fastq_worker, wait_until

APP = "tests.apps.semantics_app"


pytestmark = pytest.mark.usefixtures("runs")


@pytest.fixture
def client(broker_url: str, backend_url: str) -> Iterator[App]:
    app = App("client", broker=broker_url, backend=backend_url, set_as_current=False)
    yield app
    app.close()


def test_retry_keeps_the_id_and_counts(client: App, runs: redis.Redis) -> None:
    with fastq_worker("--pool", "solo", app=APP):
        ok = client.send_task("sem.flaky", ("ok", 2))
        assert ok.get(timeout=20) == 2
        assert int(runs.hget("attempts", "ok") or 0) == 3
        exhausted = client.send_task("sem.flaky", ("never", 10))
        with pytest.raises(RuntimeError, match="attempt 3"):
            exhausted.get(timeout=20)
        assert int(runs.hget("attempts", "never") or 0) == 4  # first run + max_retries=3


def test_eta_tasks_wait_outside_the_window_and_are_not_redelivered(
    client: App, broker_redis: redis.Redis, runs: redis.Redis
) -> None:
    # The app's visibility timeout is 2 s; the ETA is 4 s away: Celery would deliver it twice.
    with fastq_worker("--pool", "prefork", "--concurrency", "1", "--prefetch-multiplier", "1",
                      app=APP):  # fmt: skip
        late = client.send_task("sem.stamp", ("late",), countdown=4)
        time.sleep(1.0)
        assert broker_redis.zcard("fastq.delayed") == 1  # parked in Redis, not in the window
        now = client.send_task("sem.stamp", ("now",))
        assert now.get(timeout=10)  # the window is free for ready tasks
        sent = time.time()
        ran_at = late.get(timeout=20)
        assert ran_at >= sent + 2.0
    assert int(runs.hget("runs", "late") or 0) == 1


def test_expired_tasks_are_revoked_without_running(client: App, runs: redis.Redis) -> None:
    stale = client.send_task("sem.stamp", ("stale",), expires=0.5)
    time.sleep(1.0)
    with fastq_worker("--pool", "solo", app=APP):
        fresh = client.send_task("sem.stamp", ("fresh",))
        fresh.get(timeout=10)
        with pytest.raises(Exception, match="expired"):
            stale.get(timeout=10)
        assert stale.state == states.REVOKED
    assert not runs.hexists("runs", "stale")


def test_soft_limit_is_catchable(client: App) -> None:
    with fastq_worker("--pool", "prefork", "--concurrency", "1", app=APP):
        assert client.send_task("sem.soft").get(timeout=10) == "soft limit caught"


def test_hard_limit_replaces_the_child_and_the_worker_keeps_serving(client: App) -> None:
    with fastq_worker("--pool", "prefork", "--concurrency", "1", app=APP) as worker:
        before = client.send_task("sem.pid").get(timeout=10)
        stuck = client.send_task("sem.hard", (30,))
        with pytest.raises(TimeLimitExceeded):
            stuck.get(timeout=15)
        after = client.send_task("sem.pid").get(timeout=15)
        assert after != before, "the child that hit the hard limit was not replaced"
        assert client.send_task("sem.hard", (0.01,)).get(timeout=10) == "finished"
        assert "hard time limit" in worker.log()


def test_a_child_killed_mid_task_fails_it_with_the_request_it_ran(
    client: App, runs: redis.Redis, backend_redis: redis.Redis, worker_env: dict[str, str]
) -> None:
    """Acknowledged before it ran, the task cannot come back: the supervisor stores Celery's
    WorkerLostError with the meta the child would have stored (result_extended here)."""
    env = {**worker_env, "FASTQ_TEST_RESULT_EXTENDED": "1"}
    with fastq_worker("--pool", "prefork", "--concurrency", "1", app=APP, env=env):
        doomed = client.send_task("sem.sleep", ("doomed", 30))
        wait_until(lambda: runs.hexists("started", "doomed"), timeout=15)
        os.kill(int(runs.hget("started", "doomed") or 0), signal.SIGKILL)
        with pytest.raises(WorkerLostError, match=r"signal 9 \(SIGKILL\)"):
            doomed.get(timeout=15)
        assert client.send_task("sem.stamp", ("after",)).get(timeout=15)
    meta = json.loads(backend_redis.get(f"celery-task-meta-{doomed.id}") or b"{}")
    assert meta["status"] == states.FAILURE
    assert meta["result"]["exc_type"] == "WorkerLostError"
    assert meta["result"]["exc_module"] == "celery.exceptions"
    assert (meta["name"], meta["args"], meta["queue"]) == ("sem.sleep", ["doomed", 30], "celery")
    assert not runs.hexists("runs", "doomed")


def test_a_warm_stop_reaches_a_child_that_is_still_starting(worker_env: dict[str, str]) -> None:
    """The stop must not be taken by the supervisor's handlers the child still has: that child
    would keep consuming, and the worker would never stop."""
    env = {**worker_env, "FASTQ_TEST_CHILD_START_DELAY": "3"}
    worker = fastq_worker("--pool", "prefork", "--concurrency", "2", app=APP, env=env)
    children = children_of(worker.pid)
    try:
        assert len(children) == 2
        started = time.monotonic()
        assert worker.stop(timeout=10) == 0
        assert time.monotonic() - started < 3  # the children did not finish starting first
        wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children), 5)
    finally:
        for pid in children:  # never leave a consumer behind for the next tests
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_rate_limit_spaces_tasks_without_blocking_others(client: App, runs: redis.Redis) -> None:
    with fastq_worker("--pool", "solo", app=APP):
        limited = [client.send_task("sem.limited", (str(i),)) for i in range(12)]
        other = client.send_task("sem.stamp", ("other",))
        other_at = other.get(timeout=10)
        times = sorted(r.get(timeout=20) for r in limited)
    assert other_at < times[-1], "an unlimited task waited behind the rate-limited ones"
    # 4/s with a burst of 4: 12 tasks need at least (12 - 4) / 4 = 2 s.
    assert times[-1] - times[0] >= 1.8


def test_priorities_lower_number_first_on_redis(client: App, runs: redis.Redis) -> None:
    for i, priority in enumerate([9, 6, 3, 0, 9, 0]):
        client.send_task("sem.stamp", (f"p{priority}-{i}",), priority=priority)
    with fastq_worker("--pool", "solo", "--prefetch-multiplier", "1", app=APP):
        deadline = time.time() + 15
        while runs.hlen("runs") < 6 and time.time() < deadline:
            time.sleep(0.05)
    order = [k.decode() for k in runs.lrange("order", 0, -1)]
    priorities = [int(token.split("-")[0][1:]) for token in order]
    assert priorities == sorted(priorities), order
