"""The prefork supervisor: forks N children that each run their own consumer loop.

It starts no threads and opens no connections before forking. Each child reports on a pipe which
task it runs, its hard time limit and what its result needs (``worker/reports.py``); a child past
that limit is killed. Once reports have woken the supervisor it stops listening to the
pipes for ``REPORT_GAP`` and then reads everything written meanwhile: at most one wake-up per gap
however fast the children run (a wake-up per task cost them ~12% of their throughput). A child
that dies is replaced and the messages it held come back to the queue; the outcome of a
task it could not finish is recorded here (``worker/lost.py``). SIGTERM stops warm (children
finish their running task); a second SIGTERM or SIGQUIT stops cold.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastq import _core, errors
from fastq.backoff import Backoff
from fastq.events import LINE_PREFIX
from fastq.worker import task_settings
from fastq.worker.early_acks import EarlyAcks
from fastq.worker.held import decode_entries
from fastq.worker.lost import QUARANTINED, TERMINATED, TIME_LIMIT, WORKER_LOST
from fastq.worker.refused import log_refused
from fastq.worker.reports import JSON, ReportedTask, SupervisorReporter, parse_start
from fastq.worker.revoke import (
    RevokedIds,
    events_line,
    revoked_lines,
    settled_lines,
    terminate_line,
)

#: A child's exit code when it may not reconnect to its broker (``broker_connection_retry``):
#: the worker stops, as Celery's does, instead of starting a new child.
EXIT_GAVE_UP = 75

if TYPE_CHECKING:
    from fastq.worker.active import ActiveTasks

log = logging.getLogger("fastq.worker")

#: A child dying this soon after its start counts towards the crash-loop brake (a clean exit,
#: as at ``--max-tasks-per-child``, never does).
FAST_DEATH = 1.0
#: A late-acknowledged task whose child died running it this many times is quarantined: recorded
#: as failed and kept out of the queue, instead of coming back to kill child after child.
QUARANTINE_AFTER = 3
#: How many task ids the supervisor remembers child deaths for.
_DEATHS_KEPT = 1000
#: Storing the outcome of a dead child's task while the result backend is down: backoff (s),
#: and how many such outcomes are kept meanwhile.
LOST_RETRY_START = 0.25
LOST_RETRY_MAX = 5.0
_UNRECORDED_KEPT = 10_000
#: How often the supervisor looks for dead children when nothing else wakes it.
TICK = 0.25
#: After reports woke it, how long the supervisor leaves the report pipes unwatched: what comes
#: meanwhile (a few hundred tasks at most) waits in the pipe and is read in one go. Signals and
#: a child's end (its pidfd, or SIGCHLD where there are none) still wake it at once.
REPORT_GAP = 0.01
#: What stops a worker (warm, cold).
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
#: Signals a child handles itself (warm stop, ignored): a terminate with one is announced first.
_WARM_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@dataclass
class Child:
    index: int
    pid: int
    consumer_id: str
    started: float
    fd: int
    #: The supervisor's end of the pipe that carries revoked task ids to the child.
    revoked_fd: int
    #: Readable once the child has ended (``os.pidfd_open``); None where the OS has none.
    pidfd: int | None = None
    buffer: bytes = b""
    running: ReportedTask | None = None
    #: What the supervisor killed the child for: the task and "time limit" or "terminated".
    killed: tuple[ReportedTask, str] | None = None
    #: Copies of the results the child has not stored yet (``SupervisorReporter.hand_over``).
    kept: list[tuple[str, bytes]] = field(default_factory=list)
    #: Finished tasks whose late ack the child has not sent yet: (task id, delivery tag).
    done: list[tuple[str, str]] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        concurrency: int,
        child_main: Callable[[int, str, SupervisorReporter, int], int],
        restore: Callable[[str], int],
        consumer_id: Callable[[int, int], str],
        on_lost: Callable[[str, ReportedTask, str, int], None] | None = None,
        active_tasks: ActiveTasks | None = None,
        on_tick: Callable[[], None] | None = None,
        retry_lost: Callable[[ReportedTask, str, int], None] | None = None,
        store_results: Callable[[list[tuple[str, dict[str, Any]]]], None] | None = None,
        settle_done: Callable[[str, list[str]], None] | None = None,
        fails_when_lost: Callable[[str], bool] | None = None,
        on_metrics: Callable[[int, bytes | None], None] | None = None,
        on_events: Callable[[list[bytes]], None] | None = None,
        early_acks: EarlyAcks | None = None,
    ) -> None:
        """``child_main(index, consumer_id, reporter, revoked_fd)`` runs in each child and returns
        its exit code; ``restore(consumer_id)`` returns a dead child's messages to their queues;
        ``on_lost(consumer_id, running, reason, exit_code)`` records a task its child did not
        finish: killed by the supervisor (reason "time limit" or "terminated"), or dead while
        running a task acknowledged early ("worker lost");
        ``active_tasks`` learns what each child runs; ``on_tick()`` runs between ticks (remote
        control); ``retry_lost(running, reason, exit_code)`` stores again what ``on_lost`` could
        not (the result backend was down), retried until it can, so no such task stays PENDING;
        ``store_results(metas)`` stores the results a dead child had not stored yet, and
        ``settle_done(consumer_id, tags)`` takes the messages of its finished tasks out of
        circulation (acknowledged); ``fails_when_lost(task_name)``: whether a late-acknowledged
        task whose child died fails (``WorkerLostError``) instead of running again
        (``task_reject_on_worker_lost=False``); ``on_metrics(index, data)`` takes a child's
        metrics line (``M``), and ``None`` when that child is gone (it holds no message now);
        ``on_events(raws)`` takes the task events the children reported: each item the ``E``
        lines of a report chunk, prefix off (``_core.stamp_events``); ``early_acks``
        acknowledges the tasks children start with an early ack, from their start reports (the
        children then only release them: ``worker/early_acks.py``)."""
        self.concurrency = concurrency
        self.child_main = child_main
        self.restore = restore
        self.consumer_id = consumer_id
        self.on_lost = on_lost
        self.revoked = RevokedIds()
        self.active_tasks = active_tasks
        self.on_tick = on_tick
        self.retry_lost = retry_lost
        self.store_results = store_results
        self.settle_done = settle_done
        self.fails_when_lost = fails_when_lost
        self.on_metrics = on_metrics
        #: Children started again after one ended, since the worker started.
        self.restarts = 0
        self.on_events = on_events
        self.early_acks = early_acks
        #: Stores to retry while the backend is down (what, how), oldest first, and when.
        self._unrecorded: list[tuple[str, Callable[[], None]]] = []
        self._unrecorded_at = 0.0
        self._unrecorded_backoff = Backoff(LOST_RETRY_START, LOST_RETRY_MAX)
        self.children: dict[int, Child] = {}
        self.stopping = False
        self.cold = False
        #: The worker's exit code: 1 once a child gave up on the broker.
        self.exit_code = 0
        self._generation = 0
        #: Signals (SIGCHLD where children have no pidfd) wake the loop here.
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        #: Until when (monotonic) the loop leaves the report pipes unwatched.
        self._deaf_until = 0.0
        #: The wait before replacing a child that died within ``FAST_DEATH`` of its start.
        self._crash_backoff = Backoff(0.2, 5.0)
        #: Indices of children stopped by ``shrink``: not replaced when they exit.
        self._retiring: set[int] = set()
        #: Task id -> how many children died running it (late-acknowledged tasks only).
        self._deaths: dict[str, int] = {}

    # -- children ----------------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        self._generation += 1
        consumer_id = self.consumer_id(index, self._generation)
        read_fd, write_fd = os.pipe()
        _widen(read_fd)
        revoked_read, revoked_write = os.pipe()
        _widen(revoked_write)
        # A stop signal must not reach the child while it still has the supervisor's handlers
        # (they would act for the supervisor, and the child would miss its stop): held across
        # the fork, then the default (end the child, which runs nothing yet) until its loop
        # installs its own; the supervisor takes one that came meanwhile once it knows the child.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            raise
        if pid == 0:  # child: inherits self.revoked, and hears of later revokes on its pipe
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGQUIT, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            os.close(read_fd)
            os.close(revoked_write)
            os.set_blocking(revoked_read, False)
            for fd in (self._wake_r, self._wake_w):  # the supervisor's signal wake-up pipe
                if fd is not None:
                    os.close(fd)
            for other in self.children.values():
                _close_child_fds(other)
            code = 1
            try:
                code = self.child_main(
                    index, consumer_id, SupervisorReporter(write_fd), revoked_read
                )
            except BaseException:
                log.exception("worker child %d crashed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(write_fd)
        os.close(revoked_read)
        os.set_blocking(read_fd, False)
        os.set_blocking(revoked_write, False)
        self.children[pid] = Child(
            index, pid, consumer_id, time.monotonic(), read_fd, revoked_write, _pidfd(pid)
        )
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        if self.stopping:
            # A stop taken after the caller decided to replace a child, and before this one was
            # known, signalled the children there were: this one would run on, unstopped.
            _kill(pid, signal.SIGKILL if self.cold else signal.SIGTERM)

    def revoke(self, task_ids: list[str], terminate: bool, sig: str) -> None:
        """Tells every child to skip ``task_ids``; with ``terminate``, kills the child running
        one of them (the task is recorded as REVOKED and the child replaced)."""
        self.revoked.add(task_ids)
        self._tell_children(revoked_lines(task_ids), f"the revoke of {task_ids}")
        if not terminate:
            return
        signum = _signal_number(sig)
        self._read_all_reports()
        for child in self.children.values():
            running = child.running
            if running and running.task_id in task_ids and not child.killed:
                log.warning(
                    "terminating task %s (child %d) with %s", running.task_id, child.index, sig
                )
                self._kill_running(child, running, TERMINATED, signum)

    def change_task_settings(self, change: dict[str, Any]) -> None:
        """Passes a task setting change (``rate_limit``, ``time_limit``) to every child; a child
        forked later inherits it from this process."""
        self._tell_children(task_settings.change_line(change), f"the change of {change['task']}")

    def change_queues(self, queues: list[str]) -> None:
        """``add_consumer``/``cancel_consumer``: every child switches its consumer to
        ``queues`` (a child forked later starts with them: they are this process's list)."""
        self._tell_children(task_settings.change_line({"queues": queues}), "the new queue set")

    def grow(self, n: int) -> int:
        """Celery's ``pool_grow``: ``n`` more children (at free indices); returns the size."""
        for _ in range(n):
            used = {c.index for c in self.children.values()}
            self._spawn(min(set(range(len(used) + 1)) - used))
        self.concurrency += n
        log.info("pool grown by %d to %d children", n, self.concurrency)
        return self.concurrency

    def shrink(self, n: int) -> int:
        """Celery's ``pool_shrink``: stops ``n`` children warm (idle ones first, each finishing
        its task) and does not replace them; returns the size. At least one child stays."""
        if n >= self.concurrency:
            raise ValueError(f"cannot shrink a pool of {self.concurrency} by {n}")
        self._read_all_reports()
        staying = [c for c in self.children.values() if c.index not in self._retiring]
        staying.sort(key=lambda c: (c.running is None, c.index), reverse=True)
        for child in staying[:n]:
            self._retiring.add(child.index)
            _kill(child.pid, signal.SIGTERM)  # a child's SIGTERM: stop after this task
        self.concurrency -= n
        log.info("pool shrinking by %d to %d children", n, self.concurrency)
        return self.concurrency

    def send_events(self, on: bool) -> None:
        """Turns task events on or off in every child (and in those started later)."""
        self.revoked.send_events = on
        self._tell_children(events_line(on), "the change of task events")

    def _kill_running(self, child: Child, running: ReportedTask, reason: str, signum: int) -> None:
        child.killed = (running, reason)
        if signum in _WARM_STOP_SIGNALS:
            # The child takes SIGTERM as "stop after this task"; told first that this one is to
            # end now, it dies of the signal as a Celery pool process does.
            try:
                os.write(child.revoked_fd, terminate_line(running.task_id).encode())
            except (BlockingIOError, BrokenPipeError):
                log.warning(
                    "child %d did not take the terminate of %s", child.index, running.task_id
                )
        if running.acks_late:
            # Its result is recorded when the child is gone; where the broker gives back what
            # the dead child held (RabbitMQ), the children drop the message instead of running
            # it again. Told before the kill, so before the message can come back.
            self._mark_settled([running.task_id], f"that {running.task_id} is settled")
        _kill(child.pid, signum)

    def _mark_settled(self, task_ids: list[str], what: str) -> None:
        """Marks ``task_ids`` settled here and in every child: their result is recorded, so a
        message of theirs that comes back is dropped, not run again."""
        self.revoked.settled.add(task_ids)
        self._tell_children(settled_lines(task_ids), what)

    def _tell_children(self, lines: str, what: str) -> None:
        data = lines.encode()
        for child in self.children.values():
            try:
                os.write(child.revoked_fd, data)
            except (BlockingIOError, BrokenPipeError):
                log.warning("child %d did not take %s", child.index, what)

    def read_reports(self) -> None:
        """Reads what every child reported so far (before answering remote control)."""
        self._read_all_reports()

    def _read_all_reports(self) -> None:
        for child in self.children.values():
            self._read_reports(child)

    def _read_reports(self, child: Child) -> None:
        chunks = []
        while True:  # everything written since the last wake-up, up to the pipe's 1 MiB
            try:
                data = os.read(child.fd, PIPE_SIZE)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                break
            chunks.append(data)
        if not chunks:
            return
        # The task events (E lines) are taken off in one pass and handed on as they are.
        events, lines, child.buffer = _core.split_reports(
            child.buffer + b"".join(chunks), LINE_PREFIX
        )
        for line in lines:
            if line[:2] == b"S ":
                self._started(child, line)
            elif line[:2] == b"K ":  # decoded only if the child dies
                _, task_id, data = line.split(b" ", 2)
                child.kept.append((task_id.decode(errors="replace"), data))
            elif line[:1] == b"D":  # D, or DL: its late ack is still to be sent
                running = child.running
                if line == b"DL" and running is not None and running.delivery_tag:
                    child.done.append((running.task_id, running.delivery_tag))
                child.running = None
                if self.active_tasks is not None:
                    self.active_tasks.finished(child.index)
            elif line == b"k":
                child.kept.clear()
                child.done.clear()
            elif line[:2] == b"M " and self.on_metrics is not None:
                self.on_metrics(child.index, line[2:])
            elif line[:2] == b"R " and self.active_tasks is not None:
                entries = decode_entries(line[2:])
                if entries is not None:
                    self.active_tasks.held(child.index, entries)
        if events and self.on_events is not None:
            self.on_events([events])

    def _started(self, child: Child, line: bytes) -> ReportedTask | None:
        task = parse_start(line)
        if task is None:
            log.warning("child %d sent a malformed report: %r", child.index, line[:200])
            return None
        child.running = task
        if self.early_acks is not None and not task.acks_late and task.delivery_tag:
            self.early_acks.add(child.consumer_id, task.delivery_tag)
        if self.active_tasks is not None:
            name = task.name or "-"
            self.active_tasks.started(child.index, child.pid, task.task_id, name, task.delivery_tag)
        return task

    def _enforce_deadlines(self) -> None:
        now = time.time()
        for child in self.children.values():
            running = child.running
            if running and running.deadline and now >= running.deadline and not child.killed:
                log.error(
                    "task %s on child %d ran past its hard time limit; killing the child",
                    running.task_id,
                    child.index,
                )
                self._kill_running(child, running, TIME_LIMIT, signal.SIGKILL)

    def _wait(self) -> None:
        """Until a signal, a child's end, a report (unless within ``REPORT_GAP`` of the last one
        that woke it), or the next deadline or tick."""
        assert self._wake_r is not None
        timeout = self._next_wakeup()
        fds = [self._wake_r]
        fds += [c.pidfd for c in self.children.values() if c.pidfd is not None]
        gap = self._deaf_until - time.monotonic()
        if gap > 0:
            timeout = min(timeout, gap)
        else:
            fds += [c.fd for c in self.children.values()]
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        pidfds = {c.pidfd for c in self.children.values()}
        if any(fd != self._wake_r and fd not in pidfds for fd in readable):
            self._deaf_until = time.monotonic() + REPORT_GAP

    def _next_wakeup(self) -> float:
        deadlines = [
            c.running.deadline for c in self.children.values() if c.running and c.running.deadline
        ]
        if not deadlines:
            return TICK
        return max(0.0, min(TICK, min(deadlines) - time.time()))

    # -- signals -----------------------------------------------------------------------------------
    def _on_term(self, signum: int, _frame: object) -> None:
        if self.stopping:
            self._go_cold()
            return
        self.stopping = True
        log.info("warm shutdown: waiting for running tasks (send the signal again for cold)")
        for pid in list(self.children):
            _kill(pid, signal.SIGTERM)

    def _on_quit(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self._go_cold()

    def _go_cold(self) -> None:
        if self.cold:
            return
        self.cold = True
        log.warning("cold shutdown: terminating children now")
        for pid in list(self.children):
            _kill(pid, signal.SIGKILL)

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        try:
            return self._run()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = None

    def _run(self) -> int:
        assert self._wake_r is not None
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGQUIT, self._on_quit)
        if not _pidfds_work():
            # A handler, so its wake-up byte is written. Only where children have no pidfd: a
            # handled signal interrupts whatever this process waits in (a Redis read fails with
            # EINTR), while one left at its default interrupts nothing.
            signal.signal(signal.SIGCHLD, _on_child)
        for index in range(self.concurrency):
            self._spawn(index)
        if self.on_tick is not None:
            self.on_tick()  # subscribe to remote control before saying ready
        log.info("ready: %d worker children started", self.concurrency)
        self._crash_backoff.reset()
        while self.children:
            self._wait()
            _drain(self._wake_r)
            self._read_all_reports()
            if self.early_acks is not None:
                self.early_acks.flush()
            self._enforce_deadlines()
            if self.on_tick is not None:
                self.on_tick()
            if self._unrecorded:
                self._retry_unrecorded()
            while self.children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    self.children.clear()
                    break
                if pid == 0:
                    break
                child = self.children.pop(pid, None)
                if child is None:
                    continue
                self._read_reports(child)
                _close_child_fds(child)
                self._on_death(child, os.waitstatus_to_exitcode(status))
        if self.early_acks is not None:
            self.early_acks.close()
        if self._unrecorded:
            self._unrecorded_at = 0.0
            self._unrecorded_backoff.reset()
            self._retry_unrecorded()  # one last try: the backend may be back
        for what, _ in self._unrecorded:
            log.error("stopped with %s not stored (the result backend is down)", what)
        return self.exit_code

    def _on_death(self, child: Child, code: int) -> None:
        if self.active_tasks is not None:
            self.active_tasks.gone(child.index)
        lost = None
        if child.running is not None and child.killed and child.killed[0] is child.running:
            lost = child.killed  # not if the task finished first (a signal the child handles)
        elif child.running is not None and not child.running.acks_late:
            # Acknowledged before it ran, so no broker gives it back: it failed (Celery's
            # WorkerLostError). A late-acknowledged one is returned below and runs again.
            lost = (child.running, WORKER_LOST)
        elif child.running is not None and code != 0 and not self.cold:
            lost = self._count_death(child.running)
        if lost is not None and self.on_lost is not None:
            running, reason = lost
            try:
                self.on_lost(child.consumer_id, running, reason, code)
            except errors.ResultsRefused as exc:  # retrying cannot store it
                log_refused(exc)
            except errors.FastqError as exc:
                if self.retry_lost is None:
                    log.error("could not record task %s (%s): %s", running.task_id, reason, exc)
                else:
                    log.error(
                        "could not record task %s (%s): %s; retrying until it is stored",
                        running.task_id,
                        reason,
                        exc,
                    )
                    retry, lost_code = self.retry_lost, code
                    self._unrecorded.append(
                        (
                            f"task {running.task_id} ({reason})",
                            lambda: retry(running, reason, lost_code),
                        )
                    )
                    if len(self._unrecorded) > _UNRECORDED_KEPT:
                        dropped, _ = self._unrecorded.pop(0)
                        log.error(
                            "gave up storing %s: over %d outcomes wait for the result backend",
                            dropped,
                            _UNRECORDED_KEPT,
                        )
        self._settle_finished(child)
        if self.on_metrics is not None:
            self.on_metrics(child.index, None)
        if code != 0 or self.cold:
            self._restore(child)
        if code == EXIT_GAVE_UP and not self.stopping:
            log.critical("worker child %d cannot reach the broker: the worker stops", child.index)
            self.exit_code = 1
            self._on_term(signal.SIGTERM, None)
        if self.stopping:
            return
        if child.index in self._retiring:
            self._retiring.discard(child.index)
            log.info("worker child %d (pid %d) stopped: the pool shrank", child.index, child.pid)
            return
        if code == 0:
            log.info("worker child %d (pid %d) exited; starting a new one", child.index, child.pid)
        else:
            log.error(
                "worker child %d (pid %d) died with %s; its tasks were returned, restarting",
                child.index,
                child.pid,
                _death_cause(code),
            )
        if code != 0 and time.monotonic() - child.started < FAST_DEATH:
            time.sleep(self._crash_backoff.next())  # don't spin on a crash loop
            if self.stopping:  # a stop came during the sleep: a new child would never hear it
                return
        else:
            self._crash_backoff.reset()
        self.restarts += 1
        self._spawn(child.index)

    def _count_death(self, running: ReportedTask) -> tuple[ReportedTask, str] | None:
        """A child died running this late-acknowledged task: it comes back and runs again,
        unless it has killed ``QUARANTINE_AFTER`` children: then it is quarantined (recorded as
        failed; the broker moves its message aside), and children told to drop it should it
        still come back (a broker that returns a dead channel's messages by itself). With
        ``fails_when_lost`` it fails at once (WorkerLostError), as in Celery."""
        task_id = running.task_id
        if self.fails_when_lost is not None and self.fails_when_lost(running.name):
            self._mark_settled([task_id], f"that {task_id} is settled")
            return (running, WORKER_LOST)
        deaths = self._deaths.pop(task_id, 0) + 1
        if deaths < QUARANTINE_AFTER:
            self._deaths[task_id] = deaths  # re-inserted: the dict stays oldest first
            while len(self._deaths) > _DEATHS_KEPT:
                del self._deaths[next(iter(self._deaths))]
            return None
        log.error(
            "task %s[%s] killed %d worker children; quarantined instead of running again",
            running.name,
            task_id,
            deaths,
        )
        self._mark_settled([task_id], f"that {task_id} is settled")
        return (running, QUARANTINED)

    def _settle_finished(self, child: Child) -> None:
        """What a dead child finished but had not flushed: its results are stored, then the
        messages of its late-acknowledged tasks taken out of circulation (they are done), so
        only the task it was running comes back. Results the backend refuses now are stored
        when it answers, and those messages come back instead (run again, never lost)."""
        kept = []
        for task_id, data in child.kept:
            try:
                meta = _core.loads(data, JSON, [JSON])
            except errors.DecodeError:
                continue
            if isinstance(meta, dict):
                kept.append((task_id, meta))
        stored = True
        if kept and self.store_results is not None:
            store = self.store_results
            try:
                store(kept)
            except errors.ResultsRefused as exc:  # the others are stored
                log_refused(exc)
            except errors.FastqError as exc:
                stored = False
                log.error(
                    "could not store %d result(s) child %d finished (%s); retrying until it can",
                    len(kept),
                    child.index,
                    exc,
                )
                what = f"{len(kept)} result(s) of child {child.index}"
                self._unrecorded.append((what, lambda: store(kept)))
        if child.done and stored and self.settle_done is not None:
            done = list(child.done)
            # Told first: where the broker itself gives back a dead channel's messages
            # (RabbitMQ), the children ack and drop them instead of running them again.
            self._mark_settled([task_id for task_id, _ in done], "finished tasks")
            try:
                self.settle_done(child.consumer_id, [tag for _, tag in done])
            except errors.FastqError as exc:
                log.error("could not settle the finished tasks of child %d: %s", child.index, exc)
                return
        if kept or child.done:
            log.info(
                "stored %d result(s) and settled %d finished task(s) child %d had not flushed",
                len(kept) if stored else 0,
                len(child.done) if stored else 0,
                child.index,
            )

    def _retry_unrecorded(self) -> None:
        now = time.monotonic()
        if now < self._unrecorded_at:
            return
        while self._unrecorded:
            what, store = self._unrecorded[0]
            try:
                store()
            except errors.ResultsRefused as exc:  # the others are stored
                log_refused(exc)
            except errors.FastqError:
                self._unrecorded_at = now + self._unrecorded_backoff.next()
                return
            self._unrecorded.pop(0)
            log.warning("stored %s at last", what)
        self._unrecorded_at = 0.0
        self._unrecorded_backoff.reset()

    def _restore(self, child: Child) -> None:
        if self.early_acks is not None and not self.early_acks.flush():
            # Restoring now would put back tasks it started (acked early): they would run
            # twice. Left to the visibility timeout, which the acks will have beaten.
            log.error(
                "could not return the tasks of child %d: the broker cannot be reached", child.index
            )
            return
        try:
            count = self.restore(child.consumer_id)
        except errors.FastqError as exc:
            log.error("could not return the tasks of child %d: %s", child.index, exc)
            return
        if count:
            log.warning("returned %d task(s) held by child %d to the queue", count, child.index)


#: Report pipe capacity: ~10k tasks of reports, so a supervisor busy for a few seconds (remote
#: control reconnecting to a restarting broker) does not stall children on their next report;
#: where the OS keeps pipes at 64 KiB, ``REPORT_GAP`` still fits in them many times.
PIPE_SIZE = 1 << 20


def _widen(fd: int) -> None:
    """Grows a pipe's buffer where the OS allows it (Linux; capped by pipe-max-size)."""
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except OSError:
        pass  # unprivileged and above /proc/sys/fs/pipe-max-size: the default 64 KiB it is


def _pidfds_work() -> bool:
    """Whether a child's end can be watched with a descriptor (``os.pidfd_open``: Linux >= 5.3,
    Python >= 3.9; a container's seccomp profile may still refuse it)."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def _pidfd(pid: int) -> int | None:
    """A descriptor that turns readable when the child ``pid`` ends, or None: the loop then finds
    its end on a SIGCHLD (where pidfds do not work) or on its next tick."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _close_child_fds(child: Child) -> None:
    os.close(child.fd)
    os.close(child.revoked_fd)
    if child.pidfd is not None:
        os.close(child.pidfd)


def _on_child(_signum: int, _frame: object) -> None:
    """SIGCHLD: nothing to do in the handler; its wake-up byte ends the supervisor's wait."""


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_number(name: str) -> int:
    try:
        return int(
            getattr(
                signal, name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"
            )
        )
    except (AttributeError, TypeError):
        log.warning("unknown signal %r; using SIGTERM", name)
        return int(signal.SIGTERM)


def _death_cause(code: int) -> str:
    """For the log: ``signal SIGKILL``, ``exit code 1`` (``lost._exit_status`` words the stored
    error as Celery does)."""
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
