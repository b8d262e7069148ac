"""The RabbitMQ broker: URLs, Celery's declarations and properties, the Rust consumer (acks,
requeue, reconnection), priorities, quorum queues, and a worker surviving bad input, a killed
child and a broker restart. Real RabbitMQ on 127.0.0.1:5672."""

from __future__ import annotations

import json
import os
import signal
import ssl
import time
from pathlib import Path
from typing import Any

import amqp
import pytest
from fastq import App, _core
from fastq.brokers.amqp import AmqpBroker
from fastq.brokers.amqp_connection import AmqpParams
from fastq.brokers.amqp_topology import declarations
from fastq.config import Config
from fastq.errors import BrokerConnectionError, ConfigurationError, NotRegistered
from fastq.urls import redact

from tests.amqp_support import (
    AMQP_HOST,
    AMQP_URL,
    admin,
    children,
    close_connection,
    delete,
    list_queues,
    queue_state,
    rabbitmqctl,
    requires_rabbitmq,
    unique,
    wait_until,
    worker,
)
from tests.tls_support import Certificates, make_certificates, tls_front

#: Tasks drained across the broker restart (the issue's 5000).


def make_app(queue: str, backend: str | None = None, **settings: object) -> App:
    return App(
        "t",
        broker=AMQP_URL,
        backend=backend,
        task_default_queue=queue,
        set_as_current=False,
        **settings,
    )


def fetch(consumer: Any, n: int, timeout: float = 10) -> list[Any]:
    """Exactly ``n`` deliveries, however the consumer batches them."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(consumer.fetch(0.5))
    assert len(got) == n, f"wanted {n} deliveries, got {len(got)}"
    return got


# -- URLs and declarations (no broker needed) ----------------------------------------------------
def test_urls_read_as_kombu_reads_them() -> None:
    p = AmqpParams.from_url("amqp://guest:guest@localhost:5672//")
    assert (p.host, p.port, p.vhost, p.ssl) == ("localhost", 5672, "/", False)
    assert AmqpParams.from_url("pyamqp://u:p@h/").vhost == "/"
    p = AmqpParams.from_url("amqps://user:s%40cret@rabbit:5671/prod%2Fa")
    assert (p.password, p.vhost, p.ssl) == ("s@cret", "prod/a", True)
    assert p.lapin_url() == "amqps://user:s%40cret@rabbit:5671/prod%2Fa"
    assert AmqpParams.from_url("amqp://h").lapin_url() == "amqp://guest:guest@h:5672/%2F"
    with pytest.raises(ConfigurationError):
        AmqpParams.from_url("http://x")


def test_declarations_follow_the_settings() -> None:
    conf = Config(task_queue_max_priority=10)
    decl = declarations(conf)["celery"]
    assert (decl.exchange, decl.exchange_type, decl.routing_key, decl.durable) == (
        "celery",
        "direct",
        "celery",
        True,
    )
    assert decl.arguments == {"x-max-priority": 10}
    quorum = declarations(Config(task_default_queue_type="quorum"))["celery"]
    assert quorum.arguments == {"x-queue-type": "quorum"} and quorum.quorum
    topic = declarations(
        Config(
            task_queues=[
                {
                    "name": "feeds",
                    "exchange": "media",
                    "exchange_type": "topic",
                    "routing_key": "f.#",
                }
            ]
        )
    )
    assert topic["feeds"].exchange_type == "topic" and topic["feeds"].routing_key == "f.#"


def test_broker_use_ssl_files_go_to_the_rust_side_and_what_it_cannot_honour_is_refused() -> None:
    def tls(use_ssl: object) -> object:
        return AmqpBroker("amqps://h//", Config(broker_use_ssl=use_ssl)).tls

    assert tls(True) is None and tls(None) is None
    files = {"ca_certs": Path("/etc/ca.pem"), "certfile": "/c.pem", "keyfile": "/k.pem"}
    assert tls({**files, "cert_reqs": ssl.CERT_REQUIRED}) == {
        "ca_certs": "/etc/ca.pem",
        "certfile": "/c.pem",
        "keyfile": "/k.pem",
    }
    with pytest.raises(ConfigurationError, match="cert_reqs"):
        tls({"cert_reqs": ssl.CERT_NONE})
    with pytest.raises(ConfigurationError, match="server_hostname"):
        tls({"server_hostname": "rabbit"})
    # The Rust side refuses an option it does not know, and a key without its certificate.
    with pytest.raises(ConfigurationError, match="unknown TLS option"):
        _core.AmqpPublisher("amqps://h/", tls={"ciphers": "x"})
    for use_ssl, refusal in [
        ({"keyfile": "/k.pem"}, "keyfile without certfile"),
        ({"ca_certs": "/nonexistent/ca.pem"}, "cannot read the CA certificates"),
    ]:
        app = App("t", broker="amqps://h:1//", broker_use_ssl=use_ssl, set_as_current=False)
        with pytest.raises(ConfigurationError, match=refusal):
            app.send_task("proj.add", (1, 1))


def test_publisher_confirms_are_on_unless_turned_off() -> None:
    def confirm(**settings: object) -> bool:
        return AmqpBroker("amqp://h//", Config(**settings)).confirm

    assert confirm()
    assert not confirm(broker_confirm_publish=False)
    # kombu's name for it, as Celery users set it; it wins over fastq's.
    assert not confirm(broker_transport_options={"confirm_publish": False})
    assert confirm(broker_confirm_publish=False, broker_transport_options={"confirm_publish": 1})


# -- publishing ----------------------------------------------------------------------------------
@requires_rabbitmq
def test_publish_is_celerys_message() -> None:
    queue = unique("publish")
    app = make_app(queue)
    try:
        result = app.send_task("proj.add", (2, 3), priority=3, expires=60)
        with admin() as ch:
            msg = ch.basic_get(queue, no_ack=True)
            ch.exchange_declare(queue, "direct", passive=True)  # declared as Celery does
        assert msg is not None
        props = msg.properties
        assert props["delivery_mode"] == 2
        assert props["content_type"] == "application/json"
        assert props["content_encoding"] == "utf-8"
        assert props["correlation_id"] == result.id
        assert props["reply_to"] == app.oid
        assert props["priority"] == 3
        assert props["expiration"] == "60000"
        headers = props["application_headers"]
        assert headers["task"] == "proj.add" and headers["id"] == result.id
        assert headers["root_id"] == result.id and headers["eta"] is None
        assert msg.delivery_info["exchange"] == "" and msg.delivery_info["routing_key"] == queue
        args, kwargs, embed = json.loads(msg.body)
        assert (args, kwargs) == ([2, 3], {}) and set(embed) == {
            "callbacks",
            "errbacks",
            "chain",
            "chord",
        }
    finally:
        app.close()
        delete(queue)


@requires_rabbitmq
def test_task_queues_with_a_topic_exchange() -> None:
    queue, exchange = unique("topic"), unique("media")
    app = make_app(
        queue,
        task_queues=[
            {"name": queue, "exchange": exchange, "exchange_type": "topic", "routing_key": "feed.#"}
        ],
        task_routes={"proj.feed": {"queue": queue, "exchange": exchange, "routing_key": "feed.x"}},
    )
    try:
        app.send_task("proj.feed", ("rss",))
        consumer = app.broker.consumer([queue], prefetch=1, consumer_id="t6", accept=["json"])
        (delivery,) = fetch(consumer, 1)
        assert delivery.message.args == ("rss",)
        assert delivery.properties["delivery_info"] == {
            "exchange": exchange,
            "routing_key": "feed.x",
            "redelivered": False,
        }
        consumer.ack([delivery.delivery_tag])
        consumer.close()
    finally:
        app.close()
        delete(queue, exchange)


@requires_rabbitmq
def test_publisher_confirms_and_reconnects_after_a_fork_or_a_break() -> None:
    queue = unique("confirm")
    app = make_app(queue, broker_confirm_publish=True)
    try:
        app.send_task("proj.add", (1, 1))
        # The broker drops the connection: the next publish reconnects (and is confirmed).
        assert close_connection(app.broker.publisher.connection_name) == 1
        app.send_task("proj.add", (1, 2))
        broker = app.broker
        pid = os.fork()
        if pid == 0:  # the child must not touch the parent's socket, even through this object
            code = 1
            try:
                broker.publish(app.build_message("proj.add", (1, 3)))
                code = 0
            finally:
                os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        app.send_task("proj.add", (1, 4))  # the parent's connection is intact
        wait_until(lambda: queue_state(queue)[0] == 4, 5, "4 messages")
    finally:
        app.close()
        delete(queue)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("amqp-tls"))


@requires_rabbitmq
def test_amqps_with_a_private_ca_and_a_client_certificate(certs: Certificates) -> None:
    """RabbitMQ behind TLS that takes only clients with a certificate from its own CA: the Rust
    publisher and consumer connect with broker_use_ssl's files, and are refused without them."""
    queue = unique("tls")
    host, port = AMQP_HOST.rsplit(":", 1)
    files = {
        "ca_certs": str(certs.ca),
        "certfile": str(certs.client_cert),
        "keyfile": str(certs.client_key),
    }
    with tls_front((host, int(port)), certs, client_auth=True) as tls_port:

        def app(**use_ssl: str) -> App:
            url = f"amqps://guest:guest@127.0.0.1:{tls_port}//"
            return App(
                "t",
                broker=url,
                task_default_queue=queue,
                broker_use_ssl=use_ssl,
                set_as_current=False,
            )

        client = app(**files)
        consumer = None
        try:
            client.send_task("proj.add", (1, 2), task_id="over-tls")
            consumer = client.broker.consumer(
                [queue], prefetch=1, consumer_id=unique("tls"), accept=["json"]
            )
            [d] = fetch(consumer, 1)
            assert d.task_id == "over-tls"
            consumer.ack([d.delivery_tag])
            # The system does not know the CA.
            with pytest.raises(BrokerConnectionError, match=r"not trusted.*ca_certs"):
                app(certfile=files["certfile"], keyfile=files["keyfile"]).send_task("p", ())
            # No client certificate: the server ends the handshake.
            with pytest.raises(BrokerConnectionError, match="refused the client certificate"):
                app(ca_certs=files["ca_certs"]).broker.consumer(
                    [queue], prefetch=1, consumer_id=unique("tls"), accept=["json"]
                )
        finally:
            if consumer is not None:
                consumer.close()
            client.close()
            delete(queue)


@requires_rabbitmq
def test_unreachable_broker_is_a_redacted_error() -> None:
    app = App("t", broker="amqp://guest:hunter2@127.0.0.1:5679//", set_as_current=False)
    with pytest.raises(BrokerConnectionError) as info:
        app.send_task("proj.add", (1, 1))
    assert "hunter2" not in str(info.value) and "127.0.0.1:5679" in str(info.value)
    with pytest.raises(BrokerConnectionError) as info:
        app.broker.consumer(["q"], prefetch=1, consumer_id="c", accept=["json"])
    assert "hunter2" not in str(info.value)
    assert redact("amqp://u:hunter2@h//") == "amqp://u:***@h//"


@requires_rabbitmq
@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("amqp://guest:hunter2@127.0.0.1:5679//", "connection refused by 127.0.0.1:5679"),
        (AMQP_URL.replace("guest:guest@", "guest:hunter2@"), 'login refused for user "guest"'),
    ],
    ids=["refused", "bad-password"],  # not the URL: each xdist worker has its own vhost
)
def test_py_amqp_and_the_rust_side_say_the_same(url: str, cause: str) -> None:
    """The queue admin calls (py-amqp) and the publisher (lapin) word a failure alike: one
    wording, the Rust side's."""
    app = App("t", broker=url, set_as_current=False)
    with pytest.raises(BrokerConnectionError) as by_rust:
        app.send_task("proj.add", (1, 1))
    with pytest.raises(BrokerConnectionError) as by_py_amqp:
        app.broker.queue_length("celery")
    # The URL once, its password hidden; then the same explanation.
    assert str(by_py_amqp.value).count("@") == 1 and "hunter2" not in str(by_py_amqp.value)
    rust, py_amqp = (str(e.value) for e in (by_rust, by_py_amqp))
    rust, py_amqp = rust[rust.index(cause) :], py_amqp[py_amqp.index(cause) :]
    # The broker's own words may differ by client (py-amqp's exception adds the method).
    assert rust.split(" (broker said")[0] == py_amqp.split(" (broker said")[0], (rust, py_amqp)


# -- the Rust consumer ---------------------------------------------------------------------------
@requires_rabbitmq
def test_consumer_acks_rejects_and_restores() -> None:
    queue = unique("consumer")
    app = make_app(queue)
    try:
        app.send_many([("proj.add", (i, i), None) for i in range(10)])
        consumer = app.broker.consumer([queue], prefetch=10, consumer_id="t1", accept=["json"])
        got = fetch(consumer, 10)
        assert [d.message.args for d in got] == [(i, i) for i in range(10)]
        assert consumer.in_flight == 10
        consumer.ack([d.delivery_tag for d in got[:5]])  # one basic.ack multiple=true
        consumer.ack([got[0].delivery_tag])  # twice: ignored, not a channel error
        consumer.reject(got[5].delivery_tag, requeue=False)  # dropped
        assert consumer.in_flight == 4
        assert consumer.restore_unacked() == 4
        consumer.close()
        wait_until(lambda: queue_state(queue)[0] == 4, 5, "4 messages back in the queue")
    finally:
        app.close()
        delete(queue)


@requires_rabbitmq
@pytest.mark.parametrize("queues", [1, 2])
def test_the_prefetch_window_is_the_consumers_across_its_queues(queues: int) -> None:
    """One queue: per-consumer QoS (the cheaper kind for RabbitMQ); several: per channel. Either
    way the consumer holds at most ``prefetch`` unacknowledged messages, and more come only as
    it acks."""
    names = [unique(f"window{i}") for i in range(queues)]
    app = make_app(names[0])
    try:
        for name in names:
            app.send_many([("proj.add", (i, i), None) for i in range(8)], queue=name)
        consumer = app.broker.consumer(names, prefetch=3, consumer_id="tw", accept=["json"])
        held = fetch(consumer, 3)
        time.sleep(0.3)  # time for the broker to send more, if the window let it
        assert consumer.fetch(0.2) == [] and consumer.in_flight == 3
        consumer.ack([held[0].delivery_tag])
        (more,) = fetch(consumer, 1)
        assert consumer.fetch(0.3) == [] and consumer.in_flight == 3
        consumer.ack([d.delivery_tag for d in held[1:]] + [more.delivery_tag])
        fetch(consumer, 3)
        consumer.close()
    finally:
        app.close()
        delete(*names)


@requires_rabbitmq
def test_consumer_reconnects_and_drops_stale_acks(caplog: pytest.LogCaptureFixture) -> None:
    queue = unique("reconnect")
    app = make_app(queue)
    try:
        app.send_many([("proj.add", (i, i), None) for i in range(3)])
        consumer = app.broker.consumer([queue], prefetch=10, consumer_id="t2", accept=["json"])
        first = fetch(consumer, 3)
        assert consumer.generation == 1
        assert close_connection("t2") == 1
        with pytest.raises(BrokerConnectionError, match="lost the connection"):
            for _ in range(20):
                consumer.fetch(0.5)
        again = fetch(consumer, 3)
        assert consumer.generation == 2
        assert all(d.redelivered for d in again)
        consumer.ack([d.delivery_tag for d in first])  # the old channel's tags: dropped
        assert "dropped 3 ack(s)" in caplog.text
        consumer.ack([d.delivery_tag for d in again])
        consumer.close()
        assert queue_state(queue)[0] == 0
    finally:
        app.close()
        delete(queue)


@requires_rabbitmq
def test_consumer_negotiates_heartbeats() -> None:
    queue = unique("heartbeat")
    app = make_app(queue, broker_heartbeat=30)
    try:
        consumer = app.broker.consumer([queue], prefetch=1, consumer_id="hb-test", accept=["json"])
        rows = rabbitmqctl("list_connections", "client_properties", "timeout").splitlines()
        consumer.close()
        # The lower of the broker's proposal (60 s) and ours wins, as with py-amqp.
        assert any('"hb-test"' in row and row.endswith("\t30") for row in rows), rows
    finally:
        app.close()
        delete(queue)


@requires_rabbitmq
def test_priorities_are_honoured_with_x_max_priority() -> None:
    queue = unique("priority")
    app = make_app(queue, task_queue_max_priority=9)
    try:
        for p in (1, 5, 9, 3, 7, 0):
            app.send_task("proj.add", (p, 0), priority=p)
        consumer = app.broker.consumer([queue], prefetch=1, consumer_id="t3", accept=["json"])
        order = []
        while len(order) < 6:
            for d in consumer.fetch(2.0):
                order.append(d.priority)
                consumer.ack([d.delivery_tag])
        consumer.close()
        assert order == [9, 7, 5, 3, 1, 0]
    finally:
        app.close()
        delete(queue)


@requires_rabbitmq
def test_pickle_is_decoded_only_when_accepted() -> None:
    import pickle

    queue = unique("pickle")
    body = pickle.dumps(((1, 2), {}, {}), protocol=4)
    headers = {"task": "proj.add", "id": "p1"}
    app = make_app(queue)
    try:
        with admin() as ch:
            ch.queue_declare(queue, durable=True, auto_delete=False)
            ch.exchange_declare(queue, "direct", durable=True, auto_delete=False)
            ch.queue_bind(queue, queue, queue)
        for accept, decoded in ((["json"], False), (["json", "pickle"], True)):
            _publish_raw(queue, body, "application/x-python-serialize", headers)
            consumer = app.broker.consumer([queue], prefetch=1, consumer_id="t5", accept=accept)
            (delivery,) = fetch(consumer, 1)
            if decoded:
                assert delivery.message is not None and delivery.message.args == (1, 2)
            else:
                assert delivery.message is None and delivery.error_kind == "ContentDisallowed"
                assert delivery.task_id == "p1" and "pickle" in (delivery.error or "")
            consumer.ack([delivery.delivery_tag])
            consumer.close()
    finally:
        app.close()
        delete(queue)


@requires_rabbitmq
def test_mismatched_queue_arguments_are_a_configuration_error() -> None:
    queue = unique("mismatch")
    with admin() as ch:
        ch.queue_declare(queue, durable=True, auto_delete=False)
    app = make_app(queue, task_queue_max_priority=5)
    try:
        with pytest.raises(ConfigurationError, match="x-max-priority"):
            app.broker.consumer([queue], prefetch=1, consumer_id="t4", accept=["json"])
    finally:
        app.close()
        delete(queue)


# -- a worker, end to end ------------------------------------------------------------------------
@requires_rabbitmq
def test_quorum_queue_end_to_end(tmp_path: Path) -> None:
    queue = unique("quorum")
    env = {"FASTQ_TEST_QUEUE_TYPE": "quorum"}
    app = make_app(queue, backend="rpc://", task_default_queue_type="quorum")
    try:
        with worker("fastq", queue, tmp_path / "w.log", "-c", "2", consumers=2, **env):
            results = [app.send_task("interop.add", (i, 1)) for i in range(20)]
            assert [r.get(timeout=20) for r in results] == [i + 1 for i in range(20)]
        listing = list_queues("name", "type")
        assert any(line.split() == [queue, "quorum"] for line in listing.splitlines())
    finally:
        app.close()
        delete(queue)


def _publish_raw(queue: str, body: bytes, content_type: str, headers: dict) -> None:
    with admin() as ch:
        ch.basic_publish(
            amqp.Message(body, content_type=content_type, application_headers=headers),
            exchange="",
            routing_key=queue,
        )


@requires_rabbitmq
def test_bad_input_is_logged_and_the_worker_keeps_going(tmp_path: Path) -> None:
    queue = unique("bad")
    log = tmp_path / "w.log"
    app = make_app(queue, backend="rpc://")
    try:
        with worker("fastq", queue, log, "-P", "solo") as proc:
            base = {"lang": "py", "retries": 0, "root_id": None, "parent_id": None}
            _publish_raw(
                queue,
                b"[[1, 2], {",
                "application/json",
                {**base, "task": "interop.add", "id": "bad-json"},
            )
            _publish_raw(
                queue,
                b"\x80\x04N.",
                "application/x-python-serialize",
                {**base, "task": "interop.add", "id": "pickled"},
            )
            unknown = app.send_task("interop.nope", (1,))
            assert app.send_task("interop.add", (20, 22)).get(timeout=15) == 42
            with pytest.raises(NotRegistered, match=r"interop\.nope"):
                unknown.get(timeout=10)
            assert proc.poll() is None
        text = log.read_text()
        assert "cannot process task 'interop.add' (id bad-json)" in text and "DecodeError" in text
        assert "(id pickled)" in text and "ContentDisallowed" in text and "pickle" in text
        assert "received unregistered task 'interop.nope'" in text
        assert queue_state(queue)[0] == 0  # all three dropped, none requeued forever
    finally:
        app.close()
        delete(queue)


@requires_rabbitmq
def test_heartbeats_keep_a_busy_worker_connected(tmp_path: Path) -> None:
    """A task that runs for several heartbeat intervals: lapin's I/O thread answers heartbeats
    while the child runs Python, so the broker keeps the connection and nothing is redelivered."""
    queue = unique("busy")
    record = tmp_path / "record.txt"
    log = tmp_path / "w.log"
    env = {"FASTQ_TEST_HEARTBEAT": "1", "FASTQ_TEST_RECORD": str(record)}
    app = make_app(queue, backend="rpc://")
    try:
        with worker("fastq", queue, log, "-c", "1", **env):
            slow = app.send_task("interop.started_sleep", (5.0, 1))  # 5 heartbeat intervals
            assert slow.get(timeout=30) == 1
            assert app.send_task("interop.add", (2, 3)).get(timeout=10) == 5
        assert record.read_text().splitlines() == [f"{slow.id} started"]
        text = log.read_text()
        assert "broker unavailable" not in text and "lost the connection" not in text, text
    finally:
        app.close()
        delete(queue)


@requires_rabbitmq
def test_sigkill_mid_task_with_acks_late_is_redelivered(tmp_path: Path) -> None:
    queue = unique("sigkill")
    record = tmp_path / "record.txt"
    env = {"FASTQ_TEST_ACKS_LATE": "1", "FASTQ_TEST_RECORD": str(record)}
    app = make_app(queue, backend="rpc://")
    try:
        with worker("fastq", queue, tmp_path / "w.log", "-c", "1", **env) as proc:
            result = app.send_task("interop.started_sleep", (1.5, 7))
            wait_until(lambda: record.exists() and "started" in record.read_text(), 15, "start")
            (child,) = children(proc.pid)
            os.kill(child, signal.SIGKILL)
            assert result.get(timeout=30) == 7
            starts = record.read_text().splitlines()
            assert starts == [f"{result.id} started"] * 2  # killed once, run again to the end
    finally:
        app.close()
        delete(queue)
