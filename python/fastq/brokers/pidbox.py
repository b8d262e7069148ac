"""Celery's remote-control mailbox (kombu's pidbox) as both brokers carry it: the names of its
exchanges and queues, and a command's body.

A command is ``{method, arguments, destination, pattern, matcher}``, plus ``ticket`` and
``reply_to: {exchange, routing_key}`` when the sender waits for replies, with headers ``clock``
and ``expires``. It goes to the fanout exchange ``celery.pidbox``, where each worker has its
node queue ``<hostname>.celery.pidbox``. A reply ``{hostname: reply}`` (headers ``ticket`` and
``clock``) goes to the direct exchange ``reply.celery.pidbox`` with the sender's oid as routing
key, which routes it to the sender's queue ``<oid>.reply.celery.pidbox``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastq.control_channel import CLOCK, ControlCommand

log = logging.getLogger("fastq.broker")

#: Celery's ``control_exchange`` default: the mailbox's namespace.
NAMESPACE = "celery"
EXCHANGE = f"{NAMESPACE}.pidbox"
REPLY_EXCHANGE = f"reply.{NAMESPACE}.pidbox"
#: Celery's ``control_queue_expires`` and ``control_queue_ttl`` defaults (seconds): a node or
#: reply queue nobody consumes goes after ``QUEUE_EXPIRES``; a command or reply left unread
#: longer than ``QUEUE_TTL`` is dropped.
QUEUE_EXPIRES = 10.0
QUEUE_TTL = 300.0


def node_queue(hostname: str) -> str:
    return f"{hostname}.{EXCHANGE}"


def reply_queue(oid: str) -> str:
    return f"{oid}.{REPLY_EXCHANGE}"


def command_body(command: ControlCommand, oid: str) -> dict[str, Any]:
    """What a kombu sender publishes for ``command``; replies come back routed by ``oid``."""
    body: dict[str, Any] = {
        "method": command.method,
        "arguments": command.arguments,
        "destination": command.destination,
        "pattern": command.pattern,
        "matcher": command.matcher,
    }
    if command.reply:
        body["ticket"] = command.ticket
        body["reply_to"] = {"exchange": REPLY_EXCHANGE, "routing_key": oid}
    return body


def command_headers(timeout: float) -> dict[str, Any]:
    return {"clock": CLOCK.forward(), "expires": time.time() + timeout if timeout else 0}


def reply_headers(command: ControlCommand) -> dict[str, Any]:
    return {"ticket": command.ticket, "clock": CLOCK.forward()}


def command_from(body: Any, headers: dict[str, Any]) -> ControlCommand | None:
    """A pidbox command (``{method, arguments, destination, pattern, matcher, ticket,
    reply_to: {exchange, routing_key}}``); None for one that is malformed or expired."""
    CLOCK.adjust(headers.get("clock"))
    if not isinstance(body, dict) or not isinstance(body.get("method"), str):
        log.warning("ignored a control command without a method: %.200r", body)
        return None
    expires = headers.get("expires")
    if isinstance(expires, (int, float)) and expires and time.time() > expires:
        return None  # the sender stopped waiting for replies
    reply_to = body.get("reply_to")
    destination = body.get("destination")
    return ControlCommand(
        method=body["method"],
        arguments=dict(body.get("arguments") or {}),
        ticket=str(body.get("ticket") or ""),
        destination=list(destination) if isinstance(destination, (list, tuple)) else None,
        reply=isinstance(reply_to, dict),
        reply_to=str(reply_to["routing_key"]) if isinstance(reply_to, dict) else None,
        reply_exchange=str(reply_to.get("exchange")) if isinstance(reply_to, dict) else None,
        pattern=body.get("pattern"),
        matcher=body.get("matcher"),
    )


def reply_from(
    body: Any, headers: dict[str, Any], ticket: str
) -> tuple[str, dict[str, Any]] | None:
    """``(its ticket, {hostname: reply})`` of a reply, or None for one to skip (not an object,
    or expired as kombu's collector skips it)."""
    CLOCK.adjust(headers.get("clock"))
    if not isinstance(body, dict):
        return None
    expires = headers.get("expires")
    if isinstance(expires, (int, float)) and expires and time.time() > expires:
        return None
    return str(headers.get("ticket", ticket)), body
