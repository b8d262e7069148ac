"""A list of RabbitMQ URLs, as Celery takes it (``broker_url = 'amqp://h1;amqp://h2'`` or a list),
and ``broker_failover_strategy``: the settings, the order nodes are tried in, and the publisher,
the consumer and the py-amqp connections going past a node that refuses connections. The
cluster itself, with nodes killed mid-drain, is tests/faults/test_rabbitmq_cluster.py."""

from __future__ import annotations

import pytest
from fastq import App, _core
from fastq.brokers.amqp_connection import AmqpServers
from fastq.config import Config
from fastq.errors import BrokerConnectionError, ConfigurationError

from tests.amqp_support import AMQP_HOST, AMQP_URL, delete, requires_rabbitmq, unique
from tests.brokers.test_amqp import fetch
from tests.faults.redis_server import free_port


def dead_url() -> str:
    """A URL where nothing listens (connections refused at once)."""
    return f"amqp://guest:hunter2@127.0.0.1:{free_port()}//"


def test_a_list_of_urls_is_one_setting_as_celery_writes_it() -> None:
    conf = Config(broker_url=["amqp://a//", "amqp://b//"])
    assert conf.broker_url == "amqp://a//;amqp://b//"
    servers = AmqpServers.from_url("amqp://u:p@a:5673/v; amqps://b/ ;")
    assert servers.urls == ("amqp://u:p@a:5673/v", "amqps://b/")
    assert servers.lapin_urls() == ["amqp://u:p@a:5673/v", "amqps://guest:guest@b:5671/%2F"]
    assert servers.strategy == "round-robin"
    with pytest.raises(ConfigurationError, match="not an AMQP URL"):
        AmqpServers.from_url("amqp://a;redis://b")


def test_failover_strategies_are_kombus_names_and_nothing_else() -> None:
    assert Config(broker_failover_strategy="shuffle").broker_failover_strategy == "shuffle"
    for bad in ("random", lambda servers: iter(servers)):
        with pytest.raises(ConfigurationError, match="'round-robin' or 'shuffle'"):
            Config(broker_failover_strategy=bad)
    with pytest.raises(ConfigurationError, match="round-robin or shuffle"):
        _core.AmqpPublisher("amqp://a//", failover="random")


def test_round_robin_starts_at_the_first_and_moves_on_after_a_failure() -> None:
    servers = AmqpServers.from_url("amqp://a;amqp://b;amqp://c")
    assert servers.order() == [0, 1, 2]
    servers.advance()
    assert servers.order() == [1, 2, 0]
    servers.connected(2)
    servers.advance()
    assert servers.order() == [0, 1, 2]
    one = AmqpServers.from_url("amqp://a")
    one.advance()
    assert one.order() == [0]


def test_shuffle_tries_the_current_first_and_never_stays_after_a_failure() -> None:
    servers = AmqpServers.from_url("amqp://a;amqp://b;amqp://c", "shuffle")
    seen = set()
    for _ in range(50):
        order = servers.order()
        assert order[0] == servers.current and sorted(order) == [0, 1, 2]
        before = servers.current
        servers.advance()
        assert servers.current != before
        seen.add(servers.current)
    assert seen == {0, 1, 2}


@requires_rabbitmq
def test_the_publisher_consumer_and_admin_go_past_a_dead_node() -> None:
    """The first URL refuses connections: every client goes on to the next at once, and the
    consumer says which node it is connected to."""
    queue = unique("failover")
    dead = dead_url()
    app = App("t", broker=f"{dead};{AMQP_URL}", task_default_queue=queue, set_as_current=False)
    try:
        app.send_many([("proj.add", (i, i), None) for i in range(3)])
        assert app.broker.queue_length(queue) == 3  # py-amqp, past the dead node too
        consumer = app.broker.consumer([queue], prefetch=5, consumer_id="tf", accept=["json"])
        got = fetch(consumer, 3)
        assert consumer.broker is not None and f"@{AMQP_HOST}/" in consumer.broker
        consumer.ack([d.delivery_tag for d in got])
        consumer.close()
    finally:
        app.close()
        delete(queue)


@requires_rabbitmq
def test_when_no_node_answers_the_error_says_why_for_each() -> None:
    first, second = dead_url(), dead_url()
    app = App("t", broker=[first, second], set_as_current=False)
    ports = [u.rsplit(":", 1)[1].split("/")[0] for u in (first, second)]
    with pytest.raises(BrokerConnectionError) as by_rust:
        app.send_task("proj.add", (1, 1))
    with pytest.raises(BrokerConnectionError) as by_py_amqp:
        app.broker.queue_length("celery")
    for error in (by_rust, by_py_amqp):
        text = str(error.value)
        assert "hunter2" not in text
        assert all(f"connection refused by 127.0.0.1:{p}" in text for p in ports), text
    assert "any of the 2 brokers" in str(by_rust.value)
    assert "none of the 2 brokers answered" in str(by_py_amqp.value)
