"""Brokers by URL scheme."""

from __future__ import annotations

from fastq.brokers.base import Broker, Consumer, Delivery
from fastq.config import Config
from fastq.errors import ConfigurationError
from fastq.urls import redact

__all__ = ["Broker", "Consumer", "Delivery", "broker_from_url"]


def broker_from_url(url: str, conf: Config) -> Broker:
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "sentinel", "redis+cluster", "rediss+cluster"):
        from fastq.brokers.redis import RedisBroker

        return RedisBroker(url, conf)
    if scheme == "sqlite":
        from fastq.brokers.sqlite import SQLiteBroker

        return SQLiteBroker(url, conf)
    if scheme == "memory":
        from fastq.brokers.memory import MemoryBroker

        return MemoryBroker(url, conf)
    if scheme in ("amqp", "pyamqp", "amqps"):
        from fastq.brokers.amqp import AmqpBroker

        return AmqpBroker(url, conf)
    raise ConfigurationError(
        f"broker URL {redact(url)}: the scheme {scheme}:// is not supported; use redis://, "
        "rediss://, sentinel://, redis+cluster://, amqp://, amqps://, sqlite:///path.db or memory://"
    )
