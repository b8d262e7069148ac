"""What every peer's benchmark task does: count its completion, the same way in every system.

Runs inside the worker processes of each peer (in that peer's own virtualenv), configured by the
harness through the environment:

- ``PEERS_COUNTER``: Redis URL of the counter (its own database, not the broker's);
- ``PEERS_RUN``: the trial's key prefix;
- ``PEERS_MODE``: ``incr`` (one Redis ``INCR`` per task, a round trip inside every task) or
  ``buffered`` (a per-process count flushed every 20 ms from a daemon thread, as ``fastq bench``
  does, so the count costs the worker almost nothing);
- ``PEERS_TARGET``: how many tasks the trial runs (the ``INCR`` that reaches it stamps the end).

Keys: ``<run>.done`` (count), ``<run>.first`` and ``<run>.last`` (hashes pid -> wall-clock time
of the process's first task start and latest task end). The harness reads these times, not the
moment it noticed, so neither its polling nor the flush interval blurs the drain time.
The buffered counter is ``fastq.bench.probe.Recorder``'s, written again here because the peers'
virtualenvs do not have fastq to import it from.
"""

from __future__ import annotations

import os
import threading
import time

import redis

FLUSH_EVERY = 0.02


def keys(run: str) -> tuple[str, str, str]:
    return f"{run}.done", f"{run}.first", f"{run}.last"


class Counter:
    def __init__(self) -> None:
        self.client = redis.Redis.from_url(os.environ["PEERS_COUNTER"])
        self.done_key, self.first_key, self.last_key = keys(os.environ["PEERS_RUN"])
        self.buffered = os.environ.get("PEERS_MODE") == "buffered"
        self.target = int(os.environ.get("PEERS_TARGET") or 0)
        self.pid = os.getpid()
        self.started = False
        self.lock = threading.Lock()
        self.pending = 0
        self.last = 0.0
        if self.buffered:
            threading.Thread(target=self._flush_forever, name="peers-flush", daemon=True).start()

    def done(self) -> None:
        if not self.started:
            self.started = True
            self.client.hsetnx(self.first_key, str(self.pid), repr(time.time()))
        if self.buffered:
            with self.lock:
                self.pending += 1
                self.last = time.time()
            return
        count = self.client.incr(self.done_key)
        if count >= self.target:
            self.client.hset(self.last_key, str(self.pid), repr(time.time()))

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_EVERY)
            with self.lock:
                count, last, self.pending = self.pending, self.last, 0
            if not count:
                continue
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    pipe.hset(self.last_key, str(self.pid), repr(last))
                    pipe.incrby(self.done_key, count)
                    pipe.execute()
            except redis.RedisError:
                with self.lock:  # keep the count; the next flush retries
                    self.pending += count


_counter: Counter | None = None
_lock = threading.Lock()


def task_done() -> None:
    """Counts one completed task (the whole body of every peer's benchmark task)."""
    global _counter
    counter = _counter
    if counter is None or counter.pid != os.getpid():  # a new one after a fork
        with _lock:
            if _counter is None or _counter.pid != os.getpid():
                _counter = Counter()
            counter = _counter
    counter.done()
