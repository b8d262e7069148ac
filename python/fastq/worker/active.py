"""What each pool slot (child index or thread) runs now, and what it holds and has not started:
``inspect active``, ``reserved``, ``scheduled`` and ``stats``.

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
    from fastq.worker.held import Entry


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
        #: What each consumer holds and has not started (``worker/held.py``), by task id.
        self._held: dict[int, dict[str, Entry]] = {}
        self.total: Counter[str] = Counter()

    def started(
        self,
        slot: int,
        pid: int,
        task_id: str,
        name: str,
        delivery_tag: str,
        held_by: int | None = None,
    ) -> None:
        """``held_by``: the consumer that held the task, when it is not ``slot`` (asyncio)."""
        with self._lock:
            self._running[slot] = ActiveTask(task_id, name, delivery_tag, time.time(), pid)
            held = self._held.get(slot if held_by is None else held_by)
            if held:
                held.pop(task_id, None)

    def held(self, consumer: int, entries: list[Entry]) -> None:
        """Everything ``consumer`` holds now and has not started (replacing what it said)."""
        with self._lock:
            if entries:
                self._held[consumer] = {e[0]: e for e in entries}
            else:
                self._held.pop(consumer, None)

    def holding(self) -> list[Entry]:
        with self._lock:
            return [e for held in self._held.values() for e in held.values()]

    def finished(self, slot: int) -> None:
        with self._lock:
            task = self._running.pop(slot, None)
            if task is not None:
                self.total[task.name] += 1

    def gone(self, slot: int) -> None:
        """The slot's process died: what it ran did not finish, what it held went back."""
        with self._lock:
            self._running.pop(slot, None)
            self._held.pop(slot, None)

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

    def held(self, entries: list[Entry]) -> None:
        self.active_tasks.held(self.slot, entries)
