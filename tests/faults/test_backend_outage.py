"""The result backend (a Redis of the test's own, apart from the broker) is killed mid-drain and
comes back 4 s later: every task's result is stored in the end, none is PENDING, no task runs
twice, and with early ack the worker keeps running tasks while the backend is down."""

from __future__ import annotations

import time

import pytest
import redis
from fastq import App, states

from tests.faults import ledger
from tests.faults.conftest import report, worker_env
from tests.faults.redis_server import RedisServer
from tests.processes import fastq_worker, wait_until

SENT = 400
DOWN_FOR = 4.0


@pytest.mark.parametrize("acks_late", [False, True], ids=["early-ack", "acks-late"])
def test_backend_outage_loses_no_result(
    own_redis: RedisServer, ledger_path: str, acks_late: bool
) -> None:
    with RedisServer() as backend:
        env = worker_env(own_redis.url(0), backend.url(0), ledger_path, acks_late)
        client = App(
            "client", broker=own_redis.url(0), backend=backend.url(0), set_as_current=False
        )
        try:
            ids = [
                r.id
                for r in client.send_many([("faults.work", (i, 0.02), None) for i in range(SENT)])
            ]
            with fastq_worker("--concurrency", "2", app="tests.faults.app", env=env) as worker:
                wait_until(lambda: ledger.ended(ledger_path) >= 50, timeout=20)
                backend.kill()
                before = ledger.ended(ledger_path)
                time.sleep(DOWN_FOR)
                during = ledger.ended(ledger_path) - before
                backend.start()
                deadline = time.monotonic() + 25
                found = client.backend.get_many(ids)
                while time.monotonic() < deadline and any(
                    m["status"] != states.SUCCESS for m in found
                ):
                    time.sleep(0.2)
                    found = client.backend.get_many(ids)
                log = worker.log()
            tally = ledger.tally(ledger_path, SENT)
            mode = "acks_late" if acks_late else "early ack"
            report(f"result backend down {DOWN_FOR:g}s mid-drain (Redis, {mode})", tally)
            missing = [i for i, m in enumerate(found) if m["status"] != states.SUCCESS]
            assert not missing, f"{len(missing)} results not stored: {missing[:20]}\n{log[-3000:]}"
            assert (tally.once, tally.twice_or_more, tally.never) == (SENT, 0, 0), tally
            assert "results lost" not in log
            if not acks_late:  # results kept in memory: the tasks went on meanwhile
                assert during >= 50, (during, log[-3000:])
        finally:
            client.close()


def test_a_task_lost_while_the_backend_is_down_is_recorded_when_it_returns(
    own_redis: RedisServer, ledger_path: str
) -> None:
    """Early ack: a child dies running a task while the backend is down; the supervisor stores
    its ``WorkerLostError`` once the backend answers, and the finished tasks' results too."""
    with RedisServer() as backend:
        env = worker_env(own_redis.url(0), backend.url(0), ledger_path)
        client = App(
            "client", broker=own_redis.url(0), backend=backend.url(0), set_as_current=False
        )
        try:
            with fastq_worker("--concurrency", "1", app="tests.faults.app", env=env) as worker:
                backend.kill()
                calls = [("faults.work", (0,), None), ("faults.crash", (1,), None)]
                calls += [("faults.work", (i,), None) for i in range(2, 10)]
                ids = [r.id for r in client.send_many(calls)]
                wait_until(lambda: ledger.ended(ledger_path) >= 9, timeout=20)
                time.sleep(0.5)
                backend.start()
                deadline = time.monotonic() + 15
                found = client.backend.get_many(ids)
                while time.monotonic() < deadline and any(
                    m["status"] not in states.READY_STATES for m in found
                ):
                    time.sleep(0.2)
                    found = client.backend.get_many(ids)
                log = worker.log()
            statuses = [m["status"] for m in found]
            assert statuses == [states.SUCCESS, states.FAILURE] + [states.SUCCESS] * 8, log[-3000:]
            assert found[1]["result"]["exc_type"] == "WorkerLostError"
        finally:
            client.close()


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_result_refused_for_its_key_holds_back_nothing(
    own_redis: RedisServer, ledger_path: str, pool: str
) -> None:
    """acks_late: a few tasks' result keys hold a foreign value (a list), which Redis refuses to
    store over (WRONGTYPE) as long as it is there. The worker logs each such loss with the
    reason and goes on: every other result is stored, every message acknowledged (none runs
    again, none is left unacked), where retrying the refused ones would hold back the rest."""
    sent, taken = 300, (5, 120, 121, 299)
    env = worker_env(own_redis.url(0), own_redis.url(1), ledger_path, acks_late=True)
    client = App("client", broker=own_redis.url(0), backend=own_redis.url(1), set_as_current=False)
    try:
        backend_redis = client.backend.client
        ids = [f"refused-{i}" for i in range(sent)]
        for i in taken:
            backend_redis.rpush(client.backend.key_for(ids[i]), "someone else's")
        for i, task_id in enumerate(ids):
            client.send_task("faults.work", (i,), task_id=task_id)
        args = ("--pool", pool, "--concurrency", "2")
        with fastq_worker(*args, app="tests.faults.app", env=env) as worker:
            stored = [i for i in range(sent) if i not in taken]
            wait_until(
                lambda: all(
                    m["status"] == states.SUCCESS
                    for m in client.backend.get_many([ids[i] for i in stored])
                ),
                timeout=30,
            )
            broker = redis.Redis.from_url(own_redis.url(0))
            wait_until(lambda: broker.hlen("unacked") == 0, timeout=10)
            log = worker.log()
        tally = ledger.tally(ledger_path, sent)
        report(f"result keys of {len(taken)} tasks hold a list ({pool}, acks_late)", tally)
        assert (tally.once, tally.twice_or_more, tally.never) == (sent, 0, 0), tally
        assert broker.llen("celery") == 0
        for i in taken:
            assert f"the result of task {ids[i]} cannot be stored, and is lost: WRONGTYPE" in log
            assert backend_redis.lrange(client.backend.key_for(ids[i]), 0, -1) == [
                b"someone else's"
            ]
    finally:
        client.close()
