"""``fastq worker``'s command line: Celery's worker flags, each doing what it does in Celery or
refused with the alternative, and the process set-up they ask for (log file, pid file).

Flags for features fastq does not have are not silently taken: ``--without-gossip``,
``--without-mingle`` turn off things fastq never does, so they are accepted as they stand;
``-E`` sends task events and ``--without-heartbeat`` stops the worker's heartbeat events, as in
Celery; the rest are refused with what to use instead.
"""

from __future__ import annotations

import argparse
import atexit
import io
import logging
import os
import socket
import sys
from typing import Any

from fastq.errors import ConfigurationError
from fastq.utils.log import RunningTask

log = logging.getLogger("fastq.worker")

#: Pools Celery has and fastq does not, with what to use instead.
REFUSED_POOLS = {
    "gevent": "write I/O-bound tasks as `async def` for --pool asyncio, or use --pool threads",
    "eventlet": "write I/O-bound tasks as `async def` for --pool asyncio, or use --pool threads",
    "custom": "fastq's pools are prefork, threads, solo and asyncio",
}

#: Flags refused, with the reason and the alternative.
REFUSED_FLAGS = {
    "detach": "fastq does not daemonize itself: run it under systemd, supervisord or a container "
    "runtime (with --pidfile and --logfile if they need them)",
    "autoscale": "fastq has no autoscaler: set --concurrency, and resize at run time with "
    "celery control pool_grow/pool_shrink",
    "statedb": "fastq keeps revoked ids in memory only; revoke again after a restart",
    "purge": "run `fastq purge -Q <queues>` before starting the worker",
}


def add_worker_arguments(w: argparse.ArgumentParser) -> None:
    w.add_argument(
        "-c", "--concurrency", type=int,
        help="processes/threads (default: CPUs); asyncio: tasks in flight at once (default 100)",
    )  # fmt: skip
    w.add_argument(
        "-P", "--pool",
        help="prefork (default), threads, solo, or asyncio (one process, one event loop: async "
        "def tasks awaited together, plain def tasks in 10 threads at most)",
    )  # fmt: skip
    w.add_argument(
        "-Q",
        "--queues",
        help="comma-separated queues (default: those of task_queues, else task_default_queue)",
    )
    w.add_argument("-X", "--exclude-queues", help="comma-separated queues not to consume")
    w.add_argument("-l", "--loglevel", default="INFO")
    w.add_argument("-f", "--logfile", help="write the log to this file instead of stderr")
    w.add_argument(
        "--log-format", choices=["text", "json"], default="text",
        help="json: one JSON object per line (time, level, logger, message, task_id, task_name, "
        "hostname), for log pipelines",
    )  # fmt: skip
    w.add_argument(
        "--metrics-port", type=int, metavar="PORT",
        help="serve Prometheus metrics on this port (worker_metrics_port; needs the "
        "fastq-worker[metrics] extra)",
    )  # fmt: skip
    w.add_argument(
        "--cpu-affinity", action="store_true",
        help="pin each prefork child to a CPU of its own (worker_cpu_affinity), for a host the "
        "worker has to itself",
    )  # fmt: skip
    w.add_argument("--pidfile", help="write the worker's pid here; refuse to start if it is live")
    w.add_argument("--prefetch-multiplier", type=int)
    w.add_argument("--max-tasks-per-child", type=int)
    w.add_argument(
        "--max-memory-per-child", type=int, metavar="KIB",
        help="replace a pool process once its resident memory passes this many KiB",
    )  # fmt: skip
    w.add_argument("--time-limit", type=float, help="hard time limit per task (task_time_limit)")
    w.add_argument("--soft-time-limit", type=float, help="task_soft_time_limit")
    w.add_argument("-n", "--hostname", help="node name; %%h, %%n and %%d expand as in Celery")
    w.add_argument("-I", "--include", help="comma-separated modules to import (tasks)")
    w.add_argument(
        "-O", "--optimization", choices=["fair", "default"],
        help="accepted for Celery's command lines: each fastq child only fetches what it runs",
    )  # fmt: skip
    w.add_argument(
        "-E", "--task-events", action="store_true",
        help="send Celery's task events (celery events, Flower); worker_send_task_events",
    )  # fmt: skip
    for flag in ("--without-gossip", "--without-mingle"):
        w.add_argument(flag, action="store_true", help="accepted: fastq never does this")
    w.add_argument(
        "--without-heartbeat", action="store_true",
        help="send no worker-online/heartbeat/offline events",
    )  # fmt: skip
    # Refused with a reason (REFUSED_FLAGS), rather than rejected as unknown by argparse.
    w.add_argument("-D", "--detach", action="store_true", help=argparse.SUPPRESS)
    w.add_argument(
        "-B", "--beat", action="store_true",
        help="run beat (periodic tasks) in this worker's main process too",
    )  # fmt: skip
    w.add_argument("--autoscale", help=argparse.SUPPRESS)
    w.add_argument("-S", "--statedb", help=argparse.SUPPRESS)
    w.add_argument("--purge", "--discard", action="store_true", help=argparse.SUPPRESS)


def worker_kwargs(
    options: argparse.Namespace, conf: Any, known_queues: list[str] | None = None
) -> dict[str, Any]:
    """Checks the flags and returns ``run_worker``'s keyword arguments; settings that flags set
    (time limits, includes) go into ``conf``. ``known_queues``: what the worker consumes
    without ``-Q`` (``-X`` takes queues out of it)."""
    for name, why in REFUSED_FLAGS.items():
        if getattr(options, name, None):
            raise ConfigurationError(f"--{name} is not supported: {why}")
    pool = options.pool
    if pool in REFUSED_POOLS:
        raise ConfigurationError(f"--pool {pool} is not supported: {REFUSED_POOLS[pool]}")
    if options.time_limit is not None:
        conf.task_time_limit = options.time_limit
    if options.soft_time_limit is not None:
        conf.task_soft_time_limit = options.soft_time_limit
    if options.include:
        conf.include = [*conf.include, *options.include.split(",")]
    queues = options.queues.split(",") if options.queues else None
    if options.exclude_queues:
        excluded = set(options.exclude_queues.split(","))
        queues = [q for q in queues or known_queues or [] if q not in excluded]
        if not queues:
            raise ConfigurationError(f"-X {options.exclude_queues} leaves no queue to consume")
    return {
        "concurrency": options.concurrency,
        "pool": pool,
        "queues": queues,
        "prefetch_multiplier": options.prefetch_multiplier,
        "max_tasks_per_child": options.max_tasks_per_child,
        "max_memory_per_child": options.max_memory_per_child,
        "hostname": node_name(options.hostname) if options.hostname else None,
        "beat": options.beat,
        "metrics_port": options.metrics_port,
        "cpu_affinity": options.cpu_affinity,
        "task_events": options.task_events,
        "heartbeat": not options.without_heartbeat,
    }


def node_name(template: str, host: str | None = None) -> str:
    """Celery's node name expansion: ``%h`` host name, ``%n`` its first label, ``%d`` the rest
    (domain), ``%%`` a percent sign; a name without ``@`` gets ``@<host>`` appended."""
    host = host or socket.gethostname()
    name, _, domain = host.partition(".")
    out, i = [], 0
    while i < len(template):
        ch = template[i]
        if ch == "%" and i + 1 < len(template):
            code = template[i + 1]
            expansions = {"h": host, "n": name, "d": domain, "%": "%"}
            if code in expansions:
                out.append(expansions[code])
                i += 2
                continue
        out.append(ch)
        i += 1
    expanded = "".join(out)
    return expanded if "@" in expanded else f"{expanded}@{host}"


def set_up_logging(
    options: argparse.Namespace, log_format: logging.Formatter, hijack: bool = True
) -> None:
    """Logging to ``--logfile`` or stderr, at ``--loglevel``, in place of the root logger's
    handlers; as in Celery, with ``hijack`` off (``worker_hijack_root_logger``) handlers the app
    set up are kept instead (given the level)."""
    level = options.loglevel.upper()
    root = logging.getLogger()
    if root.handlers and not hijack:
        root.setLevel(level)
        return
    handler: logging.Handler
    if options.logfile:
        handler = logging.FileHandler(options.logfile)
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(log_format)
    handler.addFilter(RunningTask())  # every record logged while a task runs names it
    logging.basicConfig(level=level, handlers=[handler], force=True)


class LoggingStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of a worker (``worker_redirect_stdouts``, on by default as
    in Celery): each line written goes to the ``fastq.redirected`` logger at ``level``, so a
    task's ``print()`` lands in the worker's log (its file with ``--logfile``)."""

    def __init__(self, level: int, original: Any) -> None:
        self.logger = logging.getLogger("fastq.redirected")
        self.level = level
        self.original = original
        self._pending = ""
        self._inside = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._inside:  # logging itself writing here (an error in a handler): not again
            return int(self.original.write(text))
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        self._emit(lines)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            lines, self._pending = [self._pending], ""
            self._emit(lines)

    def _emit(self, lines: list[str]) -> None:
        self._inside = True
        try:
            for line in lines:
                if line.strip():
                    self.logger.log(self.level, line.rstrip())
        finally:
            self._inside = False


def redirect_stdouts(level: str | int) -> None:
    """Sends what is printed to the log, at ``level`` (``worker_redirect_stdouts_level``)."""
    number = level if isinstance(level, int) else logging.getLevelName(str(level).upper())
    if not isinstance(number, int):
        raise ConfigurationError(f"worker_redirect_stdouts_level {level!r} is not a log level")
    sys.stdout = LoggingStream(number, sys.__stdout__)
    sys.stderr = LoggingStream(number, sys.__stderr__)


def write_pidfile(path: str) -> None:
    """Writes this process's pid, removed at exit; a file naming a live process is refused (a
    second worker started by mistake), a stale one replaced."""
    try:
        with open(path) as f:
            other = int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):  # none, or not a pid: not a live worker's
        other = 0
    if other and other != os.getpid() and _alive(other):
        raise ConfigurationError(
            f"pidfile {path} names process {other}, which is running: another worker? stop it "
            "or use another --pidfile"
        )
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")
    pid = os.getpid()

    def remove() -> None:
        if os.getpid() == pid:  # not from a forked child exiting
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    atexit.register(remove)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
