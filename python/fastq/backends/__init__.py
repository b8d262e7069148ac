"""Result backends by URL scheme."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastq.backends.base import Backend, DisabledBackend
from fastq.errors import ConfigurationError

if TYPE_CHECKING:
    from fastq.app import App

__all__ = ["Backend", "DisabledBackend", "backend_from_url"]


def backend_from_url(app: App, url: str | None) -> Backend:
    """The backend for ``url``; ``None`` gives the disabled backend."""
    if not url:
        return DisabledBackend(app)
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss"):
        from fastq.backends.redis import RedisBackend

        return RedisBackend(app, url)
    if scheme == "sqlite":
        from fastq.backends.sqlite import SQLiteBackend

        return SQLiteBackend(app, url)
    if scheme in ("memory", "cache+memory"):
        from fastq.backends.memory import MemoryBackend

        return MemoryBackend(app, url)
    if scheme == "rpc":
        from fastq.backends.rpc import RpcBackend

        return RpcBackend(app, url)
    if scheme in ("rabbitmq", "rabbitmqs"):
        from fastq.backends.rabbitmq import RabbitMQBackend

        return RabbitMQBackend(app, url)
    raise ConfigurationError(
        f"result backend {scheme}:// is not supported; use redis://, rediss://, rpc://, "
        "rabbitmq://, sqlite:///path.db or cache+memory://"
    )
