"""``rabbitmq://``: a persistent result backend on RabbitMQ alone.

Each task's result waits in its own durable queue ``celery-task-meta-<id>`` (``x-expires`` =
``result_expires``, ``x-max-length`` 1 so only the latest state is kept), as a persistent
message. A stored SUCCESS is never replaced by another state (see ``_succeeded``). Reading
never consumes it for good: ``get_meta`` takes it with ``basic.get`` and puts it
back with ``basic.reject(requeue)``, and ``wait_for`` consumes the task's queue and requeues the
result it returns. Results therefore survive a client restart, unlike ``rpc://``, at the cost of
one queue per task (declared by the client on send and by the worker on store).

Celery has no such backend (its ``amqp`` backend, a relative, was removed in 5.0): use it between
fastq clients and workers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import amqp

from fastq import errors, states
from fastq.backends.amqp import AmqpResultBackend
from fastq.brokers.amqp_topology import QueueDecl, declare

if TYPE_CHECKING:
    from fastq.config import Config

QUEUE_PREFIX = "celery-task-meta-"


class RabbitMQBackend(AmqpResultBackend):
    def __init__(self, conf: Config, url: str) -> None:
        super().__init__(conf, url)
        self.persistent = True  # the point of this backend: results survive broker restarts

    def result_queue(self, task_id: str) -> QueueDecl:
        arguments: dict[str, Any] = {"x-max-length": 1}
        expires = self.expires_ms()
        if expires:
            arguments["x-expires"] = expires
        return QueueDecl(name=QUEUE_PREFIX + task_id, exchange="", arguments=arguments)

    def _declare(self, channel: Any, task_id: str) -> None:
        # Declared on every store rather than remembered: one queue per task would make the
        # remembered set grow without bound in a long-lived worker.
        declare(channel, self.result_queue(task_id))

    def on_task_sent(self, task_id: str) -> None:
        # Exists before the worker stores, so nothing is lost if the client is gone by then.
        self._with_channel("declare the result queue", lambda ch: self._declare(ch, task_id))

    def on_tasks_sent(self, task_ids: list[str]) -> None:
        # Not one declare per task of a send_many: the worker declares the queue before it
        # stores, and a waiting client before it consumes, so nothing is lost without it.
        return None

    def store_many(self, metas: Iterable[tuple[str, dict[str, Any]]]) -> None:
        items = [(task_id, meta["status"], self.message(meta, task_id)) for task_id, meta in metas]

        def publish(channel: Any) -> None:
            for task_id, status, message in items:
                self._declare(channel, task_id)
                if status != states.SUCCESS and self._succeeded(channel, task_id):
                    continue
                channel.basic_publish(message, exchange="", routing_key=QUEUE_PREFIX + task_id)

        if items:
            self._with_channel("store results", publish)

    def _succeeded(self, channel: Any, task_id: str) -> bool:
        """Whether the stored state is SUCCESS, which nothing may replace (a duplicate delivery
        must not turn it back into STARTED, RETRY or FAILURE), as Celery's worker and fastq's
        Redis backend refuse to. Peeks with ``basic.get`` and puts the message straight back.

        Not atomic, unlike the Redis script: a SUCCESS stored by another worker between this
        peek and the caller's publish is replaced, and so is one that a reader holds
        unacknowledged at this moment (``get_meta``'s own peek, ``get()`` returning it): the
        peek finds the queue empty, and when the reader puts SUCCESS back, ``x-max-length`` 1
        drops it from the head. Both need a duplicate delivery of a finished task at that very
        moment."""
        message = channel.basic_get(QUEUE_PREFIX + task_id, no_ack=False)
        if message is None:
            return False
        try:
            return self.meta_of(message).get("status") == states.SUCCESS
        except errors.DecodeError:
            return False  # unreadable: replace it
        finally:
            channel.basic_reject(message.delivery_tag, requeue=True)

    def get_meta(self, task_id: str) -> dict[str, Any]:
        def peek(channel: Any) -> dict[str, Any]:
            try:
                message = channel.basic_get(QUEUE_PREFIX + task_id, no_ack=False)
            except amqp.exceptions.NotFound:
                self.reset()  # a 404 closes the channel
                return self.pending_meta(task_id)
            if message is None:
                return self.pending_meta(task_id)
            try:
                return self.meta_of(message)
            finally:
                channel.basic_reject(message.delivery_tag, requeue=True)

        return self._with_channel("read results", peek)

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict:
        queue = QUEUE_PREFIX + task_id
        marker = f"consume:{queue}:{uuid.uuid4().hex}"  # this wait's consumer, on this connection
        held: list[Any] = []
        latest: dict[str, Any] = {}
        tag: list[str] = []

        def on_message(message: Any) -> None:
            # An older state we still hold is superseded by this one: drop it.
            for old in held:
                message.channel.basic_ack(old.delivery_tag)
            held[:] = [message]
            latest["meta"] = self.meta_of(message)

        def step(channel: Any, seconds: float) -> dict[str, Any] | None:
            if marker not in self.conn.declared:
                # First turn, or the connection was lost: the broker requeued what we held.
                held.clear()
                self._declare(channel, task_id)
                tag[:] = [channel.basic_consume(queue, callback=on_message, no_ack=False)]
                self.conn.declared.add(marker)
            meta = latest.get("meta")
            if meta is None or meta["status"] not in states.READY_STATES:
                self.drain(seconds)
            return latest.get("meta")

        def cleanup() -> None:
            if marker not in self.conn.declared:
                return  # its connection is gone, and with it the consumer
            self.conn.declared.discard(marker)
            channel = self.conn.channel()
            channel.basic_cancel(tag[0])
            for message in held:  # back in the queue for the next reader
                channel.basic_reject(message.delivery_tag, requeue=True)

        return self.wait_ready(task_id, timeout, step, cleanup)

    def forget(self, task_id: str) -> None:
        self._with_channel("forget a result", lambda ch: ch.queue_delete(QUEUE_PREFIX + task_id))
