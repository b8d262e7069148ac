"""Task messages as the embedded brokers keep them: headers, properties and body, apart.

The SQLite and memory brokers store a message as its parts instead of a transport envelope, and
decode it with ``_core.decode_task`` when it is delivered. A message that cannot be decoded still
becomes a ``StoredDelivery``, with ``error`` saying why, so the worker can log it and move on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastq import _core
from fastq.errors import DecodeError
from fastq.protocol import OutgoingMessage, parse_iso
from fastq.serialization import content_type_of


def clamp_priority(priority: int | None) -> int:
    """0-9 as on Redis: lower numbers are served first; None is 0."""
    return min(max(int(priority or 0), 0), 9)


@dataclass(slots=True)
class StoredMessage:
    """An encoded task message and where it goes; ``due`` is its ETA when that is still ahead."""

    queue: str
    priority: int
    due: float | None
    task_id: str
    task_name: str
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    properties: dict[str, Any]
    body: bytes

    @classmethod
    def encode(cls, m: OutgoingMessage, now: float | None = None) -> StoredMessage:
        """Serializes the body with ``_core``; raises ``EncodeError`` for unserializable args."""
        headers, body = _core.encode_task_message(
            m.headers, m.args, m.kwargs, m.embed, m.serializer
        )
        content_type = content_type_of(m.serializer)
        priority = clamp_priority(m.priority)
        properties: dict[str, Any] = {
            "correlation_id": m.id,
            "reply_to": m.reply_to,
            "delivery_mode": m.delivery_mode,
            "delivery_info": {"exchange": m.exchange, "routing_key": m.routing_key or m.queue},
            "priority": priority,
            **m.properties,
        }
        eta = parse_iso(headers.get("eta"))
        when = eta.timestamp() if eta is not None else None
        due = when if when is not None and when > (time.time() if now is None else now) else None
        return cls(
            queue=m.queue,
            priority=priority,
            due=due,
            task_id=m.id,
            task_name=str(headers.get("task") or ""),
            content_type=content_type,
            content_encoding="utf-8" if content_type == "application/json" else "binary",
            headers=headers,
            properties=properties,
            body=bytes(body),
        )


@dataclass(slots=True, frozen=True)
class StoredDelivery:
    """A ``Delivery`` (see ``brokers.base``) from the SQLite or memory broker; ``raw`` is the
    stored body."""

    delivery_tag: str
    queue: str
    exchange: str
    priority: int
    redelivered: bool
    content_type: str
    properties: dict[str, Any]
    reply_to: str | None
    correlation_id: str | None
    message: _core.TaskMessage | None
    error: str | None
    error_kind: str | None
    task_id: str | None
    task_name: str | None
    raw: bytes


def deliver(
    tag: str,
    queue: str,
    priority: int,
    redelivered: bool,
    content_type: str,
    headers: dict[str, Any] | None,
    properties: dict[str, Any],
    body: bytes,
    accept: list[str],
    task_id: str | None,
    task_name: str | None,
    damaged: str | None = None,
) -> StoredDelivery:
    """Decodes a stored message; a body that does not decode, or a message whose stored parts
    are ``damaged`` (the reason), gives a delivery with ``error``."""
    message: _core.TaskMessage | None = None
    error = kind = None
    if damaged is not None:
        error, kind = damaged, DecodeError.__name__
    else:
        try:
            message = _core.decode_task(headers, body, content_type, accept)
        except DecodeError as exc:
            error, kind = str(exc), type(exc).__name__
    if message is not None:
        task_id, task_name = message.id, message.task
    return StoredDelivery(
        delivery_tag=tag,
        queue=queue,
        exchange=(properties.get("delivery_info") or {}).get("exchange") or "",
        priority=priority,
        redelivered=redelivered,
        content_type=content_type,
        properties=properties,
        reply_to=properties.get("reply_to"),
        correlation_id=properties.get("correlation_id"),
        message=message,
        error=error,
        error_kind=kind,
        task_id=task_id,
        task_name=task_name,
        raw=body,
    )
