"""Redis Cluster, fastq's own layout (Celery has none: a Celery worker cannot share these queues).

The URL lists seed nodes, ``;``-separated: ``redis+cluster://:password@h1:7000;redis+cluster://h2``
(``rediss+cluster://`` for TLS, with redis-py's ``ssl_*`` options in the query). The user,
password and options of the first part that has them are every node's; a cluster has database 0
only. The Rust consumer and publisher read the URL as it is; redis-py's ``RedisCluster`` serves
the Python side (:func:`client`): ETA deferral, quarantine, purge, and the result backend.

Every key of one queue carries ``{queue}`` as its hash tag (``_core.RedisKeys(cluster=True)``),
so a queue lives in one slot and its claim and restore scripts run on one master; queues spread
over the masters by their names. Result keys spread by task id; a group's chord counter carries
the group's hash tag (see ``fastq.backends.redis``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.connection import Encoder
from redis.exceptions import RedisClusterException

from fastq.errors import ConfigurationError
from fastq.urls import redact

SCHEMES = ("redis+cluster", "rediss+cluster")
DEFAULT_PORT = 6379
#: What a Celery user would try, and why it cannot work.
CELERY_CANNOT_SHARE = (
    "a Redis Cluster broker is fastq's own layout (each queue's keys hash-tagged into one slot); "
    "Celery has no Redis Cluster transport, so Celery workers and clients cannot share these "
    "queues: run fastq on both sides"
)


def is_cluster_url(url: str | None) -> bool:
    return bool(url) and str(url).split("://", 1)[0].lower() in SCHEMES


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed cluster URL."""

    url: str
    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    tls: bool = False
    #: redis-py keyword options from the query (``ssl_cert_reqs``...).
    options: tuple[tuple[str, str], ...] = ()


def parse(url: str) -> ClusterSpec:
    """Raises ``ConfigurationError`` for anything that cannot work (another scheme among the
    seeds, a database other than 0, a bad port)."""
    shown = redact(url)
    nodes: list[tuple[str, int]] = []
    username = password = None
    tls: bool | None = None
    options: list[tuple[str, str]] = []
    for part in (p.strip() for p in url.split(";")):
        if not part:
            continue
        scheme = part.split("://", 1)[0].lower()
        if scheme not in SCHEMES:
            raise ConfigurationError(
                f"{shown}: every ;-separated part of a Redis Cluster URL must be "
                "redis+cluster://host:port (or rediss+cluster://)"
            )
        if tls is not None and tls != (scheme == SCHEMES[1]):
            raise ConfigurationError(f"{shown}: mixes TLS and plain seeds")
        tls = scheme == SCHEMES[1]
        try:
            parsed = urlsplit(part)
            port = parsed.port or DEFAULT_PORT
        except ValueError as exc:
            raise ConfigurationError(f"{shown}: {exc}") from None
        if parsed.path.strip("/") not in ("", "0"):
            raise ConfigurationError(
                f"{shown}: names the database {parsed.path.strip('/')!r}: a Redis Cluster has "
                "database 0 only"
            )
        nodes.append((parsed.hostname or "localhost", port))
        if password is None and parsed.password is not None:
            username = unquote(parsed.username) if parsed.username else None
            password = unquote(parsed.password)
        if not options and parsed.query:
            options = parse_qsl(parsed.query)
    if not nodes:
        raise ConfigurationError(f"{shown}: a Redis Cluster URL names at least one node")
    return ClusterSpec(url, nodes, username, password, bool(tls), tuple(options))


def client(spec: ClusterSpec, **options: object) -> redis.Redis:
    """A redis-py ``RedisCluster`` of the cluster, made on first use (:class:`LazyCluster`).
    Typed as ``redis.Redis``: it answers the single-slot commands fastq sends (each names keys
    of one slot) in the same way."""
    kwargs: dict[str, object] = {
        "startup_nodes": [ClusterNode(host, port) for host, port in spec.nodes],
        "username": spec.username,
        "password": spec.password,
        **options,
    }
    kwargs.pop("health_check_interval", None)  # per-connection; RedisCluster has no pool of one
    if spec.tls:
        kwargs["ssl"] = True
        kwargs.update(dict(spec.options))
    return cast(redis.Redis, LazyCluster(lambda: RedisCluster(**kwargs), spec.url))  # type: ignore[arg-type]


class LazyCluster:
    """A ``RedisCluster`` made on first use: redis-py's reads the slot map as it is made, and
    raises if no seed answers, where a plain client connects on its first command. A broker or
    backend object is made before anything is sent (an app's configuration, a worker starting
    while the cluster is down): its first command raises ``redis.ConnectionError`` instead,
    which callers already retry."""

    def __init__(self, factory: Callable[[], RedisCluster], url: str) -> None:
        self._factory = factory
        self._url = url
        self._client: RedisCluster | None = None

    def _made(self) -> RedisCluster:
        if self._client is None:
            try:
                self._client = self._factory()
            except RedisClusterException as exc:
                raise redis.ConnectionError(
                    f"no seed of the Redis Cluster {redact(self._url)} answered: {exc}"
                ) from exc
        return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made(), name)

    def register_script(self, script: str) -> Script:
        return Script(self, script)  # type: ignore[arg-type]

    def get_encoder(self) -> Encoder:
        """What ``Script`` hashes with (redis-py's default encoding), without connecting."""
        return Encoder("utf-8", "strict", False)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
