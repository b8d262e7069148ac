"""The worker app of ``bench/results_store_ab.sh``: the bench task, results on; with
``AB_ARM=redispy`` it sets one of Celery's ``redis_*`` client settings, which routes the
worker's result stores through redis-py instead of ``_core.RedisResultStore``."""

from __future__ import annotations

import os

from fastq import App
from fastq.bench import probe
from fastq.bench.spec import QUEUE, TASK_NAME

extra = {"redis_socket_connect_timeout": 4} if os.environ.get("AB_ARM") == "redispy" else {}
app = App(
    "results-store-ab",
    broker=os.environ["FASTQ_BENCH_BROKER"],
    backend=os.environ["FASTQ_BENCH_BACKEND"],
    set_as_current=False,
    task_default_queue=QUEUE,
    **extra,
)
work = app.task(name=TASK_NAME)(probe.run)
