"""A late ack decided while the broker's connection is dead is kept and sent once the broker
answers, never dropped: dropped, its message would sit unacknowledged in a window that looks full
(and run again after the visibility timeout)."""

from __future__ import annotations

from fastq import App, states
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
            loop._handle(consumer, delivery)  # runs, stores the result; the ack cannot go out
            loop._flush(consumer)
            assert app.backend.get_meta(result.id)["status"] == states.SUCCESS
            own_redis.start()  # from its AOF: the message is still recorded as unacknowledged
            broker = own_redis.client()
            assert broker.hlen("unacked") == 1
            assert consumer.fetch(0.1) == []  # the next round trip sends the kept ack first
            assert (broker.hlen("unacked"), broker.zcard("unacked_index")) == (0, 0)
            assert broker.llen("celery") == 0 and loop._late_acks == []
        finally:
            app.close()
