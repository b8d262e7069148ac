"""Remote control over Redis, on Celery's pidbox as kombu lays it out, so ``celery inspect`` and
``celery control`` reach fastq workers and fastq's ``app.control`` reaches Celery workers.

kombu emulates the pidbox's two exchanges on Redis:

- ``celery.pidbox`` is a fanout exchange, i.e. pub/sub: a command is a kombu envelope (the body
  base64 JSON) PUBLISHed on ``/<db>.celery.pidbox`` (pub/sub ignores the database, hence the
  number; with kombu's default ``fanout_patterns`` a routing key would be appended after ``/``,
  and the pidbox sends none). Each worker declares its node queue ``<hostname>.celery.pidbox``,
  bound in the set ``_kombu.binding.celery.pidbox``, and subscribes to the channel.
- ``reply.celery.pidbox`` is a direct exchange: the sender declares its reply queue
  ``<oid>.reply.celery.pidbox`` bound with routing key ``<oid>`` in
  ``_kombu.binding.reply.celery.pidbox``; a worker looks the binding up and LPUSHes its reply
  (``{hostname: reply}``, headers ``ticket`` and ``clock``) on that list, which the sender pops.

Both bindings have an expiry (the pidbox queues' ``x-expires``): kombu 5.7 records a deadline per
exchange in ``_kombu.binding_deadlines`` and refreshes it while it consumes; this does the same.
Every key and channel carries ``global_keyprefix``, as kombu's.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import redis

from fastq.brokers.pidbox import (
    EXCHANGE,
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
from fastq.redis_errors import redis_failure

log = logging.getLogger("fastq.broker")

#: kombu's separator of the fields of a binding (routing key, pattern, queue).
SEP = "\x06\x16"
BINDING = "_kombu.binding."
DEADLINES = "_kombu.binding_deadlines"
#: A binding is kept this long after its last refresh (ms): kombu's floor for tables of
#: expiring queues, which the pidbox queues are (``control_queue_expires``, 10 s).
BINDING_TTL_MS = 3600 * 1000
#: How often a live listener refreshes its binding (seconds), a third of its lifetime as kombu.
REFRESH_EVERY = BINDING_TTL_MS / 1000 / 3
#: How long a listener waits for Redis to confirm its subscription (seconds).
SUBSCRIBE_TIMEOUT = 5.0
#: The longest single BRPOP while collecting replies (seconds): below the client's socket
#: timeout, so a long collection never reads as a dead connection.
POP_SLICE = 1.0
#: A reply list nobody pops is dropped after this (ms), the reply queue's ``x-expires``.
REPLY_EXPIRES_MS = 10_000

# Adds a binding and pushes its exchange's deadline to now + ARGV[3] ms (server clock; never
# lowered, as other consumers of the exchange may hold a later one).
_BIND = """
redis.call('SADD', KEYS[1], ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], 'GT', now + tonumber(ARGV[3]), ARGV[2])
"""


def envelope(body: Any, headers: dict[str, Any], exchange: str, routing_key: str) -> bytes:
    """A kombu Redis message: JSON body, base64 in the envelope, transient."""
    return json_envelope(json.dumps(body, default=repr).encode(), headers, exchange, routing_key)


def json_envelope(body: bytes, headers: dict[str, Any], exchange: str, routing_key: str) -> bytes:
    """A transient kombu Redis message around a ``body`` already encoded as JSON."""
    # Base64 needs no JSON escaping: spliced in, not scanned by the encoder (a batch of task
    # events is a few hundred kB of it).
    rest = json.dumps(
        {
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "delivery_mode": 1,
                "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()
    return b'{"body": "' + base64.b64encode(body) + b'", ' + rest[1:]


def open_envelope(data: bytes | str) -> tuple[Any, dict[str, Any]] | None:
    """``(body, headers)`` of a kombu envelope with a JSON body, or None (logged) for anything
    else: a listener skips what it cannot read."""
    try:
        message = json.loads(data)
        if message.get("content-type") != "application/json":
            log.warning("ignored a control message of type %r", message.get("content-type"))
            return None
        raw = message["body"]
        properties = message.get("properties") or {}
        if properties.get("body_encoding") == "base64":
            raw = base64.b64decode(raw)
        return json.loads(raw), dict(message.get("headers") or {})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignored a control message that is not kombu's JSON (%s): %.200r", exc, data)
        return None


class _Mailbox:
    """This process's reply queue (kombu's oid: one per process) and the replies it popped for
    another ticket than the one being collected (another thread's broadcast)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.oid = str(uuid.uuid4())
        self.unclaimed: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.lock = threading.Lock()


_mailbox: _Mailbox | None = None


def mailbox() -> _Mailbox:
    global _mailbox
    if _mailbox is None or _mailbox.pid != os.getpid():  # a forked child has its own
        _mailbox = _Mailbox()
    return _mailbox


class RedisControlChannel(ControlChannel):
    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        url: str,
        listener: redis.Redis | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.url = url
        #: What ``listen()`` uses (a worker's short-timeout client); ``client`` if not given.
        self.listener = listener if listener is not None else client
        db = int(client.connection_pool.connection_kwargs.get("db") or 0)
        #: The pub/sub channel of commands, as kombu names it (with its default fanout_prefix).
        self.topic = f"{prefix}/{db}.{EXCHANGE}"
        self._bind = client.register_script(_BIND)

    def _error(self, what: str, exc: Exception) -> BrokerConnectionError:
        return BrokerConnectionError(redis_failure(f"cannot {what} on", self.url, exc))

    def bind(self, client: redis.Redis, exchange: str, routing_key: str, queue: str) -> None:
        self._bind(
            keys=[f"{self.prefix}{BINDING}{exchange}", f"{self.prefix}{DEADLINES}"],
            args=[SEP.join([routing_key, "", queue]), exchange, BINDING_TTL_MS],
            client=client,
        )

    def broadcast(
        self, command: ControlCommand, timeout: float, limit: int | None
    ) -> list[dict[str, Any]]:
        box = mailbox()
        body = command_body(command, box.oid)
        key = f"{self.prefix}{reply_queue(box.oid)}"
        try:
            if command.reply:
                # Declared on every call, as cheap as a ping: the binding may have been swept
                # or flushed since the last one, and a worker replies only where it is bound.
                self.bind(self.client, REPLY_EXCHANGE, box.oid, reply_queue(box.oid))
            headers = command_headers(timeout)
            self.client.publish(self.topic, envelope(body, headers, EXCHANGE, ""))
            if not command.reply:
                return []
            return self._collect(box, key, command.ticket, timeout, limit)
        except redis.RedisError as exc:
            raise self._error("send a control command", exc) from exc

    def _collect(
        self, box: _Mailbox, key: str, ticket: str, timeout: float, limit: int | None
    ) -> list[dict[str, Any]]:
        with box.lock:
            replies = box.unclaimed.pop(ticket, [])
        deadline = time.monotonic() + timeout
        lost = 0
        while limit is None or len(replies) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item: Any = self.client.brpop([key], timeout=max(min(remaining, POP_SLICE), 0.01))
            except redis.ConnectionError:
                # The replies wait in the list: a connection the server dropped (a failover, a
                # CLIENT KILL) costs a reconnection, not the replies. Twice in a row is an outage.
                lost += 1
                if lost > 1:
                    raise
                continue
            lost = 0
            if item is None:
                continue
            opened = open_envelope(item[1])
            got = None if opened is None else reply_from(*opened, ticket)
            if got is None:
                continue
            this, reply = got
            if this == ticket:
                replies.append(reply)
            else:
                with box.lock:
                    box.unclaimed[this].append(reply)
        return replies

    def listen(self) -> ControlListener:
        return RedisControlListener(self, None)

    def listen_as(self, hostname: str) -> ControlListener:
        return RedisControlListener(self, hostname)


class RedisControlListener:
    """A worker's node on the pidbox: its queue's binding, and the subscription to commands."""

    def __init__(self, channel: RedisControlChannel, hostname: str | None) -> None:
        self.channel = channel
        self.hostname = hostname
        self._refreshed = 0.0
        #: Messages read while waiting for the subscription's confirmation.
        self._early: list[Any] = []
        try:
            self._refresh()
            self.pubsub = channel.listener.pubsub()
            self.pubsub.psubscribe(channel.topic)  # as kombu subscribes to fanout topics
            # Subscribed only once Redis confirms: a command published before then is not heard,
            # and a worker must not say "ready" (nor a test send) until it would be.
            deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
            while time.monotonic() < deadline:
                message = self.pubsub.get_message(timeout=0.1)
                if message is None:
                    continue
                if message.get("type") == "psubscribe":
                    break
                self._early.append(message)
            else:
                raise redis.TimeoutError("no confirmation of the subscription")
        except redis.RedisError as exc:
            raise channel._error("subscribe to control commands", exc) from exc

    def _refresh(self) -> None:
        """Declares (and keeps alive) the node queue's binding, as a Celery worker's."""
        if self.hostname is not None:
            self.channel.bind(self.channel.listener, EXCHANGE, "", node_queue(self.hostname))
        self._refreshed = time.monotonic()

    def fetch(self, timeout: float) -> list[ControlCommand]:
        commands: list[ControlCommand] = []
        try:
            if time.monotonic() - self._refreshed > REFRESH_EVERY:
                self._refresh()
            early, self._early = self._early, []
            message = early.pop(0) if early else self.pubsub.get_message(timeout=timeout)
            while message is not None:
                if message.get("type") in ("message", "pmessage"):
                    opened = open_envelope(message["data"])
                    if opened is not None:
                        command = command_from(*opened)
                        if command is not None:
                            commands.append(command)
                message = early.pop(0) if early else self.pubsub.get_message(timeout=0)
        except redis.RedisError as exc:
            raise self.channel._error("read control commands", exc) from exc
        return commands

    def reply(self, command: ControlCommand, hostname: str, reply: Any) -> None:
        """Publishes ``{hostname: reply}`` to the command's reply exchange as kombu routes a
        direct exchange: to every queue bound with the routing key; none bound, none sent."""
        if command.reply_to is None:
            return
        exchange = command.reply_exchange or REPLY_EXCHANGE
        prefix = self.channel.prefix
        client = self.channel.listener
        data = envelope({hostname: reply}, reply_headers(command), exchange, command.reply_to)
        try:
            queues = []
            for raw in client.smembers(f"{prefix}{BINDING}{exchange}"):  # type: ignore[union-attr]
                member = raw.decode() if isinstance(raw, bytes) else str(raw)
                fields = member.split(SEP)
                if len(fields) == 3 and fields[0] == command.reply_to:
                    queues.append(fields[2])
            if not queues:
                log.debug("no queue bound for the reply to %r; not sent", command.method)
                return
            with client.pipeline(transaction=False) as pipe:
                for queue in queues:
                    pipe.lpush(f"{prefix}{queue}", data)
                    pipe.pexpire(f"{prefix}{queue}", REPLY_EXPIRES_MS)
                pipe.execute()
        except redis.RedisError as exc:
            raise self.channel._error("send a control reply", exc) from exc

    def close(self) -> None:
        try:
            self.pubsub.close()
        except redis.RedisError:
            pass
