"""Runs one task and decides its outcome: the state to store and what to do with the message."""

from __future__ import annotations

import inspect
import logging
import random
import threading
import traceback as tb
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from fastq import signals, states
from fastq.errors import Ignore, Reject, Retry
from fastq.execution.limits import alarm, effective_limits
from fastq.task import Context, Task

if TYPE_CHECKING:
    import asyncio

    from fastq.app import App

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


def run_task(
    task: Task,
    context: Context,
    acks_late: bool,
    enforce_hard_limit: bool,
    limits: tuple[float | None, float | None] | None = None,
) -> Outcome:
    """Calls the task with its request pushed, mapping what it raised to an outcome.

    ``enforce_hard_limit``: raise ``TimeLimitExceeded`` in-process (solo pool); under prefork the
    supervisor enforces it by replacing the child. ``limits``: ``effective_limits`` when the
    caller has them already.
    """
    task.push_request(context)
    task.app.push_request(context)
    args, kwargs = context.args, context.kwargs or {}
    if signals.task_prerun.receivers:
        signals.task_prerun.send(task, task_id=context.id, task=task, args=args, kwargs=kwargs)
    outcome = Outcome(states.FAILURE, None, None, Settle.ACK)
    try:
        hard, soft = limits if limits is not None else effective_limits(task, context)
        outcome = _call(task, context, acks_late, soft, hard if enforce_hard_limit else None)
    finally:
        if signals.task_postrun.receivers:
            signals.task_postrun.send(
                task,
                task_id=context.id,
                task=task,
                args=args,
                kwargs=kwargs,
                retval=outcome.value,
                state=outcome.state,
            )
        task.app.pop_request()
        task.pop_request()
    return outcome


def _invoke(task: Task, args: Any, kwargs: dict[str, Any]) -> Any:
    value = task.run(task, *args, **kwargs) if task.bind else task.run(*args, **kwargs)
    if inspect.iscoroutine(value):
        value = _event_loop().run_until_complete(value)
    return value


def keeps_result(app: App, task: Task | None, request: Context, state: str) -> bool:
    """Whether ``state`` is stored: not when the result is ignored (by the message, the task or
    the app), except errors with ``store_errors_even_if_ignored``."""
    conf = app.conf
    own = task.ignore_result if task is not None else None
    if not (request.ignore_result or bool(conf.task_ignore_result if own is None else own)):
        return True
    if state == states.SUCCESS:
        return False
    keep = task.store_errors_even_if_ignored if task is not None else None
    return bool(keep or conf.task_store_errors_even_if_ignored)


def _call(
    task: Task, context: Context, acks_late: bool, soft: float | None, hard: float | None
) -> Outcome:
    """``soft``/``hard``: the limits to raise in this process (``hard`` only in the solo pool)."""
    args, kwargs = context.args, context.kwargs or {}
    try:
        try:
            if soft or hard:
                with alarm(soft, hard):
                    value = _invoke(task, args, kwargs)
            else:
                value = _invoke(task, args, kwargs)
        except (Retry, Ignore, Reject):
            raise  # the task's own decision (retry, replace...), never retried automatically
        except Exception as exc:
            if task.autoretry_for and isinstance(exc, task.autoretry_for):
                task.retry(exc=exc, countdown=backoff(task, context.retries), **task.retry_kwargs)
            raise
    except Retry as exc:
        cause = exc.exc if exc.exc is not None else exc
        log.info("task %s[%s] retry: %s", task.name, context.id, exc)
        if signals.task_retry.receivers:
            signals.task_retry.send(task, request=context, reason=cause, einfo=None)
        return Outcome(states.RETRY, cause, _format(exc.exc), Settle.ACK)
    except Ignore:
        return Outcome(None, None, None, Settle.ACK)
    except Reject as exc:
        log.info("task %s[%s] rejected: %s", task.name, context.id, exc.reason or "no reason given")
        return Outcome(None, None, None, Settle.REQUEUE if exc.requeue else Settle.DROP)
    except Exception as exc:
        text = tb.format_exc()
        if task.throws and isinstance(exc, task.throws):
            log.info("task %s[%s] raised expected: %r", task.name, context.id, exc)
        else:
            log.error("task %s[%s] raised %r\n%s", task.name, context.id, exc, text)
        if signals.task_failure.receivers:
            signals.task_failure.send(
                task,
                task_id=context.id,
                exception=exc,
                args=args,
                kwargs=kwargs,
                traceback=exc.__traceback__,
                einfo=text,
            )
        acks_on_failure = _option(task, "acks_on_failure_or_timeout", True)
        settle = Settle.DROP if acks_late and not acks_on_failure else Settle.ACK
        return Outcome(states.FAILURE, exc, text, settle)
    if signals.task_success.receivers:
        signals.task_success.send(task, result=value)
    return Outcome(states.SUCCESS, value, None, Settle.ACK)


_loops = threading.local()


def _event_loop() -> asyncio.AbstractEventLoop:
    """One event loop per worker thread for ``async def`` tasks, kept across tasks so that
    clients bound to it (connection pools) stay usable."""
    import asyncio  # only a worker with ``async def`` tasks pays for it (~13 ms at start)

    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    return loop


def backoff(task: Task, retries: int) -> float | None:
    """Celery's exponential backoff: ``factor * 2**retries`` capped, with full jitter."""
    if not task.retry_backoff:
        return task.retry_kwargs.get("countdown") if task.retry_kwargs else None
    factor = 1.0 if task.retry_backoff is True else float(task.retry_backoff)
    countdown = min(float(task.retry_backoff_max), factor * (2**retries))
    if task.retry_jitter:
        countdown = random.uniform(0, countdown)
    return max(0.0, countdown)


def _format(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    return "".join(tb.format_exception(type(exc), exc, exc.__traceback__))


def _option(task: Task, name: str, default: Any) -> Any:
    value = getattr(task, name, None)
    if value is None:
        value = task.app.conf.get(f"task_{name}", default)
    return value
