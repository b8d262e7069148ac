"""The worker loop when a housekeeping step keeps failing."""

from __future__ import annotations

import math
import time
from typing import Any

from fastq import App
from fastq.worker.loop import WorkerLoop

from tests.faults.redis_server import RedisServer


def _app(broker: str, backend: str | None, **options: Any) -> App:
    return App("edges", broker=broker, backend=backend, set_as_current=False, **options)


def test_a_failing_due_move_is_retried_on_its_throttle_not_every_cycle(
    own_redis: RedisServer,
) -> None:
    app = _app(own_redis.url(0), None)
    try:
        loop = WorkerLoop(app, ["celery"], prefetch=4, hostname="h", consumer_id="c1")
        loop._due_at = time.time() - 1  # an ETA task was due when the broker went away
        own_redis.kill()
        loop._maybe_move_due()
        assert loop._due_at == math.inf
        assert loop._fetch_wait() == 1.0  # no busy loop of zero-second fetches
    finally:
        app.close()
