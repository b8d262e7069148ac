"""The benchmark's worker apps: the same task under the same name on fastq and on Celery.

Both read their settings from ``FASTQ_BENCH_*`` environment variables, which the harness sets for
the worker subprocesses; the harness builds its client apps with the same functions.
"""

from __future__ import annotations

import os
from typing import Any

from fastq.bench.spec import QUEUE


def settings_from_env() -> dict[str, Any]:
    return {
        "broker": os.environ.get("FASTQ_BENCH_BROKER", "redis://127.0.0.1:6379/0"),
        "backend": os.environ.get("FASTQ_BENCH_BACKEND") or None,
        "acks_late": os.environ.get("FASTQ_BENCH_ACKS_LATE") == "1",
        "queue": os.environ.get("FASTQ_BENCH_QUEUE") or QUEUE,
        "queue_type": os.environ.get("FASTQ_BENCH_QUEUE_TYPE") or "classic",
    }
