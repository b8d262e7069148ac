"""The benchmark's no-op task under fastq (``fastq_app``) and Celery (``celery_app``), with the
same names, results off. ``bench.mark`` appends ``<label> <pid> <time>`` to $FASTQ_BENCH_MARKS: the
side channel that tells when the drain started and ended without touching the no-op path."""

from __future__ import annotations

import os
import time

QUEUE = os.environ.get("FASTQ_BENCH_QUEUE", "fastq_bench")
URL = os.environ.get("FASTQ_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
MARKS = os.environ.get("FASTQ_BENCH_MARKS", "/tmp/fastq-bench-marks.txt")


def noop() -> None:
    return None


def mark(label: str) -> None:
    with open(MARKS, "a") as f:
        f.write(f"{label} {os.getpid()} {time.time():.6f}\n")


if os.environ.get("FASTQ_BENCH_SIDE", "fastq") == "celery":
    from celery import Celery

    celery_app = Celery("bench", broker=URL)
    celery_app.conf.update(
        task_default_queue=QUEUE, task_ignore_result=True, worker_hijack_root_logger=False
    )
    celery_app.task(name="bench.noop")(noop)
    celery_app.task(name="bench.mark")(mark)
else:
    from fastq import App

    fastq_app = App("bench", broker=URL, task_default_queue=QUEUE, task_ignore_result=True)
    fastq_app.task(name="bench.noop")(noop)
    fastq_app.task(name="bench.mark")(mark)
