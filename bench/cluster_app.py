"""The no-op task of ``cluster_scaling.py``, on the Redis Cluster named by ``FASTQ_BROKER_URL``
(acks_late, no results)."""

import os

from fastq import App


def make_app(url: str) -> App:
    application = App("bench-cluster", broker=url, task_ignore_result=True, task_acks_late=True)

    @application.task(name="bench.noop")
    def noop() -> None:
        return None

    return application


app = make_app(os.environ.get("FASTQ_BROKER_URL", "redis+cluster://127.0.0.1:7000"))
