"""Task settings changed at run time by remote control (``rate_limit``, ``time_limit``), as
Celery's worker changes them: on the task object, in every process that runs tasks.

The control server applies a change in its own process (the threads and solo pools run their
tasks there; a prefork child forked later inherits it); the prefork supervisor also writes it
down each child's revoke pipe (``change_line``), and the child applies it between batches.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastq.errors import ConfigurationError
from fastq.worker.ratelimit import parse_rate

log = logging.getLogger("fastq.worker")

#: The task attributes a change may set.
SETTINGS = ("rate_limit", "time_limit", "soft_time_limit")
#: Marks a change on the revoke pipe (ids never start with it).
MARK = "~"


class SettingError(ValueError):
    """A change the worker refuses; the message is the reply's ``error``."""


def rate_limit_change(tasks: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    """``{"task", "rate_limit"}`` from Celery's ``rate_limit`` arguments."""
    name, value = arguments.get("task_name"), arguments.get("rate_limit")
    try:
        per_second = parse_rate(value)
    except ConfigurationError as exc:
        raise SettingError(f"Invalid rate limit string: {exc}") from None
    if name not in tasks:
        raise SettingError("unknown task")
    return {"task": name, "rate_limit": value if per_second else None}  # "0": no limit


def time_limit_change(tasks: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    """``{"task", "time_limit", "soft_time_limit"}`` from Celery's ``time_limit`` arguments
    (``hard``/``soft`` seconds; None or 0 removes that limit)."""
    name = arguments.get("task_name")
    if name not in tasks:
        raise SettingError("unknown task")
    limits: dict[str, Any] = {}
    for key, attr in (("hard", "time_limit"), ("soft", "soft_time_limit")):
        value = arguments.get(key)
        try:
            limits[attr] = float(value) or None if value is not None else None
        except (TypeError, ValueError):
            raise SettingError(f"invalid {key} time limit {value!r}: seconds expected") from None
    return {"task": name, **limits}


def apply(tasks: Any, change: dict[str, Any]) -> str | None:
    """Sets the change on its task; returns the task's name (None for an unknown task)."""
    task = tasks.get(change.get("task"))
    if task is None:
        return None
    for attr in SETTINGS:
        if attr in change:
            setattr(task, attr, change[attr])
    return str(change["task"])


def change_line(change: dict[str, Any]) -> str:
    return f"{MARK}{json.dumps(change)}\n"


def read_change(line: str) -> dict[str, Any] | None:
    try:
        change = json.loads(line)
    except ValueError:
        log.warning("ignored a malformed task setting change: %.200r", line)
        return None
    return change if isinstance(change, dict) else None
