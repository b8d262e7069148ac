"""Runs one task and decides its outcome: the state to store and what to do with the message."""

from __future__ import annotations

import logging
import traceback as tb
from dataclasses import dataclass
from enum import Enum
from typing import Any

from fastq import states
from fastq.errors import Ignore, Reject, Retry
from fastq.task import Context, Task

log = logging.getLogger("fastq.worker")


class Settle(Enum):
    """What happens to the message once the task has run."""

    ACK = "ack"
    DROP = "drop"  # reject without requeue
    REQUEUE = "requeue"


@dataclass(slots=True)
class Outcome:
    state: str | None  # None: store nothing (Ignore, Reject)
    value: Any
    traceback: str | None
    settle: Settle


def run_task(task: Task, context: Context, acks_late: bool) -> Outcome:
    """Calls the task with its request pushed, mapping what it raised to an outcome."""
    task.push_request(context)
    task.app.push_request(context)
    try:
        args, kwargs = context.args, context.kwargs or {}
        value = task.run(task, *args, **kwargs) if task.bind else task.run(*args, **kwargs)
        return Outcome(states.SUCCESS, value, None, Settle.ACK)
    except Retry as exc:
        cause = exc.exc if exc.exc is not None else exc
        return Outcome(states.RETRY, cause, _format(exc.exc), Settle.ACK)
    except Ignore:
        return Outcome(None, None, None, Settle.ACK)
    except Reject as exc:
        log.info("task %s[%s] rejected: %s", task.name, context.id, exc.reason or "no reason given")
        return Outcome(None, None, None, Settle.REQUEUE if exc.requeue else Settle.DROP)
    except Exception as exc:
        text = tb.format_exc()
        expected = isinstance(exc, task.throws) if task.throws else False
        if expected:
            log.info("task %s[%s] raised expected: %r", task.name, context.id, exc)
        else:
            log.error("task %s[%s] raised %r\n%s", task.name, context.id, exc, text)
        acks_on_failure = _option(task, "acks_on_failure_or_timeout", True)
        settle = Settle.DROP if acks_late and not acks_on_failure else Settle.ACK
        return Outcome(states.FAILURE, exc, text, settle)
    finally:
        task.app.pop_request()
        task.pop_request()


def _format(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    return "".join(tb.format_exception(type(exc), exc, exc.__traceback__))


def _option(task: Task, name: str, default: Any) -> Any:
    value = getattr(task, name, None)
    if value is None:
        value = task.app.conf.get(f"task_{name}", default)
    return value
