"""The worker's side of remote control: answers ``ping``, ``registered``, ``active``, ``stats``.

One ``ControlServer`` per worker, in the process that is never busy running a task: the prefork
supervisor polls it between its ticks, the threads and solo pools from a thread of their own. So
``inspect active`` is answered while every pool process is inside a long task; what each pool
slot runs is in ``ActiveTasks`` (``worker/active.py``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from fastq.backoff import Backoff
from fastq.builtin_tasks import user_tasks
from fastq.errors import ConfigurationError, FastqError
from fastq.worker.revoke import revoke_arguments

if TYPE_CHECKING:
    from fastq.app import App
    from fastq.control_channel import ControlCommand, ControlListener
    from fastq.worker.active import ActiveTasks

log = logging.getLogger("fastq.worker")

#: How often the prefork supervisor looks for control commands (seconds).
TICK = 0.2
#: Reopening a control channel the broker refused: first wait and ceiling, in seconds.
LISTEN_BACKOFF_START = 0.5
LISTEN_BACKOFF_MAX = 10.0


@dataclass(slots=True)
class PoolInfo:
    implementation: str
    concurrency: int
    prefetch: int
    processes: Callable[[], list[int]]


class ControlServer:
    """Reads the broker's control channel and replies as ``hostname``."""

    def __init__(
        self,
        app: App,
        hostname: str,
        active_tasks: ActiveTasks,
        pool: PoolInfo,
        on_revoke: Callable[[list[str], bool, str], None] | None = None,
    ) -> None:
        self.app = app
        self.on_revoke = on_revoke
        self.hostname = hostname
        self.active_tasks = active_tasks
        self.pool = pool
        self.started = time.time()
        self._listener: ControlListener | None = None
        #: Set once subscribed: a worker says "ready" only after it can hear commands.
        self.listening = threading.Event()
        self._disabled = not app.conf.worker_enable_remote_control
        if self._disabled:
            log.info("remote control (fastq inspect) is off: worker_enable_remote_control")
            self.listening.set()
        self._next_tick = 0.0
        #: Reopening the channel after a failure, and when to try next.
        self._backoff = Backoff(LISTEN_BACKOFF_START, LISTEN_BACKOFF_MAX)
        self._retry_at = 0.0
        self._handlers: dict[str, Callable[[ControlCommand], Any]] = {
            "ping": lambda _: "pong",
            "registered": lambda _: user_tasks(self.app),
            "active": lambda _: [
                {**asdict(t), "hostname": self.hostname} for t in self.active_tasks.snapshot()
            ],
            "stats": lambda _: self._stats(),
            "revoke": self._revoke,
        }

    def poll(self, timeout: float = 0.0) -> None:
        """Answers the commands that arrived; waits up to ``timeout`` for one. Never raises."""
        if self._disabled:
            return
        if self._listener is None and time.monotonic() < self._retry_at:
            time.sleep(max(0.0, min(timeout, self._retry_at - time.monotonic())))
            return
        try:
            if self._listener is None:
                self._listener = self.app.broker.control_channel().listen()
                self.listening.set()
                if self._backoff.failures:
                    log.info("remote control channel open again")
                self._backoff.reset()
            commands = self._listener.fetch(timeout)
            for command in commands:
                self._answer(self._listener, command)
        except ConfigurationError as exc:
            log.info("remote control (fastq inspect) is off: %s", exc)
            self._disabled = True
            self.listening.set()
        except FastqError as exc:
            # Once per outage, and reopened on a backoff: the caller's loop must not spin on
            # (or be held up by) a broker that is not there.
            if not self._backoff.failures:
                log.warning("remote control channel failed (%s); reopening it", exc)
            self._retry_at = time.monotonic() + self._backoff.next()
            self.close()
            time.sleep(min(timeout, 1.0))
            return

    def tick(self) -> None:
        """``poll()`` without waiting, at most every ``TICK`` seconds (the prefork supervisor
        wakes for every task a child starts or ends)."""
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + TICK
            self.poll(0.0)

    def serve(self, stop: threading.Event) -> None:
        """Polls until ``stop`` is set (the threads and solo pools run this in a thread)."""
        while not stop.is_set() and not self._disabled:
            self.poll(0.5)
        self.close()

    def _answer(self, listener: ControlListener, command: ControlCommand) -> None:
        if not command.addressed_to(self.hostname):
            return
        handler = self._handlers.get(command.method)
        reply: Any
        if handler is None:
            reply = {
                "error": f"unknown control command {command.method!r}; "
                f"known: {', '.join(sorted(self._handlers))}"
            }
        else:
            try:
                reply = handler(command)
            except Exception as exc:  # a bad command must not stop the worker answering others
                log.exception("control command %r failed", command.method)
                reply = {"error": f"{command.method} failed: {exc!r}"}
        if command.reply:
            listener.reply(command, self.hostname, reply)

    def _revoke(self, command: ControlCommand) -> dict[str, str]:
        ids, terminate, sig = revoke_arguments(command.arguments)
        if self.on_revoke is not None:
            self.on_revoke(ids, terminate, sig)
        log.info("revoked %s%s", ", ".join(ids), " (terminate)" if terminate else "")
        return {"ok": f"tasks {', '.join(ids)} flagged as revoked"}

    def _stats(self) -> dict[str, Any]:
        broker = self.app.broker
        return {
            "hostname": self.hostname,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "pool": {
                "implementation": self.pool.implementation,
                "max-concurrency": self.pool.concurrency,
                "processes": self.pool.processes(),
            },
            "prefetch_count": self.pool.prefetch * self.pool.concurrency,
            "broker": {
                "transport": broker.url.split("://", 1)[0],
                "reach": broker.consumers_within,
            },
            "total": dict(self.active_tasks.total),
        }

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.close()
            except FastqError:
                pass
