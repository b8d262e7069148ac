"""The prefork supervisor: forks N children that each run their own consumer loop.

It starts no threads and opens no connections before forking. A child that dies is replaced and
the messages it held come back to the queue; SIGTERM stops warm (children finish their running
task), a second SIGTERM or SIGQUIT stops cold.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastq import errors

log = logging.getLogger("fastq.worker")

#: A child dying this soon after its start counts towards the crash-loop brake.
FAST_DEATH = 1.0


@dataclass
class Child:
    index: int
    pid: int
    consumer_id: str
    started: float


class Supervisor:
    def __init__(
        self,
        concurrency: int,
        child_main: Callable[[int, str], int],
        restore: Callable[[str], int],
        consumer_id: Callable[[int, int], str],
    ) -> None:
        """``child_main(index, consumer_id)`` runs in each child and returns its exit code;
        ``restore(consumer_id)`` returns a dead child's messages to their queues."""
        self.concurrency = concurrency
        self.child_main = child_main
        self.restore = restore
        self.consumer_id = consumer_id
        self.children: dict[int, Child] = {}
        self.stopping = False
        self.cold = False
        self._generation = 0

    def _spawn(self, index: int) -> None:
        self._generation += 1
        consumer_id = self.consumer_id(index, self._generation)
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                signal.signal(signal.SIGQUIT, signal.SIG_DFL)
                code = self.child_main(index, consumer_id)
            except BaseException:
                log.exception("worker child %d crashed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = Child(index, pid, consumer_id, time.monotonic())

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

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGQUIT, self._on_quit)
        for index in range(self.concurrency):
            self._spawn(index)
        log.info("ready: %d worker children started", self.concurrency)
        fast_deaths = 0
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            child = self.children.pop(pid, None)
            if child is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            clean = code == 0
            if not clean or self.cold:
                self._restore(child)
            if self.stopping:
                continue
            if clean:
                log.info("worker child %d (pid %d) exited; starting a new one", child.index, pid)
            else:
                log.error(
                    "worker child %d (pid %d) died with %s; its tasks were returned, restarting",
                    child.index,
                    pid,
                    _describe(code),
                )
            if time.monotonic() - child.started < FAST_DEATH:
                fast_deaths += 1
                time.sleep(min(0.1 * 2**fast_deaths, 5.0))  # don't spin on a crash loop
            else:
                fast_deaths = 0
            self._spawn(child.index)
        return 0

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
