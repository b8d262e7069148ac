"""ETA precision: countdown tasks parked in the broker (Redis ``fastq.delayed``) start on time,
not in the 1 s bursts of a worker that moves them only between 1 s blocking pops."""

from __future__ import annotations

import random
import statistics
import time

from fastq import App

from tests.faults import ledger
from tests.faults.conftest import worker_env
from tests.faults.redis_server import RedisServer
from tests.processes import fastq_worker, wait_until

SENT = 50


def test_countdown_tasks_start_on_time(own_redis: RedisServer, ledger_path: str) -> None:
    env = worker_env(own_redis.url(0), own_redis.url(1), ledger_path)
    client = App("client", broker=own_redis.url(0), backend=own_redis.url(1), set_as_current=False)
    rng = random.Random(12)
    try:
        with fastq_worker("--concurrency", "2", app="tests.faults.app", env=env):
            sent = []
            for seq in range(SENT):  # countdowns past DEFER_AFTER: parked in the broker
                countdown = 3.0 + rng.uniform(-0.5, 0.5)
                result = client.send_task("faults.now", (seq,), countdown=countdown)
                sent.append((result, time.time() + countdown))
                time.sleep(0.01)
            wait_until(lambda: ledger.ended(ledger_path) >= SENT, timeout=20)
            metas = client.backend.get_many([r.id for r, _ in sent])
        late = sorted(m["result"] - due for m, (_, due) in zip(metas, sent, strict=True))
        p50, p99 = statistics.median(late), late[int(0.99 * (len(late) - 1))]
        print(f"[eta] lateness p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
        assert late[0] > -0.05, late  # never early (clocks of one machine)
        assert p99 < 0.3, late
    finally:
        client.close()
