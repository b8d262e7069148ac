"""The no-op task of ``sqlite_throughput.py``, for fastq and for Huey, on files named by the env.

``FASTQ_BROKER_URL`` names fastq's SQLite file (its result backend follows it);
``BENCH_IGNORE_RESULT=1`` stores no result; ``HUEY_DB`` names Huey's SQLite file.
"""

import os

from fastq import App
from huey import SqliteHuey

app = App("bench", task_ignore_result=os.environ.get("BENCH_IGNORE_RESULT") == "1")
huey = SqliteHuey("bench", filename=os.environ.get("HUEY_DB", "huey-bench.db"))


@app.task(name="bench.noop")
def noop() -> None:
    return None


@huey.task()
def huey_noop() -> None:
    return None
