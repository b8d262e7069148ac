"""What each pool slot (child index or thread) runs now: ``inspect active`` and ``stats``.

``ActiveTasks`` holds it, fed by the supervisor's report pipe (prefork) or by an
``ActiveTasksReporter`` in each loop (threads, solo).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastq.task import Context


@dataclass(slots=True)
class ActiveTask:
    id: str
    name: str
    delivery_tag: str
    time_start: float
    worker_pid: int


class ActiveTasks:
    """What each pool slot (child index or thread) runs now, and how many tasks finished."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, ActiveTask] = {}
        self.total: Counter[str] = Counter()

    def started(self, slot: int, pid: int, task_id: str, name: str, delivery_tag: str) -> None:
        with self._lock:
            self._running[slot] = ActiveTask(task_id, name, delivery_tag, time.time(), pid)

    def finished(self, slot: int) -> None:
        with self._lock:
            task = self._running.pop(slot, None)
            if task is not None:
                self.total[task.name] += 1

    def gone(self, slot: int) -> None:
        """The slot's process died: what it ran did not finish."""
        with self._lock:
            self._running.pop(slot, None)

    def snapshot(self) -> list[ActiveTask]:
        with self._lock:
            return list(self._running.values())


class ActiveTasksReporter:
    """The loop's ``TaskReporter`` for the threads and solo pools: reports into ``ActiveTasks``."""

    def __init__(self, active_tasks: ActiveTasks, slot: int) -> None:
        self.active_tasks = active_tasks
        self.slot = slot

    def started(self, request: Context, hard_deadline: float | None, acks_late: bool) -> None:
        tag = getattr(request, "delivery_tag", "")
        self.active_tasks.started(self.slot, os.getpid(), request.id or "", request.task or "", tag)

    def finished(self) -> None:
        self.active_tasks.finished(self.slot)
