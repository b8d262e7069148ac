"""Leases: a live worker renews the lease of every message it holds, so a task that runs longer
than the visibility timeout is not handed to another worker and run twice; a worker killed
outright stops renewing, so its messages come back after the timeout, and (Redis) the sets of
tags its consumers held expire instead of staying in Redis for ever. Redis and SQLite."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastq import App, _core

from tests.faults import ledger
from tests.faults.conftest import report, worker_env
from tests.faults.redis_server import RedisServer
from tests.processes import WorkerProcess, children_of, fastq_worker, wait_until

VISIBILITY = 2.0
LONG = 6.0


@pytest.fixture(params=["redis", "sqlite"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/broker.db"
        return
    with RedisServer() as server:
        yield server.url(0)


def _env(url: str, ledger_path: str) -> dict[str, str]:
    return worker_env(url, "", ledger_path, acks_late=True, visibility_timeout=VISIBILITY)


class _Restorer:
    """What any other worker sharing the queue does (Celery's too): restores messages whose
    ``unacked_index`` score is older than the visibility timeout, here every 0.2 s."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.restored = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            if self.url.startswith("redis"):
                self.restored += _core.restore_visible(self.url, VISIBILITY)

    def __enter__(self) -> _Restorer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _send(url: str, tasks: list[tuple[int, float]]) -> None:
    client = App(
        "client",
        broker=url,
        broker_transport_options={"visibility_timeout": VISIBILITY},
        set_as_current=False,
    )
    try:
        client.send_many([("faults.work", (seq, secs), None) for seq, secs in tasks])
    finally:
        client.close()


def _started(path: str, seq: int) -> Callable[[], bool]:
    return lambda: ledger.read(path)[0][seq] >= 1


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_long_task_of_a_live_worker_runs_once(
    broker_url: str, ledger_path: str, pool: str
) -> None:
    # One long task and three short ones prefetched behind it, all held past the timeout.
    _send(broker_url, [(0, LONG), (1, 0), (2, 0), (3, 0)])
    env = _env(broker_url, ledger_path)
    with fastq_worker("--concurrency", "1", "--pool", pool, app="tests.faults.app", env=env):
        wait_until(_started(ledger_path, 0), timeout=10)
        with (
            _Restorer(broker_url) as restorer,
            fastq_worker("--concurrency", "1", app="tests.faults.app", env=env),
        ):
            wait_until(lambda: ledger.ended(ledger_path) >= 4, timeout=LONG + 10)
            time.sleep(VISIBILITY + 1)  # a redelivery would show now
    tally = ledger.tally(ledger_path, 4)
    scheme = broker_url.split(":", 1)[0]
    report(
        f"task of {LONG:g}s, visibility timeout {VISIBILITY:g}s, live {pool} worker ({scheme})",
        tally,
    )
    assert (tally.once, tally.twice_or_more, tally.never) == (4, 0, 0), tally
    assert restorer.restored == 0


def _kill_whole_worker(worker: WorkerProcess) -> None:
    """SIGKILL the supervisor and its children, the supervisor stopped first so that it
    neither replaces the children nor returns their messages."""
    os.kill(worker.pid, signal.SIGSTOP)
    for pid in children_of(worker.pid):
        os.kill(pid, signal.SIGKILL)
    os.kill(worker.pid, signal.SIGKILL)
    worker.proc.wait()


def test_a_dead_workers_messages_come_back_after_the_timeout(
    broker_url: str, ledger_path: str
) -> None:
    _send(broker_url, [(0, 3.0)])
    env = _env(broker_url, ledger_path)
    with fastq_worker("--concurrency", "1", app="tests.faults.app", env=env) as first:
        wait_until(_started(ledger_path, 0), timeout=10)
        time.sleep(VISIBILITY)  # renewed meanwhile: the lease is fresh when the worker dies
        killed = time.monotonic()
        _kill_whole_worker(first)
    with (
        _Restorer(broker_url),
        fastq_worker("--concurrency", "1", app="tests.faults.app", env=env),
    ):
        wait_until(lambda: ledger.read(ledger_path)[0][0] >= 2, timeout=VISIBILITY + 8)
        back_after = time.monotonic() - killed
        wait_until(lambda: ledger.ended(ledger_path) >= 1, timeout=10)
    tally = ledger.tally(ledger_path, 1)
    scheme = broker_url.split(":", 1)[0]
    report(f"whole worker SIGKILLed, back after {back_after:.1f}s ({scheme})", tally)
    assert tally.never == 0 and tally.once == 1, tally
    # Not before the lease ran out: renewed every quarter of the timeout while the worker lived
    # (without renewal it came back at once, the lease long over).
    assert back_after >= VISIBILITY / 2, back_after


def test_a_dead_workers_consumer_sets_expire(ledger_path: str) -> None:
    with RedisServer() as server:
        url = server.url(0)
        _send(url, [(0, 30.0)])
        env = _env(url, ledger_path)
        with fastq_worker("--concurrency", "1", app="tests.faults.app", env=env) as first:
            wait_until(_started(ledger_path, 0), timeout=10)
            _kill_whole_worker(first)
        r = server.client()
        [key] = list(r.scan_iter("fastq.consumer.*"))
        ttl = r.ttl(key)
        assert 0 < ttl <= _core_set_ttl(), ttl
        # Its message comes back by the visibility restore; the set goes by its TTL.
        wait_until(lambda: _core.restore_visible(url, VISIBILITY) == 1, timeout=VISIBILITY + 5)
        wait_until(lambda: not list(r.scan_iter("fastq.consumer.*")), timeout=_core_set_ttl() + 3)
        assert r.llen("celery") == 1
        r.close()


def _core_set_ttl() -> int:
    """A consumer set's TTL for ``VISIBILITY`` (3 timeouts, at least 10 s)."""
    return max(10, int(3 * VISIBILITY))
