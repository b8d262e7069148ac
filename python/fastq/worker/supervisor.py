"""The prefork supervisor: forks N children that each run their own consumer loop.

It starts no threads and opens no connections before forking. Each child reports on a pipe which
task it runs and its hard time limit; a child past that limit is killed. A child that dies is
replaced and the messages it held come back to the queue. SIGTERM stops warm (children finish
their running task); a second SIGTERM or SIGQUIT stops cold.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastq import errors
from fastq.worker.revoke import RevokedIds

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
    #: The supervisor's end of the pipe that carries revoked task ids to the child.
    revoked_fd: int
    buffer: bytes = b""
    running: Running | None = None
    #: What the supervisor killed the child for: the task and "time limit" or "terminated".
    killed: tuple[Running, str] | None = None


class Supervisor:
    def __init__(
        self,
        concurrency: int,
        child_main: Callable[[int, str, PipeReporter, int], int],
        restore: Callable[[str], int],
        consumer_id: Callable[[int, int], str],
        on_killed: Callable[[str, Running, str], None] | None = None,
        tracker: TaskTracker | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        """``child_main(index, consumer_id, reporter, revoked_fd)`` runs in each child and returns
        its exit code; ``restore(consumer_id)`` returns a dead child's messages to their queues;
        ``on_killed(consumer_id, running, reason)`` records a task whose child the supervisor
        killed (reason "time limit" or "terminated");
        ``tracker`` learns what each child runs; ``on_tick()`` runs between ticks (remote
        control)."""
        self.concurrency = concurrency
        self.child_main = child_main
        self.restore = restore
        self.consumer_id = consumer_id
        self.on_killed = on_killed
        self.revoked = RevokedIds()
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
        _widen(read_fd)
        revoked_read, revoked_write = os.pipe()
        _widen(revoked_write)
        pid = os.fork()
        if pid == 0:  # child: inherits self.revoked, and hears of later revokes on its pipe
            os.close(read_fd)
            os.close(revoked_write)
            os.set_blocking(revoked_read, False)
            for other in self.children.values():
                os.close(other.fd)
                os.close(other.revoked_fd)
            code = 1
            try:
                signal.signal(signal.SIGQUIT, signal.SIG_DFL)
                code = self.child_main(index, consumer_id, PipeReporter(write_fd), revoked_read)
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
            index, pid, consumer_id, time.monotonic(), read_fd, revoked_write
        )

    def revoke(self, task_ids: list[str], terminate: bool, sig: str) -> None:
        """Tells every child to skip ``task_ids``; with ``terminate``, kills the child running
        one of them (the task is recorded as REVOKED and the child replaced)."""
        self.revoked.add(task_ids)
        line = "".join(f"{t}\n" for t in task_ids).encode()
        for child in self.children.values():
            try:
                os.write(child.revoked_fd, line)
            except (BlockingIOError, BrokenPipeError):
                log.warning("child %d did not take the revoke of %s", child.index, task_ids)
        if not terminate:
            return
        signum = _signal_number(sig)
        for child in self.children.values():
            running = child.running
            if running and running.task_id in task_ids and not child.killed:
                log.warning(
                    "terminating task %s (child %d) with %s", running.task_id, child.index, sig
                )
                child.killed = (running, "terminated")
                _kill(child.pid, signum)

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
            if running and running.deadline and now >= running.deadline and not child.killed:
                log.error(
                    "task %s on child %d ran past its hard time limit; killing the child",
                    running.task_id,
                    child.index,
                )
                child.killed = (running, "time limit")
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
        if self.on_tick is not None:
            self.on_tick()  # subscribe to remote control before saying ready
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
                os.close(child.revoked_fd)
                fast_deaths = self._on_death(child, os.waitstatus_to_exitcode(status), fast_deaths)
        return 0

    def _on_death(self, child: Child, code: int, fast_deaths: int) -> int:
        if self.tracker is not None:
            self.tracker.gone(child.index)
        if child.killed and self.on_killed is not None:
            running, reason = child.killed
            try:
                self.on_killed(child.consumer_id, running, reason)
            except errors.FastqError as exc:
                log.error("could not record task %s (%s): %s", running.task_id, reason, exc)
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


#: Report pipe capacity: ~10k tasks of reports, so a supervisor busy for a few seconds (remote
#: control reconnecting to a restarting broker) does not stall children on their next report.
PIPE_SIZE = 1 << 20


def _widen(fd: int) -> None:
    """Grows a pipe's buffer where the OS allows it (Linux; capped by pipe-max-size)."""
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except OSError:
        pass  # unprivileged and above /proc/sys/fs/pipe-max-size: the default 64 KiB it is


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


def _describe(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
