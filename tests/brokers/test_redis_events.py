"""The Redis event publisher (``brokers/redis_events.py``) against a real Redis: a batch goes out
in order on kombu's fanout channels in kombu's envelope, and a publish Redis refuses or cannot
take fails with a reason and leaves the next one working."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastq import App
from fastq.brokers.base import EventPublisher
from fastq.errors import BrokerConnectionError

from tests.faults.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis


@pytest.fixture
def events_app(broker_url: str) -> Iterator[App]:
    app = App("t", broker=broker_url, set_as_current=False)
    yield app
    app.close()


def read(pubsub: redis.client.PubSub, n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "pmessage":
            got.append(message)
    return got


def test_a_batch_goes_out_in_order_in_kombus_envelope(
    events_app: App, broker_redis: redis.Redis
) -> None:
    db = int(broker_redis.connection_pool.connection_kwargs.get("db") or 0)
    pubsub = broker_redis.pubsub()
    pubsub.psubscribe(f"/{db}.celeryev/*")
    pubsub.get_message(timeout=1)  # the subscription's confirmation
    publisher: EventPublisher = events_app.broker.event_publisher("w1@host")
    bodies = [
        ("task.multi", json.dumps([{"type": "task-started", "clock": 1}]).encode()),
        ("worker.heartbeat", json.dumps({"type": "worker-heartbeat", "ü": "é"}).encode()),
        ("task.multi", b"[]"),
    ]
    try:
        publisher.publish(bodies)
        messages = read(pubsub, 3)
    finally:
        publisher.close()
        pubsub.close()
    assert [m["channel"].decode() for m in messages] == [
        f"/{db}.celeryev/task.multi",
        f"/{db}.celeryev/worker.heartbeat",
        f"/{db}.celeryev/task.multi",
    ]
    tags = set()
    for message, (routing_key, body) in zip(messages, bodies, strict=True):
        envelope = json.loads(message["data"])
        assert base64.b64decode(envelope["body"]) == body
        assert envelope["content-type"] == "application/json"
        assert envelope["content-encoding"] == "utf-8"
        assert envelope["headers"] == {"hostname": "w1@host"}
        properties = envelope["properties"]
        assert properties["body_encoding"] == "base64"
        assert properties["delivery_info"] == {"exchange": "celeryev", "routing_key": routing_key}
        assert properties["delivery_mode"] == 1
        assert properties["priority"] == 0
        tags.add(properties["delivery_tag"])
    assert len(tags) == 3


def test_a_refused_publish_fails_with_redis_reason_and_the_next_one_goes_out() -> None:
    with RedisServer() as server:
        admin = server.client()
        # A user that may not PUBLISH: every command of the batch gets an error reply.
        admin.execute_command("ACL", "SETUSER", "ev", "on", ">pw", "~*", "&*", "+@all", "-publish")
        app = App("t", broker=f"redis://ev:pw@127.0.0.1:{server.port}/0", set_as_current=False)
        publisher = app.broker.event_publisher("w1@host")
        pubsub = admin.pubsub()
        pubsub.psubscribe("/0.celeryev/*")
        pubsub.get_message(timeout=1)
        try:
            with pytest.raises(BrokerConnectionError, match=r"NOPERM|permission"):
                publisher.publish([("task.multi", b"[1]"), ("task.multi", b"[2]")])
            admin.execute_command("ACL", "SETUSER", "ev", "+publish")
            publisher.publish([("task.multi", b"[3]")])  # not out of step with the refused replies
            messages = read(pubsub, 1)
        finally:
            publisher.close()
            pubsub.close()
            app.close()
    assert [base64.b64decode(json.loads(m["data"])["body"]) for m in messages] == [b"[3]"]


def test_a_redis_that_does_not_answer_is_a_connection_error() -> None:
    app = App("t", broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    publisher = app.broker.event_publisher("w1@host")
    try:
        with pytest.raises(BrokerConnectionError, match="cannot send events"):
            publisher.publish([("task.multi", b"[]")])
    finally:
        publisher.close()
        app.close()
