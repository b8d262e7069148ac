"""The remote-control channel: the wire format of a command and its replies, and the
``ControlChannel`` each broker provides (``Broker.control_channel``).

A channel carries two things: a command fanned out to every worker that listens at the moment it
is sent (workers that start later never see it), and replies addressed to the command's
``ticket``, which the sender collects until its timeout or ``limit`` replies. The client is
``fastq.control`` (``app.control``); the worker answers in ``fastq.worker.control_server``.

A command is JSON ``{"method", "arguments", "destination", "ticket", "reply", "reply_to"}``
(Celery's pidbox names; ``reply_to`` is set by transports that address replies, as AMQP's reply
queue); a reply is ``{"<hostname>": <reply>}``, as in Celery.
"""

from __future__ import annotations

import json
import logging
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastq.errors import DecodeError

log = logging.getLogger("fastq.broker")

#: Commands and replies older than this are ignored and cleaned up (seconds).
CONTROL_TTL = 60.0


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

    def encode(self) -> bytes:
        return json.dumps(
            {
                "method": self.method,
                "arguments": self.arguments,
                "destination": self.destination,
                "ticket": self.ticket,
                "reply": self.reply,
                "reply_to": self.reply_to,
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
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DecodeError(f"malformed control command {data!r:.200}: {exc}") from None

    def addressed_to(self, hostname: str) -> bool:
        return not self.destination or hostname in self.destination


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
