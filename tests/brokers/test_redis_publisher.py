"""The Rust Redis publisher behind ``RedisBroker``, against a real Redis: kombu's key layout
(priority steps, ``global_keyprefix``, bindings), threads sharing it, and a forked child that
publishes on a connection of its own while the parent keeps using its own."""

from __future__ import annotations

import os
import threading

import pytest
import redis
from fastq import App, _core
from fastq.errors import BrokerConnectionError, ConfigurationError

pytestmark = pytest.mark.redis

SEP = "\x06\x16"


def test_priorities_and_the_key_prefix_follow_kombu(
    broker_url: str, broker_redis: redis.Redis
) -> None:
    app = App(
        "t",
        broker=broker_url,
        set_as_current=False,
        broker_transport_options={"global_keyprefix": "pfx:"},
    )
    try:
        for priority in (0, 2, 3, 5, 6, 9, 12):
            app.send_task("proj.add", (priority,), priority=priority)
        app.send_many([("proj.add", (i,), None) for i in range(3)], queue="other", priority=7)
        assert app.broker.queue_length("celery") == 7
    finally:
        app.close()
    lists = {
        k.decode(): broker_redis.llen(k)
        for k in broker_redis.scan_iter("*")
        if broker_redis.type(k) == b"list"
    }
    assert lists == {
        "pfx:celery": 2,
        f"pfx:celery{SEP}3": 2,
        f"pfx:celery{SEP}6": 1,
        f"pfx:celery{SEP}9": 2,
        f"pfx:other{SEP}6": 3,
    }
    for queue in ("celery", "other"):
        members = broker_redis.smembers(f"pfx:_kombu.binding.{queue}")
        assert members == {f"{queue}{SEP}{SEP}{queue}".encode()}


def test_the_key_layout_comes_from_rust() -> None:
    keys = _core.RedisKeys("p:")
    assert keys.queue("q", 0) == "p:q"
    assert keys.queue("q", 4) == f"p:q{SEP}3"
    assert keys.queue("q", -1) == "p:q"
    assert keys.queue_keys("q") == ["p:q", f"p:q{SEP}3", f"p:q{SEP}6", f"p:q{SEP}9"]
    assert keys.delayed() == "p:fastq.delayed"
    assert keys.consumer("c1") == "p:fastq.consumer.c1"


def test_threads_share_the_publisher(app: App, broker_redis: redis.Redis) -> None:
    def send() -> None:
        for i in range(200):
            app.send_task("proj.add", (i,), ignore_result=True)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert broker_redis.llen("celery") == 800


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_publishes_on_a_connection_of_its_own(
    app: App, broker_redis: redis.Redis
) -> None:
    app.send_task("proj.add", ("parent-before",), ignore_result=True)  # the parent's connection
    pid = os.fork()
    if pid == 0:  # the child: as a prefork worker's child sending a canvas follow-up
        code = 1
        try:
            for i in range(50):
                app.send_task("proj.add", (f"child-{i}",), ignore_result=True)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for i in range(50):  # the parent's connection is still its own and in step
        app.send_task("proj.add", (f"parent-{i}",), ignore_result=True)
    assert broker_redis.llen("celery") == 101


def test_an_unreachable_broker_raises_without_the_password() -> None:
    app = App("t", broker="redis://:hunter2@127.0.0.1:6390/0", set_as_current=False)
    try:
        with pytest.raises(BrokerConnectionError) as raised:
            app.send_task("proj.add", (1,), ignore_result=True)
        assert "hunter2" not in str(raised.value)
        assert "127.0.0.1:6390" in str(raised.value)
    finally:
        app.close()


def test_an_unusable_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        _core.RedisPublisher("redis://127.0.0.1:notaport/0")
