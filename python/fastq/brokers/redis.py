"""Redis broker in kombu's layout, so Celery clients, Celery workers and fastq share queues.

Publishing goes through redis-py (one LPUSH, pipelined for batches); consuming is the Rust
``RedisConsumer``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis

from fastq import _core
from fastq.brokers.base import Broker, Consumer
from fastq.config import Config
from fastq.control import ControlChannel
from fastq.errors import BrokerConnectionError, BrokerError
from fastq.protocol import OutgoingMessage
from fastq.urls import redact

#: kombu's separator between a queue name and its priority step, and in binding entries.
SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def priority_key(queue: str, priority: int | None) -> str:
    """kombu's list key for a priority: the largest step <= p, 0-9, lower served first."""
    p = min(max(int(priority or 0), 0), 9)
    step = max(s for s in PRIORITY_STEPS if s <= p)
    return queue if step == 0 else f"{queue}{SEP}{step}"


#: Seconds the worker's remote control listener waits to connect or for a reply (as the Rust
#: consumer waits to connect).
CONTROL_TIMEOUT = 1.0

#: Deferred ETA messages: a ZSET scored by due time, members ``<queue key>\x00<envelope>``.
DELAYED_KEY = "fastq.delayed"

# Moves due deferred messages to the head of their queues, atomically per batch.
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local cut = string.find(member, '\0', 1, true)
  if cut then
    redis.call('RPUSH', ARGV[3] .. string.sub(member, 1, cut - 1), string.sub(member, cut + 1))
  end
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""

#: Where messages that killed their workers too often are kept (``Broker.quarantine``).
QUARANTINE_KEY = "fastq.quarantine"
QUARANTINE_CAP = 1000
_QUARANTINE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  redis.call('LPUSH', KEYS[4], raw)
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[2]) - 1)
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return raw and 1 or 0
"""


class RedisBroker(Broker):
    visibility_timeout: float

    def __init__(self, url: str, conf: Config) -> None:
        super().__init__(url, conf)
        options = conf.broker_transport_options
        self.prefix: str = str(options.get("global_keyprefix") or "")
        self.visibility_timeout = float(options.get("visibility_timeout", 3600))
        self.client = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        self._bound: set[tuple[str, str, str]] = set()
        self._held = threading.local()
        self._move_due = self.client.register_script(_MOVE_DUE)
        self._quarantine = self.client.register_script(_QUARANTINE)

    def _encode(self, m: OutgoingMessage) -> bytes:
        return _core.encode_task_envelope(
            m.headers,
            m.args,
            m.kwargs,
            m.embed,
            serializer=m.serializer,
            exchange=m.exchange,
            routing_key=m.routing_key or m.queue,
            priority=m.priority or 0,
            delivery_mode=m.delivery_mode,
            reply_to=m.reply_to,
            properties=m.properties or None,
        )

    def _bind(self, pipe: Any, m: OutgoingMessage) -> None:
        """Records the queue's binding as kombu does when it declares a queue, once per process."""
        exchange = m.exchange or m.queue
        binding = (exchange, m.routing_key or m.queue, m.queue)
        if binding not in self._bound:
            pipe.sadd(f"{self.prefix}_kombu.binding.{exchange}", f"{binding[1]}{SEP}{SEP}{m.queue}")
            self._bound.add(binding)

    def publish(self, message: OutgoingMessage) -> None:
        m = message
        if (m.exchange or m.queue, m.routing_key or m.queue, m.queue) not in self._bound:
            self.publish_many((m,))  # the first message to a queue also records its binding
            return
        payload = self._encode(m)
        key = self.prefix + priority_key(m.queue, m.priority)
        # The `.delay()` hot path: one command on a connection this thread keeps, skipping the
        # pool's checkout/release on every call (a third of a publish's cost).
        for attempt in (1, 2):  # a connection the server dropped while idle gets one retry
            held = getattr(self._held, "conn", None)
            if held is None or held[0] != os.getpid():
                pool = self.client.connection_pool
                held = self._held.conn = (os.getpid(), pool.make_connection())
            conn = held[1]
            try:
                conn.send_command("LPUSH", key, payload)
                conn.read_response()
                return
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                conn.disconnect()
                self._held.conn = None
                if attempt == 2:
                    self._bound.clear()
                    raise BrokerConnectionError(
                        f"cannot publish to {redact(self.url)}: {exc}"
                    ) from exc
            except redis.RedisError as exc:
                raise BrokerError(f"{redact(self.url)} refused the publish: {exc}") from exc

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for m in messages:
                    self._bind(pipe, m)
                    pipe.lpush(self.prefix + priority_key(m.queue, m.priority), self._encode(m))
                pipe.execute()  # reads every reply: a refused LPUSH raises
        except redis.ResponseError as exc:
            # The server answered with an error (out of memory, read-only replica): not a
            # broken connection, and retrying will not help.
            raise BrokerError(f"{redact(self.url)} refused the publish: {exc}") from exc
        except redis.RedisError as exc:
            self._bound.clear()
            raise BrokerConnectionError(f"cannot publish to {redact(self.url)}: {exc}") from exc

    def consumer(
        self, queues: list[str], *, prefetch: int, consumer_id: str, accept: list[str]
    ) -> Consumer:
        return _core.RedisConsumer(
            self.url,
            queues,
            accept=accept,
            prefetch=prefetch,
            consumer_id=consumer_id,
            global_keyprefix=self.prefix,
            visibility_timeout=self.visibility_timeout,
        )

    def restore_consumer(self, consumer_id: str) -> int:
        return _core.restore_consumer(self.url, consumer_id, self.prefix)

    def restore_visible(self) -> int:
        return _core.restore_visible(self.url, self.visibility_timeout, self.prefix)

    def renew(self, consumer_ids: Sequence[str]) -> int:
        ids = list(consumer_ids)
        return _core.renew_leases(self.url, ids, self.visibility_timeout, self.prefix)

    def defer(self, raw: bytes, queue: str, priority: int, when: float) -> bool:
        member = priority_key(queue, priority).encode() + b"\x00" + raw
        try:
            self.client.zadd(self.prefix + DELAYED_KEY, {member: when})
        except redis.RedisError as exc:
            raise BrokerConnectionError(f"cannot defer to {redact(self.url)}: {exc}") from exc
        return True

    def move_due(self) -> int:
        try:
            moved = self._move_due(
                keys=[self.prefix + DELAYED_KEY], args=[time.time(), 500, self.prefix]
            )
        except redis.RedisError as exc:
            raise BrokerConnectionError(f"cannot reach {redact(self.url)}: {exc}") from exc
        return int(moved)

    def next_due(self) -> float | None:
        try:
            first = self.client.zrange(self.prefix + DELAYED_KEY, 0, 0, withscores=True)
        except redis.RedisError as exc:
            raise BrokerConnectionError(f"cannot reach {redact(self.url)}: {exc}") from exc
        return float(first[0][1]) if first else None  # type: ignore[index]

    def quarantine(self, consumer_id: str, delivery_tag: str) -> None:
        """The message goes, as held in ``unacked`` (kombu's ``[payload, exchange,
        routing_key]``), to the list ``fastq.quarantine`` (newest first, capped), for a look."""
        try:
            self._quarantine(
                keys=[
                    self.prefix + "unacked",
                    self.prefix + "unacked_index",
                    f"{self.prefix}fastq.consumer.{consumer_id}",
                    self.prefix + QUARANTINE_KEY,
                ],
                args=[delivery_tag, QUARANTINE_CAP],
            )
        except redis.RedisError as exc:
            raise BrokerConnectionError(f"cannot reach {redact(self.url)}: {exc}") from exc

    def discard(self, consumer_id: str, delivery_tag: str) -> None:
        with self.client.pipeline() as pipe:
            pipe.hdel(self.prefix + "unacked", delivery_tag)
            pipe.zrem(self.prefix + "unacked_index", delivery_tag)
            pipe.srem(f"{self.prefix}fastq.consumer.{consumer_id}", delivery_tag)
            pipe.execute()

    def control_channel(self) -> ControlChannel:
        from fastq.brokers.redis_control import RedisControlChannel

        # The worker's listener gets a client of its own with short timeouts (a TLS handshake
        # waits on the read timeout): the supervisor polls it from its loop, which must never be
        # held up long by a broker that cannot answer.
        listener = redis.Redis.from_url(
            self.url,
            socket_connect_timeout=CONTROL_TIMEOUT,
            socket_timeout=CONTROL_TIMEOUT,
            health_check_interval=30,
        )
        return RedisControlChannel(self.client, self.prefix, self.url, listener)

    def purge(self, queue: str) -> int:
        keys = [self.prefix + priority_key(queue, step) for step in PRIORITY_STEPS]
        with self.client.pipeline() as pipe:
            for key in keys:
                pipe.llen(key)
            pipe.delete(*keys)
            *lengths, _ = pipe.execute()
        return int(sum(lengths))

    def queue_length(self, queue: str) -> int:
        with self.client.pipeline(transaction=False) as pipe:
            for step in PRIORITY_STEPS:
                pipe.llen(self.prefix + priority_key(queue, step))
            return int(sum(pipe.execute()))

    def close(self) -> None:
        held = getattr(self._held, "conn", None)
        if held is not None and held[0] == os.getpid():
            held[1].disconnect()
        self._held = threading.local()
        self.client.close()
