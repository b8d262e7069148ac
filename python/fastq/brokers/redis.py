"""Redis broker in kombu's layout, so Celery clients, Celery workers and fastq share queues.

Publishing is the Rust ``RedisPublisher`` (one LPUSH, pipelined for batches) and consuming the
Rust ``RedisConsumer``: the key layout (queue lists per priority step, bindings, ack emulation)
is theirs. redis-py serves the rest (ETA deferral, quarantine, purge, remote control).

On a Redis Cluster (``redis+cluster://``, see ``fastq.redis_cluster``) the layout is fastq's own,
per queue and hash-tagged; remote control and events are not carried there.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import redis

from fastq import _core, redis_cluster, sentinel
from fastq.brokers.base import Broker, Consumer, EventPublisher, Settler
from fastq.config import Config
from fastq.control_channel import ControlChannel
from fastq.errors import BrokerConnectionError, ConfigurationError
from fastq.protocol import OutgoingMessage
from fastq.redis_errors import redis_failure

log = logging.getLogger("fastq.worker")

#: Seconds the worker's remote control listener waits to connect or for a reply (as the Rust
#: consumer waits to connect).
CONTROL_TIMEOUT = 1.0

#: Key names without the prefix: the members of the deferred-messages ZSET name their queue so.
_UNPREFIXED = _core.RedisKeys()

# Moves due deferred messages to the head of their queues, atomically per batch. A queue whose
# key holds something other than a list (Redis would refuse the push: WRONGTYPE) keeps its
# messages in the set, without stopping the others: they move once the key is a list again.
# Returns {moved, {key, type, ...}}; ARGV: now, how many to move, the key prefix.
_MOVE_DUE = """
local limit = tonumber(ARGV[2])
local moved, offset = 0, 0
local kinds, held = {}, {}
repeat
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', offset, limit)
  for _, member in ipairs(due) do
    local cut = string.find(member, '\\0', 1, true)
    local dest = cut and ARGV[3] .. string.sub(member, 1, cut - 1)
    local kind = dest and kinds[dest]
    if dest and not kind then
      kind = redis.call('TYPE', dest)['ok']
      kinds[dest] = kind
      if kind ~= 'list' and kind ~= 'none' then
        held[#held + 1] = dest
        held[#held + 1] = kind
      end
    end
    if dest and kind ~= 'list' and kind ~= 'none' then
      offset = offset + 1  -- left in the set, ahead of the next page
    else
      if dest then
        redis.call('RPUSH', dest, string.sub(member, cut + 1))
        moved = moved + 1
      end
      redis.call('ZREM', KEYS[1], member)
    end
  end
until #due < limit or moved >= limit
return {moved, held}
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


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class RedisBroker(Broker):
    visibility_timeout: float

    def __init__(self, url: str, conf: Config) -> None:
        super().__init__(url, conf)
        options = conf.broker_transport_options
        self.prefix: str = str(options.get("global_keyprefix") or "")
        self.visibility_timeout = float(options.get("visibility_timeout", 3600))
        #: With a sentinel:// URL: the sentinels and the master's name (and the URL the Rust
        #: side reads, which carries them); None for a plain Redis.
        self.sentinel: sentinel.SentinelSpec | None = None
        #: With a redis+cluster:// URL: the seed nodes (the Rust side reads the URL as it is).
        self.cluster: redis_cluster.ClusterSpec | None = None
        #: On a cluster, the queues whose deferred-message sets this process looks at (each
        #: queue has its own): those it consumes and those it deferred to.
        self._delayed_queues: dict[str, None] = {}
        self.core_url = url
        if redis_cluster.is_cluster_url(url):
            self.cluster = redis_cluster.parse(url)
            if conf.broker_use_ssl:
                raise ConfigurationError(
                    "broker_use_ssl with a redis+cluster:// broker: write rediss+cluster:// "
                    "with the ssl_* options in the URL"
                )
            if "{" in self.prefix or "}" in self.prefix:
                raise ConfigurationError(
                    f"global_keyprefix {self.prefix!r} contains a brace: on a Redis Cluster "
                    "fastq hash-tags each queue's keys with {queue}, which it would break"
                )
        self.keys = _core.RedisKeys(self.prefix, cluster=self.cluster is not None)
        #: Key names without the prefix, as deferred-message members name their queue.
        self._unprefixed = _core.RedisKeys(cluster=True) if self.cluster else _UNPREFIXED
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
        #: Queue keys of another type holding back due ETA messages (key → its type), as last
        #: logged.
        self._held_due: dict[str, str] = {}
        self._quarantine = self.client.register_script(_QUARANTINE)

    def redis_client(self, **options: object) -> redis.Redis:
        """A redis-py client of the broker (of the master the sentinels name, with Sentinel)."""
        if self.sentinel is not None:
            return sentinel.master_client(self.sentinel, **options)
        if self.cluster is not None:
            return redis_cluster.client(self.cluster, **options)
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
        self._delayed_queues.update(dict.fromkeys(queues))
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

    def _delayed_keys(self) -> list[tuple[str, list[str]]]:
        """The deferred-message sets to look at, each with the lists its messages go back to
        (declared to the script on a cluster, where they share the set's slot): one set, or on
        a cluster one per known queue."""
        if self.cluster is None:
            return [(self.keys.delayed(), [])]
        return [(self.keys.delayed(q), self.keys.queue_keys(q)) for q in self._delayed_queues]

    def defer(self, raw: bytes, queue: str, priority: int, when: float) -> bool:
        member = self._unprefixed.queue(queue, priority).encode() + b"\x00" + raw
        self._follow(force=True)
        if self.cluster is not None:
            self._delayed_queues[queue] = None
            key = self.keys.delayed(queue)
        else:
            key = self.keys.delayed()
        try:
            self.client.zadd(key, {member: when})
        except redis.RedisError as exc:
            raise BrokerConnectionError(redis_failure("cannot defer to", self.url, exc)) from exc
        return True

    def move_due(self) -> int:
        self._follow()
        moved = 0
        held: dict[str, str] = {}
        try:
            for key, lists in self._delayed_keys():
                args: list[float | int | str] = [time.time(), 500, self.prefix]
                count, refusing = self._move_due(keys=[key, *lists], args=args)
                moved += int(count)
                held.update(zip(map(_text, refusing[::2]), map(_text, refusing[1::2]), strict=True))
        except redis.RedisError as exc:
            raise BrokerConnectionError(redis_failure("cannot reach", self.url, exc)) from exc
        self._say_held_due(held)
        return moved

    def _say_held_due(self, held: dict[str, str]) -> None:
        """Logs a queue key that begins or stops holding back due ETA messages (once each)."""
        for key, kind in held.items():
            if key not in self._held_due:
                log.error(
                    "due ETA tasks cannot be moved to their queue: its key %r holds a %s, not a "
                    "list of messages; they stay deferred (nothing is lost) and move once the key "
                    "holds a list again",
                    key,
                    kind,
                )
        for key in self._held_due.keys() - held.keys():
            log.warning("due ETA tasks can be moved to %r again", key)
        self._held_due = held

    def next_due(self) -> float | None:
        due: list[float] = []
        try:
            for key, _ in self._delayed_keys():
                first = self.client.zrange(key, 0, 0, withscores=True)
                if first:
                    due.append(float(first[0][1]))  # type: ignore[index]
        except redis.RedisError as exc:
            raise BrokerConnectionError(redis_failure("cannot reach", self.url, exc)) from exc
        return min(due) if due else None

    def _holding_queues(self, consumer_id: str) -> list[str | None]:
        """Where a consumer's sets are: the one set of a single Redis (``None``), or on a
        cluster every queue with a set of this consumer's (a ``SCAN`` of every master)."""
        if self.cluster is None:
            return [None]
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        pattern = f"{escaped}{{*}}fastq.consumer.{consumer_id}"
        queues: list[str | None] = []
        for key in self.client.scan_iter(match=pattern, count=1000, target_nodes="primaries"):  # type: ignore[call-arg]
            text = key.decode() if isinstance(key, bytes) else str(key)
            queue = text[len(self.prefix) + 1 :].split("}", 1)[0]
            if queue not in queues:
                queues.append(queue)
        return queues

    def quarantine(self, consumer_id: str, delivery_tag: str) -> None:
        """The message goes, as held in ``unacked`` (kombu's ``[payload, exchange,
        routing_key]``), to the list ``fastq.quarantine`` (newest first, capped), for a look."""
        self._follow()
        try:
            for queue in self._holding_queues(consumer_id):
                self._quarantine(
                    keys=[
                        self.keys.unacked(queue),
                        self.keys.unacked_index(queue),
                        self.keys.consumer(consumer_id, queue),
                        self.keys.quarantine(queue),
                    ],
                    args=[delivery_tag, QUARANTINE_CAP],
                )
        except redis.RedisError as exc:
            raise BrokerConnectionError(redis_failure("cannot reach", self.url, exc)) from exc

    def settler(self) -> Settler | None:
        # On a cluster the supervisor would not know which queue (slot) each tag is in: the
        # children ack their early acks themselves.
        if self.cluster is not None:
            return None
        return _core.RedisSettler(self.core_url, self.prefix)

    def discard(self, consumer_id: str, delivery_tag: str) -> None:
        for queue in self._holding_queues(consumer_id):
            with self.client.pipeline(transaction=self.cluster is None) as pipe:
                pipe.hdel(self.keys.unacked(queue), delivery_tag)
                pipe.zrem(self.keys.unacked_index(queue), delivery_tag)
                pipe.srem(self.keys.consumer(consumer_id, queue), delivery_tag)
                pipe.execute()

    def _refuse_on_cluster(self, what: str) -> None:
        if self.cluster is not None:
            raise ConfigurationError(
                f"{what} is not carried by a Redis Cluster broker (redis+cluster://) in this "
                f"version of fastq; {redis_cluster.CELERY_CANNOT_SHARE}"
            )

    def control_channel(self) -> ControlChannel:
        from fastq.brokers.redis_control import RedisControlChannel

        self._refuse_on_cluster("remote control (inspect, control, broadcast revoke)")
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

        self._refuse_on_cluster("Celery's event stream")
        # Short timeouts, as the control listener's: the prefork supervisor publishes from its loop.
        client = self.redis_client(
            socket_connect_timeout=CONTROL_TIMEOUT, socket_timeout=CONTROL_TIMEOUT
        )
        exchange = str(self.conf.event_exchange)
        return RedisEventPublisher(client, self.prefix, self.url, exchange, hostname)

    def purge(self, queue: str) -> int:
        keys = self.keys.queue_keys(queue)
        with self.client.pipeline(transaction=self.cluster is None) as pipe:
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
