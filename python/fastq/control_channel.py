"""The remote-control channel: the wire format of a command and its replies, and the
``ControlChannel`` each broker provides (``Broker.control_channel``).

A channel carries two things: a command fanned out to every worker that listens at the moment it
is sent (workers that start later never see it), and replies addressed to the command's
``ticket``, which the sender collects until its timeout or ``limit`` replies. The client is
``fastq.control`` (``app.control``); the worker answers in ``fastq.worker.control_server``.

On Redis the channel is Celery's own pidbox (``fastq.brokers.redis_control``), so Celery's
``celery inspect``/``celery control`` reach fastq workers and ``app.control`` reaches Celery's.
SQLite and memory, which Celery has no transport for, keep fastq's format: a command is JSON
``{"method", "arguments", "destination", "pattern", "matcher", "ticket", "reply", "reply_to"}``
(Celery's pidbox names; ``reply_to`` is set by transports that address replies, as AMQP's reply
queue); a reply is ``{"<hostname>": <reply>}``, as in Celery.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastq.errors import DecodeError

log = logging.getLogger("fastq.broker")

#: Commands and replies older than this are ignored and cleaned up (seconds).
CONTROL_TTL = 60.0


class _Clock:
    """A Lamport clock, sent in the ``clock`` header of Celery's pidbox messages."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def forward(self) -> int:
        with self._lock:
            self.value += 1
            return self.value

    def forward_many(self, n: int) -> int:
        """Moves the clock ``n`` ticks on at once; the first of them (``forward``'s ``n`` values
        are that one and the ``n - 1`` after it)."""
        with self._lock:
            first = self.value + 1
            self.value += n
            return first

    def adjust(self, other: Any) -> None:
        if isinstance(other, int):
            with self._lock:
                self.value = max(self.value, other) + 1


CLOCK = _Clock()


@dataclass(slots=True)
class ControlCommand:
    method: str
    arguments: dict[str, Any] = field(default_factory=dict)
    ticket: str = field(default_factory=lambda: str(uuid.uuid4()))
    #: Hostnames that should act on it; None means every worker.
    destination: list[str] | None = None
    #: Whether the sender waits for replies.
    reply: bool = True
    #: Where replies go, for a transport that addresses them (AMQP: the sender's reply queue);
    #: None where the ticket is enough (Redis, SQLite, memory).
    reply_to: str | None = None
    #: The exchange replies are published to, where the transport names one (Celery's pidbox:
    #: ``reply.celery.pidbox``, with ``reply_to`` the routing key, the sender's oid).
    reply_exchange: str | None = None
    #: Celery's other way of addressing: a hostname ``pattern`` and its ``matcher``
    #: (``glob`` or ``pcre``), used when there is no ``destination``.
    pattern: str | None = None
    matcher: str | None = None

    def encode(self) -> bytes:
        return json.dumps(
            {
                "method": self.method,
                "arguments": self.arguments,
                "destination": self.destination,
                "ticket": self.ticket,
                "reply": self.reply,
                "reply_to": self.reply_to,
                "pattern": self.pattern,
                "matcher": self.matcher,
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes | str) -> ControlCommand:
        try:
            body = json.loads(data)
            return cls(
                method=str(body["method"]),
                arguments=dict(body.get("arguments") or {}),
                ticket=str(body["ticket"]),
                destination=body.get("destination"),
                reply=bool(body.get("reply", True)),
                reply_to=None if body.get("reply_to") is None else str(body["reply_to"]),
                pattern=body.get("pattern"),
                matcher=body.get("matcher"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DecodeError(f"malformed control command {data!r:.200}: {exc}") from None

    def addressed_to(self, hostname: str) -> bool:
        """As kombu's pidbox decides: the destination list if any, else the pattern if any."""
        if self.destination:
            return hostname in self.destination
        if self.pattern and self.matcher:
            return matches(hostname, self.pattern, self.matcher)
        return True


def matches(hostname: str, pattern: str, matcher: str) -> bool:
    """kombu's matchers by name: ``glob`` (shell wildcards) and ``pcre`` (a regex that matches
    from the start); an unknown matcher matches nothing."""
    if matcher == "glob":
        return fnmatch.fnmatchcase(hostname, pattern)
    if matcher == "pcre":
        try:
            return re.match(pattern, hostname) is not None
        except re.error:
            return False
    return False


def decode_command(data: bytes | str) -> ControlCommand | None:
    """A received command, or None (logged) for one that cannot be read: a listener skips it."""
    try:
        return ControlCommand.decode(data)
    except DecodeError as exc:
        log.warning("ignored a control command: %s", exc)
        return None


def encode_reply(hostname: str, reply: Any) -> bytes:
    return json.dumps({hostname: reply}, default=repr).encode()


def decode_reply(data: bytes | str) -> dict[str, Any] | None:
    """A reply, or None for one that is not a ``{hostname: reply}`` object (skipped)."""
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class ControlListener(Protocol):
    """A worker's subscription to control commands."""

    def fetch(self, timeout: float) -> list[ControlCommand]:
        """Commands sent since the last fetch; waits up to ``timeout`` when there are none."""
        ...

    def reply(self, command: ControlCommand, hostname: str, reply: Any) -> None: ...
    def close(self) -> None: ...


class ControlChannel(ABC):
    """The transport half of remote control, provided by a broker (``Broker.control_channel``)."""

    @abstractmethod
    def broadcast(
        self, command: ControlCommand, timeout: float, limit: int | None
    ) -> list[dict[str, Any]]:
        """Sends ``command`` to the listening workers and returns the replies that arrive within
        ``timeout`` seconds (stopping at ``limit``); none when ``command.reply`` is false."""

    @abstractmethod
    def listen(self) -> ControlListener:
        """A subscription that sees the commands sent from now on."""

    def listen_as(self, hostname: str) -> ControlListener:
        """``listen()`` for the worker named ``hostname``: a transport with a queue per node
        (Celery's pidbox) declares it under that name."""
        return self.listen()
