"""What a consumer holds and has not started: Celery's ``inspect reserved`` and ``scheduled``.

A consumer (prefork child, thread, the asyncio pool's loop) holds the messages it fetched and has
not started yet: the rest of its fetched batch, the tasks waiting for a rate-limit token, and
those waiting for their ETA. It tells ``ActiveTasks`` (through the report pipe in a prefork
child: ``R`` lines, written with the start report that follows a fetch) one ``Entry`` per
message, and the process that answers remote control turns them into Celery's shapes
(``request_info``, ``scheduled_info``). Built once per fetch, not per task: a task's start takes
it out (``ActiveTasks.started``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastq import errors
from fastq.worker.request import eta_of, parse_when

if TYPE_CHECKING:
    from fastq.brokers.base import Delivery
    from fastq.task import Context

#: ``[id, name, exchange, routing_key, priority, redelivered, eta, argsrepr, kwargsrepr]``:
#: ``eta`` (ISO 8601) is set for a task waiting for its ETA (``scheduled``), None for one that
#: waits for a pool slot or a rate-limit token (``reserved``).
Entry = list[Any]
#: The argument reprs are cut to this, as Celery's clients cut them (``argsrepr_maxsize``).
REPR_MAX = 1024


def delivery_entry(delivery: Delivery, now: float) -> Entry | None:
    """A fetched message not handled yet (its ETA read from its headers); None without an id."""
    task_id = delivery.task_id
    if not task_id:
        return None
    message = delivery.message
    headers = message.headers if message is not None else None
    eta = None
    if isinstance(headers, Mapping) and headers.get("eta") is not None:
        try:
            when = parse_when(headers.get("eta"))
        except (errors.FastqError, ValueError, TypeError):  # refused when handled
            when = None
        if when is not None and when.timestamp() > now:
            eta = when.isoformat()
    return _entry(task_id, delivery.task_name or "", delivery, eta, headers)


def waiting_entry(delivery: Delivery, context: Context, for_eta: bool) -> Entry:
    """A handled message the consumer keeps: for its ETA (``for_eta``) or a rate-limit token."""
    when = eta_of(context) if for_eta else None
    eta = when.isoformat() if when is not None else None
    return _entry(context.id or "", context.task or "", delivery, eta, context.headers)


def _entry(task_id: str, name: str, delivery: Delivery, eta: str | None, headers: Any) -> Entry:
    reprs: list[str | None] = [None, None]
    if isinstance(headers, Mapping):
        for i, key in enumerate(("argsrepr", "kwargsrepr")):
            value = headers.get(key)
            if isinstance(value, str):
                reprs[i] = value if len(value) <= REPR_MAX else value[: REPR_MAX - 3] + "..."
    return [
        task_id,
        name,
        delivery.exchange,
        delivery.queue,
        delivery.priority,
        delivery.redelivered,
        eta,
        *reprs,
    ]


def encode_entries(entries: list[Entry]) -> bytes:
    """One line's worth of JSON (the standard library's: ten times quicker here than the
    codec's general path, for lists of strings and numbers)."""
    return json.dumps(entries, separators=(",", ":")).encode()


def decode_entries(data: bytes) -> list[Entry] | None:
    try:
        entries = json.loads(data)
    except ValueError:
        return None
    if not isinstance(entries, list):
        return None
    return [e for e in entries if isinstance(e, list) and len(e) == 9 and isinstance(e[0], str)]


def is_scheduled(entry: Entry) -> bool:
    return entry[6] is not None


def request_info(entry: Entry, hostname: str) -> dict[str, Any]:
    """Celery's ``Request.info()`` of a task not started: not acknowledged, no pid or start;
    ``args``/``kwargs`` are the message's ``argsrepr``/``kwargsrepr`` (Celery's safe form)."""
    task_id, name, exchange, routing_key, priority, redelivered, _, args, kwargs = entry
    return {
        "id": task_id,
        "name": name,
        "args": args,
        "kwargs": kwargs,
        "type": name,
        "hostname": hostname,
        "time_start": None,
        "acknowledged": False,
        "delivery_info": {
            "exchange": exchange,
            "routing_key": routing_key,
            "priority": priority,
            "redelivered": redelivered,
        },
        "worker_pid": None,
    }


def scheduled_info(entry: Entry, hostname: str) -> dict[str, Any]:
    """Celery's ``inspect scheduled`` item; ``priority`` is the message's."""
    return {"eta": entry[6], "priority": entry[4], "request": request_info(entry, hostname)}
