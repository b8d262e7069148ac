"""The worker: a consumer loop per process, pools around it, and the prefork supervisor.

``run_worker`` is imported on first use, so that ``fastq.worker.options`` (the command line) can be
read without loading the worker itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastq.worker.main import run_worker

__all__ = ["run_worker"]


def __getattr__(name: str) -> Any:
    if name == "run_worker":
        from fastq.worker.main import run_worker

        return run_worker
    raise AttributeError(f"module 'fastq.worker' has no attribute {name!r}")
