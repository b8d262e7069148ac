"""Waiting for results without a thread per waiter.

A backend's waiting machinery (one per process, e.g. the Redis backend's ``ResultHub``) delivers a
task's ready meta, or the error that reading it raised, to every ``Listener`` of that task. A
listener is either blocking (``get()``: an event the calling thread waits on) or bound to an
asyncio loop (``await result``: a future settled in the loop's thread), so a thousand awaits cost
a thousand futures, not a thousand threads.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

#: What a listener receives: the ready meta, or the exception reading it raised.
Outcome = dict[str, Any] | BaseException


class Listener:
    """One caller waiting for one task; ``deliver`` may be called from any thread, once."""

    __slots__ = ("task_id",)

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id

    def deliver(self, outcome: Outcome) -> None:
        raise NotImplementedError


class BlockingListener(Listener):
    __slots__ = ("_event", "_outcome")

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self._event = threading.Event()
        self._outcome: Outcome | None = None

    def deliver(self, outcome: Outcome) -> None:
        self._outcome = outcome
        self._event.set()

    def wait(self, timeout: float | None) -> Outcome | None:
        """The outcome, or ``None`` when ``timeout`` passed first."""
        return self._outcome if self._event.wait(timeout) else None


class LoopListener(Listener):
    """Settles a future of the running loop; create it in the loop's thread."""

    __slots__ = ("_loop", "future")

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self._loop = asyncio.get_running_loop()
        self.future: asyncio.Future[dict[str, Any]] = self._loop.create_future()

    def deliver(self, outcome: Outcome) -> None:
        try:
            self._loop.call_soon_threadsafe(self._settle, outcome)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    def _settle(self, outcome: Outcome) -> None:
        if self.future.done():
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)
