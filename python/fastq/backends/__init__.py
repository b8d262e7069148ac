"""Result backends by URL scheme."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastq.backends.base import Backend, DisabledBackend
from fastq.errors import ConfigurationError

if TYPE_CHECKING:
    from fastq.config import Config

__all__ = ["Backend", "DisabledBackend", "backend_from_url"]


def backend_from_url(url: str | None, conf: Config, oid: str) -> Backend:
    """The backend for ``url``; ``None`` gives the disabled backend. ``oid`` is the client's id
    (``App.oid``), which names the rpc:// reply queue."""
    if not url:
        return DisabledBackend(conf)
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "sentinel", "redis+cluster", "rediss+cluster"):
        from fastq.backends.redis import RedisBackend

        return RedisBackend(conf, url)
    if scheme == "sqlite":
        from fastq.backends.sqlite import SQLiteBackend

        return SQLiteBackend(conf, url)
    if scheme in ("memory", "cache+memory"):
        from fastq.backends.memory import MemoryBackend

        return MemoryBackend(conf, url)
    if scheme == "rpc":
        from fastq.backends.rpc import RpcBackend

        return RpcBackend(conf, url, oid)
    if scheme in ("rabbitmq", "rabbitmqs"):
        from fastq.backends.rabbitmq import RabbitMQBackend

        return RabbitMQBackend(conf, url)
    raise ConfigurationError(
        f"result backend {scheme}:// is not supported; use redis://, rediss://, sentinel://, "
        "redis+cluster://, "
        "rpc://, rabbitmq://, sqlite:///path.db or cache+memory://"
    )
