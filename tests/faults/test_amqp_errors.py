"""A worker pointed at a RabbitMQ it cannot use says why, fast, and stops fast: refused login
(the password never shown), nothing listening on the port, ``amqps://`` to the plain port. The
bounds are generous: they catch a worker that waits on timeouts, not a slow machine."""

from __future__ import annotations

import re
import time

import pytest

from tests.faults.rabbit import available
from tests.faults.redis_server import free_port
from tests.processes import BIN, WorkerProcess

SECRET = "n0t-the-Passw0rd"
CLOSED_PORT = free_port()  # bound then released: nothing listens there

CASES = [
    pytest.param(
        f"amqp://guest:{SECRET}@127.0.0.1:5672//",
        "127.0.0.1:5672",
        r"login refused for user 'guest'|login refused for user \"guest\"",
        id="refused-login",
    ),
    pytest.param(
        f"amqp://guest:{SECRET}@127.0.0.1:{CLOSED_PORT}//",
        f"127.0.0.1:{CLOSED_PORT}",
        r"connection refused by 127\.0\.0\.1:\d+: nothing listens there",
        id="closed-port",
    ),
    pytest.param(
        f"amqps://guest:{SECRET}@127.0.0.1:5672//",
        "127.0.0.1:5672",
        r"TLS handshake with 127\.0\.0\.1:5672 failed .*does not speak TLS",
        id="tls-to-plain-port",
    ),
]


@pytest.mark.skipif(not available(), reason="RabbitMQ is not running on 127.0.0.1:5672")
@pytest.mark.parametrize(("url", "host", "cause"), CASES)
def test_the_first_error_names_the_host_and_the_cause(url: str, host: str, cause: str) -> None:
    started = time.monotonic()
    worker = WorkerProcess(
        [str(BIN / "fastq"), "-A", "tests.faults.app", "worker", "--loglevel", "INFO",
         "--concurrency", "2"],
        {"FASTQ_BROKER_URL": url, "FASTQ_RESULT_BACKEND": "", "FASTQ_FAULT_LEDGER": "/dev/null"},
    )  # fmt: skip
    try:
        first = ""
        while time.monotonic() - started < 5 and not first:
            problems = [
                line for line in worker.log().splitlines() if "ERROR/" in line or "WARNING/" in line
            ]
            first = problems[0] if problems else ""
            time.sleep(0.05)
        took = time.monotonic() - started
        assert first, f"no error logged within 5 s:\n{worker.log()}"
        assert host in first and re.search(cause, first), first
        stopping = time.monotonic()
        code = worker.stop(timeout=10)
        stopped = time.monotonic() - stopping
    finally:
        if worker.proc.poll() is None:
            worker.stop()
    log = worker.log()
    print(f"first error after {took:.2f}s, stopped in {stopped:.2f}s: {first}")
    assert SECRET not in log
    assert code == 0, log
    assert stopped < 2.0, f"warm stop took {stopped:.2f}s:\n{log}"
    # Every line about the broker says why, in words, the same way.
    for line in log.splitlines():
        if "ERROR/" in line:
            assert re.search(cause, line), line
