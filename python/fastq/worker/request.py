"""From a delivery to a task request: the context a task runs in, and its scheduling facts."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastq.brokers.base import Delivery
from fastq.protocol import parse_iso
from fastq.task import Context


def build_context(delivery: Delivery, hostname: str) -> Context:
    """``self.request`` for a task run; only called for deliveries whose message decoded."""
    message = delivery.message
    assert message is not None
    headers = message.headers
    embed = message.embed
    timelimit = headers.get("timelimit") or (None, None)
    return Context(
        id=message.id,
        task=message.task,
        args=message.args,
        kwargs=message.kwargs,
        retries=int(headers.get("retries") or 0),
        eta=headers.get("eta"),
        expires=headers.get("expires"),
        group=headers.get("group"),
        group_index=headers.get("group_index"),
        root_id=headers.get("root_id"),
        parent_id=headers.get("parent_id"),
        reply_to=delivery.reply_to,
        correlation_id=delivery.correlation_id,
        hostname=hostname,
        delivery_info={
            "exchange": delivery.exchange,
            "routing_key": delivery.queue,
            "priority": delivery.priority,
            "redelivered": delivery.redelivered,
        },
        headers=headers,
        called_directly=False,
        timelimit=tuple(timelimit) if isinstance(timelimit, (list, tuple)) else (None, None),
        callbacks=embed.get("callbacks"),
        errbacks=embed.get("errbacks"),
        chain=embed.get("chain"),
        chord=embed.get("chord"),
        ignore_result=bool(headers.get("ignore_result")),
        replaced_task_nesting=int(headers.get("replaced_task_nesting") or 0),
        delivery_tag=delivery.delivery_tag,
    )


def eta_of(context: Context) -> datetime | None:
    return _when(context.eta)


def expired(context: Context, now: datetime | None = None) -> bool:
    expires = _when(context.expires)
    return expires is not None and expires <= (now or datetime.now(timezone.utc))


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return parse_iso(str(value))
