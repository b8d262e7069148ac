"""fastq as ``adapters.fastq`` runs it, with ``--cpu-affinity``: each of the 2 prefork children
pinned to a CPU of its own (fastq's option for a host the worker has to itself)."""

from __future__ import annotations

from adapters import QUEUE, script
from adapters.fastq import (
    BATCH,
    DIST,
    NAME,
    RESULTS,
    STORED,
    app,
    enqueue,
    enqueue_batch,
    latency,
    work,
)

CONFIG = "prefork, `--concurrency 2 --cpu-affinity`, adaptive prefetch window (default)"
__all__ = [
    "BATCH", "CONFIG", "DIST", "NAME", "RESULTS", "STORED", "app", "enqueue", "enqueue_batch",
    "latency", "work", "worker_argv",
]  # fmt: skip


def worker_argv(results: bool) -> list[list[str]]:
    args = "-A adapters.fastq_pinned worker --pool prefork --concurrency 2 --cpu-affinity"
    args += f" -Q {QUEUE}"
    return [script("fastq", args + " --loglevel WARNING")]
