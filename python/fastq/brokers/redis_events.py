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

from fastq.brokers.redis_control import json_envelope
from fastq.errors import BrokerConnectionError
from fastq.redis_errors import redis_failure


def event_envelope(body: bytes, hostname: str, exchange: str, routing_key: str) -> bytes:
    """A transient kombu Redis message around a JSON ``body``."""
    return json_envelope(body, {"hostname": hostname}, exchange, routing_key)


class RedisEventPublisher:
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
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for routing_key, body in messages:
                    data = event_envelope(body, self.hostname, self.exchange, routing_key)
                    pipe.publish(self.topic + routing_key, data)
                pipe.execute()
        except redis.RedisError as exc:
            raise BrokerConnectionError(
                redis_failure("cannot send events to", self.url, exc)
            ) from exc

    def close(self) -> None:
        self.client.close()
