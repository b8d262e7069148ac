"""``fastq bench``: throughput and latency of fastq workers, side by side with Celery, as a share
of the broker's raw limit. It ships with fastq so users can tune their own workers; the project's
published figures (``bench/RESULTS.md``) are made with it.

    from fastq.bench import BenchConfig, run_bench
    report = run_bench(BenchConfig(broker="redis://127.0.0.1:6379/6", tasks=5000))

Extras: ``pip install 'fastq-worker[bench]'`` (progress bar, tables, plots, CPU/RSS) and
``fastq-worker[compare]`` (Celery, for ``--compare celery``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["BenchConfig", "BenchError", "RunResult", "run_bench"]


def __getattr__(name: str) -> Any:
    # Lazy: the worker apps import fastq.bench.probe, and must not pay for the harness's imports.
    if name == "BenchConfig":
        from fastq.bench.spec import BenchConfig

        return BenchConfig
    if name in ("BenchError", "RunResult", "run_bench"):
        from fastq.bench import runner

        return getattr(runner, name)
    raise AttributeError(name)
