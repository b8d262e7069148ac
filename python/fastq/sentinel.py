"""Redis Sentinel, configured as kombu (broker) and Celery (result backend) configure it.

The URL lists the sentinels, ``;``-separated: ``sentinel://:password@s1:26379/0;sentinel://s2``
(port 26379 by default). The user, password and database of the *first* part are the master's;
the sentinels' own credentials, if they require any, are ``sentinel_kwargs`` in the transport
options (``broker_transport_options`` for the broker, ``result_backend_transport_options`` for
the backend), next to the required ``master_name`` and the optional ``min_other_sentinels``.

The Rust consumer and publisher get all of it in one URL of their own (:func:`core_url`): the
parts as given, with the options in the query. redis-py's ``redis.sentinel.Sentinel`` serves the
Python side (:func:`master_client`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import redis
from redis.sentinel import MasterNotFoundError, Sentinel

from fastq.errors import ConfigurationError
from fastq.urls import redact

SCHEME = "sentinel"
DEFAULT_PORT = 26379
#: The ``sentinel_kwargs`` fastq passes on (to redis-py and to the Rust consumer alike).
SENTINEL_KWARGS = ("password", "username", "socket_timeout")
#: Seconds a sentinel may take to accept a connection and to answer, unless
#: ``sentinel_kwargs['socket_timeout']`` says.
DEFAULT_TIMEOUT = 1.0


def is_sentinel_url(url: str | None) -> bool:
    return bool(url) and str(url).split("://", 1)[0].lower() == SCHEME


@dataclass(frozen=True)
class SentinelSpec:
    """A parsed Sentinel configuration."""

    url: str
    sentinels: list[tuple[str, int]]
    master_name: str
    username: str | None = None
    password: str | None = None
    db: int = 0
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)
    min_other_sentinels: int = 0


def parse(url: str, options: dict[str, Any], setting: str) -> SentinelSpec:
    """``url`` with the transport ``options`` (named ``setting`` in errors); raises
    ``ConfigurationError`` for anything that cannot work."""
    shown = redact(url)
    sentinels: list[tuple[str, int]] = []
    username = password = None
    db = 0
    for index, part in enumerate(p.strip() for p in url.split(";")):
        if not part:
            continue
        if part.split("://", 1)[0].lower() != SCHEME:
            raise ConfigurationError(
                f"{shown}: every ;-separated part of a Sentinel URL must be sentinel://host:port"
            )
        try:
            parsed = urlsplit(part)
            port = parsed.port or DEFAULT_PORT
        except ValueError as exc:
            raise ConfigurationError(f"{shown}: {exc}") from None
        if parsed.query:
            raise ConfigurationError(
                f"{shown}: options go in {setting} (master_name, sentinel_kwargs, ...), not in "
                "the URL"
            )
        sentinels.append((parsed.hostname or "localhost", port))
        if index == 0:
            username = unquote(parsed.username) if parsed.username else None
            password = unquote(parsed.password) if parsed.password else None
            path = parsed.path.strip("/")
            if path:
                if not path.isdigit():
                    raise ConfigurationError(f"{shown}: the database {path!r} is not a number")
                db = int(path)
    if not sentinels:
        raise ConfigurationError(f"{shown}: names no sentinel")
    master_name = options.get("master_name")
    if not master_name or not isinstance(master_name, str):
        raise ConfigurationError(
            f"{shown} is a Redis Sentinel URL, and {setting} has no 'master_name': set it to the "
            f"name the sentinels monitor the master under, e.g. {setting}="
            "{'master_name': 'mymaster'}"
        )
    kwargs = dict(options.get("sentinel_kwargs") or {})
    unknown = sorted(set(kwargs) - set(SENTINEL_KWARGS))
    if unknown:
        raise ConfigurationError(
            f"{setting}['sentinel_kwargs'] has {', '.join(unknown)}, which fastq does not pass "
            f"on to the sentinels (it does: {', '.join(SENTINEL_KWARGS)})"
        )
    if options.get("sentinel_fanout_compat"):
        raise ConfigurationError(
            f"{setting}['sentinel_fanout_compat']: fastq does not publish on the fanout topic of "
            "kombu < 5.4 (its workers and clients use kombu 5.4+'s)"
        )
    try:
        min_other = int(options.get("min_other_sentinels") or 0)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{setting}['min_other_sentinels'] must be a count") from None
    return SentinelSpec(
        url=url,
        sentinels=sentinels,
        master_name=master_name,
        username=username,
        password=password,
        db=db,
        sentinel_kwargs=kwargs,
        min_other_sentinels=min_other,
    )


def core_url(spec: SentinelSpec) -> str:
    """The URL the Rust consumer and publisher read: every sentinel, the master's credentials
    and db in the first part, the options in its query."""
    user = quote(spec.username or "", safe="")
    auth = ""
    if spec.username or spec.password:
        auth = f"{user}:{quote(spec.password or '', safe='')}@"
    query = [f"master_name={quote(spec.master_name, safe='')}"]
    kwargs = spec.sentinel_kwargs
    if kwargs.get("username"):
        query.append(f"sentinel_username={quote(str(kwargs['username']), safe='')}")
    if kwargs.get("password"):
        query.append(f"sentinel_password={quote(str(kwargs['password']), safe='')}")
    if kwargs.get("socket_timeout"):
        query.append(f"sentinel_timeout={float(kwargs['socket_timeout'])}")
    if spec.min_other_sentinels:
        query.append(f"min_other_sentinels={spec.min_other_sentinels}")
    (host, port), *others = spec.sentinels
    parts = [f"{SCHEME}://{auth}{_host(host)}:{port}/{spec.db}?{'&'.join(query)}"]
    parts += [f"{SCHEME}://{_host(h)}:{p}" for h, p in others]
    return ";".join(parts)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _Sentinel(Sentinel):
    """redis-py's ``Sentinel`` asking what the Rust side asks: ``SENTINEL
    get-master-addr-by-name`` (``SENTINEL MASTER`` with ``min_other_sentinels``), of each
    sentinel in turn. redis-py's own ``SENTINEL MASTERS`` names the new master only once the
    other replicas are reconfigured (``+switch-master``), ``get-master-addr-by-name`` as soon as
    the promotion is seen; in that gap a worker's Rust consumer would ack on the new master the
    task whose result its backend had just stored on the old one (lost with it when Sentinel
    demotes it)."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        failures = []
        for index, node in enumerate(self.sentinels):
            # redis-py's annotations of these replies change between versions (8.2 adds `bool`,
            # for its `return_responses` flag): the reply shapes are the server's, checked below.
            state: Any
            address: Any
            try:
                if self.min_other_sentinels:
                    state = node.sentinel_master(service_name)
                    address = (
                        (state["ip"], int(state["port"]))
                        if self.check_master_state(state, service_name)
                        else None
                    )
                else:
                    address = node.sentinel_get_master_addr_by_name(service_name)
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
                failures.append(f"{node} - {exc!r}")
                continue
            if address:
                self.sentinels[0], self.sentinels[index] = node, self.sentinels[0]
                host = address[0]
                return host.decode() if isinstance(host, bytes) else str(host), int(address[1])
        detail = f": {', '.join(failures)}" if failures else ""
        raise MasterNotFoundError(f"No master found for {service_name!r}{detail}")


def master_client(spec: SentinelSpec, **kwargs: Any) -> redis.Redis:
    """A redis-py client of the master the sentinels name (asked again on every reconnect);
    ``kwargs`` are the master connections' options."""
    sentinel_kwargs = dict(spec.sentinel_kwargs)
    # As the Rust side: a sentinel that cannot answer within a second is passed over.
    sentinel_kwargs.setdefault("socket_timeout", DEFAULT_TIMEOUT)
    sentinel_kwargs.setdefault("socket_connect_timeout", sentinel_kwargs["socket_timeout"])
    sentinel = _Sentinel(
        spec.sentinels,
        min_other_sentinels=spec.min_other_sentinels,
        sentinel_kwargs=sentinel_kwargs,
    )
    if spec.username:
        kwargs["username"] = spec.username
    if spec.password:
        kwargs["password"] = spec.password
    kwargs.setdefault("db", spec.db)
    return sentinel.master_for(spec.master_name, redis_class=redis.Redis, **kwargs)


#: How often a client in use asks the sentinels whether the master moved (as the Rust side).
RECHECK = 0.5
#: After a check no sentinel answered, the next waits this long (the master may be fine).
RECHECK_AFTER_FAILURE = 5.0


class MasterWatch:
    """Follows failovers for a :func:`master_client`: redis-py asks the sentinels only when it
    opens a connection, and a demoted master keeps its connections (and accepts writes, all
    lost) until Sentinel reconfigures it, seconds later. ``check()`` asks the sentinels (at most
    every ``RECHECK`` unless forced) and, when the master moved, drops the client's idle
    connections so that the next command goes to the new one. Returns the master's address, or
    None when not asked or no sentinel answered."""

    def __init__(self, client: redis.Redis) -> None:
        self.pool = client.connection_pool
        self.due = 0.0

    def check(self, force: bool = False) -> tuple[str, int] | None:
        now = time.monotonic()
        if not force and now < self.due:
            return None
        try:
            address: tuple[str, int] = self.pool.get_master_address()  # type: ignore[attr-defined]
        except (redis.RedisError, OSError):
            self.due = now + RECHECK_AFTER_FAILURE
            return None
        self.due = now + RECHECK
        return address
