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


CELERY_BEAT_APP = """
import os
from celery import Celery

app = Celery("beatproj", broker=os.environ["FASTQ_BROKER_URL"])
app.conf.beat_schedule = {{
    "record": {{"task": "interop.record", "schedule": 1.0, "args": ({token!r},)}},
}}
"""


def test_a_fastq_worker_runs_what_celerys_beat_sends(
    tmp_path: Any, worker_env: dict[str, str], runs: Any
) -> None:
    from tests.processes import BIN, WorkerProcess, fastq_worker, wait_until

    (tmp_path / "beatproj.py").write_text(CELERY_BEAT_APP.format(token="celery-beat"))
    beat = WorkerProcess(
        [str(BIN / "celery"), "-A", "beatproj", "beat", "-l", "INFO",
         "-s", str(tmp_path / "celerybeat-schedule")],
        {**worker_env, "PYTHONPATH": str(tmp_path)},
        cwd=tmp_path,
    )  # fmt: skip
    try:
        with fastq_worker("--pool", "solo", env=worker_env):
            wait_until(lambda: int(runs.hget("runs", "celery-beat") or 0) >= 2, timeout=30)
    finally:
        beat.stop()
    assert "Sending due task record (interop.record)" in beat.log()
