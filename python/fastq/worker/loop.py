"""The consumer loop one worker process (or thread) runs: fetch a batch, run, store, ack.

The Rust consumer holds the prefetch window and decodes messages without the GIL; this loop only
runs tasks. Results of a batch go to the backend in one round trip, before late acks.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from fastq import errors, signals, states
from fastq.app import App
from fastq.backends import DisabledBackend
from fastq.brokers.base import Consumer, Delivery
from fastq.task import Context, Task
from fastq.worker.followups import on_revoked, send_followups
from fastq.worker.limits import effective_limits
from fastq.worker.ratelimit import RateLimiter
from fastq.worker.request import build_context, eta_of, expired
from fastq.worker.revoke import RevokedIds
from fastq.worker.tracer import Outcome, Settle, keeps_result, run_task

log = logging.getLogger("fastq.worker")

#: ETA tasks further away than this go back to the broker's schedule instead of waiting here,
#: so they hold no prefetch slot and are not redelivered when the visibility timeout passes.
DEFER_AFTER = 2.0
#: Broker reconnect backoff: first wait and ceiling, in seconds. The ceiling is short because a
#: worker must consume again within ~2 s of its broker answering; a refused connect is cheap.
BACKOFF_START = 0.2
BACKOFF_MAX = 1.0


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
        reporter: TaskReporter | None = None,
        enforce_hard_limit: bool = False,
        revoked: RevokedIds | None = None,
        revoked_fd: int | None = None,
    ) -> None:
        self.app = app
        self.queues = queues
        self.prefetch = max(1, prefetch)
        self.hostname = hostname
        self.consumer_id = consumer_id
        self.max_tasks = max_tasks
        self.reporter = reporter
        self.enforce_hard_limit = enforce_hard_limit
        self.revoked = revoked if revoked is not None else RevokedIds()
        self.revoked_fd = revoked_fd
        self.rate_limiter = RateLimiter(app.conf.task_default_rate_limit)
        self.stopping = threading.Event()
        self.processed = 0
        self._consumer: Consumer | None = None
        self._scheduled: list[_Scheduled] = []
        self._seq = itertools.count()
        self._results: list[tuple[str, dict[str, Any]]] = []
        self._late_acks: list[str] = []
        #: Deliveries of a batch a broker error interrupted, handled before the next fetch.
        self._backlog: list[Delivery] = []
        self._next_restore = 0.0
        self._next_due_move = 0.0
        #: The id of the task running now, for a terminate that arrives meanwhile.
        self._running: str | None = None

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
        accept = list(self.app.conf.accept_content)
        backoff = BACKOFF_START
        outage: float | None = None  # when the broker stopped answering
        # Housekeeping (visibility restore, due ETA moves) waits for the first fetch to reach
        # the broker, and pauses while it is away: each would wait out its own connect timeout
        # in turn, delaying the first clear error and a warm stop, and log once per cycle.
        quiet = float("inf")
        self._next_restore = self._next_due_move = quiet
        while not self.stopping.is_set():
            try:
                if self._consumer is None:
                    self._consumer = self.app.broker.consumer(
                        self.queues,
                        prefetch=self.prefetch,
                        consumer_id=self.consumer_id,
                        accept=accept,
                    )
                fetches = not self._backlog  # a cycle that only finishes a backlog proves nothing
                self._cycle(self._consumer)
                if fetches:
                    if outage is not None:
                        log.info("broker reachable again after %.1fs", time.monotonic() - outage)
                        outage = None
                    if self._next_restore == quiet:
                        self._next_restore = self._next_due_move = 0.0
                    backoff = BACKOFF_START
            except errors.BrokerConnectionError as exc:
                # One line per outage, not one per retry.
                if outage is None:
                    outage = time.monotonic()
                    log.error("broker unavailable (%s); retrying every %.0fs", exc, BACKOFF_MAX)
                else:
                    log.debug("broker still unavailable (%s)", exc)
                self._next_restore = self._next_due_move = quiet
                self.stopping.wait(backoff + random.uniform(0, backoff / 4))
                backoff = min(backoff * 2, BACKOFF_MAX)
        self._shutdown()

    def _shutdown(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        try:
            self._flush(consumer)
            restored = consumer.restore_unacked()
            if restored:
                log.info("returned %d prefetched task(s) to the queue", restored)
        except errors.BrokerConnectionError as exc:
            log.error("could not return prefetched tasks (%s); the visibility timeout will", exc)
        finally:
            consumer.close()
            self._consumer = None

    # -- one cycle -------------------------------------------------------------------------------
    def _cycle(self, consumer: Consumer) -> None:
        if self.revoked_fd is not None:
            self.revoked.read_pipe(self.revoked_fd)
        self._maybe_restore_visible()
        self._maybe_move_due()
        wait = 1.0
        if self._scheduled:
            wait = max(0.0, min(wait, self._scheduled[0].when - time.time()))
        if self._backlog:
            deliveries, self._backlog = self._backlog, []
        else:
            deliveries = list(consumer.fetch(wait))
        for i, delivery in enumerate(deliveries):
            if self.stopping.is_set():
                break  # the rest stay unacknowledged and are restored on shutdown
            try:
                self._handle(consumer, delivery)
            except errors.BrokerConnectionError:
                # The rest of the batch is still this worker's: handled by the next cycle.
                # The interrupted one may or may not have run: back to its queue (a no-op for
                # an early-acked one), so it neither holds a window slot nor is lost.
                self._backlog = deliveries[i + 1 :]
                self._give_back(consumer, delivery)
                raise
        self._run_due(consumer)
        self._flush(consumer)

    def _give_back(self, consumer: Consumer, delivery: Delivery) -> None:
        try:
            consumer.reject(delivery.delivery_tag, True)
        except errors.BrokerError as exc:
            log.warning("could not return task %s to its queue: %s", delivery.task_id, exc)

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
        now = time.monotonic()
        if now < self._next_due_move:
            return
        self._next_due_move = now + 0.5
        try:
            self.app.broker.move_due()
        except errors.FastqError as exc:
            log.warning("could not move due ETA tasks: %s", exc)

    def _flush(self, consumer: Consumer) -> None:
        if self._results:
            results, self._results = self._results, []
            self._store(results)
        if self._late_acks:
            tags, self._late_acks = self._late_acks, []
            consumer.ack(tags)

    def _store(self, results: list[tuple[str, dict[str, Any]]]) -> None:
        delay = 0.1
        for attempt in range(4):
            try:
                self.app.backend.store_many(results)
                return
            except errors.BackendError as exc:
                if attempt == 3:
                    ids = ", ".join(task_id for task_id, _ in results)
                    log.error("result backend failed 4 times (%s); results lost for: %s", exc, ids)
                    return
                log.warning("result backend failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay *= 3

    # -- one message -----------------------------------------------------------------------------
    def _handle(self, consumer: Consumer, delivery: Delivery) -> None:
        message = delivery.message
        if message is None:
            self._refuse(consumer, delivery)
            return
        try:
            task = self.app.get_task(message.task)
        except errors.NotRegistered as exc:
            log.error(
                "received unregistered task %r (id %s); rejected. Is the module that defines it "
                "imported by this worker (-A / include)?",
                message.task,
                message.id,
            )
            # The context carries reply_to, so rpc:// can tell the client too.
            self._record(
                message.id, exc, states.FAILURE, None, build_context(delivery, self.hostname)
            )
            self._settle(consumer, delivery.delivery_tag, Settle.DROP)
            return
        context = build_context(delivery, self.hostname)
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
            self._schedule(when, delivery, context)
            return
        self._maybe_execute(consumer, task, delivery, context)

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

    def _schedule(self, when: float, delivery: Delivery, context: Context) -> None:
        heapq.heappush(self._scheduled, _Scheduled(when, next(self._seq), delivery, context))

    def _maybe_execute(
        self, consumer: Consumer, task: Task, delivery: Delivery, context: Context
    ) -> None:
        wait = self.rate_limiter.delay_for(task.name, task.rate_limit)
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
            task = self.app.get_task(context.task or "")
            self._maybe_execute(consumer, task, item.delivery, context)

    def _revoke(self, consumer: Consumer, tag: str, context: Context, reason: str) -> None:
        log.info("task %s[%s] %s before it ran; not running it", context.task, context.id, reason)
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
        self._settle(consumer, tag, Settle.ACK)

    def _execute(
        self, consumer: Consumer, task: Task, delivery: Delivery, context: Context
    ) -> None:
        acks_late = task.acks_late if task.acks_late is not None else self.app.conf.task_acks_late
        if not acks_late:
            # Celery's default: acked before it runs, so a task that kills its worker is not
            # redelivered; written without waiting for the reply.
            consumer.ack([delivery.delivery_tag], wait=False)
        if self._tracks_started(task):
            self._store(
                [
                    (
                        context.id or "",
                        self.app.backend.build_meta(
                            context.id or "",
                            {"pid": os.getpid(), "hostname": self.hostname},
                            states.STARTED,
                            None,
                            context,
                        ),
                    )
                ]
            )
        limits = effective_limits(task, context)
        if self.reporter is not None:
            hard = limits[0]
            deadline = time.time() + hard if hard else None
            self.reporter.started(context, deadline, acks_late)
        self._running = context.id
        try:
            outcome = run_task(task, context, acks_late, self.enforce_hard_limit, limits)
        finally:
            self._running = None
        if self.reporter is not None:
            self.reporter.finished()
        self._record_outcome(task, context, outcome)
        send_followups(self.app, context, outcome)  # callbacks, chain, chord, errbacks: canvas
        if acks_late:
            self._settle(consumer, delivery.delivery_tag, outcome.settle)
        elif outcome.settle is Settle.REQUEUE:
            log.warning("task %s[%s] asked to requeue but was acked early", task.name, context.id)
        self.processed += 1
        if self.max_tasks is not None and self.processed >= self.max_tasks:
            log.info("reached max tasks per child (%d); exiting", self.max_tasks)
            self.stop()

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
        if delivery.task_id:
            kind = getattr(errors, delivery.error_kind or "", errors.DecodeError)
            reply = Context(
                id=delivery.task_id,
                reply_to=delivery.reply_to,
                correlation_id=delivery.correlation_id,
            )
            self._record(delivery.task_id, kind(delivery.error), states.FAILURE, None, reply)
        self._settle(consumer, delivery.delivery_tag, Settle.DROP)
