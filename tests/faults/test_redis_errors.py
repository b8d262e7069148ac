"""A worker pointed at a Redis it cannot use says so fast and in words, and stops fast: the first
error line within 5 s names the host (never the password) and the cause; a warm stop (SIGTERM)
takes under 2 s. Timing bounds here are correctness bounds, generous on purpose."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.faults.redis_server import RedisServer, free_port
from tests.processes import BIN, WorkerProcess, children_of

SECRET = "s3cret-pw-do-not-log"
FIRST_LINE = 5.0
#: Well under any connect or handshake timeout (5-10 s) a stop could be waiting out; a warm stop
#: on an idle machine takes ~0.5 s, and one took 2.7 s on a loaded 2-core machine.
WARM_STOP = 4.0


@pytest.fixture
def redis_with_password() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    server.client().config_set("requirepass", "the-right-one")
    try:
        yield server
    finally:
        server.close()


def _worker(url: str) -> WorkerProcess:
    return WorkerProcess(
        [str(BIN / "fastq"), "-A", "tests.faults.app", "worker", "--concurrency", "2"],
        {"FASTQ_BROKER_URL": url, "FASTQ_RESULT_BACKEND": "", "FASTQ_FAULT_LEDGER": "/dev/null"},
    )


def _first_error(worker: WorkerProcess, timeout: float) -> tuple[str, float]:
    """The first warning or error line of the worker's log and when it appeared."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        for line in worker.log().splitlines():
            # A log record at WARNING or above, or the CLI's own error line when it exits.
            if any(k in line for k in ("WARNING/", "ERROR/", "CRITICAL/")) or line.startswith(
                "fastq:"
            ):
                return line, time.monotonic() - start
        if worker.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no error line within {timeout}s:\n{worker.log()}")


def _check(url: str, host: str, cause: tuple[str, ...]) -> str:
    worker = _worker(url)
    try:
        line, after = _first_error(worker, FIRST_LINE + 5)
        assert after <= FIRST_LINE, (after, line)
        assert host in line, line
        assert any(c in line.lower() for c in cause), (cause, line)
        assert SECRET not in worker.log()
        if worker.proc.poll() is None:
            time.sleep(0.5)  # let the children be in their retry loop
            pids = children_of(worker.pid)
            start = time.monotonic()
            worker.stop(timeout=15)
            took = time.monotonic() - start
            assert took <= WARM_STOP, (took, worker.log())
            assert not [p for p in pids if _alive(p)]
        assert SECRET not in worker.log()
        return line
    finally:
        if worker.proc.poll() is None:  # failed: leave no orphaned children behind
            for pid in children_of(worker.pid):
                os.kill(pid, signal.SIGKILL)
            worker.proc.kill()
            worker.proc.wait()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_wrong_scheme() -> None:
    _check(f"reddis://:{SECRET}@127.0.0.1:6379/0", "127.0.0.1:6379", ("not supported",))


def test_tls_to_a_server_without_tls(own_redis: RedisServer) -> None:
    _check(
        f"rediss://:{SECRET}@127.0.0.1:{own_redis.port}/0",
        f"127.0.0.1:{own_redis.port}",
        ("tls",),
    )


def test_closed_port() -> None:
    port = free_port()
    _check(f"redis://:{SECRET}@127.0.0.1:{port}/0", f"127.0.0.1:{port}", ("refused",))


def test_wrong_password(redis_with_password: RedisServer) -> None:
    port = redis_with_password.port
    _check(
        f"redis://:{SECRET}@127.0.0.1:{port}/0",
        f"127.0.0.1:{port}",
        ("password", "auth"),
    )
