"""The Rust Redis publisher behind ``RedisBroker``, against a real Redis: kombu's key layout
(priority steps, ``global_keyprefix``, bindings), threads sharing it, a forked child that
publishes on a connection of its own while the parent keeps using its own, and the plain-TCP
connection's own set-up (credentials, db, name), reconnection and slow replies."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from fastq import App, _core
from fastq.errors import BrokerConnectionError, ConfigurationError

from tests.faults.redis_server import RedisServer

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


@pytest.fixture
def locked_redis() -> Iterator[RedisServer]:
    """A Redis of its own with a password for ``default`` and an ACL user ``pub``."""
    with RedisServer(appendfsync="no") as server:
        admin = server.client()
        admin.execute_command("ACL", "SETUSER", "pub", "on", ">pub-pw", "~*", "&*", "+@all")
        admin.config_set("requirepass", "admin-pw")
        yield server


def _admin(server: RedisServer, db: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, db=db, password="admin-pw")


def test_the_user_password_and_db_of_the_url_are_used(locked_redis: RedisServer) -> None:
    url = f"redis://pub:pub-pw@127.0.0.1:{locked_redis.port}/3"
    app = App("t", broker=url, set_as_current=False)
    try:
        app.send_task("proj.add", (1,), ignore_result=True)
        admin = _admin(locked_redis, 3)
        assert admin.llen("celery") == 1
        publishers = [c for c in admin.client_list() if c["name"].startswith("fastq_publisher")]
        assert [(c["user"], c["db"]) for c in publishers] == [("pub", "3")]
    finally:
        app.close()


def test_a_wrong_password_says_so_without_showing_it(locked_redis: RedisServer) -> None:
    app = App(
        "t", broker=f"redis://pub:hunter22@127.0.0.1:{locked_redis.port}/0", set_as_current=False
    )
    try:
        with pytest.raises(BrokerConnectionError, match="credentials") as raised:
            app.send_task("proj.add", (1,), ignore_result=True)
        assert "hunter22" not in str(raised.value)
    finally:
        app.close()


def test_a_dropped_connection_is_reopened(locked_redis: RedisServer) -> None:
    url = f"redis://:admin-pw@127.0.0.1:{locked_redis.port}/0"
    app = App("t", broker=url, set_as_current=False)
    admin = _admin(locked_redis, 0)
    try:
        app.send_task("proj.add", (1,), ignore_result=True)
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        app.send_task("proj.add", (2,), ignore_result=True)
        assert admin.llen("celery") == 2
    finally:
        app.close()


def test_a_reply_slower_than_the_spin_is_awaited(locked_redis: RedisServer) -> None:
    """A Redis busy for 300 ms (a script) answers long after the publisher stopped polling:
    the publish waits for the reply and returns once the task is in the list."""
    url = f"redis://:admin-pw@127.0.0.1:{locked_redis.port}/0"
    app = App("t", broker=url, set_as_current=False)
    admin = _admin(locked_redis, 0)
    busy = (
        "local s = redis.call('TIME') local stop = s[1] * 1e6 + s[2] + 300000 "
        "while true do local n = redis.call('TIME') "
        "if n[1] * 1e6 + n[2] > stop then return 1 end end"
    )
    try:
        app.send_task("proj.add", (0,), ignore_result=True)  # connected
        script = threading.Thread(target=admin.eval, args=(busy, 0))
        script.start()
        time.sleep(0.05)
        start = time.monotonic()
        app.send_task("proj.add", (1,), ignore_result=True)
        took = time.monotonic() - start
        script.join()
        assert took > 0.1
        assert admin.llen("celery") == 2
    finally:
        app.close()
