"""The worker: a consumer loop per process, pools around it, and the prefork supervisor."""

from fastq.worker.main import run_worker

__all__ = ["run_worker"]
