"""Remote control over RabbitMQ: commands on a fanout exchange, replies to the sender's queue.

Every listening worker binds its own exclusive, auto-delete queue to the fanout exchange
``fastq.control``, so it gets each command sent while it listens, and none sent before or while
it was disconnected (as Redis pub/sub). A sender that wants replies first declares an exclusive,
auto-delete queue of its own, names it in the command's ``reply_to``, and consumes it; workers
publish ``{hostname: reply}`` there through the default exchange. These are fastq's own names;
Celery's pidbox (``celery.pidbox``) is not spoken.

Each listener has a py-amqp connection of its own (the publisher's is shared under a lock and
never read between publishes), with heartbeats, and reconnects by itself when it loses it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import amqp

from fastq.brokers.amqp import CONNECTION_ERRORS, AmqpChannel, discard, why_not_connected
from fastq.control_channel import (
    CONTROL_TTL,
    ControlChannel,
    ControlCommand,
    ControlListener,
    decode_command,
    decode_reply,
    encode_reply,
)
from fastq.errors import BrokerConnectionError
from fastq.urls import redact

#: How many heartbeats the listener sends per negotiated interval while idle.
HEARTBEATS_PER_INTERVAL = 4

if TYPE_CHECKING:
    from fastq.brokers.amqp import AmqpBroker

log = logging.getLogger("fastq.broker")

T = TypeVar("T")

#: Non-durable, like Celery's ``celery.pidbox``: a command only matters to the workers listening
#: when it is sent, and their queues are exclusive (gone with their connection, so gone after a
#: broker restart too). Both sides declare it on every connection, so nothing needs it to
#: survive a restart. (Declaring it durable would also work, but the two flags must never
#: differ between fastq versions: RabbitMQ refuses a redeclaration with other flags.)
EXCHANGE = "fastq.control"
#: Seconds between reconnection attempts of a listener that lost its connection, doubling up to
#: ``MAX_BACKOFF``.
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0


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
                tag = self._publish(command, replies)
            except CONNECTION_ERRORS as exc:
                # The sender's connection has no heartbeats (nothing reads it between
                # commands), so a broker restart shows only now: once more on a new one.
                self.sender.reset()
                log.info("control connection to %s was lost (%s); reconnecting", self._url, exc)
                tag = self._guarded(lambda: self._publish(command, replies))
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

    def _publish(self, command: ControlCommand, replies: list[dict[str, Any]]) -> str | None:
        """Sends ``command``; when it wants replies, first declares and consumes a reply queue
        (whose callback appends to ``replies``) and returns its consumer tag."""
        channel = self.sender.channel()
        if EXCHANGE not in self.sender.declared:
            declare_exchange(channel)
            self.sender.declared.add(EXCHANGE)
        tag = None
        if command.reply:
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).queue

            def on_reply(message: Any) -> None:
                reply = decode_reply(message.body)
                if reply is not None:
                    replies.append(reply)

            tag = channel.basic_consume(queue, no_ack=True, callback=on_reply)
            command = dataclasses.replace(command, reply_to=queue)
        message = amqp.Message(command.encode(), content_type="application/json", delivery_mode=1)
        # With publisher confirms: returns once the broker has routed it.
        channel.basic_publish(message, exchange=EXCHANGE, routing_key="")
        return tag

    def _collect(
        self, tag: str, replies: list[dict[str, Any]], timeout: float, limit: int | None
    ) -> None:
        """Reads replies for ``timeout`` seconds or until ``limit`` came, then stops consuming
        (the reply queue is auto-delete: it goes, and later replies are dropped)."""
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
        return AmqpControlListener(self.broker)


def declare_exchange(channel: Any) -> None:
    channel.exchange_declare(EXCHANGE, "fanout", durable=False, auto_delete=False)


class AmqpControlListener:
    """A worker's queue on the control exchange, on a connection of its own.

    ``fetch`` never raises for a lost connection: it logs it, and the next ``fetch`` reconnects
    (backing off while the broker stays away); commands sent in between are not seen. Only the
    first connection, made here, raises ``BrokerConnectionError``: the worker retries it.
    """

    def __init__(self, broker: AmqpBroker) -> None:
        self.broker = broker
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
        # A new name for each connection: the old exclusive queue may outlive its connection
        # for a moment, and declaring it again from another one would be refused.
        name = f"fastq.control.{os.getpid()}@{socket.gethostname()}.{uuid.uuid4().hex[:8]}"
        p = self.broker.params
        conf = self.broker.conf
        connect_timeout = float(conf.broker_transport_options.get("connect_timeout", 5))
        conn = amqp.Connection(
            host=f"{p.host}:{p.port}",
            userid=p.userid,
            password=p.password,
            virtual_host=p.vhost,
            ssl=conf.broker_use_ssl or p.ssl,
            connect_timeout=connect_timeout,
            # Bounds a handshake or a close with a broker that stopped answering; reads in
            # fetch() pass their own timeout.
            read_timeout=max(connect_timeout, 5.0),
            write_timeout=max(connect_timeout, 5.0),
            # fetch() runs at least every half second in every pool (the prefork supervisor
            # every tick), reads the socket and calls heartbeat_tick(), so the broker sees this
            # connection alive while idle, and a dead one is noticed after two missed beats.
            heartbeat=int(conf.broker_heartbeat or 0),
            client_properties={"connection_name": name},
        )
        try:
            conn.connect()
            channel = conn.channel()
            declare_exchange(channel)
            channel.queue_declare(
                name,
                durable=False,
                exclusive=True,
                auto_delete=True,
                # A worker that does not read for this long would answer too late anyway.
                arguments={"x-message-ttl": int(CONTROL_TTL * 1000)},
            )
            channel.queue_bind(name, EXCHANGE, "")
            channel.basic_consume(name, no_ack=True, callback=self._on_message)
        except CONNECTION_ERRORS as exc:
            discard(conn)
            raise BrokerConnectionError(
                f"cannot listen for control commands on {self._url}: {why_not_connected(exc, p)}"
            ) from exc
        self._connection, self._channel, self.name = conn, channel, name

    def _on_message(self, message: Any) -> None:
        command = decode_command(message.body)
        if command is not None:
            self._received.append(command)

    def _drop(self) -> None:
        conn, self._connection, self._channel = self._connection, None, None
        if conn is not None:
            discard(conn)

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
                amqp.Message(
                    encode_reply(hostname, reply), content_type="application/json", delivery_mode=1
                ),
                exchange="",
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
