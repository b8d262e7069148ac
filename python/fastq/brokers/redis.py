"""Redis broker in kombu's layout, so Celery clients, Celery workers and fastq share queues.

Publishing is the Rust ``RedisPublisher`` (one LPUSH, pipelined for batches) and consuming the
Rust ``RedisConsumer``: the key layout (queue lists per priority step, bindings, ack emulation)
is theirs. redis-py serves the rest (ETA deferral, quarantine, purge, remote control).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import redis

from fastq import _core, sentinel
from fastq.brokers.base import Broker, Consumer, EventPublisher, Settler
from fastq.config import Config
from fastq.control_channel import ControlChannel
from fastq.errors import BrokerConnectionError, ConfigurationError
from fastq.protocol import OutgoingMessage
from fastq.redis_errors import redis_failure

#: Seconds the worker's remote control listener waits to connect or for a reply (as the Rust
#: consumer waits to connect).
CONTROL_TIMEOUT = 1.0

#: Key names without the prefix: the members of the deferred-messages ZSET name their queue so.
_UNPREFIXED = _core.RedisKeys()

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

#: How many messages that killed their workers too often are kept (``Broker.quarantine``).
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
        self.keys = _core.RedisKeys(self.prefix)
        #: With a sentinel:// URL: the sentinels and the master's name (and the URL the Rust
        #: side reads, which carries them); None for a plain Redis.
        self.sentinel: sentinel.SentinelSpec | None = None
        self.core_url = url
        if sentinel.is_sentinel_url(url):
            self.sentinel = sentinel.parse(url, options, "broker_transport_options")
            self.core_url = sentinel.core_url(self.sentinel)
            if conf.broker_use_ssl:
                raise ConfigurationError(
                    "broker_use_ssl with a sentinel:// broker: fastq does not speak TLS to "
                    "Redis Sentinel or the masters it names"
                )
        self.client = self.redis_client(socket_connect_timeout=5, health_check_interval=30)
        self._watch = sentinel.MasterWatch(self.client) if self.sentinel else None
        self._publisher: _core.RedisPublisher | None = None
        self._publisher_pid = 0
        self._move_due = self.client.register_script(_MOVE_DUE)
        self._quarantine = self.client.register_script(_QUARANTINE)

    def redis_client(self, **options: object) -> redis.Redis:
        """A redis-py client of the broker (of the master the sentinels name, with Sentinel)."""
        if self.sentinel is not None:
            return sentinel.master_client(self.sentinel, **options)
        return redis.Redis.from_url(self.url, **options)  # type: ignore[arg-type]

    def _follow(self, force: bool = False) -> None:
        """With Sentinel, moves ``client`` to a new master (see ``MasterWatch``); forced before
        a write whose loss would lose a task (the Rust consumer may already ack on the new
        master)."""
        if self._watch is not None:
            self._watch.check(force)

    @property
    def publisher(self) -> _core.RedisPublisher:
        """This process's publisher: a new one in a forked child (the parent's connection is not
        the child's to use; the old object leaves it alone)."""
        publisher = self._publisher
        if publisher is None or self._publisher_pid != os.getpid():
            publisher = _core.RedisPublisher(self.core_url, global_keyprefix=self.prefix)
            self._publisher, self._publisher_pid = publisher, os.getpid()
        return publisher

    def publish(self, message: OutgoingMessage) -> None:
        self.publisher.publish(message)

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        self.publisher.publish_many(list(messages))

    def consumer(
        self, queues: list[str], *, prefetch: int, consumer_id: str, accept: list[str]
    ) -> Consumer:
        return _core.RedisConsumer(
            self.core_url,
            queues,
            accept=accept,
            prefetch=prefetch,
            consumer_id=consumer_id,
            global_keyprefix=self.prefix,
            visibility_timeout=self.visibility_timeout,
        )

    def restore_consumer(self, consumer_id: str) -> int:
        return _core.restore_consumer(self.core_url, consumer_id, self.prefix)

    def restore_visible(self) -> int:
        return _core.restore_visible(self.core_url, self.visibility_timeout, self.prefix)

    def renew(self, consumer_ids: Sequence[str]) -> int:
        ids = list(consumer_ids)
        return _core.renew_leases(self.core_url, ids, self.visibility_timeout, self.prefix)

    def defer(self, raw: bytes, queue: str, priority: int, when: float) -> bool:
        member = _UNPREFIXED.queue(queue, priority).encode() + b"\x00" + raw
        self._follow(force=True)
        try:
            self.client.zadd(self.keys.delayed(), {member: when})
        except redis.RedisError as exc:
            raise BrokerConnectionError(redis_failure("cannot defer to", self.url, exc)) from exc
        return True

    def move_due(self) -> int:
        self._follow()
        try:
            moved = self._move_due(keys=[self.keys.delayed()], args=[time.time(), 500, self.prefix])
        except redis.RedisError as exc:
            raise BrokerConnectionError(redis_failure("cannot reach", self.url, exc)) from exc
        return int(moved)

    def next_due(self) -> float | None:
        try:
            first = self.client.zrange(self.keys.delayed(), 0, 0, withscores=True)
        except redis.RedisError as exc:
            raise BrokerConnectionError(redis_failure("cannot reach", self.url, exc)) from exc
        return float(first[0][1]) if first else None  # type: ignore[index]

    def quarantine(self, consumer_id: str, delivery_tag: str) -> None:
        """The message goes, as held in ``unacked`` (kombu's ``[payload, exchange,
        routing_key]``), to the list ``fastq.quarantine`` (newest first, capped), for a look."""
        self._follow()
        try:
            self._quarantine(
                keys=[
                    self.keys.unacked(),
                    self.keys.unacked_index(),
                    self.keys.consumer(consumer_id),
                    self.keys.quarantine(),
                ],
                args=[delivery_tag, QUARANTINE_CAP],
            )
        except redis.RedisError as exc:
            raise BrokerConnectionError(redis_failure("cannot reach", self.url, exc)) from exc

    def settler(self) -> Settler:
        return _core.RedisSettler(self.core_url, self.prefix)

    def discard(self, consumer_id: str, delivery_tag: str) -> None:
        with self.client.pipeline() as pipe:
            pipe.hdel(self.keys.unacked(), delivery_tag)
            pipe.zrem(self.keys.unacked_index(), delivery_tag)
            pipe.srem(self.keys.consumer(consumer_id), delivery_tag)
            pipe.execute()

    def control_channel(self) -> ControlChannel:
        from fastq.brokers.redis_control import RedisControlChannel

        # The worker's listener gets a client of its own with short timeouts (a TLS handshake
        # waits on the read timeout): the supervisor polls it from its loop, which must never be
        # held up long by a broker that cannot answer.
        listener = self.redis_client(
            socket_connect_timeout=CONTROL_TIMEOUT,
            socket_timeout=CONTROL_TIMEOUT,
            health_check_interval=30,
        )
        return RedisControlChannel(self.client, self.prefix, self.url, listener)

    def event_publisher(self, hostname: str) -> EventPublisher:
        from fastq.brokers.redis_events import RedisEventPublisher

        # Short timeouts, as the control listener's: the prefork supervisor publishes from its loop.
        client = self.redis_client(
            socket_connect_timeout=CONTROL_TIMEOUT, socket_timeout=CONTROL_TIMEOUT
        )
        exchange = str(self.conf.event_exchange)
        return RedisEventPublisher(client, self.prefix, self.url, exchange, hostname)

    def purge(self, queue: str) -> int:
        keys = self.keys.queue_keys(queue)
        with self.client.pipeline() as pipe:
            for key in keys:
                pipe.llen(key)
            pipe.delete(*keys)
            *lengths, _ = pipe.execute()
        return int(sum(lengths))

    def queue_length(self, queue: str) -> int:
        with self.client.pipeline(transaction=False) as pipe:
            for key in self.keys.queue_keys(queue):
                pipe.llen(key)
            return int(sum(pipe.execute()))

    def close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None and self._publisher_pid == os.getpid():
            publisher.close()
        self.client.close()
