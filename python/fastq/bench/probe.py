"""What the benchmark task does inside a worker: the work, then a completion count.

Counting must not slow the worker down, so a task only bumps an in-process counter; a daemon
thread per worker process sends the count to Redis every ``FLUSH_EVERY`` seconds, with the
wall-clock times of the process's first task start and latest task end. The harness reads the
times, not the moment it noticed, so the flush interval does not blur the drain time.

Configured by environment (set by the harness for the worker subprocesses):
``FASTQ_BENCH_COUNTER`` (Redis URL) and ``FASTQ_BENCH_RUN`` (the run's key prefix).
"""

from __future__ import annotations

import functools
import os
import threading
import time

import redis

from fastq.bench.spec import parse_work

FLUSH_EVERY = 0.02


def keys(run: str) -> dict[str, str]:
    """Redis keys of one run: total done, and per-pid first start / last end times."""
    return {
        "done": f"fastq.bench.{run}.done",
        "first": f"fastq.bench.{run}.first",
        "last": f"fastq.bench.{run}.last",
        "incr": f"fastq.bench.{run}.incr",  # the ``incr`` work's counter
    }


class Recorder:
    """Counts completed tasks in this process and flushes them from a daemon thread."""

    def __init__(self, url: str, run: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.keys = keys(run)
        self.lock = threading.Lock()
        self.pending = 0
        self.first: float | None = None
        self.last = 0.0
        self.pid = os.getpid()
        threading.Thread(target=self._flush_forever, name="fastq-bench-flush", daemon=True).start()

    def started(self) -> None:
        if self.first is None:
            with self.lock:
                if self.first is None:
                    self.first = time.time()
                    self.client.hset(self.keys["first"], str(self.pid), repr(self.first))

    def done(self) -> None:
        now = time.time()
        with self.lock:
            self.pending += 1
            self.last = now

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_EVERY)
            with self.lock:
                count, last, self.pending = self.pending, self.last, 0
            if not count:
                continue
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    pipe.hset(self.keys["last"], str(self.pid), repr(last))
                    pipe.incrby(self.keys["done"], count)
                    pipe.execute()
            except redis.RedisError:
                with self.lock:  # keep the count; the next flush retries
                    self.pending += count


_recorder: Recorder | None = None
_recorder_lock = threading.Lock()


def recorder() -> Recorder | None:
    """This process's recorder (a new one after a fork); None when not configured."""
    global _recorder
    rec = _recorder
    if rec is not None and rec.pid == os.getpid():
        return rec  # the task's fast path: no environment lookup per task
    url = os.environ.get("FASTQ_BENCH_COUNTER")
    if not url:
        return None
    if _recorder is None or _recorder.pid != os.getpid():
        with _recorder_lock:
            if _recorder is None or _recorder.pid != os.getpid():
                _recorder = Recorder(url, os.environ.get("FASTQ_BENCH_RUN", "default"))
    return _recorder


@functools.lru_cache(maxsize=16)
def _work(spec: str) -> tuple[str, float]:
    return parse_work(spec)


def run(payload: str, work: str) -> int:
    """The benchmark task's body: the requested work, counted; returns the payload length."""
    rec = recorder()
    if rec is not None:
        rec.started()
    kind, seconds = _work(work)
    if kind == "sleep":
        time.sleep(seconds)
    elif kind == "incr" and rec is not None:
        rec.client.incr(rec.keys["incr"])
    elif kind == "cpu":
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass
    if rec is not None:
        rec.done()
    return len(payload)
