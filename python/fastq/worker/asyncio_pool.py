"""The asyncio pool: one process, one event loop, up to ``concurrency`` tasks in flight.

``AsyncioLoop`` is the ``WorkerLoop`` (same handling of a message: refusals, revokes, ETAs,
rate limits, acks, results) with two changes: ``_execute`` starts the task and returns instead
of running it to the end, and the cycle awaits. ``async def`` tasks are awaited on the loop;
plain ``def`` tasks run in a bounded thread pool so they do not block it. The broker's consumer
is used from one thread at a time: the blocking fetch runs in a thread of its own while the loop
goes on, and an ack or reject decided meanwhile (a task that ended) is sent once it returns
(``_SerialConsumer``). Early acks are only sent by the loop between fetches, so an early-acked
task is acknowledged before it starts, as in the other pools.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import math
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastq import errors, signals, states
from fastq.app import App
from fastq.brokers.base import Consumer, Delivery
from fastq.events import TaskEvents
from fastq.execution.limits import Interrupt
from fastq.execution.tracer import Outcome, has_handlers, run_task, run_task_async
from fastq.task import Context, Task
from fastq.worker.active import ActiveTasks
from fastq.worker.held import Entry, waiting_entry
from fastq.worker.loop import WorkerLoop, _Run
from fastq.worker.observe import TaskObserver, Watch
from fastq.worker.request import expired
from fastq.worker.revoke import RevokedIds

log = logging.getLogger("fastq.worker")

#: How long a fetch may block while tasks are in flight: the late acks and rejects of tasks that
#: end meanwhile wait for it (their results are stored at once).
BUSY_FETCH_WAIT = 0.05
#: While every slot is busy, how often the loop takes what a broker that pushes (RabbitMQ) sent
#: it meanwhile, without waiting: those messages are this worker's, so ``inspect reserved`` and
#: ``scheduled`` list them from then on. A task ending wakes the loop without a fetch.
PUSHED_POLL = 0.25
#: The loop's key in ``ActiveTasks`` for what it holds (its slots are the tasks in flight).
HELD_BY = -1


class _SerialConsumer:
    """The consumer, used from one thread at a time: while a fetch runs in the fetch thread,
    acks and rejects are kept in order and sent when it returns (the Rust consumers take one
    caller at a time; a second would wait out the fetch, or fail to borrow it)."""

    def __init__(self, consumer: Consumer) -> None:
        self.inner = consumer
        self.fetching = False
        self._deferred: list[tuple[str, Any]] = []
        self._in_flight = 0

    def fetch(self, timeout: float) -> Sequence[Delivery]:
        return self.inner.fetch(timeout)

    async def fetch_in(self, io: concurrent.futures.Executor, timeout: float) -> list[Delivery]:
        """The fetch, in ``io``'s thread: the loop goes on meanwhile."""
        self._in_flight = self.inner.in_flight
        self.fetching = True
        try:
            loop = asyncio.get_running_loop()
            return list(await loop.run_in_executor(io, self.inner.fetch, timeout))
        finally:
            self.fetching = False
            self.send_deferred()

    def send_deferred(self) -> None:
        """Sends what waited for the fetch, in order; what a broker error stopped stays."""
        while self._deferred:
            kind, value = self._deferred[0]
            if kind == "ack":
                self.inner.ack(value)
            else:
                self.inner.reject(*value)
            self._deferred.pop(0)

    def ack(self, delivery_tags: list[str], wait: bool = True) -> None:
        if self.fetching:
            self._deferred.append(("ack", list(delivery_tags)))
        else:
            self.inner.ack(delivery_tags, wait)

    def reject(self, delivery_tag: str, requeue: bool) -> None:
        if self.fetching:
            self._deferred.append(("reject", (delivery_tag, requeue)))
        else:
            self.inner.reject(delivery_tag, requeue)

    def restore_unacked(self) -> int:
        return self.inner.restore_unacked()

    @property
    def in_flight(self) -> int:
        return self._in_flight if self.fetching else self.inner.in_flight

    def close(self) -> None:
        self.inner.close()


@dataclass(slots=True)
class _InFlight:
    """A task started and not finished: its slot (for ``inspect active``) and its limits."""

    run: _Run
    slot: int
    interrupt: Interrupt = field(default_factory=Interrupt)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    sync: bool = False
    #: Its metrics and span (``TaskObserver.begin``), with metrics or tracing on.
    watch: Watch | None = None


class AsyncioLoop(WorkerLoop):
    """The worker loop of the asyncio pool; ``run`` owns the event loop of this (main) thread."""

    def __init__(
        self,
        app: App,
        queues: list[str],
        *,
        concurrency: int,
        threads: int,
        prefetch: int,
        hostname: str,
        consumer_id: str,
        revoked: RevokedIds,
        active_tasks: ActiveTasks,
        events: TaskEvents | None = None,
        observer: TaskObserver | None = None,
    ) -> None:
        super().__init__(
            app, queues, prefetch=prefetch, hostname=hostname, consumer_id=consumer_id,
            revoked=revoked, events=events, observer=observer,
        )  # fmt: skip
        self.concurrency = concurrency
        self.active_tasks = active_tasks
        self._executor = concurrent.futures.ThreadPoolExecutor(threads, "fastq-sync-task")
        self._io = concurrent.futures.ThreadPoolExecutor(1, "fastq-fetch")
        self._free_slots = list(range(concurrency - 1, -1, -1))
        self._in_flight: dict[str, _InFlight] = {}
        #: Fetched while every slot was busy: started as slots free up (unacknowledged till then),
        #: with when each was received (``perf_counter``, for the wait metric).
        self._waiting: deque[tuple[Task, Delivery, Context, float]] = deque()
        self._flush_due = False
        self._warned_sync_limits: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._serial: _SerialConsumer | None = None
        #: The broker pushes messages ahead of fetches, and when to take them next (monotonic).
        self._pushes = app.broker.pushes
        self._next_poll = 0.0
        self._tell_held = lambda entries: active_tasks.held(HELD_BY, entries)

    # -- lifecycle -------------------------------------------------------------------------------
    def stop(self) -> None:
        super().stop()
        self._poke()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Runs ``fn(*args)`` on the loop's thread (from the control thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def run(self) -> None:
        asyncio.run(self.run_async())

    async def run_async(self, handle_signals: bool = False) -> None:
        """Runs until stopped; ``handle_signals``: SIGTERM/SIGINT stop it (``install_signals``)."""
        self._loop = asyncio.get_running_loop()
        if handle_signals:
            install_signals(self._loop, self)
        self._wake = asyncio.Event()
        self._begin_run()
        try:
            while not self.stopping.is_set():
                try:
                    consumer = await self._open()
                    fetches = not self._interrupted
                    await self._cycle_async(consumer)
                    self._reached(fetches)
                except errors.BrokerConnectionError as exc:
                    delay = self._unreachable(exc)
                    if delay is None:
                        break
                    await self._nap(delay)
            await self._drain()
        finally:
            self._io.shutdown(wait=True)
            self._shutdown()
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _open(self) -> _SerialConsumer:
        if self._serial is None or self._consumer is None:
            loop = asyncio.get_running_loop()
            consumer = await loop.run_in_executor(self._io, self._open_consumer)
            self._serial = _SerialConsumer(consumer)
            self._consumer = self._serial
        return self._serial

    async def _drain(self) -> None:
        """Warm stop: nothing new starts; the tasks in flight finish (a second signal stops
        cold), their results are stored and their late acks sent."""
        if self._in_flight:
            log.info("warm shutdown: waiting for %d task(s) in flight", len(self._in_flight))
        while self._in_flight:
            await self._nap(1.0)
        if self._serial is not None:
            try:
                self._serial.send_deferred()
            except errors.BrokerConnectionError as exc:
                log.error("could not send late acks at shutdown (%s); they come back", exc)

    async def _nap(self, seconds: float) -> None:
        """Waits up to ``seconds``; a task ending or a stop wakes it."""
        assert self._wake is not None
        self._wake.clear()
        if seconds <= 0 or (self.stopping.is_set() and not self._in_flight):
            await asyncio.sleep(0)
            return
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # -- one cycle -------------------------------------------------------------------------------
    async def _cycle_async(self, consumer: _SerialConsumer) -> None:
        self._housekeeping()
        self._start_waiting(consumer)
        pause = self._backlog_wait(consumer)
        if pause:
            await self._nap(pause)  # the backend is down and the backlog full
            self._run_due(consumer)
            self._flush(consumer)
            return
        deliveries: list[Delivery] = []
        sleep, timeout = self._fetch_timing()
        if self._interrupted:
            deliveries, self._interrupted = self._interrupted, []
        elif self._waiting:  # every slot busy: wait for one (or the next ETA) instead
            poll_in = self._next_poll - time.monotonic() if self._pushes else math.inf
            if poll_in <= 0:
                deliveries = await self._fetch(consumer, 0.0)
            else:
                await self._nap(min(sleep + timeout, poll_in))
        else:
            if sleep:
                await self._nap(sleep)
            if self._in_flight:
                timeout = min(timeout, BUSY_FETCH_WAIT)
            deliveries = await self._fetch(consumer, timeout)
        self._dispatch(consumer, deliveries)
        self._run_due(consumer)
        self._flush(consumer)
        self._sync_held()

    async def _fetch(self, consumer: _SerialConsumer, timeout: float) -> list[Delivery]:
        deliveries = await consumer.fetch_in(self._io, timeout)
        self._received = time.perf_counter()
        self._next_poll = time.monotonic() + PUSHED_POLL
        if self.observer is not None:  # the window in use, as full as it gets
            self.observer.tick(consumer.in_flight)
        await asyncio.sleep(0)  # tasks that ended meanwhile settle before the next starts
        return deliveries

    def _start_waiting(self, consumer: _SerialConsumer) -> None:
        while self._waiting and self._free_slots and not self.stopping.is_set():
            task, delivery, context, received = self._waiting.popleft()
            self._received = received
            if expired(context):
                self._revoke(consumer, delivery.delivery_tag, context, "expired")
            elif context.id in self.revoked:
                self._revoke(consumer, delivery.delivery_tag, context, "revoked")
            else:
                self._launch(consumer, task, delivery, context)

    def _held(self) -> list[Entry]:
        entries = super()._held()
        entries += (waiting_entry(d, context, False) for _, d, context, _ in self._waiting)
        return entries

    def _holds(self) -> bool:
        return bool(self._waiting) or super()._holds()

    # -- one task --------------------------------------------------------------------------------
    def _execute(
        self, consumer: Consumer, task: Task, delivery: Delivery, context: Context
    ) -> None:
        if not self._free_slots or self._waiting:
            self._waiting.append((task, delivery, context, self._received))
            return
        self._launch(consumer, task, delivery, context)

    def _launch(self, consumer: Consumer, task: Task, delivery: Delivery, context: Context) -> None:
        loop = self._loop
        assert loop is not None
        run = self._start(consumer, task, delivery, context)
        slot = self._free_slots.pop()
        task_id = context.id or ""
        self.active_tasks.started(
            slot, os.getpid(), task_id, task.name, delivery.delivery_tag, held_by=HELD_BY
        )
        flight = _InFlight(run, slot, sync=not is_async(task))
        self._in_flight[task_id] = flight
        observer = self.observer
        if observer is not None:  # its span is current in what runs the task (a copy), not here
            flight.watch = observer.begin(task.name, context, self._received)
        try:
            future = self._run(task, context, run, flight)
        finally:
            if flight.watch is not None:
                assert observer is not None
                flight.watch = observer.release(flight.watch)
        future.add_done_callback(lambda done: self._ended(consumer, task_id, done))

    def _run(
        self, task: Task, context: Context, run: _Run, flight: _InFlight
    ) -> asyncio.Future[Outcome]:
        """Starts the task: a coroutine on the loop, or a plain ``def`` in a thread, each in a
        copy of the current context (the task's span current in it, with tracing)."""
        loop = self._loop
        assert loop is not None
        hard, soft = run.limits
        future: asyncio.Future[Outcome]
        if flight.sync:
            if (hard or soft) and task.name not in self._warned_sync_limits:
                self._warned_sync_limits.add(task.name)
                log.warning(
                    "task %s has a time limit, which the asyncio pool applies to async def "
                    "tasks only: this plain def task runs in a thread, which cannot be stopped; "
                    "make it async def, or run it on a prefork worker",
                    task.name,
                )
            record = self._on_loop(run.record)
            copied = contextvars.copy_context()
            future = loop.run_in_executor(
                self._executor, lambda: copied.run(run_task, task, context, run.acks_late, False,
                                                   run.limits, record=record),
            )  # fmt: skip
        else:
            interrupt = flight.interrupt
            future = interrupt.task = loop.create_task(
                run_task_async(task, context, run.acks_late, interrupt, record=run.record)
            )
            if soft:
                flight.timers.append(loop.call_later(soft, interrupt.soft, soft))
            if hard:
                flight.timers.append(loop.call_later(hard, interrupt.hard, hard))
        return future

    def _on_loop(self, record: Callable[[Outcome], None]) -> Callable[[Outcome], None]:
        """``record`` for a task in a thread: run on the loop, which owns the results and acks;
        the thread waits for it, so the task's handlers find its outcome recorded."""
        loop = self._loop
        assert loop is not None

        def record_on_loop(outcome: Outcome) -> None:
            done: concurrent.futures.Future[None] = concurrent.futures.Future()

            def call() -> None:
                try:
                    record(outcome)
                    done.set_result(None)
                except BaseException as exc:
                    done.set_exception(exc)

            # In the task's context: a chain's next step, sent from there, continues its trace.
            loop.call_soon_threadsafe(call, context=contextvars.copy_context())
            done.result()

        return record_on_loop

    def _ended(self, consumer: Consumer, task_id: str, done: asyncio.Future[Outcome]) -> None:
        flight = self._in_flight.pop(task_id)
        for timer in flight.timers:
            timer.cancel()
        self._free_slots.append(flight.slot)
        self.active_tasks.finished(flight.slot)
        run = flight.run
        observer = self.observer
        if observer is not None and flight.watch is not None:
            observer.end(flight.watch, *_outcome_of(done))
        try:
            outcome = done.result()
            if outcome.state == states.REVOKED and signals.task_revoked.receivers:
                signals.task_revoked.send(
                    run.task, request=run.context, terminated=True, signum=None, expired=False
                )
            self._finish(consumer, run, outcome)
        except asyncio.CancelledError:
            log.warning("task %s[%s] cancelled: the loop is stopping", run.task.name, task_id)
        except errors.BrokerConnectionError as exc:  # its ack is kept for the next flush
            log.warning(
                "task %s[%s] ended; could not settle it yet: %s", run.task.name, task_id, exc
            )
        except Exception as exc:
            self._failed_handling(consumer, run.delivery, exc)
        finally:
            self._poke_slot()

    def _poke_slot(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def terminate(self, task_ids: Sequence[str]) -> None:
        """``revoke(terminate=True)``: cancels these coroutines (on the loop's thread)."""
        for task_id in task_ids:
            flight = self._in_flight.get(task_id)
            if flight is None:
                continue
            if flight.sync:
                log.warning(
                    "task %s is a plain def task running in a thread, which cannot be "
                    "terminated; it was revoked only (make it async def to terminate it)",
                    task_id,
                )
                continue
            log.warning("task %s terminated by revoke", task_id)
            flight.interrupt.terminate()

    # -- results: gathered per loop turn ---------------------------------------------------------
    def _store_ran(self, task: Task) -> None:
        if has_handlers(task):  # they run next and find the outcome stored
            self._store_kept()
        else:
            self._flush_soon()

    def _task_flush(self, consumer: Consumer) -> None:
        self._flush_soon()

    def _flush_soon(self) -> None:
        """One flush (one store round trip, one ack) for every task ending in this loop turn."""
        if self._flush_due or self._loop is None:
            return
        self._flush_due = True
        self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_due = False
        if self._serial is None:
            return
        try:
            self._flush(self._serial)
        except errors.FastqError as exc:  # kept: the cycle's own flush tries again
            log.debug("flush after tasks ended failed: %s", exc)


def _outcome_of(done: asyncio.Future[Outcome]) -> tuple[Outcome | None, BaseException | None]:
    """A finished run's outcome, or what escaped it (cancelled: the loop is stopping)."""
    if done.cancelled():
        return None, asyncio.CancelledError()
    error = done.exception()
    return (None, error) if error is not None else (done.result(), None)


def is_async(task: Task) -> bool:
    """Whether the task's body is a coroutine function (awaited on the loop, not in a thread)."""
    call = type(task).__call__
    if call is not Task.__call__ and inspect.iscoroutinefunction(call):
        return True
    return inspect.iscoroutinefunction(task.run)


def install_signals(loop: asyncio.AbstractEventLoop, pool: AsyncioLoop) -> None:
    """SIGTERM/SIGINT: warm stop; a second one, or SIGQUIT: cold (exit at once; what was not
    acknowledged comes back from the broker)."""
    count = 0

    def on_signal(signum: int) -> None:
        nonlocal count
        count += 1
        if count > 1 or signum == signal.SIGQUIT:
            log.warning("cold shutdown")
            os._exit(1)
        log.info("warm shutdown: waiting for running tasks (send the signal again for cold)")
        pool.stop()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        loop.add_signal_handler(sig, on_signal, sig)
