"""fastq beat's messages are Celery's: a Celery worker runs the task beat sends, with the
entry's arguments, and stores its result where a fastq client reads it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastq import App
from fastq.beat import Beat, Entry
from fastq.beat.state import MemoryBeatState

from tests.processes import celery_worker

pytest.importorskip("celery")


class RecordingBeat(Beat):
    """Keeps what it sent, to wait for the results."""

    sent: list[Any]

    def send(self, entry: Entry, due: float) -> Any:
        result = super().send(entry, due)
        self.sent.append(result)
        return result


def test_a_celery_worker_runs_what_fastq_beat_sends(
    broker_url: str, backend_url: str, worker_env: dict[str, str]
) -> None:
    app = App("proj", broker=broker_url, backend=backend_url, set_as_current=False)
    app.conf.beat_schedule = {
        "add": {"task": "interop.add", "schedule": 0.2, "args": (2, 3), "kwargs": {}}
    }
    beat = RecordingBeat(app, state=MemoryBeatState(f"memory://{time.time()}", 10.0))
    beat.sent = []
    with celery_worker("-P", "solo", env=worker_env):
        beat.tick()
        time.sleep(0.25)
        beat.tick()
        assert len(beat.sent) == 1
        assert beat.sent[0].get(timeout=30) == 5
    app.close()
