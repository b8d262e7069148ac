"""fastq: a Celery-compatible distributed task queue with a Rust hot path."""

from __future__ import annotations

from fastq import states
from fastq._core import __version__
from fastq._state import current_app, current_task, shared_task
from fastq.app import App
from fastq.canvas import Signature, chain, chord, group, signature
from fastq.maps import chunks, xmap, xstarmap
from fastq.result import AsyncResult, GroupResult
from fastq.task import Task

Celery = App  #: Celery's name for the app, so ``from fastq import Celery`` works when migrating.

__all__ = [
    "App",
    "AsyncResult",
    "Celery",
    "GroupResult",
    "Signature",
    "Task",
    "__version__",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "current_task",
    "group",
    "shared_task",
    "signature",
    "states",
    "xmap",
    "xstarmap",
]
