"""Runs one task and decides its outcome: the state to store and what to do with the message."""

from __future__ import annotations

import inspect
import logging
import random
import threading
import time
import traceback as tb
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from fastq import signals, states
from fastq.errors import Ignore, Reject, Retry
from fastq.execution.limits import Interrupt, alarm, effective_limits
from fastq.protocol import short_repr
from fastq.task import Context, ExceptionInfo, Task, result_ignored

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
    state: str | None  # None: store nothing (Ignore, Reject with requeue)
    value: Any
    traceback: str | None
    settle: Settle
    #: What the task raised (the ``Retry`` when it is retried): for its handlers and signals.
    error: BaseException | None = None


def run_task(
    task: Task,
    context: Context,
    acks_late: bool,
    enforce_hard_limit: bool,
    limits: tuple[float | None, float | None] | None = None,
    *,
    record: Callable[[Outcome], None] | None = None,
    eager: bool = False,
    propagate: bool = False,
) -> Outcome:
    """Calls the task with its request pushed, mapping what it raised to an outcome, then its
    handlers (``on_success``, ``on_failure``…) and signals, in Celery's order.

    ``enforce_hard_limit``: raise ``TimeLimitExceeded`` in-process (solo pool); under prefork the
    supervisor enforces it by replacing the child. ``limits``: ``effective_limits`` when the
    caller has them already. ``record``: stores the outcome and sends what follows it, called
    before the handlers (as Celery stores before ``on_success``), the request still pushed so
    that what it sends is among the task's children. ``eager``: a handler's error is raised
    (a worker logs it); ``propagate``: a failure is raised by the caller, before any handler
    (Celery's ``apply(throw=True)``).
    """
    _enter(task, context)
    outcome = _unfinished()
    try:
        hard, soft = limits if limits is not None else effective_limits(task, context)
        started = time.perf_counter()
        outcome = _call(task, context, acks_late, soft, hard if enforce_hard_limit else None)
        _after_call(task, context, outcome, started, record, eager, propagate)
    finally:
        _leave(task, context, outcome)
    return outcome


async def run_task_async(
    task: Task,
    context: Context,
    acks_late: bool,
    interrupt: Interrupt,
    *,
    record: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """``run_task`` for the asyncio pool: an ``async def`` task awaited on the running loop, so
    many run at once in one thread. Time limits and ``terminate`` come through ``interrupt``
    (the pool arms it): the soft limit raises ``SoftTimeLimitExceeded`` at the await where the
    coroutine waits, the hard one cancels it and fails the task with ``TimeLimitExceeded``."""
    _enter(task, context)
    outcome = _unfinished()
    try:
        started = time.perf_counter()
        outcome = await _call_async(task, context, acks_late, interrupt)
        _after_call(task, context, outcome, started, record, False, False)
    finally:
        _leave(task, context, outcome)
    return outcome


def _unfinished() -> Outcome:
    """The outcome the postrun signal reports when the run itself raised (a bug, a cancel)."""
    return Outcome(states.FAILURE, None, None, Settle.ACK)


def _enter(task: Task, context: Context) -> None:
    task.push_request(context)
    task.app.push_request(context)
    if signals.task_prerun.receivers:
        args, kwargs = context.args, context.kwargs or {}
        signals.task_prerun.send(task, task_id=context.id, task=task, args=args, kwargs=kwargs)


def _after_call(
    task: Task,
    context: Context,
    outcome: Outcome,
    started: float,
    record: Callable[[Outcome], None] | None,
    eager: bool,
    propagate: bool,
) -> None:
    if not eager and outcome.state == states.SUCCESS and log.isEnabledFor(logging.INFO):
        log.info(  # Celery's line, with its 1 024-character cut of the value
            "Task %s[%s] succeeded in %ss: %s",
            task.name,
            context.id,
            time.perf_counter() - started,
            short_repr(outcome.value),
        )
    if record is not None:
        record(outcome)
    if not (propagate and outcome.state == states.FAILURE):
        _conclude(task, context, outcome, eager)


def _leave(task: Task, context: Context, outcome: Outcome) -> None:
    try:
        if signals.task_postrun.receivers:
            signals.task_postrun.send(
                task,
                task_id=context.id,
                task=task,
                args=context.args,
                kwargs=context.kwargs or {},
                retval=outcome.value,
                state=outcome.state,
            )
    finally:
        task.app.pop_request()
        task.pop_request()


def _invoke(task: Task, args: Any, kwargs: dict[str, Any]) -> Any:
    # A base class's own ``__call__`` (an app context around every task, say) wraps the run,
    # as in Celery.
    value = task(*args, **kwargs) if _overrides(task, "__call__") else task.run(*args, **kwargs)
    if inspect.iscoroutine(value):
        value = _event_loop().run_until_complete(value)
    return value


def keeps_result(app: App, task: Task | None, request: Context, state: str) -> bool:
    """Whether ``state`` is stored: not when the result is ignored (``result_ignored``),
    except errors with ``store_errors_even_if_ignored``."""
    if not result_ignored(app, task, request):
        return True
    if state == states.SUCCESS:
        return False
    keep = task.store_errors_even_if_ignored if task is not None else None
    return bool(keep or app.conf.task_store_errors_even_if_ignored)


def _call(
    task: Task, context: Context, acks_late: bool, soft: float | None, hard: float | None
) -> Outcome:
    """``soft``/``hard``: the limits to raise in this process (``hard`` only in the solo pool)."""
    args, kwargs = context.args, context.kwargs or {}
    try:
        if _overrides(task, "before_start"):
            task.before_start(context.id or "", args, kwargs)
        if soft or hard:
            with alarm(soft, hard):
                value = _invoke(task, args, kwargs)
        else:
            value = _invoke(task, args, kwargs)
    except Exception as exc:
        return _raised(task, context, acks_late, exc)
    return Outcome(states.SUCCESS, value, None, Settle.ACK)


async def _call_async(
    task: Task, context: Context, acks_late: bool, interrupt: Interrupt
) -> Outcome:
    import asyncio

    args, kwargs = context.args, context.kwargs or {}
    try:
        if _overrides(task, "before_start"):
            task.before_start(context.id or "", args, kwargs)
        value = task(*args, **kwargs) if _overrides(task, "__call__") else task.run(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await interrupt.guard(value)
    except asyncio.CancelledError:
        if interrupt.reason is None:
            raise  # not the pool's doing: the loop is going away
        error = interrupt.error()
        text = _format(error)
        log.error("task %s[%s] %s", task.name, context.id, error)
        if interrupt.reason == "terminate":
            return Outcome(states.REVOKED, error, None, Settle.ACK, error)
        return _failure(task, context, acks_late, error, text)  # hard time limit
    except Exception as exc:
        return _raised(task, context, acks_late, exc)
    return Outcome(states.SUCCESS, value, None, Settle.ACK)


def _raised(task: Task, context: Context, acks_late: bool, exc: Exception) -> Outcome:
    """The outcome of a task that raised ``exc``: retried (``autoretry_for``), ignored,
    rejected or failed."""
    try:
        if (
            task.autoretry_for
            and not isinstance(exc, (Retry, Ignore, Reject))  # the task's own decision
            and isinstance(exc, task.autoretry_for)
            and not (task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for))
        ):
            autoretry(task, context, exc)
        raise exc
    except Retry as retry:
        log.info("task %s[%s] retry: %s", task.name, context.id, retry)
        cause = retry.exc if retry.exc is not None else retry
        return Outcome(states.RETRY, cause, _format(retry.exc), Settle.ACK, retry)
    except Ignore as ignore:
        return Outcome(None, None, None, Settle.ACK, ignore)
    except Reject as reject:
        reason = reject.reason or "no reason given"
        log.info("task %s[%s] rejected: %s", task.name, context.id, reason)
        if reject.requeue:
            return Outcome(None, None, None, Settle.REQUEUE, reject)
        # It will never run again: FAILURE, as Celery 5.7 stores, not PENDING forever.
        return Outcome(states.FAILURE, reject, None, Settle.DROP, reject)
    except Exception as failed:
        text = tb.format_exc()
        if task.throws and isinstance(failed, task.throws):
            log.info("task %s[%s] raised expected: %r", task.name, context.id, failed)
        else:
            log.error("task %s[%s] raised %r\n%s", task.name, context.id, failed, text)
        return _failure(task, context, acks_late, failed, text)


def _failure(
    task: Task, context: Context, acks_late: bool, exc: BaseException, text: str | None
) -> Outcome:
    acks_on_failure = _option(task, "acks_on_failure_or_timeout", True)
    settle = Settle.DROP if acks_late and not acks_on_failure else Settle.ACK
    return Outcome(states.FAILURE, exc, text, settle, exc)


def _overrides(task: Task, name: str) -> bool:
    """Whether the task's class has its own ``name`` (a handler, ``__call__``): the base ones
    do nothing, so a task without any costs one dict lookup per run."""
    return name in _custom(type(task))


def _custom(cls: type[Task]) -> frozenset[str]:
    custom = _CUSTOM.get(cls)
    if custom is None:
        names = ("__call__", "before_start", *_AFTER_RECORD)
        own = (n for n in names if getattr(cls, n) is not getattr(Task, n))
        custom = _CUSTOM[cls] = frozenset(own)
    return custom


def has_handlers(task: Task) -> bool:
    """Whether the task has a handler that runs once its outcome is recorded."""
    return not _custom(type(task)).isdisjoint(_AFTER_RECORD)


_AFTER_RECORD = ("on_success", "on_failure", "on_retry", "after_return")
#: A task class -> the handlers (and ``__call__``) it has of its own.
_CUSTOM: dict[type[Task], frozenset[str]] = {}


def _conclude(task: Task, context: Context, outcome: Outcome, eager: bool) -> None:
    """The task's handlers and signals once its outcome is recorded, in Celery's order
    (``app/trace.py``): ``on_success`` or ``on_failure`` or ``on_retry``, then the signal, then
    ``after_return`` (success and failure only). An error in a handler is logged (raised when
    eager): the outcome is recorded already, and the message must still be settled."""
    task_id = context.id or ""
    args, kwargs = context.args, context.kwargs or {}
    state, error = outcome.state, outcome.error
    if state == states.SUCCESS:
        if _overrides(task, "on_success"):
            _guarded(task, context, "on_success", eager, outcome.value, task_id, args, kwargs)
        if signals.task_success.receivers:
            signals.task_success.send(task, result=outcome.value)
    elif state == states.RETRY:
        assert isinstance(error, Retry)
        einfo = ExceptionInfo(error)
        if _overrides(task, "on_retry"):
            _guarded(task, context, "on_retry", eager, error.exc, task_id, args, kwargs, einfo)
        if signals.task_retry.receivers:
            signals.task_retry.send(task, request=context, reason=outcome.value, einfo=einfo)
        return
    elif state == states.FAILURE and error is not None:
        einfo = ExceptionInfo(error)
        if not isinstance(error, Reject) and _overrides(task, "on_failure"):
            _guarded(task, context, "on_failure", eager, error, task_id, args, kwargs, einfo)
        if signals.task_failure.receivers:
            signals.task_failure.send(
                task,
                task_id=context.id,
                exception=error,
                args=args,
                kwargs=kwargs,
                traceback=error.__traceback__,
                einfo=einfo,
            )
        if isinstance(error, Reject):
            return  # Celery calls no handler for a rejected message
    else:
        return  # ignored, requeued: no handler
    if _overrides(task, "after_return"):
        _guarded(
            task, context, "after_return", eager, state, outcome.value, task_id, args, kwargs, None
        )


def _guarded(task: Task, context: Context, name: str, eager: bool, *args: Any) -> None:
    try:
        getattr(task, name)(*args)
    except Exception as exc:
        if eager:
            raise
        log.exception("task %s[%s]: its %s handler raised %r", task.name, context.id, name, exc)


def autoretry(task: Task, context: Context, exc: Exception) -> None:
    """``autoretry_for``: retries with ``retry_kwargs`` (``countdown``, ``max_retries``...),
    the countdown computed by ``retry_backoff`` when set, as Celery does."""
    options = dict(task.retry_kwargs or {})
    if task.retry_backoff:
        options["countdown"] = backoff(task, context.retries)
    task.retry(exc=exc, **options)


_loops = threading.local()


def _event_loop() -> asyncio.AbstractEventLoop:
    """One event loop per worker thread for ``async def`` tasks, kept across tasks so that
    clients bound to it (connection pools) stay usable."""
    import asyncio  # only a worker with ``async def`` tasks pays for it (~13 ms at start)

    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    return loop


def backoff(task: Task, retries: int) -> int:
    """Celery's exponential backoff: ``factor * 2**retries`` seconds (``factor`` an integer, at
    least 1), capped by ``retry_backoff_max``, with full jitter (``retry_jitter``)."""
    factor = int(max(1.0, float(task.retry_backoff)))
    countdown = min(int(task.retry_backoff_max), factor * (2**retries))
    if task.retry_jitter:
        countdown = random.randrange(countdown + 1)
    return max(0, countdown)


def _format(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    return "".join(tb.format_exception(type(exc), exc, exc.__traceback__))


def _option(task: Task, name: str, default: Any) -> Any:
    value = getattr(task, name, None)
    if value is None:
        value = task.app.conf.get(f"task_{name}", default)
    return value
