"""Celery's events over Redis, as kombu sends them.

On Redis, Celery makes its ``celeryev`` topic exchange a fanout one (``celery/events/event.py``),
and kombu emulates a fanout exchange with pub/sub: each message is a kombu envelope (the body
base64 JSON, header ``hostname``) PUBLISHed on ``/<db>.<exchange>/<routing key>`` (kombu's default
``fanout_prefix`` and ``fanout_patterns``; pub/sub ignores databases, hence the number). A
receiver (``celery events``, Flower) PSUBSCRIBEs ``/<db>.celeryev/*``. ``global_keyprefix``
prefixes the channel, as kombu's.
"""

from __future__ import annotations

import redis

from fastq import _core
from fastq.errors import BrokerConnectionError
from fastq.redis_errors import redis_failure


class RedisEventPublisher:
    """Publishes event messages on the broker's Redis: each batch's commands are built whole in
    Rust (``_core.redis_event_command``) and written in one go on a connection of the client's
    pool, then their replies read (an error reply fails the batch)."""

    def __init__(
        self, client: redis.Redis, prefix: str, url: str, exchange: str, hostname: str
    ) -> None:
        self.client = client
        self.url = url
        self.exchange = exchange
        self.hostname = hostname
        db = int(client.connection_pool.connection_kwargs.get("db") or 0)
        self.topic = f"{prefix}/{db}.{exchange}/"

    def publish(self, messages: list[tuple[str, bytes]]) -> None:
        if not messages:
            return
        packed = b"".join(
            _core.redis_event_command(
                self.topic + routing_key, body, self.hostname, self.exchange, routing_key
            )
            for routing_key, body in messages
        )
        pool = self.client.connection_pool
        try:
            connection = pool.get_connection()
            try:
                connection.send_packed_command([packed])
                for _ in messages:
                    connection.read_response()  # an error reply raises
            except BaseException:
                connection.disconnect()  # a reply may be left unread: out of step
                raise
            finally:
                pool.release(connection)
        except redis.RedisError as exc:
            raise BrokerConnectionError(
                redis_failure("cannot send events to", self.url, exc)
            ) from exc

    def close(self) -> None:
        self.client.close()
