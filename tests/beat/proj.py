"""The app of the beat tests' subprocesses (``fastq -A tests.beat.proj beat``), set up from the
environment: ``BEAT_EVERY`` (seconds), ``BEAT_LEASE`` (seconds), ``BEAT_LEDGER`` (a file the
task appends a line to each time it runs)."""

from __future__ import annotations

import os

from fastq import App
from fastq.schedules import crontab

app = App("beatproj", beat_lease_timeout=float(os.environ.get("BEAT_LEASE", "2")))
app.conf.beat_schedule = {
    "every": {
        "task": "beatproj.tick",
        "schedule": float(os.environ.get("BEAT_EVERY", "1")),
        "args": ("every",),
        "options": {"queue": "beat-q"},
    },
}
if os.environ.get("BEAT_CRONTAB"):
    app.conf.beat_schedule["minutely"] = {
        "task": "beatproj.tick",
        "schedule": crontab(),
        "args": ("minutely",),
        "options": {"queue": "beat-q"},
    }


@app.on_after_configure.connect
def setup_periodic_tasks(sender: App, **kwargs: object) -> None:
    if os.environ.get("BEAT_LEDGER"):  # the worker -B test: one entry the worker runs
        sender.conf.beat_schedule.clear()
        sender.add_periodic_task(1.0, tick.s("hello"), name="ledger every 1")


@app.task(name="beatproj.tick")
def tick(label: str) -> str:
    ledger = os.environ.get("BEAT_LEDGER")
    if ledger:
        with open(ledger, "a") as f:
            f.write(f"{label}\n")
    return label
