"""Deferred ETA messages on Redis (``RedisBroker.defer`` / ``move_due``) against a real Redis:
a queue key of another type holds back its own due messages, never the others'."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
import redis
from fastq import App, _core

pytestmark = pytest.mark.redis


def envelope(queue: str) -> bytes:
    return _core.encode_task_envelope(
        {"task": "proj.add", "id": str(uuid.uuid4())}, [1, 2], {}, routing_key=queue
    )


def test_a_queue_key_of_another_type_holds_back_only_its_own_due_messages(
    broker_url: str, broker_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The move script stopped at the first push Redis refused (WRONGTYPE): every due message
    after it, whatever its queue, stayed deferred, at every pass. More than a page (500) of them
    ahead of the others shows the pages step over what is held back."""
    app = App("t", broker=broker_url, set_as_current=False)
    try:
        now = time.time()
        for i in range(520):  # due first
            app.broker.defer(envelope("bad"), "bad", 0, now - 100 + i * 0.01)
        for i in range(2):
            app.broker.defer(envelope("good"), "good", 0, now - 10 + i)
        app.broker.defer(envelope("good"), "good", 0, now + 3600)  # not due
        broker_redis.set("bad", "not a list")
        delayed = app.broker.keys.delayed()
        with caplog.at_level(logging.WARNING, logger="fastq.worker"):
            assert app.broker.move_due() == 2
            assert app.broker.move_due() == 0
            said = [m for m in caplog.messages if "cannot be moved to their queue" in m]
            assert len(said) == 1, caplog.messages  # once, not at every pass
            assert "'bad' holds a string" in said[0]
            assert broker_redis.llen("good") == 2 and broker_redis.zcard(delayed) == 521
            broker_redis.delete("bad")
            assert app.broker.move_due() == 500  # a batch at a time, as before
            assert app.broker.move_due() == 20
        assert any("can be moved to 'bad' again" in m for m in caplog.messages)
        assert broker_redis.llen("bad") == 520 and broker_redis.zcard(delayed) == 1
    finally:
        app.close()
