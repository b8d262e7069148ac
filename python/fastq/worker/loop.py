"""The consumer loop one worker process (or thread) runs: fetch a batch, run, store, ack.

The Rust consumer holds the prefetch window and decodes messages without the GIL; this loop only
runs tasks. A prefork child stores the results of a fetched batch in one round trip, then sends
its late acks, and hands a copy of each result to the supervisor as each task ends: should it die
mid-batch, the supervisor stores them and settles their messages, so no finished task stays
PENDING and only the running one can run again. Without a supervisor (threads, solo) each result
is stored, and its late ack sent, right after its task. While the result backend is down,
results are kept (up to ``MAX_UNSTORED``, then the loop stops fetching) and late acks wait for
them; the store is retried on a backoff between tasks, never by sleeping while tasks wait.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, cast

from fastq import errors, signals, states
from fastq.app import App
from fastq.backends import DisabledBackend
from fastq.backoff import Backoff
from fastq.brokers.base import Consumer, Delivery, ReleasingConsumer, WindowedConsumer
from fastq.events import TaskEvents
from fastq.execution.followups import on_revoked, send_followups
from fastq.execution.limits import effective_limits
from fastq.execution.tracer import Outcome, Settle, has_handlers, keeps_result, run_task
from fastq.task import Context, Task
from fastq.worker import task_settings
from fastq.worker.held import Entry, delivery_entry, waiting_entry
from fastq.worker.observe import TaskObserver
from fastq.worker.prefetch import AdaptiveWindow
from fastq.worker.ratelimit import RateLimiter
from fastq.worker.refused import log_refused
from fastq.worker.reports import SupervisorReporter
from fastq.worker.request import build_context, eta_of, expired
from fastq.worker.revoke import RevokedIds

log = logging.getLogger("fastq.worker")

#: ETA tasks further away than this go back to the broker's schedule instead of waiting here,
#: so they hold no prefetch slot and are not redelivered when the visibility timeout passes.
DEFER_AFTER = 2.0
#: Broker reconnect backoff: first wait and ceiling, in seconds. The ceiling is short because a
#: worker must consume again within ~2 s of its broker answering; a refused connect is cheap.
BACKOFF_START = 0.2
BACKOFF_MAX = 1.0
#: How late a broker's blocking pop may return past its timeout (Redis: 1/hz, 100 ms).
TIMER_SLACK = 0.1
#: Housekeeping paused: the broker has not answered a fetch yet.
_QUIET = float("inf")
#: Results kept in memory while the result backend is down; past this the loop stops fetching.
MAX_UNSTORED = 1000
#: Result backend retry backoff while it is down: first wait and ceiling, in seconds.
STORE_RETRY_START = 0.1
STORE_RETRY_MAX = 2.0


def retry_refusal(conf: Any, connected: bool, retries: int) -> str | None:
    """Why the worker may not try its broker again (Celery's settings), or ``None``: after a
    connection loss ``broker_connection_retry``; at startup ``broker_connection_retry_on_startup``
    (unset: the former); at most ``broker_connection_max_retries`` times an outage (unset or 0:
    no limit)."""
    if connected:
        if not conf.broker_connection_retry:
            return "broker_connection_retry is off"
    elif conf.broker_connection_retry_on_startup is False or (
        conf.broker_connection_retry_on_startup is None and not conf.broker_connection_retry
    ):
        return "broker_connection_retry_on_startup is off"
    limit = conf.broker_connection_max_retries
    if limit and retries >= limit:
        return f"broker_connection_max_retries ({limit}) reached"
    return None


class TaskReporter(Protocol):
    """Tells the prefork supervisor what a child runs, so it can enforce hard time limits and
    record the result of a task the child does not finish (``request``)."""

    def started(self, request: Context, hard_deadline: float | None, acks_late: bool) -> None: ...
    def finished(self) -> None: ...


@dataclass(order=True)
class _Scheduled:
    when: float
    seq: int
    delivery: Any = field(compare=False)
    context: Context = field(compare=False)
    #: When its message was received (``perf_counter``), for the wait metric.
    received: float = field(default=0.0, compare=False)
    #: It waits for its ETA (``inspect scheduled``), not for a rate-limit token (``reserved``).
    for_eta: bool = field(default=False, compare=False)


@dataclass(slots=True)
class _Run:
    """A task about to run: what ``_start`` decided, for ``_finish``."""

    task: Task
    delivery: Delivery
    context: Context
    acks_late: bool
    limits: tuple[float | None, float | None]
    supervisor: SupervisorReporter | None
    record: Callable[[Outcome], None]
    #: When it started (``perf_counter``), for its runtime in the task event.
    began: float


class WorkerLoop:
    """Consumes ``queues`` until asked to stop; warm stop finishes the running task first."""

    def __init__(
        self,
        app: App,
        queues: list[str],
        *,
        prefetch: int,
        hostname: str,
        consumer_id: str,
        max_tasks: int | None = None,
        max_memory_kib: int | None = None,
        reporter: TaskReporter | None = None,
        enforce_hard_limit: bool = False,
        revoked: RevokedIds | None = None,
        revoked_fd: int | None = None,
        observer: TaskObserver | None = None,
        events: TaskEvents | None = None,
        early_acks_by_supervisor: bool = False,
        adaptive_prefetch: bool = False,
    ) -> None:
        self.app = app
        self.queues = queues
        #: The queues of the open consumer (``queues`` may change at run time).
        self._consuming: list[str] = list(queues)
        self.prefetch = max(1, prefetch)
        #: Sizes the window from the tasks' times (``fastq.worker.prefetch``); None: fixed.
        self._window = AdaptiveWindow(self.prefetch) if adaptive_prefetch else None
        self.hostname = hostname
        self.consumer_id = consumer_id
        self.max_tasks = max_tasks
        #: ``--max-memory-per-child``: a child whose resident memory passes it after a task exits
        #: (cleanly, like at ``max_tasks``) and the supervisor starts a new one.
        self.max_memory_kib = max_memory_kib
        self.reporter = reporter
        self.enforce_hard_limit = enforce_hard_limit
        self.revoked = revoked if revoked is not None else RevokedIds()
        self.revoked_fd = revoked_fd
        #: Celery's task events, when the worker can send them (on while ``events.enabled``).
        self.events = events
        self.rate_limiter = RateLimiter(
            None if app.conf.worker_disable_rate_limits else app.conf.task_default_rate_limit
        )
        self.stopping = threading.Event()
        #: It stopped because it may not reconnect to the broker (``broker_connection_retry``).
        self.gave_up = False
        self.processed = 0
        self._consumer: Consumer | None = None
        self._scheduled: list[_Scheduled] = []
        self._seq = itertools.count()
        #: Results not stored yet (all of them while the backend is down), oldest first.
        self._results: list[tuple[str, dict[str, Any]]] = []
        #: Late acks not sent yet: they go only once every result before them is stored.
        self._late_acks: list[str] = []
        #: Deliveries of a batch a broker error interrupted, handled before the next fetch.
        self._interrupted: list[Delivery] = []
        #: While the backend is down: when to try it again (monotonic), and the next backoff.
        self._store_retry_at = 0.0
        self._store_backoff = Backoff(STORE_RETRY_START, STORE_RETRY_MAX)
        #: How many of ``_results`` (from the first) the supervisor has a copy of, and whether
        #: it holds copies or finished late-ack tags the child has not confirmed settled yet.
        self._told_kept = 0
        self._handed = False
        self._next_restore = 0.0
        self._next_due_move = 0.0
        #: When the broker's earliest deferred message is due (unix time).
        self._due_at = math.inf
        #: The id of the task running now, for a terminate that arrives meanwhile.
        self._running: str | None = None
        #: The reporter was told a task started and not yet that it finished.
        self._reported = False
        #: The delivery tag of the message whose task has run in the ``_handle`` under way.
        self._ran: str | None = None
        #: Prefork: the supervisor's report pipe, which also takes copies of the results not
        #: stored yet (``SupervisorReporter.hand_over``).
        self._supervisor = reporter if isinstance(reporter, SupervisorReporter) else None
        #: Prefork on a broker with a ``settler``: the supervisor acknowledges early-acked
        #: messages from their start reports, batched; this consumer only releases them.
        self._supervisor_acks = early_acks_by_supervisor and self._supervisor is not None
        #: Metrics and tracing (``worker/observe.py``); None when both are off, so a task pays
        #: one attribute check for them.
        self.observer = observer
        #: When the batch under way was fetched (``perf_counter``), for the wait metric.
        self._received = 0.0
        #: ``inspect reserved``/``scheduled``: where this consumer tells what it holds and has
        #: not started (the reporter's ``held``; None: nobody asks), the batch under way and
        #: the index of its next message, whether a fetch brought messages not told yet, and
        #: what was told (id → waits for an ETA) less the tasks started since.
        self._tell_held: Callable[[list[Entry]], None] | None = getattr(reporter, "held", None)
        #: The same for the rest of a batch, written in one call (False: read them here).
        self._tell_batch: Callable[[list[Delivery]], bool] | None = getattr(
            reporter, "held_deliveries", None
        )
        self._batch: list[Delivery] = []
        self._batch_next = 0
        self._held_new = False
        self._told: dict[str, bool] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Warm stop: no new tasks; the one running finishes and is acknowledged."""
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        """In a worker child: SIGTERM stops warm, SIGINT is left to the supervisor (Ctrl-C
        reaches the whole process group), and the supervisor does cold stops. Either signal
        ends the child at once when the running task is one the supervisor terminates."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.revoked_fd is not None:
            self.revoked.read_pipe(self.revoked_fd)
        if self._running is not None and self._running in self.revoked.terminate:
            log.warning("task %s terminated by revoke (signal %d)", self._running, signum)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)  # dies of it, as a Celery pool process does
            return
        if signum == signal.SIGTERM:
            self.stop()

    def run(self) -> None:
        self._begin_run()
        while not self.stopping.is_set():
            try:
                self._read_supervisor()  # before a queue change is looked for
                consumer = self._open_consumer()
                # A cycle that only finishes an interrupted batch proves nothing about the broker.
                fetches = not self._interrupted
                self._cycle(consumer)
                self._reached(fetches)
            except errors.BrokerInterruptedError as exc:
                # A signal (a stop, a debugger or profiler attaching), not the broker: no outage
                # to wait out, and a stop it brought is seen at once.
                log.debug("%s; again at once", exc)
            except errors.BrokerConnectionError as exc:
                delay = self._unreachable(exc)
                if delay is None:
                    break
                self.stopping.wait(delay)
        self._shutdown()

    # -- reconnecting (shared with the asyncio pool's loop) ---------------------------------------
    def _begin_run(self) -> None:
        #: A prefork child's supervisor (its parent): should it die, nobody acks what this child
        #: starts or stores what a death would leave, so the child stops (``_housekeeping``).
        self._parent = os.getppid() if self._supervisor is not None else 0
        self._backoff = Backoff(BACKOFF_START, BACKOFF_MAX, jitter=0.25)
        self._outage: float | None = None  # when the broker stopped answering
        self._retries = 0  # in this outage
        self._connected = False  # a fetch has reached the broker
        # Housekeeping (visibility restore, due ETA moves) waits for the first fetch to reach
        # the broker, and pauses while it is away: each would wait out its own connect timeout
        # in turn, delaying the first clear error and a warm stop, and log once per cycle.
        self._next_restore = self._next_due_move = _QUIET

    def _open_consumer(self) -> Consumer:
        if self._consumer is not None and self._consuming != self.queues:
            self._switch_queues()
        if self._consumer is None:
            self._consuming = list(self.queues)
            self._consumer = self.app.broker.consumer(
                self._consuming,
                prefetch=self.prefetch,
                consumer_id=self.consumer_id,
                accept=list(self.app.conf.accept_content),
            )
        return self._consumer

    def _reached(self, fetches: bool) -> None:
        """A cycle ended without a broker error; ``fetches``: it asked the broker for more."""
        if not fetches:
            return
        self._connected, self._retries = True, 0
        if self._outage is not None:
            log.info("broker reachable again after %.1fs", time.monotonic() - self._outage)
            self._outage = None
            if self.observer is not None:
                self.observer.reconnected()
        if self._next_restore == _QUIET:
            self._next_restore = self._next_due_move = 0.0
        self._backoff.reset()

    def _unreachable(self, exc: errors.BrokerConnectionError) -> float | None:
        """How long to wait before trying the broker again, or None: stop (Celery's settings)."""
        refusal = retry_refusal(self.app.conf, self._connected, self._retries)
        if refusal is not None:
            log.critical("cannot reach the broker (%s); stopping: %s", exc, refusal)
            self.gave_up = True
            return None
        self._retries += 1
        # One line per outage, not one per retry.
        if self._outage is None:
            self._outage = time.monotonic()
            log.error("broker unavailable (%s); retrying every %.0fs", exc, BACKOFF_MAX)
        else:
            log.debug("broker still unavailable (%s)", exc)
        self._next_restore = self._next_due_move = _QUIET
        self._due_at = math.inf  # no due-ETA move either, until a fetch succeeds
        return self._backoff.next()

    def _switch_queues(self) -> None:
        """``add_consumer``/``cancel_consumer`` changed the queues: the consumer is closed as at
        a warm stop (what it prefetched or holds for an ETA goes back to its queue) and the
        next cycle opens one on the new set."""
        log.info("consuming from %s (was %s)", ", ".join(self.queues), ", ".join(self._consuming))
        self._shutdown()
        self._scheduled.clear()  # returned with the rest: they come back through the queue
        self._interrupted = []

    def _shutdown(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        try:
            self._flush(consumer, final=True)
            if self.observer is not None:
                self.observer.tick(0, final=True)
            restored = consumer.restore_unacked()
            if restored:
                log.info("returned %d prefetched task(s) to the queue", restored)
        except errors.BrokerConnectionError as exc:
            log.error("could not return prefetched tasks (%s); the visibility timeout will", exc)
        finally:
            consumer.close()
            self._consumer = None
            if self._tell_held is not None and self._told:  # returned, or back after a timeout
                self._tell_held([])
                self._told = {}
                if self._supervisor is not None:
                    self._supervisor.flush_events()

    # -- one cycle -------------------------------------------------------------------------------
    def _read_supervisor(self) -> None:
        """What the prefork supervisor wrote down the pipe: revoked ids, setting changes."""
        if self.revoked_fd is not None:
            self.revoked.read_pipe(self.revoked_fd)
            if self.revoked.changes:
                self._apply_changes()

    def _cycle(self, consumer: Consumer) -> None:
        self._housekeeping()
        pause = self._backlog_wait(consumer)
        if pause:
            self.stopping.wait(pause)  # the backend is down and the backlog full: fetch nothing
            self._run_due(consumer)
            self._flush(consumer)
            return
        if self._interrupted:
            deliveries, self._interrupted = self._interrupted, []
            began = time.perf_counter()
        else:
            deliveries = list(consumer.fetch(self._fetch_wait()))
            self._received = began = time.perf_counter()
            if self.observer is not None:  # the window in use, as full as it gets
                self.observer.tick(consumer.in_flight)
            if deliveries:  # what came while the fetch waited applies to them too
                self._read_supervisor()
                if self.events is not None and self.events.enabled:
                    self.events.fetched(deliveries, self.app.tasks)  # their task-received
        self._dispatch(consumer, deliveries)
        if self._window is not None and deliveries:
            self._resize(consumer, len(deliveries), time.perf_counter() - began)
        self._run_due(consumer)
        self._flush(consumer)
        self._sync_held()
        if self._supervisor is not None:
            # What no report carried (events of revoked or ETA tasks, what the child holds).
            self._supervisor.flush_events()

    def _resize(self, consumer: Consumer, handled: int, seconds: float) -> None:
        """The adaptive window after a batch of ``handled`` messages took ``seconds``."""
        assert self._window is not None
        size = self._window.observe(handled, seconds)
        if self.max_tasks is not None:  # what it claims past its last task only goes back
            size = max(1, min(size, self.max_tasks - self.processed))
        if size != self.prefetch:
            self.prefetch = size
            cast(WindowedConsumer, consumer).prefetch = size

    def _housekeeping(self) -> None:
        if self._parent and os.getppid() != self._parent:
            log.error(
                "the worker's main process (pid %d) is gone; this child stops (warm)", self._parent
            )
            self._parent = 0
            self.stop()
        self._read_supervisor()
        self._maybe_restore_visible()
        self._maybe_move_due()

    def _dispatch(self, consumer: Consumer, deliveries: list[Delivery]) -> None:
        """Handles a fetched batch in order, until a warm stop."""
        if not deliveries:
            return
        self._batch, self._held_new = deliveries, self._tell_held is not None
        try:
            for i, delivery in enumerate(deliveries):
                if self.stopping.is_set():
                    break  # the rest stay unacknowledged and are restored on shutdown
                self._batch_next = i + 1
                try:
                    self._handle(consumer, delivery)
                except errors.BrokerConnectionError:
                    # The rest of the batch is still this worker's, handled by the next cycle,
                    # unless the broker takes back what a dead connection held (RabbitMQ): it
                    # redelivers them, and running them from here too would run them twice.
                    if not self.app.broker.returns_on_close:
                        self._interrupted = deliveries[i + 1 :]
                    # The interrupted one goes back to its queue (a no-op for an early-acked
                    # one), so it neither holds a window slot nor is lost, unless its late ack
                    # is decided already: then giving it back would run it again.
                    if delivery.delivery_tag not in self._late_acks:
                        self._give_back(consumer, delivery)
                    raise
        finally:
            self._batch, self._batch_next = [], 0

    # -- what it holds: inspect reserved/scheduled -----------------------------------------------
    def _held(self) -> list[Entry]:
        """What this consumer holds and has not started (``worker/held.py``)."""
        now = time.time()
        entries = [
            entry
            for delivery in (*self._batch[self._batch_next :], *self._interrupted)
            if (entry := delivery_entry(delivery, now)) is not None
        ]
        entries += (waiting_entry(i.delivery, i.context, i.for_eta) for i in self._scheduled)
        return entries

    def _report_held(self, entries: list[Entry] | None = None) -> None:
        assert self._tell_held is not None
        if entries is None and self._tell_batch is not None and not self._holds():
            rest = self._batch[self._batch_next :]  # the common case: the rest of a batch
            if self._tell_batch(rest):
                self._told = {d.task_id: False for d in rest if d.task_id}
                self._held_new = False
                return
        if entries is None:
            entries = self._held()
        self._tell_held(entries)
        self._told = {e[0]: e[6] is not None for e in entries}
        self._held_new = False

    def _sync_held(self) -> None:
        """At the end of a cycle: tells what it holds if that changed other than by a task
        starting (a fetch no start report carried, a task revoked, an ETA task handed to the
        broker); nothing to compare, and nothing done, while it holds nothing."""
        if self._tell_held is None or not (self._held_new or self._told or self._holds()):
            return
        entries = self._held()
        if self._held_new or {e[0]: e[6] is not None for e in entries} != self._told:
            self._report_held(entries)

    def _holds(self) -> bool:
        """It holds something besides the batch under way (the asyncio pool: more)."""
        return bool(self._scheduled or self._interrupted)

    def _give_back(self, consumer: Consumer, delivery: Delivery) -> None:
        try:
            consumer.reject(delivery.delivery_tag, True)
        except errors.BrokerError as exc:
            log.warning("could not return task %s to its queue: %s", delivery.task_id, exc)

    def _fetch_wait(self) -> float:
        """How long the fetch may block: 1 s, or until the next ETA task is due."""
        sleep, timeout = self._fetch_timing()
        if sleep:
            self.stopping.wait(sleep)
        return timeout

    def _fetch_timing(self) -> tuple[float, float]:
        """``(sleep, timeout)``: how long to sleep before the fetch, and how long the fetch may
        block. A blocking pop ends up to ``TIMER_SLACK`` late (Redis checks its timeouts 10
        times a second), so it is cut that much short and the last stretch slept instead."""
        due = self._due_at
        if self._scheduled:
            due = min(due, self._scheduled[0].when)
        due_in = due - time.time()
        if due_in >= 1.0 + TIMER_SLACK:
            return 0.0, 1.0
        if due_in > TIMER_SLACK:
            return 0.0, due_in - TIMER_SLACK
        return max(0.0, due_in), 0.0

    def _maybe_restore_visible(self) -> None:
        now = time.monotonic()
        if now < self._next_restore:
            return
        self._next_restore = now + float(self.app.conf.worker_restore_interval)
        try:
            restored = self.app.broker.restore_visible()
        except errors.FastqError as exc:
            log.warning("visibility restore failed: %s", exc)
            return
        if restored:
            log.warning("restored %d task(s) unacknowledged past the visibility timeout", restored)

    def _maybe_move_due(self) -> None:
        """Moves due deferred messages to their queues every half second, and at once when the
        earliest one is due (``_due_at``, which also caps the wait for new messages)."""
        now = time.monotonic()
        if now < self._next_due_move and time.time() < self._due_at:
            return
        self._next_due_move = now + 0.5
        try:
            self.app.broker.move_due()
            due = self.app.broker.next_due()
        except errors.FastqError as exc:
            log.warning("could not move due ETA tasks: %s", exc)
            self._due_at = math.inf  # retried on the 0.5 s throttle, not on every cycle
            return
        self._due_at = math.inf if due is None else due

    def _flush(self, consumer: Consumer, final: bool = False) -> None:
        """Stores the results kept so far, then sends the late acks: never an ack before the
        result of its task is stored (a task acked with its result lost would never run again).
        ``final``: the loop is ending; results the backend still refuses are logged as lost."""
        if self._results and not self._store_kept(force=final):
            if final:
                told = self._told_kept if self.reporter is not None else 0
                log.error(
                    "result backend still unavailable at shutdown; %d result(s) not stored "
                    "(%d handed to the supervisor, which stores them when it answers): %s",
                    len(self._results),
                    told,
                    ", ".join(task_id for task_id, _ in self._results),
                )
                self._results = []
                self._told_kept = 0  # the supervisor keeps its copies ("k" never comes)
                self._handed = False
                self._late_acks = []  # unacknowledged: restored, so they run again
            return
        if self._late_acks:
            consumer.ack(self._late_acks)  # raises: the tags stay for the next flush
            self._late_acks = []
        if self._handed:  # the supervisor's copies are stored and their messages acked
            if self._supervisor is not None:
                self._supervisor.stored()
            self._handed = False

    def _store_kept(self, force: bool = False) -> bool:
        """One attempt to store every kept result, unless the backend is down and its backoff
        has not passed; True once none is left. Never sleeps."""
        now = time.monotonic()
        if not force and now < self._store_retry_at:
            return False
        results = self._results
        try:
            try:
                self.app.backend.store_many(results)
            except errors.ResultsRefused as exc:  # the others are stored
                log_refused(exc)
            except errors.BackendError:
                raise
            except Exception:  # not the backend's availability: this batch would never store
                self._results = results = self._store_each(results)
        except errors.BackendError as exc:
            if self._store_retry_at == 0.0:
                log.error(
                    "result backend unavailable (%s); keeping results (%d so far) until it "
                    "answers, late acks wait for them",
                    exc,
                    len(results),
                )
            self._store_retry_at = now + self._store_backoff.next()
            supervisor = self._supervisor
            if supervisor is not None and len(self._results) > self._told_kept:
                # the supervisor stores them if we die
                supervisor.kept(self._results[self._told_kept :])
                self._told_kept = len(self._results)
                self._handed = True
            return False
        if self._store_retry_at:
            log.warning("result backend available again; stored %d kept result(s)", len(results))
        self._results = []
        self._told_kept = 0  # an index into _results; the copies stay until the flush ends
        self._store_retry_at = 0.0
        self._store_backoff.reset()
        return True

    def _store_each(
        self, results: list[tuple[str, dict[str, Any]]]
    ) -> list[tuple[str, dict[str, Any]]]:
        """One at a time, so only a result that cannot be stored at all is dropped (logged);
        raises ``BackendError`` with the unstored ones left in ``self._results``."""
        for index, item in enumerate(results):
            try:
                self.app.backend.store_many([item])
            except errors.ResultsRefused as exc:
                log_refused(exc)
            except errors.BackendError:
                self._results = results[index:]
                self._told_kept = max(0, self._told_kept - index)
                raise
            except Exception:
                log.exception("the result of task %s cannot be stored; dropped", item[0])
        return results

    def _backlog_wait(self, consumer: Consumer) -> float:
        """Back-pressure while the backend is down: how long to wait instead of fetching, when
        the kept results reached ``MAX_UNSTORED`` or unsent late acks fill the window."""
        if not self._results or not self._store_retry_at:
            return 0.0
        if len(self._results) < MAX_UNSTORED and consumer.in_flight < self.prefetch:
            return 0.0
        wait = self._store_retry_at - time.monotonic()
        if self._scheduled:
            wait = min(wait, self._scheduled[0].when - time.time())
        return max(0.0, wait)

    # -- one message -----------------------------------------------------------------------------
    def _handle(self, consumer: Consumer, delivery: Delivery) -> None:
        """Never lets a message end the child: whatever it carries is refused, with a FAILURE
        stored when it has an id (a child that died on it would be sent it again and again)."""
        self._ran = None
        try:
            self._handle_one(consumer, delivery)
            if self._supervisor is None:  # a refused or revoked one's state too, at once
                self._task_flush(consumer)
        except (errors.BrokerConnectionError, KeyboardInterrupt, SystemExit):
            self._end_report()
            raise
        except BaseException as exc:  # a panic in the extension is a BaseException too
            self._failed_handling(consumer, delivery, exc)

    def _end_report(self) -> None:
        """Tells the supervisor the task ended, if it was told it started and not yet that it
        ended: or it would time the task out, or record it lost, while the child lives on."""
        self._running = None
        if self._reported and self.reporter is not None:
            self.reporter.finished()
        self._reported = False

    def _failed_handling(self, consumer: Consumer, delivery: Delivery, exc: BaseException) -> None:
        self._end_report()
        if self._ran == delivery.delivery_tag:
            # The task ran and its outcome is recorded; what failed came after (a follow-up,
            # a settlement): refusing the message would store FAILURE over that outcome.
            log.exception(
                "task %s[%s] ran, but what follows its run failed",
                delivery.task_name,
                delivery.task_id,
            )
            return
        log.exception(
            "task %s[%s] could not be handled; refused", delivery.task_name, delivery.task_id
        )
        self._reject_bad(consumer, delivery, exc)

    def _handle_one(self, consumer: Consumer, delivery: Delivery) -> None:
        message = delivery.message
        if message is None:
            self._refuse(consumer, delivery)
            return
        try:
            context = build_context(delivery, self.hostname)
        except errors.InvalidMessage as exc:
            log.error(
                "refused task %r (id %s) from queue %r: %s",
                message.task,
                message.id,
                delivery.queue,
                exc,
            )
            events = self.events
            if events is not None and events.enabled and events.emit is None:
                if message.task in self.app.tasks:  # its task-received went when it was fetched
                    events.failed(message.id, exc)
            self._reject_bad(consumer, delivery, exc)
            return
        if log.isEnabledFor(logging.INFO):  # Celery's line (a worker at WARNING pays nothing)
            log.info("Task %s[%s] received", message.task, message.id)
        try:
            task = self.app.get_task(message.task)
            if self.events is not None and self.events.enabled:
                self.events.received(context)
        except errors.NotRegistered as exc:
            log.error(
                "received unregistered task %r (id %s); rejected. Is the module that defines it "
                "imported by this worker (-A / include)?",
                message.task,
                message.id,
            )
            # The context carries reply_to, so rpc:// can tell the client too.
            self._record(message.id, exc, states.FAILURE, None, context)
            self._settle(consumer, delivery.delivery_tag, Settle.DROP)
            return
        if delivery.redelivered and self._settled(context.id):
            log.info(
                "task %s[%s] came back after its worker child was killed; its result is "
                "recorded, so it does not run again",
                context.task,
                context.id,
            )
            self._settle(consumer, delivery.delivery_tag, Settle.ACK)
            return
        if expired(context):
            self._revoke(consumer, delivery.delivery_tag, context, "expired")
            return
        if context.id in self.revoked:
            self._revoke(consumer, delivery.delivery_tag, context, "revoked")
            return
        eta = eta_of(context)
        if eta is not None and eta.timestamp() > time.time():
            when = eta.timestamp()
            if when - time.time() > DEFER_AFTER and self._defer(consumer, delivery, when):
                return
            self._schedule(when, delivery, context, for_eta=True)
            return
        self._maybe_execute(consumer, task, delivery, context)

    def _apply_changes(self) -> None:
        """Task setting changes the supervisor sent (``rate_limit``, ``time_limit``)."""
        lines, self.revoked.changes = self.revoked.changes, []
        for line in lines:
            change = task_settings.read_change(line)
            if change is not None and isinstance(change.get("queues"), list):
                self.queues[:] = [str(q) for q in change["queues"]]  # switched next cycle
                continue
            name = None if change is None else task_settings.apply(self.app.tasks, change)
            if name is not None:
                self.settings_changed(name)

    def settings_changed(self, name: str) -> None:
        """``name``'s settings changed: its rate limit is read again."""
        self.rate_limiter.forget(name)

    def _settled(self, task_id: str | None) -> bool:
        if self.revoked_fd is not None:  # the supervisor wrote it before the kill: read it now
            self.revoked.read_pipe(self.revoked_fd)
        return task_id in self.revoked.settled

    def _defer(self, consumer: Consumer, delivery: Delivery, when: float) -> bool:
        try:
            deferred = self.app.broker.defer(delivery.raw, delivery.queue, delivery.priority, when)
        except errors.FastqError as exc:
            log.warning("could not hand an ETA task back to the broker (%s); holding it", exc)
            return False
        if deferred:
            consumer.ack([delivery.delivery_tag])
        return deferred

    def _schedule(
        self, when: float, delivery: Delivery, context: Context, for_eta: bool = False
    ) -> None:
        item = _Scheduled(when, next(self._seq), delivery, context, self._received, for_eta)
        heapq.heappush(self._scheduled, item)

    def _maybe_execute(
        self, consumer: Consumer, task: Task, delivery: Delivery, context: Context
    ) -> None:
        limit = None if self.app.conf.worker_disable_rate_limits else task.rate_limit
        wait = self.rate_limiter.delay_for(task.name, limit)
        if wait > 0:
            self._schedule(time.time() + wait, delivery, context)
            return
        self._execute(consumer, task, delivery, context)

    def _run_due(self, consumer: Consumer) -> None:
        now = time.time()
        while self._scheduled and self._scheduled[0].when <= now and not self.stopping.is_set():
            item = heapq.heappop(self._scheduled)
            context = item.context
            if expired(context, datetime.now(timezone.utc)):
                self._revoke(consumer, item.delivery.delivery_tag, context, "expired")
                continue
            if context.id in self.revoked:
                self._revoke(consumer, item.delivery.delivery_tag, context, "revoked")
                continue
            self._ran = None
            self._received = item.received
            try:
                task = self.app.get_task(context.task or "")
                self._maybe_execute(consumer, task, item.delivery, context)
            except (errors.BrokerConnectionError, KeyboardInterrupt, SystemExit):
                self._end_report()
                raise
            except BaseException as exc:  # as in _handle: never the end of the child
                self._failed_handling(consumer, item.delivery, exc)

    def _revoke(self, consumer: Consumer, tag: str, context: Context, reason: str) -> None:
        log.info("task %s[%s] %s before it ran; not running it", context.task, context.id, reason)
        if self.observer is not None:
            self.observer.skipped(context.task or "", reason)
        self._record(context.id, errors.TaskRevokedError(reason), states.REVOKED, None, context)
        if signals.task_revoked.receivers:
            signals.task_revoked.send(
                self.app.tasks.get(context.task or ""),
                request=context,
                terminated=False,
                signum=None,
                expired=reason == "expired",
            )
        on_revoked(self.app, context, reason)  # canvas: a chord still gets this part
        if self.events is not None and self.events.enabled:
            self.events.revoked(context, expired=reason == "expired", terminated=False)
        self._settle(consumer, tag, Settle.ACK)

    def _execute(
        self, consumer: Consumer, task: Task, delivery: Delivery, context: Context
    ) -> None:
        run = self._start(consumer, task, delivery, context)
        observer = self.observer
        watch = None if observer is None else observer.begin(task.name, context, self._received)
        self._running = context.id
        try:
            outcome = run_task(
                task, context, run.acks_late, self.enforce_hard_limit, run.limits, record=run.record
            )
        except BaseException as exc:
            if observer is not None:
                observer.end(watch, None, exc)
            raise
        finally:
            self._running = None
        if observer is not None:
            observer.end(watch, outcome)
        self._finish(consumer, run, outcome)

    def _start(self, consumer: Consumer, task: Task, delivery: Delivery, context: Context) -> _Run:
        """What comes before a task runs: the early ack, STARTED, the report; and the
        ``record`` its run calls with its outcome."""
        acks_late = task.acks_late if task.acks_late is not None else self.app.conf.task_acks_late
        limits = effective_limits(task, context)  # before the ack: a bad one is refused whole
        # Celery's default: acked before it runs, so a task that kills its worker is not
        # redelivered. Under a supervisor that acks for its children, the start report below is
        # the ack (the supervisor reads it, even after this child dies), and the message is
        # released here only once that report is written: should anything before it raise,
        # the message is still this consumer's to refuse. Else written without waiting.
        release = not acks_late and self._supervisor_acks
        if not acks_late and not release:
            consumer.ack([delivery.delivery_tag], wait=False)
        if self._tracks_started(task):
            started = {"pid": os.getpid(), "hostname": self.hostname}
            self._record(context.id, started, states.STARTED, None, context)
            self._store_kept()
        events = self.events if self.events is not None and self.events.enabled else None
        if events is not None:
            events.started(context)  # before the start report, which carries it (prefork)
        if self._held_new:  # what this fetch brought goes with the start report (prefork)
            self._report_held()
        elif self._told:
            self._told.pop(context.id or "", None)
        if self.reporter is not None:
            hard = limits[0]
            deadline = time.time() + hard if hard else None
            self.reporter.started(context, deadline, acks_late)
            self._reported = True
        if release:
            cast(ReleasingConsumer, consumer).release([delivery.delivery_tag])
        supervisor = self._supervisor
        if acks_late and self.app.broker.returns_on_close:
            supervisor = None  # the broker would give it back before the supervisor can settle it

        def record(outcome: Outcome) -> None:  # before the task's handlers, as in Celery
            self._ran = delivery.delivery_tag
            if outcome.state == states.SUCCESS:  # Celery's order: the children are stored too
                send_followups(self.app, context, outcome)  # callbacks, chain, chord: canvas
            self._record_outcome(task, context, outcome)
            if self._results and (supervisor is None or has_handlers(task)):
                # No supervisor to hand it to (threads, solo): stored now, so a killed process
                # leaves no finished task PENDING (Celery stores each result right after it).
                # Prefork too when the task has handlers: they find its outcome stored.
                self._store_ran(task)
            if outcome.state != states.SUCCESS:
                send_followups(self.app, context, outcome)  # chord part, chain, errbacks

        return _Run(
            task, delivery, context, acks_late, limits, supervisor, record, time.perf_counter()
        )

    def _store_ran(self, task: Task) -> None:
        """Stores the result of a task that just ran (the asyncio pool gathers them)."""
        self._store_kept()

    def _finish(self, consumer: Consumer, run: _Run, outcome: Outcome) -> None:
        """What comes after a task ran: its late ack (or reject), the results flushed or handed
        to the supervisor, and the per-child limits."""
        task, context, tag = run.task, run.context, run.delivery.delivery_tag
        if self.events is not None and self.events.enabled:
            self.events.outcome(context, outcome, time.perf_counter() - run.began)
        self._ran = tag
        if run.acks_late:
            self._settle(consumer, tag, outcome.settle)
        elif outcome.settle is Settle.REQUEUE:
            log.warning("task %s[%s] asked to requeue but was acked early", task.name, context.id)
        supervisor = run.supervisor
        if supervisor is not None:
            # Prefork: stored and acked per fetched batch (a round trip each), with a copy of
            # the result in the end report: should the child die before the batch is flushed,
            # the supervisor stores it and settles the message, so only the running task runs
            # again and no finished one stays PENDING.
            supervisor.hand_over(
                self._results[self._told_kept :], run.acks_late and outcome.settle is Settle.ACK
            )
            self._told_kept = len(self._results)
            self._handed = True
            self._reported = False
        else:  # late acks per task, for the same reason
            self._task_flush(consumer)
            if self.reporter is not None:
                self.reporter.finished()
                self._reported = False
        self.processed += 1
        if self.max_tasks is not None and self.processed >= self.max_tasks:
            log.info("reached max tasks per child (%d); exiting", self.max_tasks)
            self.stop()
        if self.max_memory_kib is not None:
            used = resident_kib()
            if used > self.max_memory_kib:
                log.info(
                    "uses %d KiB, over max memory per child (%d KiB); exiting",
                    used,
                    self.max_memory_kib,
                )
                self.stop()

    def _task_flush(self, consumer: Consumer) -> None:
        """Stores and acknowledges after each task without a supervisor (the asyncio pool
        gathers the tasks that end together into one flush)."""
        self._flush(consumer)

    def _tracks_started(self, task: Task) -> bool:
        track = task.track_started
        return bool(self.app.conf.task_track_started if track is None else track)

    def _record_outcome(self, task: Task, context: Context, outcome: Outcome) -> None:
        if outcome.state is None or not keeps_result(self.app, task, context, outcome.state):
            return
        self._record(context.id, outcome.value, outcome.state, outcome.traceback, context)

    def _record(
        self,
        task_id: str | None,
        value: Any,
        state: str,
        traceback: str | None,
        context: Context | None,
    ) -> None:
        backend = self.app.backend
        if task_id is None or isinstance(backend, DisabledBackend):
            return
        meta = backend.build_meta(task_id, value, state, traceback, context)
        self._results.append((task_id, meta))  # encoded once, when the batch is stored

    def _settle(self, consumer: Consumer, tag: str, settle: Settle) -> None:
        if not tag:
            return
        if settle is Settle.ACK:
            self._late_acks.append(tag)
        else:
            self._flush(consumer)  # results first, then the reject
            consumer.reject(tag, settle is Settle.REQUEUE)

    def _refuse(self, consumer: Consumer, delivery: Delivery) -> None:
        """A message that cannot be decoded: say why, record FAILURE if it has an id, drop it."""
        what = f"task {delivery.task_name!r}" if delivery.task_name else "a message"
        log.error(
            "cannot process %s (id %s) from queue %r: %s [%s]",
            what,
            delivery.task_id or "unknown",
            delivery.queue,
            delivery.error,
            delivery.error_kind,
        )
        kind = getattr(errors, delivery.error_kind or "", errors.DecodeError)
        self._drop_as_failed(consumer, delivery, kind(delivery.error))

    def _reject_bad(self, consumer: Consumer, delivery: Delivery, exc: BaseException) -> None:
        """A message refused for what it carries: FAILURE with the reason, dropped."""
        error = (
            exc
            if isinstance(exc, errors.InvalidMessage)
            else errors.InvalidMessage(f"{type(exc).__name__}: {exc}")
        )
        self._drop_as_failed(consumer, delivery, error)

    def _drop_as_failed(self, consumer: Consumer, delivery: Delivery, error: BaseException) -> None:
        """FAILURE with ``error`` if the message has an id (sent where its ``reply_to`` says),
        and the message dropped (rejecting one already acked early is a no-op)."""
        task_id = delivery.task_id
        if isinstance(task_id, str) and task_id:
            reply_to, correlation = delivery.reply_to, delivery.correlation_id
            request = Context(
                id=task_id,
                task=delivery.task_name,
                reply_to=reply_to if isinstance(reply_to, str) else None,
                correlation_id=correlation if isinstance(correlation, str) else None,
            )
            self._record(task_id, error, states.FAILURE, None, request)
        self._settle(consumer, delivery.delivery_tag, Settle.DROP)


def resident_kib() -> int:
    """This process's resident memory in KiB (``/proc``; the peak where there is no ``/proc``)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
