"""Loggers for task code, as Celery's ``celery.utils.log``.

``get_task_logger(__name__)`` returns a logger under ``fastq.task`` whose records carry the running
task's ``task_name`` and ``task_id`` (``"???"`` outside a task), so the worker's log line says which
task logged it::

    [2026-12-02 12:00:00,000: INFO/ForkPoolWorker-1 4242] proj.tasks.add[3f2a...]: adding 2 + 2

A worker's own handler (``RunningTask``) gives the same two fields to every record logged while a
task runs, whatever its logger (``logging.getLogger(__name__)``, a library's, a ``print()``
redirected), so those lines name their task too; ``JsonFormatter`` writes one JSON object per
line for log pipelines (``fastq worker --log-format json``).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from fastq._state import current_task

#: The parent of every task logger (Celery's is ``celery.task``).
TASK_LOGGER = "fastq.task"
#: Names ``get_task_logger`` refuses: they would make the task logger its own parent.
RESERVED = frozenset({"fastq", TASK_LOGGER, "celery", "celery.task"})
#: Celery's ``worker_task_log_format``, in fastq's worker line layout.
TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s %(process)d] "
    "%(task_name)s[%(task_id)s]: %(message)s"
)


def get_logger(name: str) -> logging.Logger:
    """A plain logger (Celery's ``get_logger``)."""
    return logging.getLogger(name)


def get_task_logger(name: str) -> logging.Logger:
    """A logger for task modules: its records name the task running when they were logged."""
    if name in RESERVED:
        raise RuntimeError(f"logger name {name!r} is reserved; use the module name (__name__)")
    logger = logging.getLogger(name)
    if not any(isinstance(f, TaskContext) for f in logger.filters):
        logger.addFilter(TaskContext())
    # Under fastq.task, so the worker's task format applies and ``fastq.task`` configures them all.
    logger.parent = logging.getLogger(TASK_LOGGER)
    return logger


class TaskContext(logging.Filter):
    """Adds ``task_name`` and ``task_id`` of the running task to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = current_task._get_current_object()
        request = task.request if task is not None else None
        record.task_name = getattr(task, "name", None) or "???"
        record.task_id = getattr(request, "id", None) or "???"
        return True


class RunningTask(logging.Filter):
    """A worker handler's filter: a record logged while a task runs gets that task's
    ``task_name`` and ``task_id`` (one from ``get_task_logger`` has them already)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "task_id"):
            task = current_task._get_current_object()
            if task is not None:
                record.task_name = getattr(task, "name", None) or "???"
                record.task_id = getattr(task.request, "id", None) or "???"
        return True


#: The worker's own lines about a task (received, succeeded...) name it already.
_WORKER_LOGGER = "fastq.worker"


class TaskFormatter(logging.Formatter):
    """Formats records that carry a task (from ``get_task_logger``, or logged while a task runs)
    with ``task_format``, and the others with ``fmt``."""

    def __init__(self, fmt: str, task_format: str = TASK_LOG_FORMAT) -> None:
        super().__init__(fmt)
        self.task_formatter = logging.Formatter(task_format)

    def format(self, record: logging.LogRecord) -> str:
        if hasattr(record, "task_id") and record.name != _WORKER_LOGGER:
            return self.task_formatter.format(record)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (ISO 8601, UTC), ``level``,
    ``logger``, ``message``, ``task_id`` and ``task_name`` (null outside a task), ``hostname``
    (the worker's node name), ``process``; ``exc_info`` with the traceback when there is one."""

    def __init__(self, hostname: str) -> None:
        super().__init__()
        self.hostname = hostname

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "task_id": _known(getattr(record, "task_id", None)),
            "task_name": _known(getattr(record, "task_name", None)),
            "hostname": self.hostname,
            "process": record.processName,
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        return json.dumps(entry, default=str)


def _known(value: object) -> object:
    return None if value == "???" else value
