"""RabbitMQ broker (AMQP 0-9-1) declared and published as Celery does, so Celery clients, Celery
workers and fastq share queues.

Publishing goes through the Rust ``AmqpPublisher`` (lapin): one connection per process, opened
on the first publish, reopened after a fork or when it broke, closed properly at exit; a batch
is one call with the GIL released. It measured faster than py-amqp for single publishes and
batches (``bench/RESULTS.md``, "RabbitMQ publish path"). Consuming is the Rust ``AmqpConsumer``
(lapin), created in each worker process; both take ``broker_use_ssl``'s TLS files. py-amqp
stays for the queue admin calls (purge, length, delete). The URL, the TLS files and the py-amqp
connection are ``fastq.brokers.amqp_connection``, the declarations
``fastq.brokers.amqp_topology``, remote control (``fastq inspect``, revoke)
``fastq.brokers.amqp_control``.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import amqp

from fastq import _core
from fastq.brokers.amqp_connection import (
    CONNECTION_ERRORS,
    AmqpChannel,
    AmqpServers,
    connect_timeout,
    tls_files,
)
from fastq.brokers.amqp_topology import QueueDecl, declaration_for, declarations
from fastq.brokers.base import Broker, Consumer, EventPublisher
from fastq.config import Config
from fastq.errors import BrokerConnectionError
from fastq.protocol import OutgoingMessage
from fastq.urls import redact

if TYPE_CHECKING:
    from fastq.control_channel import ControlChannel

log = logging.getLogger("fastq.amqp")


#: Seconds a publish waits without progress (no write done, no confirm back) by default with
#: confirms (``publish_timeout``): a broker that blocks publishers (a memory or disk alarm)
#: makes ``.delay()`` fail instead of hang, while a large batch that keeps moving is not cut.
CONFIRM_TIMEOUT = 30.0


def confirm_publish(conf: Config) -> bool:
    """Publisher confirms: on unless turned off, by ``broker_confirm_publish = False`` or by
    kombu's name for it, ``broker_transport_options={"confirm_publish": False}`` (which wins)."""
    option = conf.broker_transport_options.get("confirm_publish")
    return bool(conf.broker_confirm_publish if option is None else option)


class AmqpBroker(Broker):
    returns_on_close = True
    pushes = True

    def __init__(self, url: str, conf: Config) -> None:
        super().__init__(url, conf)
        #: The broker's nodes: one URL, or Celery's list (``amqp://h1;amqp://h2``), failed over
        #: as ``broker_failover_strategy`` says.
        self.servers = AmqpServers.from_url(url, conf.broker_failover_strategy)
        self.declarations = declarations(conf)
        #: The PEM files of ``broker_use_ssl`` for the Rust consumer and publisher.
        self.tls = tls_files(conf.broker_use_ssl)
        self.confirm = confirm_publish(conf)
        #: py-amqp, for the queue admin calls (purge, length, delete).
        self.admin = AmqpChannel(url, self.servers, conf)
        self._publisher: _core.AmqpPublisher | None = None
        self._publisher_pid = 0
        self._publisher_lock = threading.Lock()
        #: Queues whose declaration the current publisher has been given.
        self._registered: set[str] = set()
        #: Sends remote-control commands and reads their replies (which takes a while: not on
        #: the publisher's connection). Connects on first use; confirms tell a command reached
        #: the broker.
        self.control_sender = AmqpChannel(url, self.servers, conf, confirm=True)

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
                        self.servers.lapin_urls(),
                        failover=self.servers.strategy,
                        confirm=self.confirm,
                        heartbeat=None if heartbeat is None else int(heartbeat),
                        connect_timeout=connect_timeout(self.conf),
                        connection_name=f"fastq publisher {socket.gethostname()} pid {pid}",
                        timeout=None if timeout is None else float(timeout),
                        tls=self.tls,
                    )
                    atexit.register(_close_at_exit, weakref.ref(publisher))
                    self._registered = set()
                    self._publisher = publisher
        return publisher

    def publish(self, message: OutgoingMessage) -> None:
        self.publish_many((message,))

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        publisher = self.publisher
        registered = self._registered
        for m in messages:
            if m.queue not in registered:
                publisher.add_queue(self.declaration(m.queue).as_dict())
                registered.add(m.queue)
        if publisher.publish_many(messages, retry=bool(self.conf.task_publish_retry)):
            log.warning("lost %s while publishing; reconnected and sent the rest", redact(self.url))

    # -- consuming -------------------------------------------------------------------------------
    def consumer(
        self, queues: list[str], *, prefetch: int, consumer_id: str, accept: list[str]
    ) -> Consumer:
        decls = [self.declaration(q) for q in queues]
        heartbeat = self.conf.broker_heartbeat
        consumer: Consumer = _core.AmqpConsumer(
            self.servers.lapin_urls(),
            [d.as_dict() for d in decls],
            failover=self.servers.strategy,
            accept=accept,
            prefetch=min(max(prefetch, 1), 65535),
            consumer_tag=consumer_id,
            # The window is the child's, across its queues: per channel (global) where it has
            # several. With one queue the channel has one consumer, and per-consumer QoS is the
            # same window at less cost to RabbitMQ. Quorum queues only support per-consumer QoS
            # (Celery detects them the same way).
            global_qos=len(decls) > 1 and not any(d.quorum for d in decls),
            heartbeat=None if heartbeat is None else int(heartbeat),
            connect_timeout=connect_timeout(self.conf),
            tls=self.tls,
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
            except BrokerConnectionError:  # could not connect: says so already, naming the URL
                raise
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

    def event_publisher(self, hostname: str) -> EventPublisher:
        from fastq.brokers.amqp_events import AmqpEventPublisher

        return AmqpEventPublisher(
            AmqpChannel(self.url, self.servers, self.conf), str(self.conf.event_exchange), hostname
        )

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
