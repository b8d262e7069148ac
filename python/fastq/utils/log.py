"""Loggers for task code, as Celery's ``celery.utils.log``.

``get_task_logger(__name__)`` returns a logger under ``fastq.task`` whose records carry the running
task's ``task_name`` and ``task_id`` (``"???"`` outside a task), so the worker's log line says which
task logged it::

    [2026-12-02 12:00:00,000: INFO/ForkPoolWorker-1 4242] proj.tasks.add[3f2a...]: adding 2 + 2
"""

from __future__ import annotations

import logging

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


class TaskFormatter(logging.Formatter):
    """Formats records that carry a task (from ``get_task_logger``) with ``task_format``, and
    the others with ``fmt``."""

    def __init__(self, fmt: str, task_format: str = TASK_LOG_FORMAT) -> None:
        super().__init__(fmt)
        self.task_formatter = logging.Formatter(task_format)

    def format(self, record: logging.LogRecord) -> str:
        if hasattr(record, "task_id"):
            return self.task_formatter.format(record)
        return super().format(record)
