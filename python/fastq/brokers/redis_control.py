"""Remote control over Redis: commands on a pub/sub channel, replies on a list per command.

Pub/sub reaches exactly the workers subscribed when the command is sent, which is what a
broadcast means. Replies go to the list ``fastq.reply.<ticket>`` (RPUSH, with a TTL), so a reply
that arrives before the sender starts waiting is kept, and the sender BLPOPs it. These are
fastq's own keys; Celery's pidbox (``/0.celery.pidbox``) is not spoken.
"""

from __future__ import annotations

import time
from typing import Any

import redis

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
from fastq.redis_errors import redis_failure

CHANNEL = "fastq.control"
REPLY_KEY = "fastq.reply."


class RedisControlChannel(ControlChannel):
    def __init__(
        self, client: redis.Redis, prefix: str, url: str, listener: redis.Redis | None = None
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.url = url
        #: What ``listen()`` uses (a worker's short-timeout client); ``client`` if not given.
        self.listener = listener if listener is not None else client

    def _error(self, what: str, exc: Exception) -> BrokerConnectionError:
        return BrokerConnectionError(redis_failure(f"cannot {what} on", self.url, exc))

    def broadcast(
        self, command: ControlCommand, timeout: float, limit: int | None
    ) -> list[dict[str, Any]]:
        key = f"{self.prefix}{REPLY_KEY}{command.ticket}"
        try:
            self.client.publish(self.prefix + CHANNEL, command.encode())
            if not command.reply:
                return []
            replies: list[dict[str, Any]] = []
            deadline = time.monotonic() + timeout
            while limit is None or len(replies) < limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                item: Any = self.client.blpop([key], timeout=max(remaining, 0.01))
                if item is None:
                    break
                reply = decode_reply(item[1])
                if reply is not None:
                    replies.append(reply)
            self.client.delete(key)
        except redis.RedisError as exc:
            raise self._error("send a control command", exc) from exc
        return replies

    def listen(self) -> ControlListener:
        return RedisControlListener(self)


class RedisControlListener:
    def __init__(self, channel: RedisControlChannel) -> None:
        self.channel = channel
        try:
            self.pubsub = channel.listener.pubsub(ignore_subscribe_messages=True)
            self.pubsub.subscribe(channel.prefix + CHANNEL)
        except redis.RedisError as exc:
            raise channel._error("subscribe to control commands", exc) from exc

    def fetch(self, timeout: float) -> list[ControlCommand]:
        commands: list[ControlCommand] = []
        try:
            message = self.pubsub.get_message(timeout=timeout)
            while message is not None:
                if message.get("type") == "message":
                    command = decode_command(message["data"])
                    if command is not None:
                        commands.append(command)
                message = self.pubsub.get_message(timeout=0)
        except redis.RedisError as exc:
            raise self.channel._error("read control commands", exc) from exc
        return commands

    def reply(self, command: ControlCommand, hostname: str, reply: Any) -> None:
        key = f"{self.channel.prefix}{REPLY_KEY}{command.ticket}"
        try:
            with self.channel.listener.pipeline(transaction=False) as pipe:
                pipe.rpush(key, encode_reply(hostname, reply))
                pipe.expire(key, int(CONTROL_TTL))
                pipe.execute()
        except redis.RedisError as exc:
            raise self.channel._error("send a control reply", exc) from exc

    def close(self) -> None:
        try:
            self.pubsub.close()
        except redis.RedisError:
            pass
