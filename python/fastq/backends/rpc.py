"""``rpc://``: results as reply messages, compatible with Celery's rpc backend both ways.

The worker publishes each state (STARTED, RETRY, the final one) to the default exchange with the
task's ``reply_to`` as routing key and ``correlation_id`` = task id. The client declares its reply
queue (named by ``app.oid``: durable, auto_delete, ``x-expires`` = ``result_expires``) before
sending, consumes it with no_ack, and buffers replies for other tasks until asked.

Replies live only in the client's queue: a client that goes away (its queue auto-deletes) loses
the results still on their way. Use ``rabbitmq://`` when results must outlive the client.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastq import errors, states
from fastq.backends.amqp import AmqpResultBackend
from fastq.brokers.amqp import QueueDecl

if TYPE_CHECKING:
    from fastq.app import App

log = logging.getLogger("fastq.backends")

#: Replies kept for tasks nobody waits on yet; the oldest go first past this many.
BUFFER_LIMIT = 10_000


class RpcBackend(AmqpResultBackend):
    def __init__(self, app: App, url: str) -> None:
        super().__init__(app, url)
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
        for task_id, meta in metas:
            route = self._routes.pop(task_id, None)
            if route is None:
                log.warning(
                    "task %s has no reply_to: its %s result cannot be sent (rpc://)",
                    task_id,
                    meta.get("status"),
                )
                continue
            replies.append((route, self.message(meta, route[1])))

        def publish(channel: Any) -> None:
            for (reply_to, _), message in replies:
                channel.basic_publish(message, exchange="", routing_key=reply_to)

        if replies:
            self._with_channel("send results", publish)

    # -- client side -----------------------------------------------------------------------------
    def reply_queue(self) -> QueueDecl:
        expires = self.expires_ms()
        return QueueDecl(
            name=self.app.oid,
            exchange="",
            durable=True,
            auto_delete=True,
            arguments={"x-expires": expires} if expires else None,
        )

    def _consume(self, channel: Any) -> None:
        """Declares the reply queue and consumes it (once per connection: what was declared and
        consumed is forgotten with the connection)."""
        self.ensure(channel, self.reply_queue())
        marker = f"consume:{self.app.oid}"
        if marker not in self.conn.declared:
            channel.basic_consume(self.app.oid, callback=self._on_reply, no_ack=True)
            self.conn.declared.add(marker)

    def _on_reply(self, message: Any) -> None:
        try:
            meta = self.meta_of(message)
        except errors.DecodeError as exc:
            log.error("dropped an undecodable reply on %s: %s", self.app.oid, exc)
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
            self._buffer.popitem(last=False)

    def on_task_sent(self, task_id: str) -> None:
        # The queue must exist before the worker replies, or the reply is dropped.
        self._with_channel("declare the reply queue", self._consume)

    def get_meta(self, task_id: str) -> dict[str, Any]:
        def read(channel: Any) -> dict[str, Any]:
            self._consume(channel)
            while self.drain(0.01):
                pass
            return self._buffer.get(task_id) or self.pending_meta(task_id)

        return self._with_channel("read results", read)

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict:
        def wait(channel: Any) -> dict[str, Any]:
            self._consume(channel)
            return self.drain_until_ready(task_id, lambda: self._buffer.get(task_id), timeout)

        return self._with_channel("wait for results", wait)

    def forget(self, task_id: str) -> None:
        self._buffer.pop(task_id, None)
