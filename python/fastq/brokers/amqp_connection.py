"""Connecting to RabbitMQ: the URL read as kombu reads it (one, or Celery's ``;``-separated
list of a cluster's nodes with ``broker_failover_strategy``), the TLS files of
``broker_use_ssl`` for the Rust side, and the py-amqp connections fastq still opens from Python
(queue admin, remote control, the RabbitMQ result backends), with why one failed in the Rust
side's words. The Rust consumer and publisher connect in
``rust/fastq-core/src/amqp/connection.rs``, failing over the same way.
"""

from __future__ import annotations

import os
import random
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import amqp

from fastq import _core
from fastq.config import FAILOVER_STRATEGIES, Config
from fastq.errors import BrokerConnectionError, ConfigurationError
from fastq.urls import redact

T = TypeVar("T")

SCHEMES = ("amqp", "pyamqp", "amqps")

#: What a broken connection or channel looks like to py-amqp.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    amqp.exceptions.AMQPError,
)

#: The ``broker_use_ssl`` keys the Rust consumer and publisher take: PEM files.
TLS_FILES = ("ca_certs", "certfile", "keyfile")


@dataclass(frozen=True)
class AmqpParams:
    """An ``amqp://``/``pyamqp://``/``amqps://`` URL read as kombu reads it."""

    host: str
    port: int
    userid: str
    password: str
    vhost: str
    ssl: bool

    @classmethod
    def from_url(cls, url: str) -> AmqpParams:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ConfigurationError(f"{redact(url)} is not an AMQP URL ({', '.join(SCHEMES)})")
        ssl = scheme == "amqps"
        # kombu: the path after the first "/" is the vhost; none (or "") means "/".
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        try:
            port = parts.port or (5671 if ssl else 5672)
        except ValueError as exc:
            raise ConfigurationError(f"invalid port in {redact(url)}: {exc}") from None
        return cls(
            host=parts.hostname or "localhost",
            port=port,
            userid=unquote(parts.username) if parts.username is not None else "guest",
            password=unquote(parts.password) if parts.password is not None else "guest",
            vhost=unquote(path) or "/",
            ssl=ssl,
        )

    def lapin_url(self) -> str:
        """The same broker as an RFC AMQP URI (the vhost percent-encoded), for the Rust side."""
        scheme = "amqps" if self.ssl else "amqp"
        user = quote(self.userid, safe="")
        password = quote(self.password, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}:{password}@{host}:{self.port}/{quote(self.vhost, safe='')}"


def split_urls(url: str) -> list[str]:
    """A broker URL, or Celery's list of them in one string (``;``-separated)."""
    return [u.strip() for u in url.split(";") if u.strip()]


@dataclass
class AmqpServers:
    """The broker's nodes (one URL, or one per node of a cluster) and which one a new
    connection tries first: the first at the start, as kombu does; after a failure the next one
    (``round-robin``) or another one at random (``shuffle``), the failed one being tried last.
    Shared by a broker's py-amqp connections, so one that saw a node die spares the others."""

    urls: tuple[str, ...]
    params: tuple[AmqpParams, ...]
    strategy: str = FAILOVER_STRATEGIES[0]
    current: int = field(default=0, compare=False)

    @classmethod
    def from_url(cls, url: str, strategy: str | None = None) -> AmqpServers:
        """``strategy``: ``broker_failover_strategy`` (checked when set; None: round-robin)."""
        urls = tuple(split_urls(url))
        if not urls:
            raise ConfigurationError("no broker URL given")
        params = tuple(AmqpParams.from_url(u) for u in urls)
        return cls(urls, params, strategy or FAILOVER_STRATEGIES[0])

    def lapin_urls(self) -> list[str]:
        """Each node as the Rust side takes it."""
        return [p.lapin_url() for p in self.params]

    def order(self) -> list[int]:
        """The nodes to try, in order: the current one first."""
        n = len(self.urls)
        rest = [(self.current + i) % n for i in range(1, n)]
        if self.strategy == "shuffle":
            random.shuffle(rest)
        return [self.current % n, *rest]

    def connected(self, index: int) -> None:
        self.current = index

    def advance(self) -> None:
        """The current node failed: the next connection starts at another one."""
        n = len(self.urls)
        if n > 1:
            step = random.randrange(1, n) if self.strategy == "shuffle" else 1
            self.current = (self.current + step) % n


def tls_files(use_ssl: Any) -> dict[str, str] | None:
    """``broker_use_ssl`` as the Rust side takes it: the PEM files of a mapping (a CA to trust,
    a client certificate and its key), None for anything else.

    The server's certificate is always verified (against the system's authorities and
    ``ca_certs``) and its name checked against the URL's host, so a mapping that asks for
    something else (``cert_reqs`` other than ``CERT_REQUIRED``, ``server_hostname``, ciphers)
    is refused rather than quietly not honoured."""
    if not isinstance(use_ssl, Mapping):
        return None
    files: dict[str, str] = {}
    for key, value in use_ssl.items():
        if key in TLS_FILES:
            if value is not None:
                files[key] = os.fspath(value)
        elif key != "cert_reqs" or value not in (ssl.CERT_REQUIRED, None):
            raise ConfigurationError(
                f"broker_use_ssl[{key!r}] = {value!r} is not supported: fastq takes "
                f"{', '.join(TLS_FILES)} and cert_reqs=ssl.CERT_REQUIRED (the server's "
                "certificate is always verified)"
            )
    return files


def why_not_connected(exc: BaseException, p: AmqpParams) -> str:
    """Why py-amqp could not connect, in the words of the Rust side, which words it (never the
    password): the exception sorted into what an operator has to change."""
    failure: Any = "other"
    if isinstance(exc, amqp.exceptions.AccessRefused):
        failure = "login_refused"
    elif isinstance(exc, amqp.exceptions.NotAllowed):
        failure = "vhost_refused"
    elif isinstance(exc, ConnectionRefusedError):
        failure = "port_refused"
    elif isinstance(exc, ssl.SSLCertVerificationError) and p.ssl:
        failure = "untrusted"
    elif isinstance(exc, ssl.SSLError) and p.ssl:
        alert = "alert" in str(exc) and "certificate" in str(exc).lower()
        failure = "client_certificate_refused" if alert else "not_tls"
    elif isinstance(exc, socket.gaierror):
        failure = "unresolved"
    elif isinstance(exc, TimeoutError):
        failure = "no_answer"
    return _core.amqp_connect_failure(
        failure, str(exc), host=p.host, port=p.port, user=p.userid, vhost=p.vhost, tls=p.ssl
    )


def connect(
    servers: AmqpServers,
    conf: Config,
    failed: str,
    set_up: Callable[[amqp.Connection], T],
    **options: Any,
) -> tuple[amqp.Connection, T]:
    """Opens a py-amqp connection to the first node of ``servers`` that answers (in their
    order) and runs ``set_up`` on it (a channel, declarations); when that fails on every node,
    a ``BrokerConnectionError`` says ``<failed>: <why>`` (why for each node, with several).
    ``options`` go to ``amqp.Connection`` (heartbeat, timeouts)."""
    reasons = []
    last: BrokerConnectionError | None = None
    for index in servers.order():
        p = servers.params[index]
        try:
            opened = _connect_one(p, conf, set_up, options)
        except BrokerConnectionError as exc:
            if len(servers.urls) == 1:
                raise BrokerConnectionError(f"{failed}: {exc}") from exc.__cause__
            at = f"{p.host}:{p.port}"
            reasons.append(str(exc) if at in str(exc) else f"{at}: {exc}")
            last = exc
            continue
        servers.connected(index)
        return opened
    raise BrokerConnectionError(
        f"{failed}: none of the {len(servers.urls)} brokers answered: {'; '.join(reasons)}"
    ) from (last.__cause__ if last is not None else None)


def _connect_one(
    p: AmqpParams, conf: Config, set_up: Callable[[amqp.Connection], T], options: dict[str, Any]
) -> tuple[amqp.Connection, T]:
    """One node: ``BrokerConnectionError`` saying why it failed (caused by py-amqp's error)."""
    conn = amqp.Connection(
        host=f"{p.host}:{p.port}",
        userid=p.userid,
        password=p.password,
        virtual_host=p.vhost,
        ssl=conf.broker_use_ssl or p.ssl,
        connect_timeout=connect_timeout(conf),
        **options,
    )
    try:
        conn.connect()
        return conn, set_up(conn)
    except CONNECTION_ERRORS as exc:
        discard(conn)
        raise BrokerConnectionError(why_not_connected(exc, p)) from exc


def connect_timeout(conf: Config) -> float:
    """Seconds a connection may take (``broker_transport_options["connect_timeout"]``)."""
    return float(conf.broker_transport_options.get("connect_timeout", 5))


def discard(conn: Any) -> None:
    """Forgets a broken connection without talking to the broker (which may not answer)."""
    try:
        conn.collect()
    except Exception:  # the socket is gone already
        pass


class AmqpChannel:
    """One py-amqp connection and channel for this process: reopened after a fork or when it
    broke; used under a lock because py-amqp is not thread-safe."""

    def __init__(self, url: str, servers: AmqpServers, conf: Config, confirm: bool = False) -> None:
        self.url = url
        self.servers = servers
        self.conf = conf
        self.confirm = confirm
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._connection: amqp.Connection | None = None
        self._channel: Any = None
        #: Queues (by name) and exchanges declared on the current connection; redone after a
        #: reconnect.
        self.declared: set[str] = set()

    @property
    def lock(self) -> threading.RLock:
        """The lock to hold while using the channel; a fresh one (and no connection) in a
        forked child, where the parent's lock may be held and its socket is not ours."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._connection = self._channel = None
            self.declared = set()
            self._lock = threading.RLock()
        return self._lock

    def channel(self) -> Any:
        """The channel, connecting first if needed; call it with ``lock`` held."""
        if self._channel is None:
            self._open()
        return self._channel

    def _open(self) -> None:
        def set_up(conn: amqp.Connection) -> Any:
            channel = conn.channel()
            if self.confirm:
                channel.confirm_select()
            return channel

        self._connection, self._channel = connect(
            self.servers,
            self.conf,
            f"cannot connect to {redact(self.url)}",
            set_up,
            # Nothing reads this connection between calls, so it could not answer heartbeats;
            # a broken connection shows on the next call, which reconnects.
            heartbeat=0,
        )
        self.declared = set()

    def reset(self) -> None:
        """Drops a connection that failed; the next call reconnects, to another node first if
        there are several."""
        conn, self._connection, self._channel = self._connection, None, None
        self.declared = set()
        if conn is not None:
            discard(conn)
            self.servers.advance()

    def close(self) -> None:
        conn, self._connection, self._channel = self._connection, None, None
        if conn is not None and self._pid == os.getpid():
            try:
                conn.close()
            except Exception:  # already broken: nothing left to tell the broker
                discard(conn)

    @property
    def connection(self) -> amqp.Connection | None:
        return self._connection
