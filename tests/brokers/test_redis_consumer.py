"""The Rust Redis consumer against a real Redis (db 15), with real Celery and kombu on the other
side where the point is wire compatibility."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from fastq import _core, errors

from tests.conftest import REDIS_HOST
from tests.tls_support import make_certificates

URL = f"{REDIS_HOST}/15"
SEP = "\x06\x16"

pytestmark = pytest.mark.redis


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"Redis is not running on {REDIS_HOST} (scripts/services.sh redis)")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


MakeConsumer = Callable[..., _core.RedisConsumer]


@pytest.fixture
def make_consumer(r: redis.Redis) -> Iterator[MakeConsumer]:
    made: list[_core.RedisConsumer] = []

    def make(queues: list[str] | None = None, **options: Any) -> _core.RedisConsumer:
        options.setdefault("accept", ["json"])
        options.setdefault("prefetch", 10)
        options.setdefault("consumer_id", "test-consumer")
        consumer = _core.RedisConsumer(options.pop("url", URL), queues or ["celery"], **options)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close()


def queue_key(queue: str, priority: int = 0, prefix: str = "") -> str:
    step = max(s for s in (0, 3, 6, 9) if s <= min(max(priority, 0), 9))
    return f"{prefix}{queue}{SEP}{step}" if step else f"{prefix}{queue}"


def envelope(task_id: str | None = None, priority: int = 0, queue: str = "celery") -> bytes:
    return _core.encode_task_envelope(
        {"task": "proj.add", "id": task_id or str(uuid.uuid4())},
        [1, 2],
        {},
        routing_key=queue,
        priority=priority,
    )


def publish(r: redis.Redis, *task_ids: str, queue: str = "celery", prefix: str = "") -> None:
    """LPUSHes one envelope per id in one round trip, the first id served first."""
    r.lpush(queue_key(queue, prefix=prefix), *(envelope(t, queue=queue) for t in task_ids))


def celery_app(**conf: Any) -> Any:
    from celery import Celery

    app = Celery("producer", broker=URL, set_as_current=False)
    app.conf.update(conf)
    return app


def unacked_tags(r: redis.Redis, prefix: str = "") -> set[bytes]:
    return set(cast("list[bytes]", r.hkeys(f"{prefix}unacked")))


def ids(deliveries: list[_core.Delivery]) -> list[str | None]:
    return [d.task_id for d in deliveries]


# -- fetching -----------------------------------------------------------------------------------


@pytest.mark.interop
def test_a_task_sent_by_celery_is_fetched_and_recorded_like_kombu(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    app = celery_app()
    sent = app.send_task("proj.add", args=(2, 3), kwargs={"z": [1, None]})
    consumer = make_consumer(prefetch=4)

    [d] = consumer.fetch(1.0)

    assert d.error is None and d.error_kind is None
    assert d.message is not None
    assert (d.message.task, d.message.id) == ("proj.add", sent.id)
    assert d.message.args == (2, 3)
    assert d.message.kwargs == {"z": [1, None]}
    assert (d.task_id, d.task_name, d.correlation_id) == (sent.id, "proj.add", sent.id)
    assert (d.queue, d.priority, d.redelivered) == ("celery", 0, False)
    assert d.content_type == "application/json"
    assert d.reply_to == app.thread_oid
    assert d.properties["delivery_tag"] == d.delivery_tag
    assert json.loads(d.raw)["headers"]["id"] == sent.id
    # Exactly what kombu's QoS.append writes: [envelope, exchange, routing_key] and a timestamp.
    entry = json.loads(r.hget("unacked", d.delivery_tag) or b"")
    assert entry == [json.loads(d.raw), "", "celery"]
    score = r.zscore("unacked_index", d.delivery_tag)
    assert score is not None and abs(score - time.time()) < 5
    assert r.smembers("fastq.consumer.test-consumer") == {d.delivery_tag.encode()}
    assert r.llen("celery") == 0
    assert consumer.in_flight == 1


@pytest.mark.interop
def test_lower_priority_numbers_are_served_first_across_queues(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    app = celery_app()
    sent = {}
    for queue, priority in [("a", 9), ("b", 6), ("a", 0), ("b", 3), ("a", 4), ("b", 0)]:
        sent[(queue, priority)] = app.send_task("t", queue=queue, priority=priority).id
    consumer = make_consumer(["a", "b"])

    got = consumer.fetch(1.0)

    # All queues at step 0, then all at step 3 (3 and 4 share it), then 6, then 9.
    assert [(d.queue, d.priority) for d in got] == [
        ("a", 0),
        ("b", 0),
        ("a", 4),
        ("b", 3),
        ("b", 6),
        ("a", 9),
    ]
    assert [d.task_id for d in got] == [sent[(d.queue, d.priority)] for d in got]


def test_the_prefetch_window_is_honoured(r: redis.Redis, make_consumer: MakeConsumer) -> None:
    publish(r, "m1", "m2", "m3", "m4", "m5")
    consumer = make_consumer(prefetch=2)

    assert ids(consumer.fetch(1.0)) == ["m1", "m2"]
    assert consumer.in_flight == 2
    start = time.monotonic()
    assert consumer.fetch(5.0) == []  # the window is full: no waiting, no I/O
    assert time.monotonic() - start < 0.5
    assert r.llen("celery") == 3

    first = next(iter(unacked_tags(r))).decode()
    consumer.ack([first])
    assert consumer.in_flight == 1
    assert ids(consumer.fetch(1.0)) == ["m3"]
    assert consumer.in_flight == 2


def test_the_window_can_be_resized_between_fetches(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    publish(r, *(f"m{i}" for i in range(1, 9)))
    consumer = make_consumer(prefetch=2)
    assert ids(consumer.fetch(1.0)) == ["m1", "m2"]
    consumer.prefetch = 5  # grown: the next fetch tops up to 5
    assert ids(consumer.fetch(1.0)) == ["m3", "m4", "m5"]
    consumer.prefetch = 1  # shrunk below what is held: nothing more, nothing given back
    assert consumer.fetch(1.0) == [] and consumer.in_flight == 5
    assert r.hlen("unacked") == 5 and r.llen("celery") == 3
    consumer.prefetch = 0  # at least one
    assert consumer.prefetch == 1


def test_a_blocking_fetch_wakes_up_on_publish_and_tops_up(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    consumer = make_consumer(prefetch=10)
    timer = threading.Timer(0.3, lambda: publish(r, "m1", "m2", "m3"))
    timer.start()
    start = time.monotonic()

    got = consumer.fetch(5.0)

    timer.join()
    assert time.monotonic() - start < 3
    # BRPOP took m1; the claim script recorded it and topped up with the rest in one step.
    assert ids(got) == ["m1", "m2", "m3"]
    assert unacked_tags(r) == {d.delivery_tag.encode() for d in got}
    assert r.zcard("unacked_index") == 3


def test_an_idle_fetch_times_out_without_holding_the_gil(make_consumer: MakeConsumer) -> None:
    consumer = make_consumer()
    done = threading.Event()
    result: list[list[_core.Delivery]] = []

    def fetch() -> None:
        result.append(consumer.fetch(0.6))
        done.set()

    thread = threading.Thread(target=fetch)
    start = time.monotonic()
    thread.start()
    spins = 0
    while not done.is_set():
        spins += 1
    thread.join()
    assert result == [[]]
    assert 0.5 < time.monotonic() - start < 3
    assert spins > 10_000  # this thread kept running while the other one waited in Redis


def test_timeout_must_be_a_number_of_seconds(make_consumer: MakeConsumer) -> None:
    with pytest.raises(ValueError, match="timeout"):
        make_consumer().fetch(-1)


def test_bad_arguments_are_configuration_errors() -> None:
    def consumer(**options: Any) -> _core.RedisConsumer:
        kwargs: dict[str, Any] = {"accept": ["json"], "prefetch": 1, "consumer_id": "c"}
        kwargs.update(options)
        return _core.RedisConsumer(kwargs.pop("url", URL), kwargs.pop("queues", ["q"]), **kwargs)

    with pytest.raises(errors.ConfigurationError, match="prefetch"):
        consumer(prefetch=0)
    with pytest.raises(errors.ConfigurationError, match="queue"):
        consumer(queues=[])
    with pytest.raises(errors.ConfigurationError, match="jsno"):
        consumer(accept=["jsno"])
    with pytest.raises(errors.ConfigurationError, match="URL"):
        consumer(url="http://:hunter22@example.com")


# -- ack, reject ------------------------------------------------------------------------------


def test_ack_removes_the_message_from_unacked(r: redis.Redis, make_consumer: MakeConsumer) -> None:
    publish(r, "m1", "m2")
    consumer = make_consumer()
    got = consumer.fetch(1.0)

    consumer.ack([d.delivery_tag for d in got])

    assert consumer.in_flight == 0
    assert r.hlen("unacked") == 0
    assert r.zcard("unacked_index") == 0
    assert not r.exists("fastq.consumer.test-consumer")
    consumer.ack([])  # nothing to do, no error
    consumer.ack(["never-delivered"])


def test_an_ack_without_waiting_lands_before_the_next_command(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    publish(r, "m1", "m2", "m3")
    consumer = make_consumer()
    first, *rest = consumer.fetch(1.0)

    consumer.ack([first.delivery_tag], wait=False)
    time.sleep(0.05)  # the write is on the server already, though its reply is not read yet
    assert not r.hexists("unacked", first.delivery_tag)
    assert consumer.in_flight == 2

    consumer.ack([d.delivery_tag for d in rest])  # reads the owed replies, then its own
    assert r.hlen("unacked") == 0
    publish(r, "m4")
    assert ids(consumer.fetch(1.0)) == ["m4"]
    consumer.ack(["m4-tag-unknown"], wait=False)
    consumer.close()  # reads what is still owed before closing


def test_reject_without_requeue_drops_the_message(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    publish(r, "m1")
    consumer = make_consumer()
    [d] = consumer.fetch(1.0)

    consumer.reject(d.delivery_tag, requeue=False)

    assert consumer.in_flight == 0
    assert r.hlen("unacked") == 0 and r.llen("celery") == 0


def test_reject_with_requeue_puts_it_at_the_back_marked_redelivered(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    publish(r, "m1", "m2", "m3")
    consumer = make_consumer(prefetch=1)
    [d] = consumer.fetch(1.0)
    assert d.task_id == "m1"

    consumer.reject(d.delivery_tag, requeue=True)

    assert consumer.in_flight == 0
    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0
    order = []
    for _ in range(3):
        [again] = consumer.fetch(1.0)
        order.append((again.task_id, again.redelivered))
        consumer.ack([again.delivery_tag])
    assert order == [("m2", False), ("m3", False), ("m1", True)]


# -- restore --------------------------------------------------------------------------------------


def test_restore_consumer_brings_a_dead_consumers_messages_back_to_the_head(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    publish(r, "m1", "m2", "m3", "m4", "m5")
    dead = make_consumer(prefetch=3, consumer_id="child-1")
    assert ids(dead.fetch(1.0)) == ["m1", "m2", "m3"]
    dead.close()  # the process is gone: nothing acked, nothing restored

    assert _core.restore_consumer(URL, "child-1") == 3

    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0
    assert not r.exists("fastq.consumer.child-1")
    assert r.llen("celery") == 5
    heir = make_consumer(prefetch=10, consumer_id="child-2")
    got = heir.fetch(1.0)
    assert set(ids(got[:3])) == {"m1", "m2", "m3"}  # at the head, served before m4 and m5
    assert all(d.redelivered for d in got[:3])
    assert all(d.message is not None and d.message.headers["redelivered"] for d in got[:3])
    assert [(d.task_id, d.redelivered) for d in got[3:]] == [("m4", False), ("m5", False)]
    assert _core.restore_consumer(URL, "child-1") == 0


def test_restore_unacked_puts_back_in_the_order_taken(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    publish(r, "m1", "m2", "m3", "m4")
    consumer = make_consumer(prefetch=3)
    consumer.fetch(1.0)

    assert consumer.restore_unacked() == 3

    assert consumer.in_flight == 0
    assert r.hlen("unacked") == 0
    got = consumer.fetch(1.0)
    assert [(d.task_id, d.redelivered) for d in got] == [
        ("m1", True),
        ("m2", True),
        ("m3", True),
    ]


def test_restore_visible_restores_only_messages_past_the_timeout(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    publish(r, "m1", "m2")
    consumer = make_consumer(prefetch=2)
    consumer.fetch(1.0)

    assert _core.restore_visible(URL, 3600) == 0
    assert r.hlen("unacked") == 2

    r.set("unacked_mutex", "someone-else", px=10_000)
    assert _core.restore_visible(URL, 0) == 0  # kombu's lock is held elsewhere: hands off
    assert r.hlen("unacked") == 2
    r.delete("unacked_mutex")

    assert _core.restore_visible(URL, 0) == 2
    assert r.hlen("unacked") == 0 and r.llen("celery") == 2
    assert not r.exists("unacked_mutex")
    other = make_consumer(consumer_id="other")
    # One claim gives a batch one timestamp, so the order within it is not kept (nor by kombu).
    got = other.fetch(1.0)
    assert sorted((d.task_id, d.redelivered) for d in got) == [("m1", True), ("m2", True)]


def test_an_entry_with_nowhere_to_go_is_kept_not_dropped(r: redis.Redis) -> None:
    env = json.loads(envelope("lost"))
    entry = json.dumps([env, "no-such-exchange", "rk"])
    r.hset("unacked", "tag-1", entry)
    r.zadd("unacked_index", {"tag-1": time.time() - 10})

    assert _core.restore_visible(URL, 1) == 0

    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0
    assert r.lrange("fastq.unrestorable", 0, -1) == [entry.encode()]


def test_restore_follows_kombu_bindings(r: redis.Redis, make_consumer: MakeConsumer) -> None:
    r.sadd("_kombu.binding.media", f"video{SEP}{SEP}videos", f"video{SEP}{SEP}archive")
    env = json.loads(envelope("v1", priority=7))
    env["properties"]["delivery_info"] = {"exchange": "media", "routing_key": "video"}
    r.hset("unacked", "tag-v", json.dumps([env, "media", "video"]))
    r.zadd("unacked_index", {"tag-v": time.time() - 10})

    assert _core.restore_visible(URL, 1) == 1

    for queue in ("videos", "archive"):
        [raw] = r.lrange(queue_key(queue, 7), 0, -1)
        restored = json.loads(raw)
        assert restored["headers"]["redelivered"] is True
        assert restored["properties"]["delivery_info"]["redelivered"] is True


# -- interoperability with kombu's own ack emulation -----------------------------------------


@pytest.mark.interop
def test_kombu_restores_a_message_fastq_recorded(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    from kombu import Connection

    sent = celery_app().send_task("proj.add", args=(1, 1))
    consumer = make_consumer()
    [d] = consumer.fetch(1.0)

    with Connection(URL) as conn:
        conn.default_channel.qos.restore_by_tag(d.delivery_tag)

    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0
    [again] = make_consumer(consumer_id="other").fetch(1.0)
    assert (again.task_id, again.redelivered) == (sent.id, True)
    assert again.message is not None and again.message.args == (1, 1)


@pytest.mark.interop
def test_kombu_visibility_restore_sees_fastq_entries(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    from kombu import Connection

    sent = celery_app().send_task("proj.add")
    make_consumer().fetch(1.0)
    time.sleep(0.01)

    with Connection(URL, transport_options={"visibility_timeout": 0.001}) as conn:
        conn.default_channel.qos.restore_visible()

    [again] = make_consumer(consumer_id="other").fetch(1.0)
    assert (again.task_id, again.redelivered) == (sent.id, True)


@pytest.mark.interop
def test_fastq_restores_a_message_kombu_holds(r: redis.Redis, make_consumer: MakeConsumer) -> None:
    from kombu import Connection

    with Connection(URL) as conn:
        # SimpleQueue publishes through the direct exchange "q" and binds it: the restore has to
        # find the queue through kombu's binding table.
        queue = conn.SimpleQueue("q")
        queue.put({"hello": "world"})
        message = queue.get(timeout=2)
        assert message.delivery_info["exchange"] == "q"
        assert r.hexists("unacked", message.delivery_tag)

        assert _core.restore_visible(URL, 0) == 1

        assert r.hlen("unacked") == 0
        [raw] = r.lrange("q", 0, -1)
        again = queue.get(timeout=2)
        assert again.payload == {"hello": "world"}
        assert again.delivery_info.get("redelivered") is True
        assert json.loads(raw)["headers"]["redelivered"] is True
        again.ack()
        queue.close()


@pytest.mark.interop
def test_global_keyprefix_is_applied_to_every_key(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    app = celery_app(broker_transport_options={"global_keyprefix": "pfx:"})
    sent = app.send_task("proj.add", args=(4,))
    assert r.llen("pfx:celery") == 1
    assert make_consumer(consumer_id="plain").fetch(0) == []

    consumer = make_consumer(global_keyprefix="pfx:", consumer_id="c1")
    [d] = consumer.fetch(1.0)

    assert d.task_id == sent.id and d.queue == "celery"
    assert r.hexists("pfx:unacked", d.delivery_tag) and not r.exists("unacked")
    assert r.zcard("pfx:unacked_index") == 1
    assert r.sismember("pfx:fastq.consumer.c1", d.delivery_tag)
    assert _core.restore_consumer(URL, "c1", global_keyprefix="pfx:") == 1
    assert r.llen("pfx:celery") == 1 and r.hlen("pfx:unacked") == 0


# -- messages that cannot be run ----------------------------------------------------------------


def raw_envelope(body: bytes, content_type: str, task_id: str, tag: str | None) -> bytes:
    properties: dict[str, Any] = {
        "delivery_info": {"exchange": "", "routing_key": "celery"},
        "body_encoding": "base64",
        "priority": 0,
    }
    if tag is not None:
        properties["delivery_tag"] = tag
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-type": content_type,
            "content-encoding": "utf-8",
            "headers": {"task": "proj.add", "id": task_id},
            "properties": properties,
        }
    ).encode()


@pytest.mark.interop
def test_bad_messages_become_deliveries_with_errors_and_the_next_one_arrives(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    pickled = celery_app(accept_content=["json", "pickle"]).send_task(
        "proj.add", args=(1,), serializer="pickle"
    )
    r.lpush(
        "celery",
        b"{this is not json",
        raw_envelope(b'{"x": 1}', "application/json", "not-a-list", "tag-body"),
        raw_envelope(b"[[], {}, {}]", "application/json", "no-tag", None),
        envelope("good"),
    )
    consumer = make_consumer()

    pickle_d, garbage, not_a_list, untagged, good = consumer.fetch(1.0)

    assert pickle_d.error_kind == "ContentDisallowed" and pickle_d.message is None
    assert pickle_d.error is not None and "pickle" in pickle_d.error
    assert pickle_d.task_id == pickled.id and pickle_d.delivery_tag

    assert garbage.delivery_tag == "" and garbage.message is None
    assert garbage.error_kind == "InvalidMessage"
    assert garbage.error is not None and "fastq.malformed" in garbage.error
    assert garbage.raw == b"{this is not json"

    assert not_a_list.error_kind == "InvalidMessage"
    assert not_a_list.error is not None and "[args, kwargs, embed]" in not_a_list.error
    assert (not_a_list.task_id, not_a_list.task_name) == ("not-a-list", "proj.add")
    assert not_a_list.delivery_tag == "tag-body"

    assert untagged.delivery_tag == "" and untagged.error_kind == "InvalidMessage"
    assert untagged.error is not None and "delivery_tag" in untagged.error
    assert untagged.task_id == "no-tag"

    assert good.error is None and good.task_id == "good"

    # What could not be recorded is kept aside, newest first; the rest awaits an ack.
    assert r.lrange("fastq.malformed", 0, -1) == [untagged.raw, garbage.raw]
    assert unacked_tags(r) == {d.delivery_tag.encode() for d in (pickle_d, not_a_list, good)}
    assert consumer.in_flight == 3
    consumer.ack([d.delivery_tag for d in (pickle_d, garbage, not_a_list, untagged, good)])
    assert r.hlen("unacked") == 0 and consumer.in_flight == 0


# -- connection failures ------------------------------------------------------------------------


def test_an_unreachable_redis_raises_without_the_password() -> None:
    url = "redis://:hunter2-secret@127.0.0.1:6390/15"
    consumer = _core.RedisConsumer(url, ["celery"], accept=["json"], prefetch=1, consumer_id="c")
    # Acks and rejects the worker decided are kept and sent when Redis is back, never raised
    # into the task loop; the fetch that reconnects raises until then.
    consumer.ack(["t"])
    consumer.ack(["u"], wait=False)
    consumer.reject("t", requeue=True)
    for call in (
        lambda: consumer.fetch(0.1),
        lambda: consumer.restore_unacked(),
        lambda: _core.restore_consumer(url, "c"),
        lambda: _core.restore_visible(url, 10),
    ):
        with pytest.raises(errors.BrokerConnectionError) as caught:
            call()
        message = str(caught.value)
        assert "hunter2" not in message and "redis://:***@127.0.0.1:6390/15" in message
        assert isinstance(caught.value, ConnectionError)
    assert "hunter2" not in repr(consumer)


def drop_connections(r: redis.Redis, consumer_id: str) -> None:
    """Kills only this consumer's connections: each names itself after its consumer id."""
    for conn in r.client_list():
        if conn["name"] == f"fastq-consumer:{consumer_id}":
            r.client_kill_filter(_id=conn["id"])


def hold_one(
    r: redis.Redis, make_consumer: MakeConsumer, consumer_id: str
) -> tuple[_core.RedisConsumer, _core.Delivery]:
    """A consumer with a window of one holding the first of messages "a" and "b"."""
    publish(r, "a", "b")
    consumer = make_consumer(consumer_id=consumer_id, prefetch=1)
    [held] = consumer.fetch(0)
    return consumer, held


def test_a_dropped_connection_raises_once_then_reconnects(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    consumer = make_consumer(consumer_id="reconnects")
    assert consumer.fetch(0) == []
    drop_connections(r, "reconnects")
    publish(r, "m1")

    with pytest.raises(errors.BrokerConnectionError):
        consumer.fetch(0)
    assert ids(consumer.fetch(1.0)) == ["m1"]


def test_acks_across_a_dropped_connection_are_kept_and_sent_again(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    publish(r, "a", "b", "c", "d", "e")
    consumer = make_consumer(consumer_id="acks-survive", prefetch=4)
    a, b, c, d = consumer.fetch(0)
    drop_connections(r, "acks-survive")
    # Written into a socket the server closed: lost on the wire, but not forgotten here.
    consumer.ack([a.delivery_tag], wait=False)
    consumer.ack([b.delivery_tag])  # fails on the dead connection: kept, not raised
    consumer.reject(c.delivery_tag, requeue=True)
    assert consumer.in_flight == 1  # the window is free again at once
    # The next fetch reconnects, sends the acks and the requeue again, and fills the window.
    got = consumer.fetch(0)
    assert {x.task_id for x in got} == {"e", "c"}
    assert unacked_tags(r) == {x.delivery_tag.encode() for x in (d, *got)}
    assert consumer.in_flight == 3


def test_after_a_dropped_connection_what_the_set_holds_unknown_here_comes_back(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    consumer, a = hold_one(r, make_consumer, "lost-claim")
    # A claim Redis ran but whose reply never arrived: b is recorded in this consumer's set,
    # and the consumer does not know of it (made here by a twin under the same id).
    [b] = make_consumer(consumer_id="lost-claim", prefetch=1).fetch(0)
    assert b.task_id == "b"
    drop_connections(r, "lost-claim")
    consumer.ack([a.delivery_tag])  # kept for the next fetch
    assert consumer.fetch(0) == []  # reconnected: acks sent, b back at the head of its queue
    assert r.llen("celery") == 1 and unacked_tags(r) == set()
    [again] = consumer.fetch(0)
    assert again.task_id == "b" and again.redelivered


def test_released_tags_are_left_for_the_supervisor_to_acknowledge(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    publish(r, "a", "b", "c")
    consumer = make_consumer(consumer_id="child-1", prefetch=2)
    a, b = consumer.fetch(0)
    consumer.release([a.delivery_tag])
    assert consumer.in_flight == 1  # its window slot is free at once
    assert r.hexists("unacked", a.delivery_tag)  # Redis was not told
    [c] = consumer.fetch(0)
    assert c.task_id == "c"
    # After a dropped connection the released tag is no orphan to put back...
    drop_connections(r, "child-1")
    consumer.ack([b.delivery_tag])
    assert consumer.fetch(0) == []
    assert r.llen("celery") == 0
    # ...nor does a warm shutdown restore it: only what the consumer still holds goes back.
    assert consumer.restore_unacked() == 1
    assert r.lrange("celery", 0, -1) != [] and r.hexists("unacked", a.delivery_tag)

    settler = _core.RedisSettler(URL)
    settler.ack([("child-1", [a.delivery_tag]), ("child-2", [])])
    assert unacked_tags(r) == set() and r.zcard("unacked_index") == 0
    assert not r.exists("fastq.consumer.child-1")
    settler.ack([("child-1", [a.delivery_tag])])  # again: idempotent
    settler.close()


def test_the_settler_acknowledges_for_several_consumers_in_one_batch(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    publish(r, "a", "b", "c", "d")
    one = make_consumer(consumer_id="one", prefetch=2)
    two = make_consumer(consumer_id="two", prefetch=2)
    held = {"one": one.fetch(0), "two": two.fetch(0)}
    settler = _core.RedisSettler(URL)
    settler.ack([(cid, [d.delivery_tag for d in got]) for cid, got in held.items()])
    assert r.hlen("unacked") == 0 and r.zcard("unacked_index") == 0
    assert not r.exists("fastq.consumer.one") and not r.exists("fastq.consumer.two")
    assert "RedisSettler" in repr(settler)


def test_the_settler_reports_an_unreachable_redis() -> None:
    settler = _core.RedisSettler("redis://:secret@127.0.0.1:1/0")
    with pytest.raises(errors.BrokerConnectionError) as raised:
        settler.ack([("c", ["t"])])
    assert "secret" not in str(raised.value)
    settler.ack([])  # nothing to send: no connection needed


def test_renew_leases_rescores_what_live_consumers_hold(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    _, a = hold_one(r, make_consumer, "renewed")
    r.zadd("unacked_index", {a.delivery_tag: 1000.0})  # as if delivered long ago
    r.zadd("unacked_index", {"acked-meanwhile": 1000.0})
    r.zrem("unacked_index", "acked-meanwhile")
    assert _core.renew_leases(URL, ["renewed", "nobody"], 3600.0) == 1
    score = r.zscore("unacked_index", a.delivery_tag)
    assert score is not None and abs(score - time.time()) < 5  # a plain unix time, as kombu's
    assert 0 < r.ttl("fastq.consumer.renewed") <= 3 * 3600
    assert _core.restore_visible(URL, 60) == 0  # not past the timeout: left alone


def test_a_queue_key_of_another_type_is_skipped_and_loses_nothing(
    r: redis.Redis, make_consumer: MakeConsumer, caplog: pytest.LogCaptureFixture
) -> None:
    """A queue whose key holds something else (here a string) refuses its pops. The claim skips
    it and goes on: what it popped from the queues before is recorded and delivered (a script
    stopped by the error kept those pops unrecorded: the messages were in neither a list nor
    ``unacked``), the other queues are served, the blocking pop leaves it out, and the worker's
    log says so once, then once more when the key reads as a list again."""
    r.set("bad", "not a list")
    publish(r, "first", queue="good")
    consumer = make_consumer(["good", "bad", "later"])
    with caplog.at_level(logging.WARNING, logger="fastq.worker"):
        [first] = consumer.fetch(0)
        assert first.task_id == "first" and unacked_tags(r) == {first.delivery_tag.encode()}
        publish(r, "after", queue="later")
        [after] = consumer.fetch(0)
        assert after.task_id == "after"
        started = time.monotonic()
        assert consumer.fetch(0.3) == []  # blocks on good and later only: no WRONGTYPE
        assert time.monotonic() - started >= 0.25
        refused = [m for m in caplog.messages if "cannot be consumed" in m]
        assert len(refused) == 1, caplog.messages
        assert "queue 'bad'" in refused[0] and "WRONGTYPE" in refused[0]
        r.delete("bad")
        publish(r, "healed", queue="bad")
        [healed] = consumer.fetch(0)
        assert healed.task_id == "healed"
    assert any("queue 'bad' can be consumed again" in m for m in caplog.messages)
    assert r.get("bad") is None and r.llen("good") == 0


def test_a_log_line_that_fails_does_not_take_the_claimed_messages_with_it(
    r: redis.Redis, make_consumer: MakeConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer's own log lines (a queue that refuses) are written after the claim has
    recorded its messages in ``unacked``: a logger that raises must not keep them from the loop
    (they would wait out the visibility timeout)."""

    class Broken(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            raise RuntimeError("a broken log filter")

    r.set("bad", "not a list")
    publish(r, "claimed", queue="good")
    consumer = make_consumer(["good", "bad"])
    reported: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))
    logger = logging.getLogger("fastq.worker")
    broken = Broken()
    logger.addFilter(broken)
    try:
        [claimed] = consumer.fetch(0)
    finally:
        logger.removeFilter(broken)
    assert claimed.task_id == "claimed" and unacked_tags(r) == {claimed.delivery_tag.encode()}
    assert [str(e) for e in reported] == ["a broken log filter"]  # said, not swallowed


def test_a_restore_to_a_queue_key_of_another_type_holds_back_only_its_messages(
    r: redis.Redis, make_consumer: MakeConsumer, caplog: pytest.LogCaptureFixture
) -> None:
    """A message restored (warm shutdown, visibility timeout) or requeued to a queue whose key now
    holds something else: Redis refuses the push (WRONGTYPE), which stopped the whole restore
    script there, so every message after it in the batch stayed unrestored, at each pass. It is
    now held back alone: it stays in ``unacked`` (nothing lost, no copy pushed anywhere), the
    rest of the batch goes back, the log names the key, and once the key is a list again a
    restore moves it."""
    publish(r, "to-bad", queue="bad")
    publish(r, "to-good", queue="good")
    publish(r, "requeued", queue="bad2")
    consumer = make_consumer(["bad", "good", "bad2"], prefetch=3)
    got = {d.task_id: d for d in consumer.fetch(1.0)}
    assert sorted(got) == ["requeued", "to-bad", "to-good"]
    r.set("bad", "not a list")
    r.hset("bad2", "a", "hash")
    with caplog.at_level(logging.ERROR, logger="fastq.worker"):
        consumer.reject(got["requeued"].delivery_tag, requeue=True)  # no error: held back
        assert consumer.restore_unacked() == 1
    assert r.llen("good") == 1
    held = {got[t].delivery_tag.encode() for t in ("to-bad", "requeued")}
    assert unacked_tags(r) == held
    said = [m for m in caplog.messages if "cannot be put back on their queue" in m]
    assert len(said) == 2, caplog.messages
    assert "key 'bad2' holds a hash" in said[0] and got["requeued"].delivery_tag in said[0]
    assert "key 'bad' holds a string" in said[1] and got["to-bad"].delivery_tag in said[1]
    # The visibility restore meets them again at every pass: said once, not every time.
    with caplog.at_level(logging.ERROR, logger="fastq.worker"):
        assert _core.restore_visible(URL, 0) == 0
        assert _core.restore_visible(URL, 0) == 0
    assert len([m for m in caplog.messages if "cannot be put back" in m]) == 2, caplog.messages
    assert unacked_tags(r) == held
    r.delete("bad", "bad2")
    assert _core.restore_visible(URL, 0) == 2
    assert r.hlen("unacked") == 0 and r.llen("bad") == 1 and r.llen("bad2") == 1
    other = make_consumer(["bad", "bad2"], consumer_id="other")
    back = other.fetch(1.0)
    assert sorted((d.task_id, d.redelivered) for d in back) == [
        ("requeued", True),
        ("to-bad", True),
    ]


def test_a_blocking_fetch_over_refusing_queues_only_waits(
    r: redis.Redis, make_consumer: MakeConsumer
) -> None:
    """Nothing to block on (the queue's list and its priority lists all hold strings): each
    fetch naps (no busy loop of claims), briefly, so a warm stop of the loop around it is not
    held for the whole fetch timeout."""
    for key in ("celery", "celery\x06\x163", "celery\x06\x166", "celery\x06\x169"):
        r.set(key, "not a list")
    consumer = make_consumer()
    for _ in range(3):
        started = time.monotonic()
        assert consumer.fetch(5.0) == []
        assert 0.09 <= time.monotonic() - started < 1.0


# -- TLS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A throwaway redis-server speaking only TLS, with a certificate for 127.0.0.1 from a CA
    made for the test: (port, CA file)."""
    if not shutil.which("redis-server"):
        pytest.skip("needs redis-server")
    d = tmp_path_factory.mktemp("tls")
    make_certificates(d)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.pem",
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(d),
        ],
        cwd=d,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("this redis-server cannot serve TLS")
                time.sleep(0.05)
        yield port, d / "ca.pem"
    finally:
        server.terminate()
        server.wait(10)


def test_rediss_verifies_the_server_against_the_given_ca(
    tls_redis: tuple[int, Path], make_consumer: MakeConsumer
) -> None:
    port, ca = tls_redis
    producer = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca))
    producer.lpush("celery", envelope("over-tls"))
    producer.close()

    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
    consumer = make_consumer(url=url)
    [d] = consumer.fetch(1.0)
    assert d.task_id == "over-tls"
    consumer.ack([d.delivery_tag])


def test_rediss_refuses_a_server_it_cannot_verify(
    tls_redis: tuple[int, Path], make_consumer: MakeConsumer
) -> None:
    port, _ = tls_redis
    with pytest.raises(errors.BrokerConnectionError, match=r"(?i)certificate"):
        make_consumer(url=f"rediss://:pw-secret@127.0.0.1:{port}/0").fetch(0)
    # Celery's explicit opt-out still works.
    insecure = make_consumer(url=f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=CERT_NONE")
    assert insecure.fetch(0) == []
