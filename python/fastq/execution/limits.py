"""Time limits inside the process running a task.

The soft limit raises ``SoftTimeLimitExceeded`` in the task (SIGALRM, so only where tasks run on
the main thread: prefork children and the solo pool). The hard limit is enforced by the prefork
supervisor, which kills and replaces the child; in the solo pool it is raised like the soft one,
best effort.
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
