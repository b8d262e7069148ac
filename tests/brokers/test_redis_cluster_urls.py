"""Redis Cluster URLs and key layout (no servers needed; the clusters are in
tests/faults/test_redis_cluster.py)."""

from __future__ import annotations

import pytest
from fastq import App, _core, redis_cluster
from fastq.errors import BrokerConnectionError, ConfigurationError
from fastq.urls import redact

URL = "redis+cluster://:s%40cret@h1:7000;redis+cluster://h2:7001/0;redis+cluster://h3"


def test_every_seed_and_the_first_credentials() -> None:
    spec = redis_cluster.parse(URL)
    assert spec.nodes == [("h1", 7000), ("h2", 7001), ("h3", 6379)]
    assert (spec.username, spec.password, spec.tls) == (None, "s@cret", False)
    assert "cret" not in redact(URL)
    tls = redis_cluster.parse("rediss+cluster://h:7000?ssl_cert_reqs=none")
    assert tls.tls and dict(tls.options) == {"ssl_cert_reqs": "none"}
    assert redis_cluster.is_cluster_url(URL)
    assert not redis_cluster.is_cluster_url("redis://h")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+cluster://h:7000/2", "database 0 only"),
        ("redis+cluster://h:7000;redis://h:7001", "redis\\+cluster://host:port"),
        ("redis+cluster://h:1;rediss+cluster://h:2", "mixes TLS"),
        ("redis+cluster://h:port", "port"),
    ],
)
def test_urls_that_cannot_work_are_refused(url: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        redis_cluster.parse(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+cluster://h:7000/2", "database 0 only"),
        ("redis+cluster://h:7000;redis://h:7001", "redis\\+cluster://"),
        ("redis+cluster://h:x", "port"),
    ],
)
def test_the_rust_side_refuses_them_too(url: str, reason: str) -> None:
    with pytest.raises(Exception, match=reason):
        _core.RedisPublisher(url)


def test_nothing_connects_until_used() -> None:
    publisher = _core.RedisPublisher("redis+cluster://:pw@127.0.0.1:1;redis+cluster://127.0.0.1:2")
    assert "pw" not in repr(publisher)
    consumer = _core.RedisConsumer(
        "redis+cluster://127.0.0.1:1", ["a", "b"], accept=["json"], prefetch=4, consumer_id="c"
    )
    assert 'queues=["a", "b"]' in repr(consumer)
    # A cluster nobody answers for is a connection error (the worker retries), named so.
    with pytest.raises(BrokerConnectionError, match="no node of the cluster gave its slot map"):
        consumer.fetch(0)


def test_each_queue_has_its_own_hash_tagged_keys() -> None:
    keys = _core.RedisKeys("p.", cluster=True)
    assert keys.cluster
    assert keys.queue("celery") == "p.{celery}"
    assert keys.queue("celery", 9) == "p.{celery}\x06\x169"
    assert keys.unacked("celery") == "p.{celery}unacked"
    assert keys.unacked_index("celery") == "p.{celery}unacked_index"
    assert keys.consumer("w1", "celery") == "p.{celery}fastq.consumer.w1"
    assert keys.delayed("celery") == "p.{celery}fastq.delayed"
    with pytest.raises(ValueError, match="queue="):
        keys.unacked()
    # The single-Redis layout is kombu's, whatever the queue.
    assert _core.RedisKeys("p.").unacked("celery") == "p.unacked"


def test_brokers_and_backends_by_scheme() -> None:
    from fastq.backends.redis import RedisBackend
    from fastq.brokers.redis import RedisBroker

    app = App("x", broker=URL, backend=URL, set_as_current=False)
    assert isinstance(app.broker, RedisBroker) and app.broker.cluster is not None
    assert isinstance(app.backend, RedisBackend) and app.backend.cluster is not None
    # A group's keys share one slot (its id as the hash tag); task results spread by id.
    assert app.backend.group_key("g1", ".j") == "celery-taskset-meta-{g1}.j"
    assert app.backend.key_for("t1") == "celery-task-meta-t1"
    with pytest.raises(ConfigurationError, match="Celery"):
        app.broker.control_channel()
    with pytest.raises(ConfigurationError, match="Celery"):
        app.broker.event_publisher("h")


def test_a_braced_prefix_is_refused() -> None:
    app = App("x", broker=URL, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": "{p}"}
    with pytest.raises(ConfigurationError, match="brace"):
        app.broker  # noqa: B018
