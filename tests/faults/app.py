"""The app fault tests run in worker subprocesses: one task that writes to the run ledger.

Configured from the environment so each test points it at its own broker, backend and ledger:
``FASTQ_BROKER_URL``, ``FASTQ_RESULT_BACKEND``, ``FASTQ_FAULT_LEDGER``, ``FASTQ_FAULT_ACKS_LATE``,
and optionally ``FASTQ_FAULT_VISIBILITY_TIMEOUT`` (seconds; the broker's default otherwise) and
``FASTQ_FAULT_TRANSPORT_OPTIONS`` (JSON: more broker and result backend transport options, such as
Sentinel's ``master_name``) and ``FASTQ_FAULT_QUORUM=1`` (the default queue ``celery`` is a
RabbitMQ quorum queue).
"""

from __future__ import annotations

import json
import os
import signal
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
_options = json.loads(os.environ.get("FASTQ_FAULT_TRANSPORT_OPTIONS") or "{}")
if _options:
    app.conf.result_backend_transport_options = dict(_options)
if os.environ.get("FASTQ_FAULT_QUORUM") == "1":
    # The default queue as a quorum queue, the way Celery's documentation declares one.
    from kombu import Queue

    app.conf.task_queues = [Queue("celery", queue_arguments={"x-queue-type": "quorum"})]
if os.environ.get("FASTQ_FAULT_VISIBILITY_TIMEOUT"):
    _options["visibility_timeout"] = float(os.environ["FASTQ_FAULT_VISIBILITY_TIMEOUT"])
if _options:
    app.conf.broker_transport_options = _options

LEDGER = os.environ.get("FASTQ_FAULT_LEDGER", "")


@app.task(name="faults.work")
def work(seq: int, seconds: float = 0.0) -> int:
    ledger.append(LEDGER, f"start {seq}")
    if seconds:
        time.sleep(seconds)
    ledger.append(LEDGER, f"end {seq}")
    return seq


@app.task(name="faults.crash")
def crash(seq: int, times: int = 1) -> int:
    """Kills its own worker process (SIGKILL, as the OOM killer would) the first ``times`` times
    it starts, counted in the ledger; then runs as ``faults.work`` does."""
    ledger.append(LEDGER, f"start {seq}")
    if ledger.read(LEDGER)[0][seq] <= times:
        os.kill(os.getpid(), signal.SIGKILL)
    ledger.append(LEDGER, f"end {seq}")
    return seq


@app.task(name="faults.now")
def now(seq: int) -> float:
    """When it started (unix time): ETA tests measure lateness from it."""
    started = time.time()
    ledger.append(LEDGER, f"start {seq}")
    ledger.append(LEDGER, f"end {seq}")
    return started


@app.task(name="faults.misconfigured", time_limit="soon")
def misconfigured(seq: int) -> int:
    """Fails in the worker before it runs (its time limit is no number): not a message fault,
    but the child must survive it all the same."""
    return seq
