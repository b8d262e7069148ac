"""A late ack that cannot be sent (the broker's connection died) is kept for the next flush,
never dropped: dropped, its message would sit unacknowledged in a window that looks full."""

from __future__ import annotations

import pytest
from fastq import App, errors, states
from fastq.worker.loop import WorkerLoop

from tests.faults.redis_server import RedisServer


def test_late_ack_tags_are_kept_when_the_ack_fails(own_redis: RedisServer) -> None:
    with RedisServer() as backend:
        app = App(
            "late",
            broker=own_redis.url(0),
            backend=backend.url(0),
            task_acks_late=True,
            set_as_current=False,
        )

        @app.task(name="late.add")
        def add(x: int, y: int) -> int:
            return x + y

        try:
            result = app.send_task("late.add", (1, 2))
            loop = WorkerLoop(app, ["celery"], prefetch=4, hostname="h", consumer_id="c1")
            consumer = app.broker.consumer(
                ["celery"], prefetch=4, consumer_id="c1", accept=["application/json"]
            )
            (delivery,) = consumer.fetch(1.0)
            own_redis.kill()
            with pytest.raises(errors.BrokerConnectionError):
                loop._handle(consumer, delivery)  # stores the result, then acks: fails
                loop._flush(consumer)  # (where acks wait for the end of the batch)
            assert app.backend.get_meta(result.id)["status"] == states.SUCCESS
            assert loop._late_acks == [delivery.delivery_tag]  # kept for the next flush
        finally:
            app.close()
