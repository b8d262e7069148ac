"""``--pool asyncio`` end to end on real Redis: many coroutines in flight on one loop, plain
``def`` tasks in threads, time limits, terminate, late acks after a SIGKILL, warm shutdown."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
from fastq import App, states
from fastq.errors import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded

from tests.processes import fastq_worker, wait_until

APP = "tests.apps.asyncio_app"

pytestmark = pytest.mark.usefixtures("runs")


@pytest.fixture
def client(app: App) -> App:
    """The client that sends to the worker under test (conftest's ``app``)."""
    return app


def levels(runs: redis.Redis) -> list[int]:
    """How many tasks were in flight as each one started."""
    return [int(level) for level in runs.lrange("levels", 0, -1)]


def test_200_sleeping_tasks_run_at_once(client: App, runs: redis.Redis) -> None:
    with fastq_worker("--pool", "asyncio", "--concurrency", "200", app=APP) as worker:
        started = time.monotonic()
        results = client.send_many([("aio.sleep", (f"t{i}", 0.5), None) for i in range(200)])
        assert [r.get(timeout=30) for r in results] == [f"t{i}" for i in range(200)]
        elapsed = time.monotonic() - started
        assert "asyncio pool, up to 200 task(s) in flight" in worker.log()
    # 200 x 0.5 s one after another would take 100 s; together they take about 1 s.
    assert elapsed < 10, elapsed
    assert max(levels(runs)) > 50, max(levels(runs))
    assert len(runs.hgetall("runs")) == 200
    assert {int(pid) for pid in runs.hvals("started")} == {worker.pid}  # one process


def test_the_setting_chooses_the_pool_with_its_default_concurrency(client: App) -> None:
    with fastq_worker(app=APP, env={"FASTQ_TEST_POOL": "asyncio"}) as worker:
        results = client.send_many([("aio.sleep", (f"d{i}", 0.1), None) for i in range(5)])
        assert len([r.get(timeout=20) for r in results]) == 5
        assert "asyncio pool, up to 100 task(s) in flight" in worker.log()
        assert "prefetch 400" in worker.log()  # 100 x the default multiplier (4)


def test_concurrency_is_a_bound(client: App, runs: redis.Redis) -> None:
    with fastq_worker("--pool", "asyncio", "--concurrency", "5", app=APP):
        results = client.send_many([("aio.sleep", (f"t{i}", 0.2), None) for i in range(30)])
        assert len([r.get(timeout=30) for r in results]) == 30
    assert max(levels(runs)) == 5


def test_sync_tasks_run_in_threads_beside_coroutines(client: App, runs: redis.Redis) -> None:
    with fastq_worker("--pool", "asyncio", "--concurrency", "50", app=APP):
        started = time.monotonic()
        blocking = [client.send_task("aio.blocking", (f"b{i}", 5.0)) for i in range(4)]
        wait_until(lambda: runs.hlen("started") == 4, timeout=15)
        sleeping = client.send_many([("aio.sleep", (f"s{i}", 0.5), None) for i in range(40)])
        mine = client.send_many([("aio.whoami", (0.3,), None) for _ in range(40)])
        assert [r.get(timeout=30) for r in sleeping] == [f"s{i}" for i in range(40)]
        assert [r.get(timeout=30) for r in mine] == [r.id for r in mine]  # each its own request
        # The blocking tasks hold threads, not the loop: the coroutines ran while they slept.
        assert not any(r.ready() for r in blocking)
        assert [r.get(timeout=30) for r in blocking] == [f"b{i}" for i in range(4)]
        all_done = time.monotonic() - started
    assert all_done < 15.0, all_done  # the 4 blocking tasks ran together (20 s one by one)


def test_soft_time_limit_is_raised_inside_the_coroutine(client: App, runs: redis.Redis) -> None:
    with fastq_worker("--pool", "asyncio", app=APP):
        assert client.send_task("aio.soft", ("x",)).get(timeout=20) == "cleaned up"
        assert runs.hget("cleanup", "x") == b"done"
        # Per call, unhandled: FAILURE with SoftTimeLimitExceeded
        unhandled = client.send_task("aio.sleep", ("y", 30), soft_time_limit=0.3)
        with pytest.raises(SoftTimeLimitExceeded):
            unhandled.get(timeout=20)


def test_hard_time_limit_cancels_and_stores_failure(client: App, runs: redis.Redis) -> None:
    with fastq_worker("--pool", "asyncio", app=APP) as worker:
        late = client.send_task("aio.hard", ("h",))
        others = client.send_many([("aio.sleep", (f"o{i}", 0.2), None) for i in range(10)])
        with pytest.raises(TimeLimitExceeded):
            late.get(timeout=20)
        assert late.state == states.FAILURE
        assert len([r.get(timeout=20) for r in others]) == 10
        assert client.send_task("aio.sleep", ("after", 0)).get(timeout=20) == "after"
        assert "TimeLimitExceeded" in worker.log()
    assert runs.hexists("started", "h") and not runs.hexists("runs", "h")


def test_revoke_terminate_cancels_the_coroutine(client: App, runs: redis.Redis) -> None:
    with fastq_worker("--pool", "asyncio", "--concurrency", "10", app=APP) as worker:
        long = client.send_task("aio.sleep", ("long", 30))
        neighbour = client.send_task("aio.sleep", ("neighbour", 2))
        wait_until(lambda: runs.hexists("started", "long"), timeout=15)
        long.revoke(terminate=True)
        with pytest.raises(TaskRevokedError, match="terminated"):
            long.get(timeout=15)
        assert long.state == states.REVOKED
        assert neighbour.get(timeout=15) == "neighbour"  # only the revoked one was cancelled
        assert "terminated by revoke" in worker.log()
    assert not runs.hexists("runs", "long")


def test_late_acked_tasks_come_back_after_sigkill(client: App, runs: redis.Redis) -> None:
    lease = {"FASTQ_TEST_VISIBILITY_TIMEOUT": "2"}
    first = fastq_worker("--pool", "asyncio", "--concurrency", "20", app=APP, env=lease)
    try:
        results = client.send_many([("aio.sleep_late", (f"k{i}", 3), None) for i in range(10)])
        wait_until(lambda: runs.hlen("started") == 10, timeout=15)
        os.kill(first.pid, signal.SIGKILL)  # mid-sleep: none acknowledged
        first.proc.wait(10)
    finally:
        first.stop()
    assert not runs.hgetall("runs")
    runs.delete("started")
    with fastq_worker("--pool", "asyncio", "--concurrency", "20", app=APP, env=lease) as second:
        assert [r.get(timeout=30) for r in results] == [f"k{i}" for i in range(10)]
        assert {int(pid) for pid in runs.hvals("started")} == {second.pid}
    assert {int(n) for n in runs.hvals("runs")} == {1}  # each ran to the end once


def test_warm_shutdown_finishes_tasks_in_flight(client: App, runs: redis.Redis) -> None:
    worker = fastq_worker("--pool", "asyncio", "--concurrency", "10", app=APP)
    results = client.send_many([("aio.sleep", (f"w{i}", 1.5), None) for i in range(10)])
    queued = client.send_many([("aio.sleep", (f"q{i}", 0), None) for i in range(20)])
    wait_until(lambda: runs.hlen("started") == 10, timeout=15)
    assert worker.stop(timeout=20) == 0
    assert [r.get(timeout=1) for r in results] == [f"w{i}" for i in range(10)]
    assert "waiting for" in worker.log()
    # The ones fetched but not started went back to the queue, and run on the next worker.
    not_run = [r for r in queued if not r.ready()]
    with fastq_worker("--pool", "asyncio", app=APP):
        assert len([r.get(timeout=20) for r in not_run]) == len(not_run)


def test_retries_eta_expires_revoke_and_rate_limits(client: App, runs: redis.Redis) -> None:
    with fastq_worker("--pool", "asyncio", "--concurrency", "20", app=APP):
        retried = client.send_task("aio.flaky", ("f", 2))
        sent = time.time()
        delayed = client.send_task("aio.stamp", ("eta",), countdown=2)
        stale = client.send_task("aio.stamp", ("stale",), countdown=2, expires=1)
        time.sleep(0.5)  # the worker's control listener is subscribed
        doomed = client.send_task("aio.stamp", ("doomed",), countdown=2)
        doomed.revoke()
        limited = [client.send_task("aio.limited", (f"l{i}",)) for i in range(10)]
        assert retried.get(timeout=20) == 2
        assert int(runs.hget("attempts", "f") or 0) == 3
        assert delayed.get(timeout=20) >= sent + 1.5
        with pytest.raises(TaskRevokedError, match="expired"):
            stale.get(timeout=20)
        with pytest.raises(TaskRevokedError, match="revoked"):
            doomed.get(timeout=20)
        stamps = sorted(r.get(timeout=20) for r in limited)
    # 5/s with a burst of 5: the last of 10 starts a second or so after the first.
    assert stamps[-1] - stamps[0] >= 0.8, stamps
    assert not runs.hexists("runs", "stale") and not runs.hexists("runs", "doomed")


def test_remote_control_answers_while_tasks_are_in_flight(client: App, runs: redis.Redis) -> None:
    with fastq_worker("--pool", "asyncio", "--concurrency", "30", app=APP):
        results = client.send_many([("aio.sleep", (f"a{i}", 3), None) for i in range(20)])
        wait_until(lambda: runs.hlen("started") == 20, timeout=15)
        replies = client.control.inspect(timeout=2).active() or {}
        assert len(replies) == 1
        (active,) = replies.values()
        assert {t["id"] for t in active} == {r.id for r in results}
        stats = client.control.inspect(timeout=2).stats() or {}
        (info,) = stats.values()
        assert info["pool"]["max-concurrency"] == 30
        assert len([r.get(timeout=20) for r in results]) == 20
