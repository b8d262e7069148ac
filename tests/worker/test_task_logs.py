"""A worker's log names the task each record was logged in, whatever logger logged it, in text
(Celery's task format) and in ``--log-format json``."""

from __future__ import annotations

import json

import pytest
from fastq import App

from tests.processes import fastq_worker

APP = "tests.apps.observed_app"
SAYINGS = ("plain logger says", "task logger says", "print says")


def _run_chatty(broker_url: str, backend_url: str, *args: str) -> tuple[str, str]:
    client = App("observed", broker=broker_url, backend=backend_url, set_as_current=False)
    env = {"FASTQ_BROKER_URL": broker_url, "FASTQ_RESULT_BACKEND": backend_url}
    with fastq_worker(*args, "-n", "logs@testhost", app=APP, env=env) as worker:
        result = client.send_task("observed.chatty", ["hello"])
        assert result.get(timeout=30) == "hello"
        worker.stop()
    client.close()
    return result.id, worker.log()


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_every_record_a_task_logs_names_it(pool: str, broker_url: str, backend_url: str) -> None:
    task_id, log = _run_chatty(broker_url, backend_url, "-P", pool, "-c", "1")
    for saying in SAYINGS:
        (line,) = [line for line in log.splitlines() if f"{saying} hello" in line]
        assert f"observed.chatty[{task_id}]: " in line, line
    # The worker's own lines keep their format (they name the task already).
    (received,) = [line for line in log.splitlines() if "received" in line and task_id in line]
    assert "observed.chatty[" not in received.split("Task ")[0]


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_json_log_lines(pool: str, broker_url: str, backend_url: str) -> None:
    task_id, log = _run_chatty(broker_url, backend_url, "-P", pool, "--log-format", "json")
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len(entries) == len(log.splitlines()), log  # every line is one JSON object
    for entry in entries:
        assert set(entry) >= {"time", "level", "logger", "message", "task_id", "task_name"}
        assert entry["hostname"] == "logs@testhost"
    said = {e["message"]: e for e in entries if e["message"].endswith("says hello")}
    assert sorted(said) == sorted(f"{s} hello" for s in SAYINGS)
    for entry in said.values():
        assert (entry["task_id"], entry["task_name"]) == (task_id, "observed.chatty")
    assert said["plain logger says hello"]["logger"] == "tests.observed"
    assert said["plain logger says hello"]["level"] == "WARNING"
    ready = next(e for e in entries if e["message"].startswith("ready"))
    assert ready["task_id"] is None and ready["task_name"] is None
    succeeded = next(e for e in entries if "succeeded in" in e["message"])
    assert succeeded["task_id"] == task_id
