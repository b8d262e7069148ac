"""The prefork supervisor: forks N children that each run their own consumer loop.

It starts no threads and opens no connections before forking. Each child reports on a pipe which
task it runs and its hard time limit; a child past that limit is killed. A child that dies is
replaced and the messages it held come back to the queue. SIGTERM stops warm (children finish
their running task); a second SIGTERM or SIGQUIT stops cold.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastq import errors

if TYPE_CHECKING:
    from fastq.worker.control import TaskTracker

log = logging.getLogger("fastq.worker")

#: A child dying this soon after its start counts towards the crash-loop brake.
FAST_DEATH = 1.0
#: How often the supervisor looks for dead children when nothing else wakes it.
TICK = 0.25


class PipeReporter:
    """The child's end: one short line per task start and end (atomic writes < PIPE_BUF)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def started(
        self, task_id: str, delivery_tag: str, hard_deadline: float | None, name: str = ""
    ) -> None:
        deadline = f"{hard_deadline:.3f}" if hard_deadline else "-"
        name = name.replace(" ", "_") or "-"
        self._write(f"S {task_id} {delivery_tag or '-'} {deadline} {name}\n")

    def finished(self) -> None:
        self._write("D\n")

    def _write(self, line: str) -> None:
        try:
            os.write(self.fd, line.encode())
        except OSError:  # the supervisor is gone; the child's own shutdown handles the rest
            pass


@dataclass
class Running:
    task_id: str
    delivery_tag: str
    deadline: float | None


@dataclass
class Child:
    index: int
    pid: int
    consumer_id: str
    started: float
    fd: int
    buffer: bytes = b""
    running: Running | None = None
    timed_out: Running | None = None


class Supervisor:
    def __init__(
        self,
        concurrency: int,
        child_main: Callable[[int, str, PipeReporter], int],
        restore: Callable[[str], int],
        consumer_id: Callable[[int, int], str],
        on_time_limit: Callable[[str, str, str], None] | None = None,
        tracker: TaskTracker | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        """``child_main(index, consumer_id, reporter)`` runs in each child and returns its exit
        code; ``restore(consumer_id)`` returns a dead child's messages to their queues;
        ``on_time_limit(consumer_id, task_id, delivery_tag)`` records a killed task;
        ``tracker`` learns what each child runs; ``on_tick()`` runs between ticks (remote
        control)."""
        self.concurrency = concurrency
        self.child_main = child_main
        self.restore = restore
        self.consumer_id = consumer_id
        self.on_time_limit = on_time_limit
        self.tracker = tracker
        self.on_tick = on_tick
        self.children: dict[int, Child] = {}
        self.stopping = False
        self.cold = False
        self._generation = 0

    # -- children ----------------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        self._generation += 1
        consumer_id = self.consumer_id(index, self._generation)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(read_fd)
            for other in self.children.values():
                os.close(other.fd)
            code = 1
            try:
                signal.signal(signal.SIGQUIT, signal.SIG_DFL)
                code = self.child_main(index, consumer_id, PipeReporter(write_fd))
            except BaseException:
                log.exception("worker child %d crashed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.children[pid] = Child(index, pid, consumer_id, time.monotonic(), read_fd)

    def _read_reports(self, child: Child) -> None:
        try:
            data = os.read(child.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        lines = (child.buffer + data).split(b"\n")
        child.buffer = lines.pop()
        for line in lines:
            parts = line.decode(errors="replace").split(" ")
            if parts[0] == "S" and len(parts) in (4, 5):
                deadline = None if parts[3] == "-" else float(parts[3])
                child.running = Running(parts[1], "" if parts[2] == "-" else parts[2], deadline)
                if self.tracker is not None:
                    name = parts[4] if len(parts) == 5 else "-"
                    self.tracker.started(
                        child.index, child.pid, parts[1], name, child.running.delivery_tag
                    )
            elif parts[0] == "D":
                child.running = None
                if self.tracker is not None:
                    self.tracker.finished(child.index)

    def _enforce_deadlines(self) -> None:
        now = time.time()
        for child in self.children.values():
            running = child.running
            if running and running.deadline and now >= running.deadline and not child.timed_out:
                log.error(
                    "task %s on child %d ran past its hard time limit; killing the child",
                    running.task_id,
                    child.index,
                )
                child.timed_out = running
                _kill(child.pid, signal.SIGKILL)

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
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGQUIT, self._on_quit)
        for index in range(self.concurrency):
            self._spawn(index)
        log.info("ready: %d worker children started", self.concurrency)
        fast_deaths = 0
        while self.children:
            fds = {c.fd: c for c in self.children.values()}
            try:
                readable, _, _ = select.select(list(fds), [], [], self._next_wakeup())
            except InterruptedError:
                readable = []
            for fd in readable:
                self._read_reports(fds[fd])
            self._enforce_deadlines()
            if self.on_tick is not None:
                self.on_tick()
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
                os.close(child.fd)
                fast_deaths = self._on_death(child, os.waitstatus_to_exitcode(status), fast_deaths)
        return 0

    def _on_death(self, child: Child, code: int, fast_deaths: int) -> int:
        if self.tracker is not None:
            self.tracker.gone(child.index)
        if child.timed_out and self.on_time_limit is not None:
            t = child.timed_out
            try:
                self.on_time_limit(child.consumer_id, t.task_id, t.delivery_tag)
            except errors.FastqError as exc:
                log.error("could not record the time limit of task %s: %s", t.task_id, exc)
        if code != 0 or self.cold:
            self._restore(child)
        if self.stopping:
            return fast_deaths
        if code == 0:
            log.info("worker child %d (pid %d) exited; starting a new one", child.index, child.pid)
        else:
            log.error(
                "worker child %d (pid %d) died with %s; its tasks were returned, restarting",
                child.index,
                child.pid,
                _describe(code),
            )
        if time.monotonic() - child.started < FAST_DEATH:
            fast_deaths += 1
            time.sleep(min(0.1 * 2**fast_deaths, 5.0))  # don't spin on a crash loop
        else:
            fast_deaths = 0
        self._spawn(child.index)
        return fast_deaths

    def _restore(self, child: Child) -> None:
        try:
            count = self.restore(child.consumer_id)
        except errors.FastqError as exc:
            log.error("could not return the tasks of child %d: %s", child.index, exc)
            return
        if count:
            log.warning("returned %d task(s) held by child %d to the queue", count, child.index)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
