"""``rpc://``: results as reply messages, compatible with Celery's rpc backend both ways.

The worker publishes each state (STARTED, RETRY, the final one) to the default exchange with the
task's ``reply_to`` as routing key and ``correlation_id`` = task id. The client declares its reply
queue (named by ``app.oid``) before sending, consumes it, and buffers replies for other tasks
until asked. The workers' side is Celery's, so Celery workers reply to fastq clients.

What survives what (replies live only in the client's queue and the client's memory):

- A dropped connection (network, ``rabbitmqctl close_connection``, a broker-side timeout): nothing
  is lost. The queue is not auto-deleted (it outlives its consumer by ``REPLY_QUEUE_GRACE`` s, or
  ``result_expires`` if shorter), so replies sent while the client is disconnected wait in it,
  and replies are acknowledged only once buffered, so those in flight when the connection died
  are delivered again. A waiting ``get()`` reconnects on its own until its timeout.
- A broker restart: the queue is durable, but replies are transient unless ``result_persistent``
  is set, so replies not yet consumed are lost; ``get(timeout=...)`` then raises ``TimeoutError``
  naming the lost connection (with no timeout it waits, as for a task that never ends).
- The client away longer than the grace, or gone: its queue and unread replies are deleted.
  ``App.close()`` deletes the queue at once.

Use ``rabbitmq://`` or ``redis://`` when results must outlive the client.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastq import errors, states
from fastq.backends.amqp import AmqpResultBackend
from fastq.brokers.amqp_connection import CONNECTION_ERRORS
from fastq.brokers.amqp_topology import QueueDecl

if TYPE_CHECKING:
    from fastq.config import Config

log = logging.getLogger("fastq.backends")

#: Replies kept for tasks nobody waits on yet; the oldest go first past this many.
BUFFER_LIMIT = 10_000
#: How long the reply queue outlives its last consumer (seconds): long enough to reconnect.
REPLY_QUEUE_GRACE = 300.0


class RpcBackend(AmqpResultBackend):
    def __init__(self, conf: Config, url: str, oid: str) -> None:
        super().__init__(conf, url)
        #: The reply queue: the client's id (``App.oid``), the ``reply_to`` of what it sends.
        self.oid = oid
        #: task id -> (reply_to, correlation_id), recorded when the worker builds a meta.
        self._routes: dict[str, tuple[str, str]] = {}
        self._buffer: OrderedDict[str, dict[str, Any]] = OrderedDict()

    # -- worker side -----------------------------------------------------------------------------
    def build_meta(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
    ) -> dict[str, Any]:
        reply_to = getattr(request, "reply_to", None)
        if reply_to:
            correlation_id = getattr(request, "correlation_id", None) or task_id
            self._routes[task_id] = (str(reply_to), str(correlation_id))
        return super().build_meta(task_id, result, state, traceback, request)

    def store_many(self, metas: Iterable[tuple[str, dict[str, Any]]]) -> None:
        replies = []
        sent = []
        for task_id, meta in metas:
            route = self._routes.get(task_id)
            if route is None:
                log.warning(
                    "task %s has no reply_to: its %s result cannot be sent (rpc://)",
                    task_id,
                    meta.get("status"),
                )
                continue
            replies.append((route, self.message(meta, route[1])))
            sent.append(task_id)

        def publish(channel: Any) -> None:
            for (reply_to, _), message in replies:
                channel.basic_publish(message, exchange="", routing_key=reply_to)

        if replies:
            self._with_channel("send results", publish)
        # Only once sent: a store retried after a failure (the loop's, the supervisor's) still
        # knows where each reply goes.
        for task_id in sent:
            self._routes.pop(task_id, None)

    # -- client side -----------------------------------------------------------------------------
    def reply_queue(self) -> QueueDecl:
        # Not auto_delete: a dropped connection must not delete the queue and the replies sent
        # before the client reconnects; x-expires removes it once the client is gone for good.
        expires = self.expires_ms()
        grace = int(REPLY_QUEUE_GRACE * 1000)
        return QueueDecl(
            name=self.oid,
            exchange="",
            durable=True,
            auto_delete=False,
            arguments={"x-expires": min(expires, grace) if expires else grace},
        )

    def _consume(self, channel: Any) -> None:
        """Declares the reply queue and consumes it (once per connection: what was declared and
        consumed is forgotten with the connection)."""
        self.ensure(channel, self.reply_queue())
        marker = f"consume:{self.oid}"
        if marker not in self.conn.declared:
            # Acknowledged once buffered: a reply in flight when the connection dies comes back.
            channel.basic_consume(self.oid, callback=self._on_reply, no_ack=False)
            self.conn.declared.add(marker)

    def _on_reply(self, message: Any) -> None:
        try:
            self._buffer_reply(message)
        finally:
            message.channel.basic_ack(message.delivery_tag)

    def _buffer_reply(self, message: Any) -> None:
        try:
            meta = self.meta_of(message)
        except errors.DecodeError as exc:
            log.error("dropped an undecodable reply on %s: %s", self.oid, exc)
            return
        task_id = meta.get("task_id") or message.properties.get("correlation_id")
        if not task_id:
            return
        known = self._buffer.get(task_id)
        if known is not None and known["status"] in states.READY_STATES:
            return  # a duplicate delivery's late STARTED must not hide the final state
        self._buffer[task_id] = meta
        self._buffer.move_to_end(task_id)
        while len(self._buffer) > BUFFER_LIMIT:
            dropped, _ = self._buffer.popitem(last=False)
            log.warning(
                "dropped the reply of task %s: %d replies nobody waits for are kept at most "
                "(rpc://); a get() of it now waits until its timeout",
                dropped,
                BUFFER_LIMIT,
            )

    def on_task_sent(self, task_id: str) -> None:
        # The queue must exist before the worker replies, or the reply is dropped.
        self._with_channel("declare the reply queue", self._consume)

    def on_tasks_sent(self, task_ids: list[str]) -> None:
        if task_ids:  # one queue for all of them
            self.on_task_sent(task_ids[0])

    def get_meta(self, task_id: str) -> dict[str, Any]:
        return self.get_many([task_id])[0]

    def get_many(self, task_ids: list[str]) -> list[dict[str, Any]]:
        """Reads the replies that came (one pass over the queue) and looks the ids up."""

        def read(channel: Any) -> list[dict[str, Any]]:
            self._consume(channel)
            while self.drain(0.01):
                pass
            return [self._buffer.get(t) or self.pending_meta(t) for t in task_ids]

        return self._with_channel("read results", read)

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict:
        def step(channel: Any, seconds: float) -> dict[str, Any] | None:
            self._consume(channel)
            meta = self._buffer.get(task_id)
            if meta is None or meta["status"] not in states.READY_STATES:
                self.drain(seconds)
                meta = self._buffer.get(task_id)
            return meta

        return self.wait_ready(task_id, timeout, step)

    def forget(self, task_id: str) -> None:
        self._buffer.pop(task_id, None)

    def close(self) -> None:
        # A clean exit leaves no queue behind (nobody can read its replies any more).
        with self.conn.lock:
            if f"consume:{self.oid}" in self.conn.declared:
                try:
                    self.conn.channel().queue_delete(self.oid)
                except CONNECTION_ERRORS:
                    self.reset()
        super().close()
