"""Signals must not look like a broken broker. A signal that reaches a process while it waits in a
Redis read makes the read fail with EINTR (Python's handlers interrupt system calls, and Linux
never restarts a ``recv`` with a read timeout): a prefork worker whose children keep ending
(``--max-tasks-per-child``) must not take its supervisor's child-death signals for a lost broker
(early acks reported failed, tasks acknowledged late or run twice)."""

from __future__ import annotations

import re
import time

from fastq import App

from tests.faults import ledger
from tests.faults.conftest import report, worker_env
from tests.faults.redis_server import RedisServer
from tests.processes import fastq_worker

SENT = 2000
#: A child ends every 25 tasks: ~80 child deaths in the drain, each one a SIGCHLD.
MAX_TASKS = 25
#: What a broker error looks like in the worker's log.
BROKER_ERRORS = re.compile(
    r"Interrupted system call|could not acknowledge|broker unavailable|cannot reach the Redis"
)


def test_child_restarts_read_as_no_broker_error(own_redis: RedisServer, ledger_path: str) -> None:
    env = worker_env(own_redis.url(0), own_redis.url(1), ledger_path)
    client = App("client", broker=own_redis.url(0), backend=own_redis.url(1), set_as_current=False)
    try:
        client.send_many([("faults.work", (i,), None) for i in range(SENT)])
        started = time.monotonic()
        with fastq_worker(
            "--concurrency", "2", "--max-tasks-per-child", str(MAX_TASKS), "-E",
            app="tests.faults.app", env=env,
        ) as worker:  # fmt: skip
            ledger.wait_drained(ledger_path, SENT, 120, started, worker.log)
            worker.stop()
            log = worker.log()
    finally:
        client.close()
    tally = ledger.tally(ledger_path, SENT)
    report(f"prefork, a child restart every {MAX_TASKS} tasks (Redis, early ack)", tally)
    restarts = log.count("exited; starting a new one")
    assert restarts >= SENT // MAX_TASKS // 2, f"children did not restart:\n{log[-3000:]}"
    errors = [line for line in log.splitlines() if BROKER_ERRORS.search(line)]
    assert not errors, (
        f"{len(errors)} broker error line(s) while only children restarted "
        f"(a signal taken for a lost broker):\n" + "\n".join(errors[:10])
    )
    assert (tally.once, tally.twice_or_more, tally.never) == (SENT, 0, 0), str(tally)
