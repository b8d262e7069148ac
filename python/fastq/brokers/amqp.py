"""RabbitMQ broker (AMQP 0-9-1) declared and published as Celery does, so Celery clients, Celery
workers and fastq share queues.

Publishing goes through the Rust ``AmqpPublisher`` (lapin): one connection per process, opened
on the first publish, reopened after a fork or when it broke, closed properly at exit; a batch
is one call with the GIL released. It measured faster than py-amqp for single publishes and
batches (``bench/RESULTS.md``, "RabbitMQ publish path"). py-amqp stays for the queue admin
calls (purge, length, delete) and as the publisher with ``broker_transport_options=
{"publisher": "py-amqp"}``, the default when ``broker_use_ssl`` holds TLS options (CA file,
client certificate) that only py-amqp takes. Consuming is the Rust ``AmqpConsumer`` (lapin),
created in each worker process. Remote control (``fastq inspect``, revoke) is
``fastq.brokers.amqp_control``.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import ssl
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import amqp

from fastq import _core
from fastq.brokers.base import Broker, Consumer
from fastq.config import Config
from fastq.errors import BrokerConnectionError, ConfigurationError
from fastq.protocol import OutgoingMessage
from fastq.urls import redact

if TYPE_CHECKING:
    from fastq.control_channel import ControlChannel

log = logging.getLogger("fastq.amqp")

SCHEMES = ("amqp", "pyamqp", "amqps")

#: What a broken connection or channel looks like to py-amqp.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    amqp.exceptions.AMQPError,
)


@dataclass(frozen=True)
class AmqpParams:
    """An ``amqp://``/``pyamqp://``/``amqps://`` URL read as kombu reads it."""

    host: str
    port: int
    userid: str
    password: str
    vhost: str
    ssl: bool

    @classmethod
    def from_url(cls, url: str) -> AmqpParams:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ConfigurationError(f"{redact(url)} is not an AMQP URL ({', '.join(SCHEMES)})")
        ssl = scheme == "amqps"
        # kombu: the path after the first "/" is the vhost; none (or "") means "/".
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        try:
            port = parts.port or (5671 if ssl else 5672)
        except ValueError as exc:
            raise ConfigurationError(f"invalid port in {redact(url)}: {exc}") from None
        return cls(
            host=parts.hostname or "localhost",
            port=port,
            userid=unquote(parts.username) if parts.username is not None else "guest",
            password=unquote(parts.password) if parts.password is not None else "guest",
            vhost=unquote(path) or "/",
            ssl=ssl,
        )

    def lapin_url(self) -> str:
        """The same broker as an RFC AMQP URI (the vhost percent-encoded), for the Rust side."""
        scheme = "amqps" if self.ssl else "amqp"
        user = quote(self.userid, safe="")
        password = quote(self.password, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}:{password}@{host}:{self.port}/{quote(self.vhost, safe='')}"


def why_not_connected(exc: BaseException, p: AmqpParams) -> str:
    """Why py-amqp could not connect, in the words the Rust side uses (never the password)."""
    where = f"{p.host}:{p.port}"
    if isinstance(exc, amqp.exceptions.AccessRefused):
        return (
            f"login refused for user {p.userid!r}: wrong user name or password, or the user "
            f"may not log in from here (broker said: {exc})"
        )
    if isinstance(exc, amqp.exceptions.NotAllowed):
        return (
            f"virtual host {p.vhost!r} does not exist or user {p.userid!r} has no permission on "
            f"it (broker said: {exc})"
        )
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"connection refused by {where}: nothing listens there (is RabbitMQ running, and is "
            "this its port?)"
        )
    if isinstance(exc, ssl.SSLError) and p.ssl:
        return (
            f"TLS handshake with {where} failed ({exc}): the server does not speak TLS there. "
            "amqps:// needs RabbitMQ's TLS listener (usually port 5671); use amqp:// for the "
            "plain one (5672)"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name {p.host!r}: {exc}"
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} (a host that is down or a firewall dropping the packets)"
    return f"{where}: {exc}"


@dataclass(frozen=True)
class QueueDecl:
    """A queue and the exchange binding Celery declares for it."""

    name: str
    exchange: str
    exchange_type: str = "direct"
    routing_key: str = ""
    durable: bool = True
    auto_delete: bool = False
    arguments: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "exchange": self.exchange,
            "exchange_type": self.exchange_type,
            "routing_key": self.routing_key or self.name,
            "durable": self.durable,
            "auto_delete": self.auto_delete,
            "arguments": dict(self.arguments or {}),
        }

    @property
    def quorum(self) -> bool:
        return (self.arguments or {}).get("x-queue-type") == "quorum"


def queue_arguments(conf: Config) -> dict[str, Any]:
    """``x-queue-type``/``x-max-priority`` from the settings, as Celery adds them."""
    args: dict[str, Any] = {}
    if conf.task_default_queue_type == "quorum":
        args["x-queue-type"] = "quorum"
        if conf.task_queue_max_priority:
            log.warning("quorum queues have no x-max-priority; task_queue_max_priority ignored")
    elif conf.task_queue_max_priority:
        args["x-max-priority"] = int(conf.task_queue_max_priority)
    return args


def _from_task_queue(entry: Any, conf: Config) -> QueueDecl:
    """A ``task_queues`` entry: a kombu ``Queue`` (duck-typed) or a dict with its field names."""
    if isinstance(entry, Mapping):
        exchange = entry.get("exchange")
        name = str(entry["name"])
        exchange_name = exchange.get("name") if isinstance(exchange, Mapping) else exchange
        exchange_type = (
            exchange.get("type") if isinstance(exchange, Mapping) else entry.get("exchange_type")
        )
        args = entry.get("queue_arguments")
        durable = entry.get("durable", True)
        auto_delete = entry.get("auto_delete", False)
        routing_key = entry.get("routing_key")
        max_priority = entry.get("max_priority")
    else:
        name = str(entry.name)
        ex = getattr(entry, "exchange", None)
        exchange_name = getattr(ex, "name", ex)
        exchange_type = getattr(ex, "type", None)
        args = getattr(entry, "queue_arguments", None)
        durable = getattr(entry, "durable", True)
        auto_delete = getattr(entry, "auto_delete", False)
        routing_key = getattr(entry, "routing_key", None)
        max_priority = getattr(entry, "max_priority", None)
    arguments = {**queue_arguments(conf), **dict(args or {})}
    if max_priority is not None:
        arguments["x-max-priority"] = int(max_priority)
    return QueueDecl(
        name=name,
        exchange=name if exchange_name is None else str(exchange_name),
        exchange_type=str(exchange_type or conf.task_default_exchange_type),
        routing_key=str(routing_key or name),
        durable=bool(durable),
        auto_delete=bool(auto_delete),
        arguments=arguments,
    )


#: Seconds a publish waits without progress (no write done, no confirm back) by default with
#: confirms (``publish_timeout``): a broker that blocks publishers (a memory or disk alarm)
#: makes ``.delay()`` fail instead of hang, while a large batch that keeps moving is not cut.
CONFIRM_TIMEOUT = 30.0


def confirm_publish(conf: Config) -> bool:
    """Publisher confirms: on unless turned off, by ``broker_confirm_publish = False`` or by
    kombu's name for it, ``broker_transport_options={"confirm_publish": False}`` (which wins)."""
    option = conf.broker_transport_options.get("confirm_publish")
    return bool(conf.broker_confirm_publish if option is None else option)


def declarations(conf: Config) -> dict[str, QueueDecl]:
    """Every queue the settings define, by name: ``task_queues``, else the default queue."""
    decls: dict[str, QueueDecl] = {}
    for entry in conf.task_queues or ():
        decl = _from_task_queue(entry, conf)
        decls[decl.name] = decl
    default = conf.task_default_queue
    if default not in decls:
        decls[default] = QueueDecl(
            name=default,
            exchange=conf.task_default_exchange or default,
            exchange_type=conf.task_default_exchange_type,
            routing_key=conf.task_default_routing_key or default,
            arguments=queue_arguments(conf),
        )
    return decls


def declaration_for(conf: Config, queue: str, known: Mapping[str, QueueDecl]) -> QueueDecl:
    """A known queue's declaration, or Celery's for a missing one (direct exchange of its name)."""
    decl = known.get(queue)
    if decl is not None:
        return decl
    if not conf.task_create_missing_queues:
        raise ConfigurationError(
            f"queue {queue!r} is not in task_queues and task_create_missing_queues is off"
        )
    return QueueDecl(name=queue, exchange=queue, routing_key=queue, arguments=queue_arguments(conf))


class AmqpChannel:
    """One py-amqp connection and channel for this process: reopened after a fork or when it
    broke; used under a lock because py-amqp is not thread-safe."""

    def __init__(self, url: str, params: AmqpParams, conf: Config, confirm: bool = False) -> None:
        self.url = url
        self.params = params
        self.conf = conf
        self.confirm = confirm
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._connection: amqp.Connection | None = None
        self._channel: Any = None
        #: Queues (by name) and exchanges declared on the current connection; redone after a
        #: reconnect.
        self.declared: set[str] = set()

    @property
    def lock(self) -> threading.RLock:
        """The lock to hold while using the channel; a fresh one (and no connection) in a
        forked child, where the parent's lock may be held and its socket is not ours."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._connection = self._channel = None
            self.declared = set()
            self._lock = threading.RLock()
        return self._lock

    def channel(self) -> Any:
        """The channel, connecting first if needed; call it with ``lock`` held."""
        if self._channel is None:
            self._open()
        return self._channel

    def _open(self) -> None:
        p = self.params
        conn = amqp.Connection(
            host=f"{p.host}:{p.port}",
            userid=p.userid,
            password=p.password,
            virtual_host=p.vhost,
            ssl=self.conf.broker_use_ssl or p.ssl,
            connect_timeout=float(self.conf.broker_transport_options.get("connect_timeout", 5)),
            # A publisher never reads the socket between publishes, so it could not answer
            # heartbeats; a broken connection shows on the next publish, which reconnects.
            heartbeat=0,
        )
        try:
            conn.connect()
            channel = conn.channel()
            if self.confirm:
                channel.confirm_select()
        except CONNECTION_ERRORS as exc:
            discard(conn)
            raise BrokerConnectionError(
                f"cannot connect to {redact(self.url)}: {why_not_connected(exc, p)}"
            ) from exc
        self._connection, self._channel = conn, channel
        self.declared = set()

    def reset(self) -> None:
        """Drops a connection that failed; the next call reconnects."""
        conn, self._connection, self._channel = self._connection, None, None
        self.declared = set()
        if conn is not None:
            discard(conn)

    def close(self) -> None:
        conn, self._connection, self._channel = self._connection, None, None
        if conn is not None and self._pid == os.getpid():
            try:
                conn.close()
            except Exception:  # already broken: nothing left to tell the broker
                discard(conn)

    @property
    def connection(self) -> amqp.Connection | None:
        return self._connection


def discard(conn: Any) -> None:
    """Forgets a broken connection without talking to the broker (which may not answer)."""
    try:
        conn.collect()
    except Exception:  # the socket is gone already
        pass


def declare(channel: Any, decl: QueueDecl) -> None:
    """Exchange, queue and binding with Celery's flags (py-amqp's defaults differ)."""
    if decl.exchange:
        channel.exchange_declare(
            decl.exchange, decl.exchange_type, durable=decl.durable, auto_delete=False
        )
    channel.queue_declare(
        decl.name,
        durable=decl.durable,
        exclusive=False,
        auto_delete=decl.auto_delete,
        arguments=dict(decl.arguments or {}) or None,
    )
    if decl.exchange:
        channel.queue_bind(decl.name, decl.exchange, decl.routing_key or decl.name)


class AmqpBroker(Broker):
    returns_on_close = True

    def __init__(self, url: str, conf: Config) -> None:
        super().__init__(url, conf)
        self.params = AmqpParams.from_url(url)
        self.declarations = declarations(conf)
        #: "rust" (``_core.AmqpPublisher``) or "py-amqp": which client publishes task messages.
        default = "py-amqp" if isinstance(conf.broker_use_ssl, Mapping) else "rust"
        self.publish_path = str(conf.broker_transport_options.get("publisher", default))
        if self.publish_path not in ("rust", "py-amqp"):
            raise ConfigurationError(
                f"broker_transport_options['publisher'] = {self.publish_path!r}: "
                "use 'rust' or 'py-amqp'"
            )
        self.confirm = confirm_publish(conf)
        #: py-amqp, for the queue admin calls (purge, length, delete) and the py-amqp path.
        self.admin = AmqpChannel(url, self.params, conf, confirm=self.confirm)
        self._publisher: _core.AmqpPublisher | None = None
        self._publisher_pid = 0
        self._publisher_lock = threading.Lock()
        #: Queues whose declaration the current publisher has been given.
        self._registered: set[str] = set()
        #: Sends remote-control commands and reads their replies (which takes a while: not on
        #: the publisher's connection). Connects on first use; confirms tell a command reached
        #: the broker.
        self.control_sender = AmqpChannel(url, self.params, conf, confirm=True)

    def declaration(self, queue: str) -> QueueDecl:
        return declaration_for(self.conf, queue, self.declarations)

    # -- publishing ------------------------------------------------------------------------------
    @property
    def publisher(self) -> _core.AmqpPublisher:
        """This process's publisher: a new one in a forked child (the parent's connection is
        not the child's to use; the old object leaks it without touching it)."""
        pid = os.getpid()
        if self._publisher_pid != pid:
            self._publisher_lock = threading.Lock()  # the parent's may have been held
            self._publisher_pid, self._publisher = pid, None
        publisher = self._publisher
        if publisher is None:
            with self._publisher_lock:
                publisher = self._publisher
                if publisher is None:
                    options = self.conf.broker_transport_options
                    heartbeat = self.conf.broker_heartbeat
                    timeout = options.get(
                        "publish_timeout", CONFIRM_TIMEOUT if self.confirm else None
                    )
                    publisher = _core.AmqpPublisher(
                        self.params.lapin_url(),
                        confirm=self.confirm,
                        heartbeat=None if heartbeat is None else int(heartbeat),
                        connect_timeout=float(options.get("connect_timeout", 5)),
                        connection_name=f"fastq publisher {socket.gethostname()} pid {pid}",
                        timeout=None if timeout is None else float(timeout),
                    )
                    atexit.register(_close_at_exit, weakref.ref(publisher))
                    self._registered = set()
                    self._publisher = publisher
        return publisher

    def publish(self, message: OutgoingMessage) -> None:
        self.publish_many((message,))

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.publish_path == "py-amqp":
            encoded = [(m, self._message(m)) for m in messages]
            with self.admin.lock:
                self._publish_locked(encoded, retry=bool(self.conf.task_publish_retry))
            return
        publisher = self.publisher
        registered = self._registered
        for m in messages:
            if m.queue not in registered:
                publisher.add_queue(self.declaration(m.queue).as_dict())
                registered.add(m.queue)
        if publisher.publish_many(messages, retry=bool(self.conf.task_publish_retry)):
            log.warning("lost %s while publishing; reconnected and sent the rest", redact(self.url))

    # -- the py-amqp path ------------------------------------------------------------------------
    def _message(self, m: OutgoingMessage) -> amqp.Message:
        headers, body = _core.encode_task_message(
            m.headers, m.args, m.kwargs, m.embed, m.serializer
        )
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
        for key, value in (m.properties or {}).items():
            properties[key] = value
        return amqp.Message(body, **properties)

    def _send(self, channel: Any, m: OutgoingMessage, msg: amqp.Message) -> None:
        decl = self.declaration(m.queue)
        if decl.name not in self.admin.declared:
            declare(channel, decl)
            self.admin.declared.add(decl.name)
        routing_key = m.routing_key or m.queue
        exchange_key = f"exchange:{m.exchange}"
        if m.exchange and m.exchange != decl.exchange and exchange_key not in self.admin.declared:
            channel.exchange_declare(m.exchange, "direct", durable=True, auto_delete=False)
            self.admin.declared.add(exchange_key)
        channel.basic_publish(msg, exchange=m.exchange, routing_key=routing_key)

    def _publish_locked(self, encoded: list[tuple[OutgoingMessage, Any]], retry: bool) -> None:
        sent = 0
        try:
            channel = self.admin.channel()
            for m, msg in encoded:
                self._send(channel, m, msg)
                sent += 1
        except amqp.exceptions.MessageNacked as exc:
            raise BrokerConnectionError(
                f"{redact(self.url)} refused (nacked) task {encoded[sent][0].id}: {exc}"
            ) from exc
        except CONNECTION_ERRORS as exc:
            self.admin.reset()
            if _is_channel_error(exc):
                raise ConfigurationError(
                    f"{redact(self.url)} refused a declaration or publish: {exc}. If a queue "
                    "exists with other arguments (x-max-priority, x-queue-type), make the "
                    "settings match or delete the queue"
                ) from exc
            if retry:
                log.warning("lost %s while publishing (%s); reconnecting", redact(self.url), exc)
                self._publish_locked(encoded[sent:], retry=False)
                return
            raise BrokerConnectionError(f"cannot publish to {redact(self.url)}: {exc}") from exc

    # -- consuming -------------------------------------------------------------------------------
    def consumer(
        self, queues: list[str], *, prefetch: int, consumer_id: str, accept: list[str]
    ) -> Consumer:
        decls = [self.declaration(q) for q in queues]
        heartbeat = self.conf.broker_heartbeat
        consumer: Consumer = _core.AmqpConsumer(
            self.params.lapin_url(),
            [d.as_dict() for d in decls],
            accept=accept,
            prefetch=min(max(prefetch, 1), 65535),
            consumer_tag=consumer_id,
            # The window is the child's, across its queues: per channel (global) where it has
            # several. With one queue the channel has one consumer, and per-consumer QoS is the
            # same window at less cost to RabbitMQ. Quorum queues only support per-consumer QoS
            # (Celery detects them the same way).
            global_qos=len(decls) > 1 and not any(d.quorum for d in decls),
            heartbeat=None if heartbeat is None else int(heartbeat),
            connect_timeout=float(self.conf.broker_transport_options.get("connect_timeout", 5)),
        )
        return consumer

    def restore_consumer(self, consumer_id: str) -> int:
        # RabbitMQ requeues the unacknowledged messages of a connection that died.
        return 0

    # -- queue admin -----------------------------------------------------------------------------
    def _admin(self, fn: Any) -> Any:
        with self.admin.lock:
            try:
                return fn(self.admin.channel())
            except CONNECTION_ERRORS as exc:
                self.admin.reset()
                if isinstance(exc, amqp.exceptions.NotFound):
                    return None
                raise BrokerConnectionError(f"{redact(self.url)}: {exc}") from exc

    def purge(self, queue: str) -> int:
        return int(self._admin(lambda ch: ch.queue_purge(queue)) or 0)

    def queue_length(self, queue: str) -> int:
        ok = self._admin(lambda ch: ch.queue_declare(queue, passive=True))
        return 0 if ok is None else int(ok.message_count)

    def delete_queue(self, queue: str) -> None:
        self._admin(lambda ch: ch.queue_delete(queue))

    # -- remote control --------------------------------------------------------------------------
    def control_channel(self) -> ControlChannel:
        from fastq.brokers.amqp_control import AmqpControlChannel

        return AmqpControlChannel(self, self.control_sender)

    def close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None and self._publisher_pid == os.getpid():
            publisher.close()
        self.admin.close()
        self.control_sender.close()


def _close_at_exit(ref: weakref.ref[_core.AmqpPublisher]) -> None:
    """Closes the connection properly when the interpreter exits: RabbitMQ takes every frame
    sent before a connection.close, while a connection that just drops can lose the last
    publishes it had received but not yet processed (py-amqp's too)."""
    publisher = ref()
    if publisher is not None:
        publisher.close(wait=False)


def _is_channel_error(exc: BaseException) -> bool:
    """The broker refused something on the channel (404, 406, 403), not a broken connection."""
    return isinstance(
        exc,
        (
            amqp.exceptions.PreconditionFailed,
            amqp.exceptions.AccessRefused,
            amqp.exceptions.NotFound,
        ),
    )
