"""The fault harness itself: a worker on a Redis of the test's own runs every task once with no
fault, and the ledger counts it so."""

from __future__ import annotations

from fastq import App

from tests.faults import ledger
from tests.faults.conftest import report, worker_env
from tests.faults.redis_server import RedisServer
from tests.processes import fastq_worker, wait_until


def test_no_fault_runs_every_task_once(own_redis: RedisServer, ledger_path: str) -> None:
    env = worker_env(own_redis.url(0), own_redis.url(1), ledger_path)
    client = App("client", broker=own_redis.url(0), backend=own_redis.url(1), set_as_current=False)
    try:
        client.send_many([("faults.work", (i,), None) for i in range(200)])
        with fastq_worker("--concurrency", "2", app="tests.faults.app", env=env):
            wait_until(lambda: ledger.ended(ledger_path) >= 200, timeout=60)
        tally = ledger.tally(ledger_path, 200)
        report("no fault (Redis, early ack)", tally)
        assert (tally.once, tally.twice_or_more, tally.never) == (200, 0, 0)
    finally:
        client.close()
