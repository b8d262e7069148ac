"""Remote control over RabbitMQ on Celery's pidbox (``fastq.brokers.pidbox``), so ``celery
inspect``/``celery control`` reach fastq workers and ``app.control`` reaches Celery's.

A worker declares its node queue ``<hostname>.celery.pidbox`` as Celery 5.7 does (non-durable,
exclusive, auto-delete, ``x-expires`` 10 s, ``x-message-ttl`` 300 s), bound to the non-durable
fanout exchange ``celery.pidbox``, and consumes it without acks; it publishes a reply to the
direct exchange ``reply.celery.pidbox`` with the command's ``reply_to.routing_key``. A sender
declares its reply queue ``<oid>.reply.celery.pidbox`` (same flags) bound with its oid, once per
connection, and consumes it while it collects a broadcast's replies.

Each listener has a py-amqp connection of its own (the publisher's is shared under a lock and
never read between publishes), with heartbeats, and reconnects by itself when it loses it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import amqp

from fastq.brokers.amqp_connection import (
    CONNECTION_ERRORS,
    AmqpChannel,
    connect,
    connect_timeout,
    discard,
)
from fastq.brokers.amqp_topology import QueueDecl, declare, declare_exchange
from fastq.brokers.pidbox import (
    EXCHANGE,
    QUEUE_EXPIRES,
    QUEUE_TTL,
    REPLY_EXCHANGE,
    command_body,
    command_from,
    command_headers,
    node_queue,
    reply_from,
    reply_headers,
    reply_queue,
)
from fastq.control_channel import ControlChannel, ControlCommand, ControlListener
from fastq.errors import BrokerConnectionError
from fastq.urls import redact

#: How many heartbeats the listener sends per negotiated interval while idle.
HEARTBEATS_PER_INTERVAL = 4

if TYPE_CHECKING:
    from fastq.brokers.amqp import AmqpBroker

log = logging.getLogger("fastq.broker")

T = TypeVar("T")

#: The pidbox queues' arguments, Celery 5.7's defaults (``control_queue_expires``/``_ttl``).
QUEUE_ARGUMENTS = {"x-expires": int(QUEUE_EXPIRES * 1000), "x-message-ttl": int(QUEUE_TTL * 1000)}
#: Seconds between reconnection attempts of a listener that lost its connection, doubling up to
#: ``MAX_BACKOFF``.
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0


def pidbox_queue(name: str, exchange: str, kind: str, routing_key: str) -> QueueDecl:
    return QueueDecl(
        name=name,
        exchange=exchange,
        exchange_type=kind,
        routing_key=routing_key,
        durable=False,
        auto_delete=True,
        exclusive=True,
        arguments=QUEUE_ARGUMENTS,
    )


def pidbox_message(body: Any, headers: dict[str, Any]) -> amqp.Message:
    """A transient JSON message, as kombu publishes the pidbox's (Celery's ``task_serializer``
    default; its ``accept_content`` default takes only JSON)."""
    return amqp.Message(
        json.dumps(body, default=repr).encode(),
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=1,
        application_headers=headers,
    )


def open_message(message: Any) -> tuple[Any, dict[str, Any]] | None:
    """``(body, headers)`` of a JSON pidbox message, or None (logged) for anything else."""
    properties = getattr(message, "properties", None) or {}
    if properties.get("content_type") != "application/json":
        log.warning("ignored a control message of type %r", properties.get("content_type"))
        return None
    try:
        body = json.loads(message.body)
    except ValueError as exc:
        log.warning("ignored a control message that is not JSON (%s): %.200r", exc, message.body)
        return None
    return body, dict(properties.get("application_headers") or {})


class AmqpControlChannel(ControlChannel):
    """Sends commands on ``sender``, the broker's connection for remote control (publisher
    confirms on, so a command is known to have reached the exchange); listeners open their own."""

    def __init__(self, broker: AmqpBroker, sender: AmqpChannel) -> None:
        self.broker = broker
        self.sender = sender

    def broadcast(
        self, command: ControlCommand, timeout: float, limit: int | None
    ) -> list[dict[str, Any]]:
        replies: list[dict[str, Any]] = []
        with self.sender.lock:
            try:
                tag = self._publish(command, replies, timeout)
            except CONNECTION_ERRORS as exc:
                # The sender's connection has no heartbeats (nothing reads it between
                # commands), so a broker restart shows only now: once more on a new one.
                self.sender.reset()
                log.info("control connection to %s was lost (%s); reconnecting", self._url, exc)
                tag = self._guarded(lambda: self._publish(command, replies, timeout))
            if tag is not None:
                self._guarded(lambda: self._collect(tag, replies, timeout, limit))
        return replies[:limit] if limit is not None else replies

    @property
    def _url(self) -> str:
        return redact(self.broker.url)

    def _guarded(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except BrokerConnectionError:  # could not connect: says so already
            self.sender.reset()
            raise
        except CONNECTION_ERRORS as exc:
            self.sender.reset()
            raise BrokerConnectionError(
                f"cannot send a control command on {self._url}: {exc}"
            ) from exc

    def _reply_oid(self, channel: Any) -> str:
        """This connection's oid; its reply queue is declared (exclusive: it goes with the
        connection, so a new connection gets a new oid)."""
        for name in self.sender.declared:
            if name.endswith(f".{REPLY_EXCHANGE}"):
                return name[: -len(REPLY_EXCHANGE) - 1]
        oid = str(uuid.uuid4())
        declare(channel, pidbox_queue(reply_queue(oid), REPLY_EXCHANGE, "direct", oid))
        self.sender.declared.add(reply_queue(oid))
        return oid

    def _publish(
        self, command: ControlCommand, replies: list[dict[str, Any]], timeout: float
    ) -> str | None:
        """Sends ``command``; when it wants replies, first consumes the reply queue (whose
        callback appends the replies carrying this command's ticket) and returns the tag."""
        channel = self.sender.channel()
        if EXCHANGE not in self.sender.declared:
            declare_exchange(channel, EXCHANGE, "fanout", durable=False)
            self.sender.declared.add(EXCHANGE)
        tag = None
        oid = ""
        if command.reply:
            oid = self._reply_oid(channel)

            def on_reply(message: Any) -> None:
                opened = open_message(message)
                got = None if opened is None else reply_from(*opened, command.ticket)
                # Another ticket is a late reply to an earlier broadcast (broadcasts on this
                # connection take turns under its lock): nobody waits for it any more.
                if got is not None and got[0] == command.ticket:
                    replies.append(got[1])

            tag = channel.basic_consume(reply_queue(oid), no_ack=True, callback=on_reply)
        message = pidbox_message(command_body(command, oid), command_headers(timeout))
        # With publisher confirms: returns once the broker has routed it.
        channel.basic_publish(message, exchange=EXCHANGE, routing_key="")
        return tag

    def _collect(
        self, tag: str, replies: list[dict[str, Any]], timeout: float, limit: int | None
    ) -> None:
        """Reads replies for ``timeout`` seconds or until ``limit`` came, then stops consuming
        (replies arriving later wait in the queue and are skipped by the next broadcast)."""
        connection = self.sender.connection
        deadline = time.monotonic() + timeout
        while connection is not None and (limit is None or len(replies) < limit):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                connection.drain_events(timeout=remaining)
            except TimeoutError:
                break
        self.sender.channel().basic_cancel(tag)

    def listen(self) -> ControlListener:
        anonymous = f"fastq-{os.getpid()}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        return AmqpControlListener(self.broker, anonymous)

    def listen_as(self, hostname: str) -> ControlListener:
        return AmqpControlListener(self.broker, hostname)


class AmqpControlListener:
    """A worker's node queue on the pidbox, on a connection of its own.

    ``fetch`` never raises for a lost connection: it logs it, and the next ``fetch`` reconnects
    (backing off while the broker stays away); commands sent in between are not seen. Only the
    first connection, made here, raises ``BrokerConnectionError``: the worker retries it.
    """

    def __init__(self, broker: AmqpBroker, hostname: str) -> None:
        self.broker = broker
        self.hostname = hostname
        #: Names the current connection's queue and, in the management UI and ``rabbitmqctl
        #: list_connections client_properties``, the connection itself.
        self.name = ""
        self._connection: amqp.Connection | None = None
        self._channel: Any = None
        self._received: list[ControlCommand] = []
        self._backoff = 0.0
        self._retry_at = 0.0
        self._open()

    @property
    def _url(self) -> str:
        return redact(self.broker.url)

    def _open(self) -> None:
        # A new connection name each time (the queue's name is the node's, as Celery's).
        name = f"{node_queue(self.hostname)}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        conf = self.broker.conf
        queue = pidbox_queue(node_queue(self.hostname), EXCHANGE, "fanout", "")

        def set_up(conn: amqp.Connection) -> Any:
            channel = conn.channel()
            declare(channel, queue)
            # Replies go to this exchange: declared as kombu declares it before replying.
            declare_exchange(channel, REPLY_EXCHANGE, "direct", durable=False)
            channel.basic_consume(queue.name, no_ack=True, callback=self._on_message)
            return channel

        timeout = connect_timeout(conf)
        self._connection, self._channel = connect(
            self.broker.servers,
            conf,
            f"cannot listen for control commands on {self._url}",
            set_up,
            # Bounds a handshake or a close with a broker that stopped answering; reads in
            # fetch() pass their own timeout.
            read_timeout=max(timeout, 5.0),
            write_timeout=max(timeout, 5.0),
            # fetch() runs at least every half second in every pool (the prefork supervisor
            # every tick), reads the socket and calls heartbeat_tick(), so the broker sees this
            # connection alive while idle, and a dead one is noticed after two missed beats.
            heartbeat=int(conf.broker_heartbeat or 0),
            client_properties={"connection_name": name},
        )
        self.name = name

    def _on_message(self, message: Any) -> None:
        opened = open_message(message)
        command = None if opened is None else command_from(*opened)
        if command is not None:
            self._received.append(command)

    def _drop(self) -> None:
        conn, self._connection, self._channel = self._connection, None, None
        if conn is not None:
            discard(conn)
            self.broker.servers.advance()  # the node may be gone: another one first

    def _reconnect(self) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            return False
        try:
            self._open()
        except BrokerConnectionError as exc:
            self._backoff = min(MAX_BACKOFF, self._backoff * 2 or FIRST_BACKOFF)
            self._retry_at = now + self._backoff
            log.warning("remote control: %s; retrying in %gs", exc, self._backoff)
            return False
        self._backoff = 0.0
        log.warning(
            "remote control: reconnected to %s (commands sent while disconnected were missed)",
            self._url,
        )
        return True

    def fetch(self, timeout: float) -> list[ControlCommand]:
        deadline = time.monotonic() + timeout
        if self._connection is None and not self._reconnect():
            time.sleep(max(0.0, min(deadline, self._retry_at) - time.monotonic()))
            return []
        conn = self._connection
        assert conn is not None
        try:
            # Four beats per interval (py-amqp's default is two): a supervisor busy for a
            # moment between ticks still beats before the broker's two-interval limit.
            conn.heartbeat_tick(rate=HEARTBEATS_PER_INTERVAL)
            while True:
                # Once a command came, take only what has already arrived.
                wait = 0.0 if self._received else max(0.0, deadline - time.monotonic())
                try:
                    conn.drain_events(timeout=wait)
                except TimeoutError:
                    break
        except CONNECTION_ERRORS as exc:
            log.warning(
                "remote control lost its connection to %s (%s); reconnecting", self._url, exc
            )
            self._drop()
        commands, self._received = self._received, []
        return commands

    def reply(self, command: ControlCommand, hostname: str, reply: Any) -> None:
        if not command.reply_to:
            log.warning("control command %r has no reply_to; not answered", command.method)
            return
        if self._channel is None and not self._reconnect():
            log.warning(
                "remote control: no connection to %s; %r not answered", self._url, command.method
            )
            return
        try:
            self._channel.basic_publish(
                pidbox_message({hostname: reply}, reply_headers(command)),
                # Declared with the connection; the only one a ``celery.pidbox`` sender names.
                exchange=REPLY_EXCHANGE,
                routing_key=command.reply_to,
            )
        except CONNECTION_ERRORS as exc:
            log.warning(
                "remote control lost its connection to %s (%s); %r not answered",
                self._url,
                exc,
                command.method,
            )
            self._drop()

    def close(self) -> None:
        conn, self._connection, self._channel = self._connection, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing left to tell the broker
                discard(conn)
