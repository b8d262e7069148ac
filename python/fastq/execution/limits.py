"""Time limits inside the process running a task.

The soft limit raises ``SoftTimeLimitExceeded`` in the task (SIGALRM, so only where tasks run on
the main thread: prefork children and the solo pool). The hard limit is enforced by the prefork
supervisor, which kills and replaces the child; in the solo pool it is raised like the soft one,
best effort. In the asyncio pool an ``async def`` task's limits cancel its coroutine
(``Interrupt``): the soft one raises ``SoftTimeLimitExceeded`` where it waits.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastq.errors import SoftTimeLimitExceeded, TimeLimitExceeded


def effective_limits(task: Any, context: Any) -> tuple[float | None, float | None]:
    """``(hard, soft)`` from the message, then the task, then the app's settings."""
    hard, soft = [*context.timelimit, None, None][:2]
    conf = task.app.conf
    if hard is None:
        hard = task.time_limit if task.time_limit is not None else conf.task_time_limit
    if soft is None:
        soft = (
            task.soft_time_limit if task.soft_time_limit is not None else conf.task_soft_time_limit
        )
    return (float(hard) if hard else None, float(soft) if soft else None)


@contextmanager
def alarm(soft: float | None, hard: float | None) -> Iterator[None]:
    """Arms SIGALRM for the soft limit, then the hard one (given only where it is raised
    in-process: the solo pool)."""
    if threading.current_thread() is not threading.main_thread() or not (soft or hard):
        yield
        return
    stages: list[tuple[float, type[Exception]]] = []
    if soft:
        stages.append((soft, SoftTimeLimitExceeded))
    if hard and (not soft or hard > soft):
        stages.append((hard, TimeLimitExceeded))
    if not stages:
        yield
        return
    elapsed = 0.0

    def fire(signum: int, frame: Any) -> None:
        nonlocal elapsed
        at, exc_type = stages.pop(0)
        elapsed = at
        if stages:
            signal.setitimer(signal.ITIMER_REAL, stages[0][0] - elapsed)
        raise exc_type(f"{exc_type.__name__}: {at:g}s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, stages[0][0])
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Interrupt:
    """Time limits and ``terminate`` for one ``async def`` task in the asyncio pool.

    The pool arms ``soft``/``hard`` on its loop and calls ``terminate`` for a revoke. Each
    cancels the asyncio task running the coroutine; ``guard`` turns the soft limit's cancel into
    ``SoftTimeLimitExceeded`` raised inside the coroutine where it waits, so the task can catch
    it and clean up, as a Celery task does. The hard limit and ``terminate`` stay cancels: the
    coroutine ends at its next await, and ``reason``/``error`` say what to record.
    """

    def __init__(self) -> None:
        self.task: Any = None  # the asyncio.Task running the coroutine, once started
        #: ``"hard"`` or ``"terminate"`` once the coroutine was cancelled for good.
        self.reason: str | None = None
        self._soft: float | None = None  # a soft limit fired and not yet raised inside
        self._hard: float | None = None

    def soft(self, seconds: float) -> None:
        if self.task is not None and not self.task.done() and self.reason is None:
            self._soft = seconds
            self.task.cancel()

    def hard(self, seconds: float) -> None:
        self._cancel("hard")
        self._hard = seconds

    def terminate(self) -> None:
        self._cancel("terminate")

    def _cancel(self, reason: str) -> None:
        if self.task is not None and not self.task.done() and self.reason is None:
            self.reason = reason
            self._soft = None
            self.task.cancel()

    def error(self) -> Exception:
        """What the task ended with, for a ``reason``."""
        if self.reason == "terminate":
            from fastq.errors import TaskRevokedError

            return TaskRevokedError("terminated")
        return TimeLimitExceeded(f"TimeLimitExceeded: {self._hard:g}s")

    def guard(self, awaitable: Any) -> Any:
        return _Guarded(awaitable.__await__(), self)

    def _take_soft(self) -> BaseException | None:
        seconds, self._soft = self._soft, None
        if seconds is None:
            return None
        uncancel = getattr(self.task, "uncancel", None)  # 3.11+: asyncio.timeout() stays right
        if uncancel is not None:
            uncancel()
        return SoftTimeLimitExceeded(f"SoftTimeLimitExceeded: {seconds:g}s")


class _Guarded:
    """Awaits an awaitable as ``await`` would (sends and throws passed through), except that the
    soft limit's cancel is thrown in as ``SoftTimeLimitExceeded``."""

    def __init__(self, inner: Any, interrupt: Interrupt) -> None:
        self._inner = inner
        self._interrupt = interrupt

    def __await__(self) -> Any:
        import asyncio  # loaded already: only the asyncio pool awaits this

        inner = self._inner
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                if thrown is not None:
                    exc, thrown = thrown, None
                    yielded = inner.throw(exc)
                else:
                    yielded = inner.send(sent)
            except StopIteration as stop:
                return stop.value
            try:
                sent = yield yielded
            except GeneratorExit:
                inner.close()
                raise
            except BaseException as exc:  # a cancel or what the loop throws in: passed on
                sent = None
                thrown = exc
                if isinstance(exc, asyncio.CancelledError):
                    thrown = self._interrupt._take_soft() or exc
