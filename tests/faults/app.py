"""The app fault tests run in worker subprocesses: one task that writes to the run ledger.

Configured from the environment so each test points it at its own broker, backend and ledger:
``FASTQ_BROKER_URL``, ``FASTQ_RESULT_BACKEND``, ``FASTQ_FAULT_LEDGER``, ``FASTQ_FAULT_ACKS_LATE``,
and optionally ``FASTQ_FAULT_VISIBILITY_TIMEOUT`` (seconds; the broker's default otherwise).
"""

from __future__ import annotations

import os
import time

from fastq import App

from tests.faults import ledger

app = App(
    "faults",
    broker=os.environ.get("FASTQ_BROKER_URL", "memory://"),
    backend=os.environ.get("FASTQ_RESULT_BACKEND") or None,
    task_acks_late=os.environ.get("FASTQ_FAULT_ACKS_LATE", "") == "1",
    set_as_current=False,
)
if os.environ.get("FASTQ_FAULT_VISIBILITY_TIMEOUT"):
    app.conf.broker_transport_options = {
        "visibility_timeout": float(os.environ["FASTQ_FAULT_VISIBILITY_TIMEOUT"])
    }

LEDGER = os.environ.get("FASTQ_FAULT_LEDGER", "")


@app.task(name="faults.work")
def work(seq: int, seconds: float = 0.0) -> int:
    ledger.append(LEDGER, f"start {seq}")
    if seconds:
        time.sleep(seconds)
    ledger.append(LEDGER, f"end {seq}")
    return seq
