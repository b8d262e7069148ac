"""What the two RabbitMQ result backends share: the connection, publishing a meta, reading one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import amqp

from fastq import errors, serialization, states
from fastq.backends.base import Backend
from fastq.brokers.amqp_connection import CONNECTION_ERRORS, AmqpChannel, AmqpServers
from fastq.brokers.amqp_topology import QueueDecl, declare
from fastq.urls import redact

if TYPE_CHECKING:
    from fastq.config import Config

T = TypeVar("T")
log = logging.getLogger("fastq.backends")

#: A waiter holds the shared connection's lock at most this long at a time (seconds).
WAIT_SLICE = 0.2
#: Reconnecting while a waiter waits backs off up to this (seconds).
RECONNECT_MAX = 1.0


class AmqpResultBackend(Backend):
    """A result backend on RabbitMQ. ``<scheme>://`` alone uses the broker's server; a full URL
    (``rabbitmq://user:pass@host:5672/vhost``) names another one."""

    def __init__(self, conf: Config, url: str) -> None:
        super().__init__(conf, url)
        rest = url.split("://", 1)[1] if "://" in url else ""
        if rest.strip("/"):
            target = "amqps://" + rest if url.lower().startswith("rabbitmqs") else "amqp://" + rest
        else:
            target = conf.broker_url or "amqp://guest:guest@localhost:5672//"
        self.target = target
        # The broker's nodes (a list fails over as the broker does).
        self.servers = AmqpServers.from_url(target, conf.broker_failover_strategy)
        self.conn = AmqpChannel(target, self.servers, conf)
        self.persistent = bool(conf.result_persistent)

    def expires_ms(self) -> int | None:
        return int(self.expires * 1000) if self.expires else None

    def _with_channel(self, what: str, fn: Callable[[Any], T], retry: bool = True) -> T:
        """Runs ``fn(channel)`` under the lock; reconnects once if the connection broke."""
        with self.conn.lock:
            try:
                return fn(self.conn.channel())
            except errors.BrokerConnectionError as exc:
                raise errors.BackendError(str(exc)) from exc
            except errors.FastqError:
                raise  # fastq's TimeoutError is an OSError too: not a connection problem
            except CONNECTION_ERRORS as exc:
                self.reset()
                if retry and not isinstance(exc, amqp.exceptions.NotFound):
                    return self._with_channel(what, fn, retry=False)
                raise errors.BackendError(
                    f"cannot {what} with the result backend {redact(self.target)}: {exc}"
                ) from exc

    def reset(self) -> None:
        """Forgets the connection (and what was declared or consumed on it)."""
        self.conn.reset()

    def ensure(self, channel: Any, decl: QueueDecl) -> None:
        if decl.name not in self.conn.declared:
            declare(channel, decl)
            self.conn.declared.add(decl.name)

    def message(self, meta: dict[str, Any], correlation_id: str) -> amqp.Message:
        body, content_type, encoding = serialization.dumps(meta, self.serializer)
        return amqp.Message(
            body,
            content_type=content_type,
            content_encoding=encoding,
            correlation_id=correlation_id,
            delivery_mode=2 if self.persistent else 1,
        )

    def meta_of(self, message: Any) -> dict[str, Any]:
        body = message.body
        if isinstance(body, str):
            body = body.encode()
        content_type = message.properties.get("content_type") or "application/json"
        return self.decode_meta_typed(bytes(body), content_type)

    def decode_meta_typed(self, data: bytes, content_type: str) -> dict[str, Any]:
        meta = serialization.loads(data, content_type, [*self.accept, "json", "msgpack"])
        if not isinstance(meta, dict) or "status" not in meta:
            raise errors.DecodeError(f"reply is not a task meta document: {meta!r:.200}")
        return meta

    def drain(self, timeout: float) -> bool:
        """Waits up to ``timeout`` for one frame and runs the callbacks it triggers; False when
        nothing came. Blocking on the socket, not polling."""
        conn = self.conn.connection
        if conn is None:
            return False
        if not conn.connected:  # closed by the broker: a ConnectionError makes callers reconnect
            raise ConnectionError(f"the connection to {redact(self.target)} was closed")
        try:
            conn.drain_events(timeout=timeout)
            return True
        except TimeoutError:
            return False

    def wait_ready(
        self,
        task_id: str,
        timeout: float | None,
        step: Callable[[Any, float], dict[str, Any] | None],
        cleanup: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Calls ``step(channel, seconds)`` (which reads frames for up to ``seconds`` and returns
        the latest meta it knows) until the meta is ready or ``timeout`` passes.

        The lock is held one short slice at a time, so threads waiting on the same connection
        take turns (each slice's frames feed every waiter) and senders are not blocked for a
        whole wait. A dropped connection is reopened until the deadline: ``step`` must then
        consume again (it finds its marker gone from ``conn.declared``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay, lost = 0.1, None
        try:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise self.timeout_error(task_id, timeout, lost)
                seconds = WAIT_SLICE if remaining is None else min(remaining, WAIT_SLICE)
                try:
                    with self.conn.lock:
                        meta = step(self.conn.channel(), seconds)
                except errors.BrokerConnectionError as exc:  # the broker does not answer yet
                    if lost is None:  # once per outage: a wait without a timeout says why
                        log.warning(
                            "cannot reach the result backend %s while waiting for %s (%s); "
                            "retrying",
                            redact(self.target),
                            task_id,
                            exc,
                        )
                    lost = str(exc)
                    time.sleep(min(delay, seconds))
                    delay = min(delay * 2, RECONNECT_MAX)
                    continue
                except errors.FastqError:
                    raise
                except CONNECTION_ERRORS as exc:
                    if isinstance(exc, amqp.exceptions.NotFound):
                        raise errors.BackendError(
                            f"cannot wait for task {task_id} on {redact(self.target)}: {exc}"
                        ) from exc
                    with self.conn.lock:
                        self.reset()
                    lost = f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "lost the result backend %s while waiting for %s (%s); reconnecting",
                        redact(self.target),
                        task_id,
                        lost,
                    )
                    continue
                delay = 0.1
                if meta is not None and meta["status"] in states.READY_STATES:
                    return meta
        finally:
            if cleanup is not None:
                with self.conn.lock:
                    try:
                        cleanup()
                    except CONNECTION_ERRORS:
                        self.reset()

    def timeout_error(
        self, task_id: str, timeout: float | None, lost: str | None
    ) -> errors.TimeoutError:
        message = f"task {task_id} not ready after {timeout}s"
        if lost:
            message += f" (the connection to {redact(self.target)} was lost meanwhile: {lost})"
        return errors.TimeoutError(message)

    def close(self) -> None:
        with self.conn.lock:
            self.conn.close()
