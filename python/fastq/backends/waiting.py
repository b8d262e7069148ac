"""Waiting for results without a thread per waiter.

A backend's waiting machinery (one per process, e.g. the Redis backend's ``ResultHub``) delivers a
task's ready meta, or the error that reading it raised, to every ``Listener`` of that task. A
listener is either blocking (``get()``: an event the calling thread waits on) or bound to an
asyncio loop (``await result``: a future settled in the loop's thread), so a thousand awaits cost
a thousand futures, not a thousand threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: What a listener receives: the ready meta, or the exception reading it raised.
Outcome = dict[str, Any] | BaseException


log = logging.getLogger("fastq.results")


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


class CallbackListener(Listener):
    """Calls ``callback(outcome)`` on fastq's callback thread, never the delivering one (a
    backend's waiting thread), so a callback may itself wait on results."""

    __slots__ = ("_callback",)

    def __init__(self, task_id: str, callback: Callable[[Outcome], None]) -> None:
        super().__init__(task_id)
        self._callback = callback

    def deliver(self, outcome: Outcome) -> None:
        _callback_thread().submit(self._callback, outcome)


_callbacks: tuple[int, ThreadPoolExecutor] | None = None
_callbacks_lock = threading.Lock()


def _callback_thread() -> ThreadPoolExecutor:
    """One thread per process runs the callbacks, in the order results became ready (as
    Celery's result consumer calls them one by one)."""
    global _callbacks
    with _callbacks_lock:
        if _callbacks is None or _callbacks[0] != os.getpid():  # a forked child makes its own
            _callbacks = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="fastq-then"))
        return _callbacks[1]


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


class _LoopWaits:
    __slots__ = ("delay", "futures", "task", "wake")

    def __init__(self) -> None:
        self.futures: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.delay = 0.0


class LoopPoller:
    """``await result`` with no thread per await: one task per event loop reads every awaited id
    with one ``read_many`` call per turn, on a backoff from ``first`` to ``cap`` seconds that
    starts over when a new await arrives.

    Local, cheap reads (SQLite, memory) run in the loop; network reads (``in_thread``) run in the
    loop's default executor, one call at a time, so a thousand awaits use one thread, not a
    thousand (and never starve the executor, as never-ending awaits each holding one would)."""

    def __init__(
        self,
        read_many: Callable[[list[str]], list[dict[str, Any]]],
        read_one: Callable[[str], dict[str, Any]],
        first: float = 0.001,
        cap: float = 0.05,
        in_thread: bool = False,
    ) -> None:
        self.read_many = read_many
        self.in_thread = in_thread
        self.read_one = read_one
        self.first = first
        self.cap = cap
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaits] = (
            weakref.WeakKeyDictionary()
        )

    async def wait(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        from fastq import errors

        loop = asyncio.get_running_loop()
        waits = self._loops.get(loop)
        if waits is None:
            waits = self._loops[loop] = _LoopWaits()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        waits.futures.setdefault(task_id, []).append(future)
        waits.delay = self.first
        waits.wake.set()
        if waits.task is None or waits.task.done():
            waits.task = loop.create_task(self._run(waits))
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise errors.TimeoutError(f"task {task_id} not ready after {timeout}s") from None
        finally:
            pending = waits.futures.get(task_id)
            if pending is not None and future in pending:
                pending.remove(future)
                if not pending:
                    del waits.futures[task_id]

    def _read(self, ids: list[str]) -> list[Outcome]:
        try:
            return list(self.read_many(ids))
        except Exception:  # one unreadable result must not fail the others: read one by one
            outcomes: list[Outcome] = []
            for task_id in ids:
                try:
                    outcomes.append(self.read_one(task_id))
                except Exception as exc:
                    outcomes.append(exc)
            return outcomes

    async def _run(self, waits: _LoopWaits) -> None:
        try:
            await self._poll(waits)
        except asyncio.CancelledError:  # the loop is going away
            self._settle_all(waits, None)
            raise
        except Exception as exc:  # the awaits have no timeout of their own: they get the error
            log.exception("result poller failed; its waits fail with it")
            self._settle_all(waits, exc)

    @staticmethod
    def _settle_all(waits: _LoopWaits, exc: Exception | None) -> None:
        """Ends every pending await: cancelled (``exc`` None) or failed with ``exc``."""
        for futures in waits.futures.values():
            for future in futures:
                if future.done():
                    continue
                if exc is None:
                    future.cancel()
                else:
                    future.set_exception(exc)
        waits.futures.clear()

    async def _poll(self, waits: _LoopWaits) -> None:
        from fastq import states

        while waits.futures:
            ids = list(waits.futures)
            if self.in_thread:
                loop = asyncio.get_running_loop()
                try:
                    outcomes = await loop.run_in_executor(None, self._read, ids)
                except RuntimeError as exc:  # the executor is shut down: tell the waiters
                    outcomes = [exc] * len(ids)
            else:
                outcomes = self._read(ids)
            for task_id, outcome in zip(ids, outcomes, strict=True):
                if isinstance(outcome, BaseException) or outcome["status"] in states.READY_STATES:
                    for future in waits.futures.pop(task_id, ()):
                        if not future.done():
                            if isinstance(outcome, BaseException):
                                future.set_exception(outcome)
                            else:
                                future.set_result(outcome)
            waits.wake.clear()
            try:
                await asyncio.wait_for(waits.wake.wait(), waits.delay)
            except asyncio.TimeoutError:
                waits.delay = min(max(waits.delay * 2, self.first), self.cap)
