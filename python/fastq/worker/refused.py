"""Results the backend refused for their key alone (``errors.ResultsRefused``): storing them
again cannot help, and keeping them would hold back every result and late ack after them, so
the worker logs each one's loss, with the backend's reason, and goes on."""

from __future__ import annotations

import logging

from fastq import errors

log = logging.getLogger("fastq.worker")


def log_refused(exc: errors.ResultsRefused) -> None:
    for task_id, reason in exc.refused.items():
        log.error("the result of task %s cannot be stored, and is lost: %s", task_id, reason)
