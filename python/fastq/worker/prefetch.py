"""The adaptive prefetch window: how many messages a worker process claims ahead, sized from
how long its tasks take, when ``worker_prefetch_multiplier`` is left unset.

Celery's fixed default (4 a process) is a compromise: for many short tasks every batch pays the
broker's round trips and the worker's per-batch work for only 4 tasks (Celery's docs advise 64 or
128 there), for long ones a process sits on 3 messages an idle peer could run (the docs advise
1). The window here holds about ``TARGET`` seconds of work: ``TARGET / mean task time``, between
1 and ``MAX_WINDOW``. So a process never claims more than it can run in about that long, which
bounds what the others wait for, and short tasks come in batches big enough to amortise each
fetch. A multiplier that is set (``worker_prefetch_multiplier``, ``--prefetch-multiplier``) is
kept as it is, as Celery does.
"""

from __future__ import annotations

#: Seconds of work a process claims ahead, at most (about; the mean moves).
TARGET = 0.05
#: The largest window: beyond it a batch saves nothing measurable and only holds more messages
#: (bench/RESULTS.md: 16 → 64 → 128 a process, then flat).
MAX_WINDOW = 128
#: Celery's default multiplier: the window before any task has run.
START = 4
#: Weight of the newest batch in the mean task time: a long task shrinks the window at once,
#: a run of short ones grows it back within a few batches.
WEIGHT = 0.5


class AdaptiveWindow:
    """One consumer's window (a prefork child's, a thread's, the solo pool's)."""

    def __init__(self, start: int = START, maximum: int = MAX_WINDOW, target: float = TARGET):
        self.size = max(1, min(start, maximum))
        self.maximum = maximum
        self.target = target
        #: Mean wall seconds a task took, over the batches seen (None before the first).
        self.mean: float | None = None

    def observe(self, tasks: int, seconds: float) -> int:
        """A batch of ``tasks`` handled in ``seconds`` (each task's run and the loop's work
        around it): the window for the next fetch."""
        if tasks <= 0 or seconds < 0:
            return self.size
        per_task = seconds / tasks
        self.mean = per_task if self.mean is None else WEIGHT * per_task + (1 - WEIGHT) * self.mean
        wanted = int(self.target / self.mean) if self.mean > 0 else self.maximum
        self.size = max(1, min(wanted, self.maximum))
        return self.size
