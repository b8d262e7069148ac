"""A reusable task module, as Celery's docs write one: ``@shared_task``, ``current_task`` and a
task logger, never a project's app. ``FASTQ_TEST_FLAVOUR=celery`` imports Celery's names, so the
same module runs on both workers."""

from __future__ import annotations

import os
import time
from typing import Any

if os.environ.get("FASTQ_TEST_FLAVOUR") == "celery":
    from celery import current_task, shared_task
    from celery.utils.log import get_task_logger
else:
    from fastq import current_task, shared_task
    from fastq.utils.log import get_task_logger

logger = get_task_logger(__name__)


@shared_task
def whoami(word: str) -> list[Any]:
    logger.info("library says %s", word)
    return [current_task.name, current_task.request.id, word]


@shared_task(name="library.add", bind=True)
def add(self: Any, x: int, y: int) -> list[Any]:
    return [self.request.id, x + y]


@shared_task(name="library.progress", bind=True)
def progress(self: Any, steps: int, pause: float) -> int:
    for i in range(steps):
        self.update_state(state="PROGRESS", meta={"done": i, "of": steps})
        time.sleep(pause)
    return steps
