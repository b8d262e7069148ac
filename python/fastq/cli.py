"""The ``fastq`` command: ``worker``, ``beat``, ``call``, ``result``, ``purge``, ``inspect``,
``bench``."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from fastq import __version__
from fastq.app import App
from fastq.celery_settings import CELERY_DEFAULTS
from fastq.errors import ConfigurationError, FastqError
from fastq.sqlitedb import path_from_url
from fastq.worker.options import add_worker_arguments

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s %(process)d] %(message)s"


def find_app(spec: str) -> App:
    """The ``App`` that ``-A`` names, found as Celery finds it: ``module:attribute``,
    ``module.attribute``, or a module, whose ``app`` or ``celery`` attribute is used, else the
    ``celery`` submodule of a package (``-A proj`` finds ``proj/celery.py``), else the one App
    in it."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if attr or "." not in module_name or exc.name != module_name:
            raise SystemExit(f"fastq: cannot import {module_name!r}: {exc}") from exc
        module_name, _, attr = module_name.rpartition(".")
        module = importlib.import_module(module_name)
    if attr:
        app = getattr(module, attr, None)
    else:
        app = _app_in(module)
        if app is None and hasattr(module, "__path__"):
            try:
                app = _app_in(importlib.import_module(f"{module_name}.celery"))
            except ModuleNotFoundError as exc:
                if exc.name != f"{module_name}.celery":
                    raise
    if not isinstance(app, App):
        raise SystemExit(
            f"fastq: no fastq App found in {spec!r} (name it 'app', put it in "
            f"{module_name}/celery.py, or use module:attribute)"
        )
    return app


def _app_in(module: Any) -> App | None:
    for name in ("app", "celery"):
        found = getattr(module, name, None)
        if isinstance(found, App):
            return found
    return next((v for v in vars(module).values() if isinstance(v, App)), None)


def _app_arguments(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``-A``, ``-b``, ``--result-backend``, ``--config``, ``--workdir``: accepted before the
    command (Celery's place) and after it; a value after the command wins."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument("-A", "--app", default=default, help="module[:attribute] holding the App")
    parser.add_argument("-b", "--broker", default=default, help="broker URL (overrides the app's)")
    parser.add_argument(
        "--result-backend", default=default, help="result backend URL (overrides the app's)"
    )
    parser.add_argument("--config", default=default, help="module to read settings from")
    parser.add_argument("--workdir", default=default, help="change to this directory first")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastq", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fastq {__version__}")
    _app_arguments(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run a worker")
    add_worker_arguments(w)

    b = sub.add_parser("beat", help="run periodic tasks (any number may run: one leads)")
    b.add_argument(
        "action", nargs="?", choices=["run", "list", "add", "remove"], default="run",
        help="run (default); list the entries with their last and next runs; add or remove an "
        "entry stored on the broker (running beats pick it up)",
    )  # fmt: skip
    b.add_argument("name", nargs="?", help="add/remove: the entry's name")
    b.add_argument("task", nargs="?", help="add: the task's name")
    b.add_argument("--every", type=float, help="add: run every this many seconds")
    b.add_argument("--crontab", help='add: a crontab line, e.g. "*/5 * * * mon-fri"')
    b.add_argument("--args", default="[]", help="add: positional arguments as a JSON list")
    b.add_argument("--kwargs", default="{}", help="add: keyword arguments as a JSON object")
    b.add_argument("--queue", help="add: the queue to send to")
    b.add_argument("-l", "--loglevel", default="INFO")
    b.add_argument("-f", "--logfile", help="write the log to this file instead of stderr")
    b.add_argument("--pidfile", help="write beat's pid here; refuse to start if it is live")
    b.add_argument("--max-interval", type=float, help="seconds between checks at most")
    b.add_argument("-s", "--schedule", help="Celery's state file: unused (state is on the broker)")
    b.add_argument("-S", "--scheduler", help="only fastq's own scheduler is supported")
    b.add_argument("-D", "--detach", action="store_true", help=argparse.SUPPRESS)

    c = sub.add_parser("call", help="send a task by name")
    c.add_argument("name")
    c.add_argument("args", nargs="*", help="positional arguments, each parsed as JSON if it can be")
    c.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object")
    c.add_argument("--queue")
    c.add_argument("--countdown", type=float)
    c.add_argument("--priority", type=int, help="0-9; on Redis and SQLite lower runs first")
    c.add_argument("--wait", action="store_true", help="wait for the result and print it")
    c.add_argument("--timeout", type=float, default=60.0)

    r = sub.add_parser("result", help="print a task's state and result")
    r.add_argument("task_id")

    p = sub.add_parser("purge", help="delete waiting messages")
    p.add_argument(
        "-Q",
        "--queues",
        help="comma-separated queues (default: those of task_queues, else task_default_queue)",
    )

    i = sub.add_parser("inspect", help="ask the live workers (prints one JSON line per worker)")
    i.add_argument(
        "what",
        choices=[
            "ping",
            "registered",
            "active",
            "stats",
            "revoked",
            "active_queues",
            "conf",
            "clock",
            "reserved",
            "scheduled",
        ],
    )
    i.add_argument("-d", "--destination", help="comma-separated worker hostnames (default: all)")
    i.add_argument("-t", "--timeout", type=float, default=1.0, help="seconds to wait for replies")

    from fastq.bench.cli import add_arguments as add_bench_arguments

    add_bench_arguments(sub.add_parser("bench", help="measure throughput and latency"))
    for name, command in sub.choices.items():
        if name != "bench":
            _app_arguments(command, top=False)
    return parser


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: Sequence[str] | None = None, app: App | None = None) -> int:
    """The command line; ``app``: the App to use when ``-A`` is not given (``app.start()``)."""
    options = _parser().parse_args(argv)
    if options.command == "bench":  # starts its own workers and apps; -A does not apply
        from fastq.bench.cli import run as run_bench

        return run_bench(options, argv)
    if options.workdir:
        os.chdir(options.workdir)
    if options.app:
        app = find_app(options.app)
    elif app is None:
        app = App("fastq")
    if options.config:
        app.config_from_object(options.config)
    # The flags win over everything, CELERY_BROKER_URL / CELERY_RESULT_BACKEND too: set here as
    # Celery's command line sets them.
    if options.broker:
        os.environ["CELERY_BROKER_URL"] = app.conf.broker_url = options.broker
    if options.result_backend:
        os.environ["CELERY_RESULT_BACKEND"] = app.conf.result_backend = options.result_backend
    try:
        return _run(app, options)
    except FastqError as exc:
        print(f"fastq: {exc}", file=sys.stderr)
        return 2


#: Commands that only read or ask: on the embedded broker they need the file a worker made.
READING_COMMANDS = ("result", "purge", "inspect")


def _require_existing_sqlite(app: App, command: str) -> None:
    """Refuses to create an empty ``fastq.db`` for a command that can only find nothing in it
    (run in the wrong directory, ``fastq result`` would otherwise report PENDING forever)."""
    url = app.result_backend_url if command == "result" else app.broker_url
    if url and url.lower().startswith("sqlite://"):
        path = path_from_url(url)
        if not os.path.exists(path):
            raise ConfigurationError(
                f"no fastq database at {path} ({url}): no worker or client has used it. Run "
                "this where the worker runs, or point -b/--broker or --result-backend (or "
                "FASTQ_BROKER_URL, FASTQ_RESULT_BACKEND) at the worker's database"
            )


def _log_formatter(app: App, options: argparse.Namespace) -> logging.Formatter:
    """The worker's log format: JSON lines with ``--log-format json``; else fastq's (they name
    the process id) unless the app sets ``worker_log_format`` / ``worker_task_log_format``
    (records that name their task: from ``get_task_logger()`` or logged while a task runs);
    ``worker_log_datefmt`` / ``worker_task_log_datefmt`` apply."""
    from fastq.utils.log import TASK_LOG_FORMAT, JsonFormatter, TaskFormatter
    from fastq.worker.main import default_hostname
    from fastq.worker.options import node_name

    conf = app.conf
    if options.log_format == "json":
        given = options.hostname
        return JsonFormatter(
            node_name(given) if given else conf.worker_hostname or default_hostname()
        )
    fmt, task_fmt = conf.worker_log_format, conf.worker_task_log_format
    formatter = TaskFormatter(
        LOG_FORMAT if fmt == CELERY_DEFAULTS["worker_log_format"] else fmt,
        TASK_LOG_FORMAT if task_fmt == CELERY_DEFAULTS["worker_task_log_format"] else task_fmt,
    )
    formatter.datefmt = conf.worker_log_datefmt
    formatter.task_formatter.datefmt = conf.worker_task_log_datefmt
    return formatter


def _run(app: App, options: argparse.Namespace) -> int:
    if options.command in READING_COMMANDS:
        _require_existing_sqlite(app, options.command)
    if options.command == "worker":
        from fastq.worker import run_worker
        from fastq.worker.options import (
            redirect_stdouts,
            set_up_logging,
            worker_kwargs,
            write_pidfile,
        )

        set_up_logging(
            options,
            _log_formatter(app, options),
            hijack=bool(app.conf.worker_hijack_root_logger),
        )
        if app.conf.worker_redirect_stdouts:
            redirect_stdouts(app.conf.worker_redirect_stdouts_level)
        kwargs = worker_kwargs(options, app.conf, list(app.router.queues))
        if options.pidfile:
            write_pidfile(options.pidfile)
        return run_worker(app, **kwargs)
    if options.command == "beat":
        return _beat(app, options)
    if options.command == "call":
        try:
            kwargs = json.loads(options.kwargs)
        except ValueError as exc:
            raise ConfigurationError(f"--kwargs is not JSON ({exc}): {options.kwargs!r}") from None
        if not isinstance(kwargs, dict):
            raise ConfigurationError(f"--kwargs must be a JSON object, got {options.kwargs!r}")
        result = app.send_task(
            options.name,
            [_json_arg(a) for a in options.args],
            kwargs,
            queue=options.queue,
            countdown=options.countdown,
            priority=options.priority,
        )
        print(result.id)
        if options.wait:
            print(json.dumps(result.get(timeout=options.timeout, propagate=False), default=repr))
            return 1 if result.failed() else 0
        return 0
    if options.command == "result":
        res = app.AsyncResult(options.task_id)
        print(json.dumps({"state": res.state, "result": res.result}, default=repr))
        return 0
    if options.command == "purge":
        queues = options.queues.split(",") if options.queues else list(app.router.queues)
        total = sum(app.broker.purge(q) for q in queues)
        print(f"purged {total} message(s) from {', '.join(queues)}")
        return 0
    if options.command == "inspect":
        destination = options.destination.split(",") if options.destination else None
        replies = (
            app.control.broadcast(
                options.what, destination=destination, reply=True, timeout=options.timeout
            )
            or []
        )
        for reply in replies:
            print(json.dumps(reply, default=repr))
        if not replies:
            print(f"fastq: no worker replied within {options.timeout:g}s", file=sys.stderr)
            return 1
        return 0
    raise AssertionError(options.command)


def _beat(app: App, options: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from fastq.beat import Beat
    from fastq.worker.options import set_up_logging, write_pidfile

    if options.detach:
        raise ConfigurationError(
            "--detach is not supported: run beat under systemd, supervisord or a container "
            "runtime (any number of beat processes may run: one leads)"
        )
    if options.scheduler:
        app.conf.beat_scheduler = options.scheduler
    if options.action == "list":
        return _beat_list(app)
    if options.action in ("add", "remove"):
        return _beat_edit(app, options)
    set_up_logging(options, logging.Formatter(LOG_FORMAT))
    if options.schedule:
        logging.getLogger("fastq.beat").warning(
            "-s/--schedule %s is not used: fastq beat keeps its state on the broker",
            options.schedule,
        )
    app.import_modules()
    beat = Beat(app, max_interval=options.max_interval)
    if options.pidfile:
        write_pidfile(options.pidfile)
    stop = threading.Event()

    def on_term(signum: int, _frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_term)
    beat.run(stop)
    return 0


def _beat_edit(app: App, options: argparse.Namespace) -> int:
    from fastq.beat import StoredEntries
    from fastq.schedules import crontab

    if not options.name or (options.action == "add" and not options.task):
        raise ConfigurationError(f"fastq beat {options.action} needs NAME" + (
            " TASK" if options.action == "add" else ""))  # fmt: skip
    app.import_modules()
    entries = StoredEntries(app)
    try:
        if options.action == "remove":
            if not entries.remove(options.name):
                print(f"fastq: no stored entry {options.name!r}", file=sys.stderr)
                return 1
            print(f"removed {options.name}")
            return 0
        if (options.every is None) == (options.crontab is None):
            raise ConfigurationError("fastq beat add needs one of --every SECONDS or --crontab")
        try:
            args, kwargs = json.loads(options.args), json.loads(options.kwargs)
        except ValueError as exc:
            raise ConfigurationError(f"--args/--kwargs must be JSON: {exc}") from None
        schedule = (
            options.every if options.crontab is None else crontab.from_string(options.crontab)
        )
        entry = entries.add(
            options.name, options.task, schedule, args, kwargs,
            {"queue": options.queue} if options.queue else None,
        )  # fmt: skip
        print(f"added {entry.name}: {entry.task} {entry.schedule!r}")
        return 0
    finally:
        entries.close()


def _beat_list(app: App) -> int:
    from datetime import datetime, timezone

    from fastq.beat import StoredEntries

    app.import_modules()
    listing = StoredEntries(app)
    try:
        entries = listing.list()
        stored, holder = listing.state.last_runs(), listing.state.holder()
    finally:
        listing.close()
    print(f"leader: {holder or '(none)'}")
    for name, entry in entries.items():
        last = stored.get(name)
        when = datetime.fromtimestamp(last, timezone.utc) if last is not None else None
        upcoming = entry.schedule.next_run_after(when).isoformat() if when else "(not started)"
        print(
            json.dumps(
                {
                    "name": name,
                    "task": entry.task,
                    "schedule": repr(entry.schedule),
                    "last_run": when.isoformat() if when else None,
                    "next_run": upcoming,
                    "stored": entry.stored,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
