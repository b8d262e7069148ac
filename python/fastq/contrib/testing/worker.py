"""A worker in this process, for tests (Celery's ``celery.contrib.testing.worker``)::

    with start_worker(app):
        assert add.delay(2, 2).get(timeout=10) == 4

It consumes in threads of this process (the ``threads`` pool, or ``solo``: one thread), so it
works with the in-process ``memory://`` broker and ``cache+memory://`` results as well as with
Redis, RabbitMQ or SQLite; it stops warm when the block ends.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fastq.errors import ConfigurationError

if TYPE_CHECKING:
    from fastq.app import App
    from fastq.worker.loop import WorkerLoop

#: What Celery's ``start_worker`` takes and fastq's does not use (no events, no ping task).
IGNORED = frozenset({"perform_ping_check", "ping_task_timeout", "without_heartbeat"})


class TestWorker:
    """The running worker: ``hostname``, ``concurrency``, ``stop()``."""

    __test__ = False  # not a pytest test class

    def __init__(self, loops: list[WorkerLoop], threads: list[threading.Thread]) -> None:
        self.loops = loops
        self.threads = threads
        self.hostname = loops[0].hostname
        self.concurrency = len(loops)

    def stop(self, timeout: float = 10.0) -> None:
        for loop in self.loops:
            loop.stop()
        for thread in self.threads:
            thread.join(timeout)
        alive = [t.name for t in self.threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"test worker threads still running after {timeout}s: {alive}")


@contextmanager
def start_worker(
    app: App,
    concurrency: int = 1,
    pool: str = "solo",
    loglevel: str | int = "WARNING",
    queues: Iterable[str] | None = None,
    hostname: str | None = None,
    shutdown_timeout: float = 10.0,
    prefetch_multiplier: int = 1,
    **kwargs: Any,
) -> Iterator[TestWorker]:
    """Runs a worker for ``app`` in threads of this process while the block runs."""
    from fastq.worker.loop import WorkerLoop

    unknown = set(kwargs) - IGNORED
    if unknown:
        raise ConfigurationError(f"start_worker does not take {sorted(unknown)}")
    if pool not in ("solo", "threads"):
        raise ConfigurationError(
            f"start_worker runs in this process: pool 'solo' or 'threads', not {pool!r}"
        )
    if pool == "solo":
        concurrency = 1
    app.import_modules()
    hostname = hostname or f"testworker-{uuid.uuid4().hex[:8]}@localhost"
    queue_list = list(queues or app.router.queues)
    loops = [
        WorkerLoop(
            app,
            queue_list,
            prefetch=max(1, prefetch_multiplier),
            hostname=hostname,
            consumer_id=f"{hostname}.{i}",
            enforce_hard_limit=pool == "solo",
        )
        for i in range(concurrency)
    ]
    threads = [
        threading.Thread(target=loop.run, name=f"fastq-testworker-{i}", daemon=True)
        for i, loop in enumerate(loops)
    ]
    # ``loglevel``, as Celery's: the level of fastq's loggers while the worker runs.
    logger = logging.getLogger("fastq")
    level_before = logger.level
    logger.setLevel(loglevel if isinstance(loglevel, int) else loglevel.upper())
    for thread in threads:
        thread.start()
    worker = TestWorker(loops, threads)
    try:
        yield worker
    finally:
        try:
            worker.stop(shutdown_timeout)
        finally:
            logger.setLevel(level_before)
