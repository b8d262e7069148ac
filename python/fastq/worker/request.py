"""From a delivery to a task request: the context a task runs in, and its scheduling facts.

A message that decoded may still carry a header of the wrong type or one that does not parse
(an ``eta`` of ``"not-a-date"``, a ``timelimit`` of ``["a", "b"]``): ``build_context`` checks
every field a worker reads later and raises ``InvalidMessage`` naming it, before the message is
acknowledged or scheduled, so a bad field is refused once instead of failing in a child later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from fastq.brokers.base import Delivery
from fastq.errors import InvalidMessage
from fastq.protocol import parse_iso
from fastq.task import Context


def build_context(delivery: Delivery, hostname: str) -> Context:
    """``self.request`` for a task run; only called for deliveries whose message decoded.
    Raises ``InvalidMessage`` for a field of the wrong type or that does not parse.

    Once per task, so written for the common message: each field is checked by a test inline
    and handed to its checker (which raises naming it) only when that test fails."""
    message = delivery.message
    assert message is not None
    headers = message.headers
    embed = message.embed
    if type(headers) is not dict and not isinstance(headers, Mapping):
        raise InvalidMessage(f"headers must be a mapping, not {_kind(headers)}")
    if type(embed) is not dict and not isinstance(embed, Mapping):
        raise InvalidMessage(f"embed must be a mapping, not {_kind(embed)}")
    get = headers.get
    eta, expires = get("eta"), get("expires")
    if eta is not None:
        _when_of("eta", eta)
    if expires is not None:
        _when_of("expires", expires)
    retries = get("retries")
    if type(retries) is not int or retries < 0:
        retries = _count("retries", retries)
    nesting = get("replaced_task_nesting")
    if type(nesting) is not int or nesting < 0:
        nesting = _count("replaced_task_nesting", nesting)
    group, root_id, parent_id = get("group"), get("root_id"), get("parent_id")
    if not (_text_or_none(group) and _text_or_none(root_id) and _text_or_none(parent_id)):
        group, root_id = _text("group", group), _text("root_id", root_id)
        parent_id = _text("parent_id", parent_id)
    reply_to, correlation_id = delivery.reply_to, delivery.correlation_id
    if not (_text_or_none(reply_to) and _text_or_none(correlation_id)):
        reply_to = _text("reply_to", reply_to)
        correlation_id = _text("correlation_id", correlation_id)
    group_index = get("group_index")
    if group_index is not None:
        group_index = _count("group_index", group_index)
    timelimit = get("timelimit")
    timelimit = _NO_LIMITS if timelimit in _NONE_LIMITS else _timelimit(timelimit)
    ignore_result = get("ignore_result")
    if type(ignore_result) is not bool:
        ignore_result = _flag("ignore_result", ignore_result)
    egot = embed.get
    callbacks, errbacks, chain, chord = (
        egot("callbacks"),
        egot("errbacks"),
        egot("chain"),
        egot("chord"),
    )
    if callbacks is not None:
        callbacks = _signatures("callbacks", callbacks)
    if errbacks is not None:
        errbacks = _signatures("errbacks", errbacks)
    if chain is not None:
        chain = _signatures("chain", chain)
    if chord is not None:
        chord = _mapping("chord", chord)
    return Context(
        id=message.id,
        task=message.task,
        args=message.args,
        kwargs=message.kwargs,
        retries=retries,
        eta=eta,
        expires=expires,
        group=group,
        group_index=group_index,
        root_id=root_id,
        parent_id=parent_id,
        reply_to=reply_to,
        correlation_id=correlation_id,
        hostname=hostname,
        delivery_info={
            "exchange": delivery.exchange,
            "routing_key": delivery.queue,
            "priority": delivery.priority,
            "redelivered": delivery.redelivered,
        },
        headers=headers,
        called_directly=False,
        timelimit=timelimit,
        callbacks=callbacks,
        errbacks=errbacks,
        chain=chain,
        chord=chord,
        ignore_result=ignore_result,
        replaced_task_nesting=nesting,
        stamped_headers=get("stamped_headers"),
        stamps=get("stamps") or {},
        delivery_tag=delivery.delivery_tag,
    )


#: The ``timelimit`` of a message without limits, as Celery and fastq send it (or omit it).
_NO_LIMITS: tuple[float | None, float | None] = (None, None)
_NONE_LIMITS = (None, [None, None], (None, None))


def _text_or_none(value: Any) -> bool:
    return value is None or type(value) is str


def eta_of(context: Context) -> datetime | None:
    return _when(context.eta)


def expired(context: Context, now: datetime | None = None) -> bool:
    expires = _when(context.expires)
    return expires is not None and expires <= (now or datetime.now(timezone.utc))


def parse_when(value: Any) -> datetime | None:
    """An ``eta``/``expires`` header as an aware datetime (naive ones are UTC)."""
    return _when(value)


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return parse_iso(str(value))


# -- checks: each returns the value a worker uses, or raises InvalidMessage naming the field ------
def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


def _when_of(name: str, value: Any) -> None:
    # An ISO 8601 string (or a datetime, from msgpack/pickle); numbers are not (Celery neither).
    if value is None or isinstance(value, datetime):
        return
    if not isinstance(value, str):
        raise InvalidMessage(f"{name} must be an ISO 8601 date-time string, not {_kind(value)}")
    try:
        parsed = parse_iso(value)
        if parsed is not None:
            parsed.timestamp()  # out of range for the platform raises here, not later
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidMessage(f"{name} {value[:60]!r} is not an ISO 8601 date-time: {exc}") from None


def _count(name: str, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidMessage(f"{name} must be a whole number >= 0, not {_kind(value)}")
    return value


def _index(name: str, value: Any) -> int | None:
    if value is None:
        return None
    return _count(name, value)


def _text(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidMessage(f"{name} must be a string, not {_kind(value)}")


def _flag(name: str, value: Any) -> bool:
    if value is None or isinstance(value, (bool, int)):  # 0/1 from clients that send ints
        return bool(value)
    raise InvalidMessage(f"{name} must be true or false, not {_kind(value)}")


def _limit(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError
    limit = float(value)
    if not math.isfinite(limit) or limit < 0:
        raise ValueError
    return limit


def _timelimit(value: Any) -> tuple[float | None, float | None]:
    """``[hard, soft]``: seconds or null each."""
    if value is None:
        return (None, None)
    try:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError
        return (_limit(value[0]), _limit(value[1]))
    except (ValueError, OverflowError):
        raise InvalidMessage(
            f"timelimit must be [hard, soft] in seconds (numbers >= 0 or null), not {_kind(value)}"
        ) from None


def _signatures(name: str, value: Any) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(s, Mapping) for s in value):
        raise InvalidMessage(f"{name} must be a list of signatures, not {_kind(value)}")
    return value


def _mapping(name: str, value: Any) -> Any:
    if value is None or isinstance(value, Mapping):
        return value
    raise InvalidMessage(f"{name} must be a signature (a mapping), not {_kind(value)}")
