"""Signals must not look like a broken broker. A signal that reaches a process while it waits in a
Redis read makes the read fail with EINTR (Python's handlers interrupt system calls, and Linux
never restarts a ``recv`` with a read timeout, nor one a stop and resume interrupted): a prefork
worker whose children keep ending (``--max-tasks-per-child``) must not take its supervisor's
child-death signals for a lost broker (early acks reported failed, tasks acknowledged late or run
twice), nor a child a debugger's or profiler's stop (py-spy) or its warm stop signal."""

from __future__ import annotations

import os
import re
import signal
import sys
import time

import pytest
from fastq import App

from tests.faults import ledger
from tests.faults.conftest import report, worker_env
from tests.faults.redis_server import RedisServer
from tests.processes import WorkerProcess, children_of, fastq_worker

SENT = 2000
#: A child ends every 25 tasks: ~80 child deaths in the drain, each one a SIGCHLD.
MAX_TASKS = 25
#: Runs the worker CLI as a Python without ``os.pidfd_open`` would.
WITHOUT_PIDFDS = (
    "import os, runpy; del os.pidfd_open; runpy.run_module('fastq.cli', run_name='__main__')"
)
#: What a broker error looks like in the worker's log.
BROKER_ERRORS = re.compile(
    r"Interrupted system call|could not acknowledge|broker unavailable|cannot reach the Redis"
)


def _broker_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if BROKER_ERRORS.search(line)]


def _worker_without_pidfds(*args: str, env: dict[str, str]) -> WorkerProcess:
    """A worker whose Python has no ``os.pidfd_open`` (older than 3.9, or not Linux): its
    supervisor learns of a child's end from SIGCHLD, through a handler."""
    worker = WorkerProcess(
        [sys.executable, "-c", WITHOUT_PIDFDS, "-A", "tests.faults.app", "worker",
         "--loglevel", "INFO", *args],
        env,
    )  # fmt: skip
    worker.wait_for_log("ready")
    return worker


@pytest.mark.parametrize("pidfds", [True, False], ids=["pidfds", "sigchld-handler"])
def test_child_restarts_read_as_no_broker_error(
    own_redis: RedisServer, ledger_path: str, pidfds: bool
) -> None:
    env = worker_env(own_redis.url(0), own_redis.url(1), ledger_path)
    client = App("client", broker=own_redis.url(0), backend=own_redis.url(1), set_as_current=False)
    start = fastq_worker if pidfds else _worker_without_pidfds
    try:
        client.send_many([("faults.work", (i,), None) for i in range(SENT)])
        started = time.monotonic()
        with start(
            "--concurrency", "2", "--max-tasks-per-child", str(MAX_TASKS), "-E",
            **({"app": "tests.faults.app"} if pidfds else {}), env=env,
        ) as worker:  # fmt: skip
            ledger.wait_drained(ledger_path, SENT, 120, started, worker.log)
            worker.stop()
            log = worker.log()
    finally:
        client.close()
    tally = ledger.tally(ledger_path, SENT)
    how = "pidfds" if pidfds else "SIGCHLD handler"
    report(f"prefork, a child restart every {MAX_TASKS} tasks, {how} (Redis, early ack)", tally)
    restarts = log.count("exited; starting a new one")
    assert restarts >= SENT // MAX_TASKS // 2, f"children did not restart:\n{log[-3000:]}"
    errors = _broker_errors(log)
    assert not errors, (
        f"{len(errors)} broker error line(s) while only children restarted "
        f"(a signal taken for a lost broker):\n" + "\n".join(errors[:10])
    )
    assert (tally.once, tally.twice_or_more, tally.never) == (SENT, 0, 0), str(tally)


def test_a_stopped_child_and_a_warm_stop_read_as_no_broker_error(
    own_redis: RedisServer, ledger_path: str
) -> None:
    """Idle children wait in a blocking fetch: stopped and resumed there (what ``py-spy record``
    does to sample) they fetch again at once, and a warm stop ends them promptly, all without a
    broker error."""
    env = worker_env(own_redis.url(0), own_redis.url(1), ledger_path)
    client = App("client", broker=own_redis.url(0), backend=own_redis.url(1), set_as_current=False)
    try:
        with fastq_worker("--concurrency", "2", app="tests.faults.app", env=env) as worker:
            time.sleep(0.5)  # the children are in their blocking fetch
            for child in children_of(worker.pid):
                os.kill(child, signal.SIGSTOP)
                time.sleep(0.05)
                os.kill(child, signal.SIGCONT)
            time.sleep(0.2)
            sent = time.monotonic()
            client.send_many([("faults.work", (i,), None) for i in range(10)])
            ledger.wait_drained(ledger_path, 10, 5, sent, worker.log)
            took = time.monotonic() - sent
            time.sleep(0.5)  # back in their blocking fetch
            stopping = time.monotonic()
            assert worker.stop(timeout=10) == 0
            stop_took = time.monotonic() - stopping
            log = worker.log()
    finally:
        client.close()
    errors = _broker_errors(log)
    assert not errors, "a stop taken for a lost broker:\n" + "\n".join(errors[:10])
    assert took < 0.9, f"tasks waited {took:.2f}s after the children were resumed:\n{log[-2000:]}"
    assert stop_took < 3, f"the warm stop took {stop_took:.1f}s"
