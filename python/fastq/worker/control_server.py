"""The worker's side of remote control: answers Celery's pidbox commands with Celery's reply
shapes (``celery/worker/control.py``): ``ping`` → ``{"ok": "pong"}``, ``active``, ``reserved``,
``scheduled``, ``stats``, ``registered``, ``revoked``, ``active_queues``, ``conf``,
``query_task``, ``clock``, ``hello``;
``revoke``/``terminate``, a warm ``shutdown``, ``rate_limit``/``time_limit`` (a task's limits,
in every process that runs tasks), ``pool_grow``/``pool_shrink``,
``add_consumer``/``cancel_consumer`` and ``enable_events``/``disable_events``/``heartbeat`` act;
what fastq cannot do (``autoscale``, ``pool_restart``, ...) is refused with Celery's
``{"error": reason}``, never ignored.

One ``ControlServer`` per worker, in the process that is never busy running a task: the prefork
supervisor polls it between its ticks, the threads and solo pools from a thread of their own. So
``inspect active`` is answered while every pool process is inside a long task; what each pool
slot runs, and what each consumer holds and has not started (``worker/held.py``), is in
``ActiveTasks`` (``worker/active.py``).
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastq.backoff import Backoff
from fastq.builtin_tasks import user_tasks
from fastq.control_channel import CLOCK
from fastq.errors import ConfigurationError, FastqError
from fastq.worker import task_settings
from fastq.worker.held import is_scheduled, request_info, scheduled_info
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
    #: What one consumer may hold at most (its window; the adaptive window's largest).
    prefetch: int
    processes: Callable[[], list[int]]
    queues: list[str] = field(default_factory=list)
    max_tasks_per_child: int | None = None


def ok(value: Any) -> dict[str, Any]:
    return {"ok": value}


def nok(value: str) -> dict[str, Any]:
    return {"error": value}


#: Commands fastq's worker refuses, and why (Celery's ``{"error": ...}`` reply).
REFUSED = {
    "autoscale": "fastq has no autoscaler",
    "pool_restart": "fastq cannot restart its pool remotely",
    "revoke_by_stamped_headers": "fastq cannot revoke by stamped headers",
    "election": "fastq takes no part in elections",
}


#: Tasks in flight hold the asyncio pool's one consumer, so it cannot be reopened on new queues.
FIXED_QUEUES = "the asyncio pool consumes the queues it was started with (-Q)"


class ControlServer:
    """Reads the broker's control channel and replies as ``hostname``."""

    def __init__(
        self,
        app: App,
        hostname: str,
        active_tasks: ActiveTasks,
        pool: PoolInfo,
        on_revoke: Callable[[list[str], bool, str], None] | None = None,
        on_shutdown: Callable[[], None] | None = None,
        on_task_change: Callable[[dict[str, Any]], None] | None = None,
        on_resize: Callable[[int], int] | None = None,
        on_queues: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.app = app
        #: Passes the new consumed queue set (``pool.queues``, changed already) to the
        #: consumers; None: they read ``pool.queues`` themselves (the same list).
        self.on_queues = on_queues
        #: Grows (n > 0) or shrinks the pool by n, returning its new size; raises ValueError
        #: for a size it refuses. None: a pool of a fixed size (solo).
        self.on_resize = on_resize
        #: Passes a task setting change (set here already) to the processes that run tasks.
        self.on_task_change = on_task_change
        self.on_revoke = on_revoke
        #: Starts a warm shutdown (the worker sets it; without it, ``shutdown`` is refused).
        self.on_shutdown = on_shutdown
        #: Task events: turns them on/off and says whether they were on; sends a heartbeat
        #: (the worker sets them when its broker carries events).
        self.on_events: Callable[[bool], bool] | None = None
        self.on_heartbeat: Callable[[], None] | None = None
        #: Reads what the pool processes reported since the last tick, before an answer about
        #: their tasks (prefork: the supervisor's report pipes).
        self.on_refresh: Callable[[], None] | None = None
        #: Ids revoked since the worker started (``inspect revoked``), newest last.
        self.revoked: deque[str] = deque(maxlen=50_000)
        self._after_reply: list[Callable[[], None]] = []
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
        self._handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "ping": lambda _: ok("pong"),
            "registered": self._registered,
            "active": lambda _: self._active(),
            "reserved": lambda _: self._reserved(),
            "scheduled": lambda _: self._scheduled(),
            "stats": lambda _: self._stats(),
            "revoked": lambda _: list(self.revoked),
            "active_queues": lambda _: self._active_queues(),
            "conf": self._conf,
            "query_task": self._query_task,
            "clock": lambda _: {"clock": self._clock()},
            "hello": self._hello,
            "revoke": self._revoke,
            "terminate": lambda a: self._revoke({**a, "terminate": True}),
            "shutdown": self._shutdown,
            "add_consumer": self._add_consumer,
            "cancel_consumer": self._cancel_consumer,
            "pool_grow": lambda a: self._resize(a, 1),
            "pool_shrink": lambda a: self._resize(a, -1),
            "rate_limit": lambda a: self._change_task(task_settings.rate_limit_change, a),
            "time_limit": lambda a: self._change_task(task_settings.time_limit_change, a),
            "enable_events": lambda _: self._task_events(True),
            "disable_events": lambda _: self._task_events(False),
            "heartbeat": lambda _: self._heartbeat(),
        }
        for name in ("dump_tasks", "dump_active", "dump_revoked", "dump_conf", "dump_reserved"):
            self._handlers[name] = self._handlers[name[5:].replace("tasks", "registered")]
        self._handlers["dump_schedule"] = self._handlers["scheduled"]

    def poll(self, timeout: float = 0.0) -> None:
        """Answers the commands that arrived; waits up to ``timeout`` for one. Never raises."""
        if self._disabled:
            return
        if self._listener is None and time.monotonic() < self._retry_at:
            time.sleep(max(0.0, min(timeout, self._retry_at - time.monotonic())))
            return
        try:
            if self._listener is None:
                self._listener = self.app.broker.control_channel().listen_as(self.hostname)
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
        if command.method in REFUSED:
            reply = nok(REFUSED[command.method])
        elif handler is None:
            reply = nok(
                f"unknown control command {command.method!r}; "
                f"known: {', '.join(sorted(self._handlers))}"
            )
        else:
            try:
                reply = handler(command.arguments)
            except Exception as exc:  # a bad command must not stop the worker answering others
                log.exception("control command %r failed", command.method)
                reply = nok(f"{command.method} failed: {exc!r}")
        if isinstance(reply, dict) and "error" in reply:
            log.info("control command %r refused: %s", command.method, reply["error"])
        try:
            if command.reply:
                listener.reply(command, self.hostname, reply)
        finally:
            actions, self._after_reply = self._after_reply, []
            for action in actions:
                action()

    def _clock(self) -> int:
        return CLOCK.value

    def _refresh(self) -> None:
        if self.on_refresh is not None:
            self.on_refresh()

    def _reserved(self) -> list[dict[str, Any]]:
        """Celery's: the tasks received and not started, those waiting for their ETA aside."""
        self._refresh()
        return [
            request_info(e, self.hostname)
            for e in self.active_tasks.holding()
            if not is_scheduled(e)
        ]

    def _scheduled(self) -> list[dict[str, Any]]:
        """Celery's: the tasks this worker holds until their ETA (``{eta, priority, request}``)."""
        self._refresh()
        return [
            scheduled_info(e, self.hostname) for e in self.active_tasks.holding() if is_scheduled(e)
        ]

    def _active(self) -> list[dict[str, Any]]:
        """Celery's ``Request.info()`` shape; the arguments are not known here (None)."""
        return [
            {
                "id": t.id,
                "name": t.name,
                "args": None,
                "kwargs": None,
                "type": t.name,
                "hostname": self.hostname,
                "time_start": t.time_start,
                "acknowledged": None,
                "delivery_info": {"delivery_tag": t.delivery_tag},
                "worker_pid": t.worker_pid,
                "delivery_tag": t.delivery_tag,
            }
            for t in self.active_tasks.snapshot()
        ]

    def _registered(self, arguments: dict[str, Any]) -> list[str]:
        """Task names, with ``[rate_limit=...]`` as Celery lists a task that has one."""
        items = [
            i
            for i in (arguments.get("taskinfoitems") or ("rate_limit",))
            if isinstance(i, str) and not i.startswith("_")
        ]
        names = [
            n
            for n in sorted(self.app.tasks)
            if arguments.get("builtins") or n in set(user_tasks(self.app))
        ]
        out: list[str] = []
        for name in names:
            task = self.app.tasks[name]
            fields = [
                f"{i}={getattr(task, i)}" for i in items if getattr(task, i, None) is not None
            ]
            out.append(f"{name} [{' '.join(fields)}]" if fields else name)
        return out

    def _active_queues(self) -> list[dict[str, Any]]:
        """The consumed queues in the shape of kombu's ``Queue.as_dict(recurse=True)``."""
        out: list[dict[str, Any]] = []
        for name in self.pool.queues:
            spec = self.app.router.queue(name)
            out.append(
                {
                    "name": spec.name,
                    "exchange": {
                        "name": spec.exchange,
                        "type": spec.exchange_type,
                        "arguments": None,
                        "durable": True,
                        "passive": False,
                        "auto_delete": False,
                        "delivery_mode": None,
                        "no_declare": False,
                    },
                    "routing_key": spec.routing_key,
                    "queue_arguments": None,
                    "binding_arguments": None,
                    "consumer_arguments": None,
                    "durable": True,
                    "exclusive": False,
                    "auto_delete": False,
                    "no_ack": False,
                    "alias": None,
                    "bindings": [],
                    "no_declare": None,
                    "expires": None,
                    "message_ttl": None,
                    "max_length": None,
                    "max_length_bytes": None,
                    "max_priority": None,
                }
            )
        return out

    def _conf(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The settings (all of them: fastq keeps no separate table of changed ones), values
        that are not JSON as their repr; credentials in URLs are masked."""
        from fastq.urls import redact

        out: dict[str, Any] = {}
        for key, value in self.app.conf.items():
            if isinstance(value, str) and "://" in value:
                value = redact(value)
            out[key] = (
                value
                if isinstance(value, (str, int, float, bool, type(None), list, dict))
                else repr(value)
            )
        return out

    def _query_task(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Celery's ``{id: [state, info]}``: ``active``, else ``reserved``, else ``scheduled``."""
        raw = arguments.get("ids") or []
        ids = {raw} if isinstance(raw, str) else {str(i) for i in raw}
        self._refresh()
        found: dict[str, Any] = {}
        for entry in self.active_tasks.holding():
            if entry[0] in ids:
                state = "scheduled" if is_scheduled(entry) else "reserved"
                found[entry[0]] = [state, request_info(entry, self.hostname)]
        found.update({t["id"]: ["active", t] for t in self._active() if t["id"] in ids})
        return found

    def _hello(self, arguments: dict[str, Any]) -> dict[str, Any] | None:
        """Celery's mingle at worker start: the revoked ids this worker knows, merging the
        sender's."""
        if arguments.get("from_node") == self.hostname:
            return None
        revoked = arguments.get("revoked")
        if isinstance(revoked, (list, dict)) and revoked and self.on_revoke is not None:
            ids = [str(i) for i in revoked]
            self.on_revoke(ids, False, "SIGTERM")
            self.revoked.extend(i for i in ids if i not in set(self.revoked))
        return {"revoked": list(self.revoked), "clock": self._clock()}

    def _revoke(self, arguments: dict[str, Any]) -> dict[str, str]:
        ids, terminate, sig = revoke_arguments(arguments)
        if self.on_revoke is not None:
            self.on_revoke(ids, terminate, sig)
        known = set(self.revoked)
        self.revoked.extend(i for i in ids if i not in known)
        log.info("revoked %s%s", ", ".join(ids), " (terminate)" if terminate else "")
        if terminate:
            running = {t.id for t in self.active_tasks.snapshot()} & set(ids)
            if not running:
                return ok("terminate: tasks unknown")
            return ok(f"terminate: {', '.join(sorted(running))}")
        return ok(f"tasks {', '.join(ids)} flagged as revoked")

    def _add_consumer(self, arguments: dict[str, Any]) -> dict[str, str]:
        """Celery's ``add_consumer``: the queue is consumed from the next fetch on, declared as
        the router knows it (``task_queues``, else a direct exchange of its name)."""
        queue = str(arguments.get("queue") or "")
        if not queue:
            return nok("add_consumer needs a queue")
        if self.pool.implementation == "asyncio":
            return nok(FIXED_QUEUES)
        if arguments.get("exchange") not in (None, "", queue) or arguments.get(
            "routing_key"
        ) not in (
            None,
            "",
            queue,
        ):
            return nok(
                "fastq declares an added queue as task_queues has it (or as a direct exchange "
                "of its name); declare other bindings in task_queues"
            )
        try:
            self.app.router.queue(queue)
        except FastqError as exc:
            return nok(str(exc))
        if queue not in self.pool.queues:
            self.pool.queues.append(queue)
            self._queues_changed()
        return ok(f"add consumer {queue}")

    def _cancel_consumer(self, arguments: dict[str, Any]) -> dict[str, str]:
        queue = str(arguments.get("queue") or "")
        if self.pool.implementation == "asyncio":
            return nok(FIXED_QUEUES)
        if queue in self.pool.queues:
            if len(self.pool.queues) == 1:
                return nok(f"{queue} is the only queue this worker consumes; it stays")
            self.pool.queues.remove(queue)
            self._queues_changed()
        return ok(f"no longer consuming from {queue}")

    def _queues_changed(self) -> None:
        log.info("consumed queues now: %s", ", ".join(self.pool.queues))
        if self.on_queues is not None:
            self.on_queues(list(self.pool.queues))

    def _resize(self, arguments: dict[str, Any], sign: int) -> dict[str, str]:
        """Celery's ``pool_grow``/``pool_shrink`` (``n``, default 1)."""
        if self.on_resize is None:
            return nok(f"the {self.pool.implementation} pool has a fixed size")
        try:
            n = int(arguments.get("n") or 1)
            if n < 1:
                raise ValueError(f"n must be at least 1, not {n}")
            self.pool.concurrency = self.on_resize(sign * n)
        except (TypeError, ValueError) as exc:
            return nok(f"pool_{'grow' if sign > 0 else 'shrink'} refused: {exc}")
        return ok("pool will grow" if sign > 0 else "pool will shrink")

    def _change_task(
        self,
        make: Callable[[Any, dict[str, Any]], dict[str, Any]],
        arguments: dict[str, Any],
    ) -> dict[str, str]:
        """Celery's ``rate_limit``/``time_limit``: the task object changes in this process and,
        through ``on_task_change``, in every process that runs tasks."""
        try:
            change = make(self.app.tasks, arguments)
        except task_settings.SettingError as exc:
            return nok(str(exc))
        task_settings.apply(self.app.tasks, change)
        if self.on_task_change is not None:
            self.on_task_change(change)
        name = change["task"]
        if "rate_limit" in change:
            log.info("new rate limit for tasks of type %s: %s", name, change["rate_limit"])
            if change["rate_limit"] is None:
                return ok("rate limit disabled successfully")
            return ok("new rate limit set successfully")
        log.info(
            "new time limits for tasks of type %s: soft=%s hard=%s",
            name,
            change["soft_time_limit"],
            change["time_limit"],
        )
        return ok("time limits set successfully")

    def _task_events(self, on: bool) -> dict[str, str]:
        if self.on_events is None:
            return nok("this worker's broker carries no events (Celery's need redis:// or amqp://)")
        was = self.on_events(on)
        word = "enabled" if on else "disabled"
        return ok(f"task events already {word}" if was == on else f"task events {word}")

    def _heartbeat(self) -> None:
        if self.on_heartbeat is not None:
            self.on_heartbeat()

    def _shutdown(self, arguments: dict[str, Any]) -> dict[str, str]:
        if self.on_shutdown is None:
            return nok("this worker cannot be shut down remotely")
        log.warning("%s", arguments.get("msg") or "Got shutdown from remote")
        self._after_reply.append(self.on_shutdown)  # the reply goes out first
        return ok("shutting down (warm: running tasks finish)")

    def _stats(self) -> dict[str, Any]:
        broker = self.app.broker
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "hostname": self.hostname,
            "pid": os.getpid(),
            "clock": str(self._clock()),
            "uptime": round(time.time() - self.started, 3),
            "pool": {
                "implementation": self.pool.implementation,
                "max-concurrency": self.pool.concurrency,
                "processes": self.pool.processes(),
                "max-tasks-per-child": self.pool.max_tasks_per_child or "N/A",
            },
            "prefetch_count": self.pool.prefetch * self.pool.concurrency,
            "broker": {
                "transport": broker.url.split("://", 1)[0],
                "reach": broker.consumers_within,
            },
            "rusage": {
                "utime": usage.ru_utime,
                "stime": usage.ru_stime,
                "maxrss": usage.ru_maxrss,
                "minflt": usage.ru_minflt,
                "majflt": usage.ru_majflt,
                "nvcsw": usage.ru_nvcsw,
                "nivcsw": usage.ru_nivcsw,
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
