"""The Rust publisher (``_core.AmqpPublisher`` behind ``AmqpBroker.publish``): the message Celery
expects (the one fastq's py-amqp publisher sent), declarations with x-max-priority, publisher
confirms and nacks, reconnecting after the broker closes the connection, forks, threads, and
nothing lost when the process exits right after publishing. Real RabbitMQ on 127.0.0.1:5672."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import amqp
import pytest
from fastq import App, _core
from fastq.errors import BrokerError, ConfigurationError
from fastq.protocol import OutgoingMessage

from tests.amqp_support import (
    AMQP_URL,
    ROOT,
    admin,
    close_connection,
    delete,
    list_queues,
    queue_state,
    requires_rabbitmq,
    unique,
    wait_until,
)

pytestmark = requires_rabbitmq


def make_app(queue: str, **settings: Any) -> App:
    return App("t", broker=AMQP_URL, task_default_queue=queue, set_as_current=False, **settings)


def get(queue: str) -> Any:
    with admin() as ch:
        msg = ch.basic_get(queue, no_ack=True)
    assert msg is not None, f"no message in {queue}"
    return msg


def publish_with_py_amqp(m: OutgoingMessage) -> None:
    """``m`` as fastq's py-amqp publisher sent it (the reference the Rust one replaced)."""
    headers, body = _core.encode_task_message(m.headers, m.args, m.kwargs, m.embed, m.serializer)
    json_like = m.serializer in ("json", "application/json")
    properties: dict[str, Any] = {
        "content_type": "application/json" if json_like else "application/x-msgpack",
        "content_encoding": "utf-8" if json_like else "binary",
        "application_headers": headers,
        "delivery_mode": m.delivery_mode,
        "priority": m.priority or 0,
        "correlation_id": m.id,
    }
    if m.reply_to:
        properties["reply_to"] = m.reply_to
    properties.update(m.properties or {})
    with admin() as ch:
        ch.basic_publish(amqp.Message(body, **properties), exchange="", routing_key=m.queue)


def test_the_message_is_the_one_py_amqp_sends() -> None:
    """The same OutgoingMessage sent by py-amqp and by the Rust publisher: same properties,
    headers (and their AMQP types, as decoded back) and body, so Celery workers read fastq's
    messages as before."""
    queue = unique("same")
    rust = make_app(queue)
    headers = {
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        "price": Decimal("1.50"),
        "big": 2**40,
        "nested": {"a": [1, "two", None, True, 2.5]},
    }
    try:
        for serializer in ("json", "msgpack"):
            message = rust.build_message(
                "proj.add",
                (2, 3),
                {"z": "é"},
                priority=7,
                expires=60,
                serializer=serializer,
                headers=headers,
            )
            message.properties.update(message_id="m-1", app_id="tests", type="task")
            rust.broker.publish(message)  # first: it declares the queue
            publish_with_py_amqp(message)
            sent_by_rust, sent_by_py = get(queue), get(queue)
            assert sent_by_rust.properties == sent_by_py.properties
            assert sent_by_rust.body == sent_by_py.body
            route = ("exchange", "routing_key")
            assert [sent_by_rust.delivery_info[k] for k in route] == ["", queue]
            assert [sent_by_py.delivery_info[k] for k in route] == ["", queue]
            props = sent_by_rust.properties
            assert props["content_type"] == (
                "application/json" if serializer == "json" else "application/x-msgpack"
            )
            assert (props["priority"], props["delivery_mode"], props["expiration"]) == (
                7,
                2,
                "60000",
            )
            assert props["correlation_id"] == message.id and props["reply_to"] == rust.oid
            assert props["message_id"] == "m-1" and props["type"] == "task"
            sent = props["application_headers"]
            assert sent["when"] == datetime(2026, 1, 2, 3, 4, 5)  # an AMQP timestamp
            assert sent["price"] == Decimal("1.50") and sent["big"] == 2**40
            assert sent["task"] == "proj.add" and sent["timelimit"] == [None, None]
    finally:
        rust.close()
        delete(queue)


def test_queues_are_declared_with_x_max_priority_and_a_mismatch_is_a_clear_error() -> None:
    queue = unique("maxprio")
    app = make_app(queue, task_queue_max_priority=5)
    other = make_app(queue, task_queue_max_priority=9)
    try:
        app.send_task("proj.add", (1, 1), priority=4)
        rows = list_queues("name", "arguments").splitlines()
        assert any(row.startswith(queue) and "x-max-priority" in row for row in rows), rows
        assert get(queue).properties["priority"] == 4
        with pytest.raises(ConfigurationError, match="x-max-priority"):
            other.send_task("proj.add", (1, 2))
        app.send_task("proj.add", (1, 3))  # the refusal did not break the first app's publisher
        assert queue_state(queue)[0] == 1
    finally:
        app.close()
        other.close()
        delete(queue)


def test_confirms_wait_for_the_broker_and_a_nack_names_the_task() -> None:
    queue = unique("nack")
    # A full queue with reject-publish nacks the publishes that do not fit.
    decl = {
        "name": queue,
        "exchange": queue,
        "routing_key": queue,
        "queue_arguments": {"x-max-length": 2, "x-overflow": "reject-publish"},
    }
    app = make_app(queue, task_queues=[decl])  # confirms are the default
    try:
        app.send_many([("proj.add", (i, i), None) for i in range(2)])
        assert queue_state(queue)[0] == 2  # confirmed: already in the queue, no waiting
        with pytest.raises(BrokerError, match="nacked") as info:
            app.send_task("proj.add", (3, 3), task_id="the-refused-one")
        assert "the-refused-one" in str(info.value)
        with admin() as ch:
            ch.queue_purge(queue)
        app.send_task("proj.add", (4, 4))  # the channel is still good
        assert queue_state(queue)[0] == 1
    finally:
        app.close()
        delete(queue)


def test_an_unroutable_publish_raises_instead_of_vanishing() -> None:
    queue, exchange = unique("unroutable"), unique("unbound_ex")
    # A route through an exchange nothing is bound to with that key: RabbitMQ would drop it.
    routes = {"proj.lost": {"queue": queue, "exchange": exchange, "routing_key": "nowhere"}}
    app = make_app(queue, task_routes=routes)
    try:
        with pytest.raises(BrokerError, match="was not routed") as info:
            app.send_task("proj.lost", (1,), task_id="the-lost-one")
        assert "the-lost-one" in str(info.value) and "nowhere" in str(info.value)
        app.send_task("proj.add", (1, 1))  # the channel is still good
        assert queue_state(queue)[0] == 1
    finally:
        app.close()
        delete(queue, exchange)


@pytest.mark.parametrize("confirm", [False, True])
def test_reconnects_after_the_broker_closes_the_connection(confirm: bool) -> None:
    queue = unique("closed")
    app = make_app(queue, broker_confirm_publish=confirm)
    try:
        app.send_task("proj.add", (1, 1))
        publisher = app.broker.publisher
        assert publisher.connected
        assert close_connection(publisher.connection_name) == 1
        if not confirm:
            # Without confirms a write into a connection the broker is closing can be lost (as
            # with py-amqp): wait until lapin has seen the close.
            wait_until(lambda: not publisher.connected, 10, "the close to be noticed")
        app.send_many([("proj.add", (i, 2), None) for i in range(100)])
        assert publisher.connected and app.broker.publisher is publisher
        wait_until(lambda: queue_state(queue)[0] == 101, 10, "101 messages")
        assert close_connection(publisher.connection_name) == 1  # one connection, the new one
    finally:
        app.close()
        delete(queue)


def test_a_forked_child_publishes_on_its_own_connection() -> None:
    queue = unique("fork")
    # Confirmed, so the child's os._exit right after cannot lose them (see the exit test).
    app = make_app(queue, broker_confirm_publish=True)
    try:
        app.send_task("proj.add", (0, 0))
        broker, shared = app.broker, app.broker.publisher  # connected in the parent
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                broker.publish(app.build_message("proj.add", (1, 1)))  # a new publisher
                code = 2 if broker.publisher is shared else 0
                # The parent's object used directly: it sees the pid and connects afresh.
                shared.publish_many([app.build_message("proj.add", (2, 2))])
            finally:
                os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        app.send_task("proj.add", (3, 3))  # the parent's connection is untouched
        assert app.broker.publisher is shared and shared.connected
        wait_until(lambda: queue_state(queue)[0] == 4, 10, "4 messages")
    finally:
        app.close()
        delete(queue)


def test_threads_share_the_publisher() -> None:
    """Threads take turns to write and wait for their confirms together; a nack in one
    thread (a full queue refusing) leaves the others' publishes and the channel alone."""
    queue, full = unique("threads"), unique("full")
    decl = {
        "name": full,
        "exchange": full,
        "routing_key": full,
        "queue_arguments": {"x-max-length": 1, "x-overflow": "reject-publish"},
    }
    app = make_app(queue, task_queues=[decl])
    errors: list[BaseException] = []
    nacks: list[BrokerError] = []

    def send(k: int) -> None:
        try:
            for i in range(100):
                app.send_task("proj.add", (k, i), queue=queue)
        except BaseException as exc:
            errors.append(exc)

    def refused() -> None:
        for i in range(20):
            try:
                app.send_task("proj.add", (i, i), queue=full)
            except BrokerError as exc:
                nacks.append(exc)

    try:
        threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
        threads.append(threading.Thread(target=refused))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(nacks) == 19 and all("nacked" in str(e) for e in nacks)
        assert queue_state(queue)[0] == 400  # confirmed: in the queue when the calls returned
    finally:
        app.close()
        delete(queue)
        delete(full)


@pytest.mark.parametrize("confirm", [False, True])
def test_nothing_is_lost_when_the_process_exits_right_after_publishing(confirm: bool) -> None:
    """A script that publishes and ends (no ``app.close()``) loses nothing: the publisher closes
    its connection at exit, and RabbitMQ takes every frame sent before a connection.close.
    (A connection that just drops, as at ``os._exit``, can lose publishes the broker has
    received but not yet processed, with py-amqp as with lapin; only confirms rule that out,
    which the confirmed case checks.)"""
    queue = unique("exit")
    ending = "os._exit(0)" if confirm else "pass  # the interpreter exits normally"
    script = textwrap.dedent(
        f"""
        import os
        from fastq import App
        app = App("t", broker={AMQP_URL!r}, task_default_queue={queue!r},
                  broker_confirm_publish={confirm})
        app.send_task("proj.add", (0, 0))
        app.send_many([("proj.add", (i, i), None) for i in range(5000)])
        {ending}
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr.decode()
        wait_until(lambda: queue_state(queue)[0] == 5001, 10, "5001 messages")
    finally:
        delete(queue)
