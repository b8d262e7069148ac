"""The ``fastq`` shell commands against a live worker on the embedded broker."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastq import App

from tests.processes import BIN, ROOT, WorkerProcess, fastq_worker

APP = "tests.apps.embedded_app"

#: One xdist worker runs the module, so its module-scoped worker starts once.
pytestmark = pytest.mark.xdist_group("cli")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("cli")
    return {
        **os.environ,
        "FASTQ_BROKER_URL": f"sqlite:///{tmp}/fastq.db",
        "FASTQ_TEST_RUNS_FILE": str(tmp / "runs.txt"),
    }


@pytest.fixture(scope="module")
def worker(env: dict[str, str]) -> Iterator[WorkerProcess]:
    with fastq_worker(
        "--pool", "prefork", "--concurrency", "2", "-n", "cli@test", app=APP, env=env
    ) as w:
        yield w


def fastq(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "fastq"), "-A", APP, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_call_wait_and_result(env: dict[str, str], worker: WorkerProcess) -> None:
    done = fastq(env, "call", "embedded.add", "2", "3", "--wait")
    assert done.returncode == 0, done.stderr
    task_id, value = done.stdout.split()
    assert value == "5"
    result = fastq(env, "result", task_id)
    assert json.loads(result.stdout) == {"state": "SUCCESS", "result": 5}
    kwargs = fastq(env, "call", "embedded.add", "--kwargs", '{"x": 1, "y": 2}', "--wait")
    assert kwargs.stdout.split()[1] == "3"


def test_a_failing_call_exits_1(env: dict[str, str], worker: WorkerProcess) -> None:
    done = fastq(env, "call", "embedded.fail", "boom", "--wait")
    assert done.returncode == 1
    assert "ValueError('boom')" in done.stdout
    task_id = done.stdout.split()[0]
    assert json.loads(fastq(env, "result", task_id).stdout)["state"] == "FAILURE"


def test_bad_kwargs_are_a_clear_error(env: dict[str, str]) -> None:
    done = fastq(env, "call", "embedded.add", "--kwargs", "{x: 1}")
    assert done.returncode == 2 and "--kwargs is not JSON" in done.stderr


def test_purge(env: dict[str, str], worker: WorkerProcess) -> None:
    for _ in range(3):
        assert fastq(env, "call", "embedded.add", "1", "1", "--queue", "nobody").returncode == 0
    done = fastq(env, "purge", "-Q", "nobody,other")
    assert done.stdout.strip() == "purged 3 message(s) from nobody, other"


def test_inspect(env: dict[str, str], worker: WorkerProcess) -> None:
    registered = fastq(env, "inspect", "registered")
    assert registered.returncode == 0, registered.stderr
    assert "embedded.add" in json.loads(registered.stdout)["cli@test"]
    slow = fastq(env, "call", "embedded.sleep", "8")
    slow_id = slow.stdout.strip()
    deadline = time.monotonic() + 8
    while True:  # answered by the supervisor while the child is inside the task
        active = json.loads(fastq(env, "inspect", "active", "-d", "cli@test").stdout)["cli@test"]
        if any(t["id"] == slow_id for t in active) or time.monotonic() > deadline:
            break
    assert [t["name"] for t in active if t["id"] == slow_id] == ["embedded.sleep"]
    stats = json.loads(fastq(env, "inspect", "stats", "-d", "cli@test").stdout)["cli@test"]
    assert stats["pool"]["implementation"] == "prefork"
    assert len(stats["pool"]["processes"]) == 2
    assert stats["broker"] == {"transport": "sqlite", "reach": "machine"}
    ping = fastq(env, "inspect", "ping", "-d", "cli@test")
    assert json.loads(ping.stdout) == {"cli@test": {"ok": "pong"}}


def test_inspect_without_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    App("t", broker=url, set_as_current=False).broker.queue_length("celery")  # creates it
    env = {**os.environ, "FASTQ_BROKER_URL": url}
    done = fastq(env, "inspect", "ping", "--timeout", "0.3")
    assert done.returncode == 1 and "no worker replied within 0.3s" in done.stderr


@pytest.mark.parametrize("command", [["result", "some-id"], ["inspect", "ping"], ["purge"]])
def test_reading_commands_do_not_create_an_empty_database(
    tmp_path: Path, command: list[str]
) -> None:
    db = tmp_path / "fastq.db"
    env = {k: v for k, v in os.environ.items() if k != "FASTQ_RESULT_BACKEND"}
    env["FASTQ_BROKER_URL"] = f"sqlite:///{db}"
    done = fastq(env, *command)
    assert done.returncode == 2, done
    assert f"no fastq database at {db}" in done.stderr and "where the worker runs" in done.stderr
    assert not db.exists()


@pytest.mark.parametrize("command", [["result", "some-id"], ["inspect", "ping"], ["purge"]])
def test_reading_commands_on_the_default_embedded_broker(
    tmp_path: Path, command: list[str]
) -> None:
    """No app and no settings: the commands look for the default ``fastq.db`` where they run."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("FASTQ_BROKER_URL", "FASTQ_RESULT_BACKEND")
    }
    done = subprocess.run(
        [str(BIN / "fastq"), *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done
    assert f"no fastq database at {tmp_path / 'fastq.db'}" in done.stderr
    assert not (tmp_path / "fastq.db").exists()


def test_version_prints_the_package_version() -> None:
    import fastq

    out = subprocess.run([str(BIN / "fastq"), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"fastq {fastq.__version__}"


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def _worker_logging(app: App, level: str = "INFO") -> None:
    """What ``fastq worker`` sets up for ``app``'s logging."""
    from fastq.cli import _log_formatter
    from fastq.worker.options import set_up_logging

    options = argparse.Namespace(loglevel=level, logfile=None, log_format="text", hostname=None)
    set_up_logging(options, _log_formatter(app, options), hijack=app.conf.worker_hijack_root_logger)


def test_worker_logging_follows_the_settings(root_logger: logging.Logger) -> None:
    from fastq.cli import LOG_FORMAT

    mine = logging.StreamHandler()
    root_logger.handlers[:] = [mine]
    _worker_logging(App("x", set_as_current=False))  # hijacked, as Celery's default
    assert root_logger.handlers != [mine]
    assert root_logger.handlers[0].formatter._fmt == LOG_FORMAT  # type: ignore[union-attr]

    root_logger.handlers[:] = [mine]
    _worker_logging(App("x", set_as_current=False, worker_hijack_root_logger=False), "DEBUG")
    assert root_logger.handlers == [mine]
    assert root_logger.level == logging.DEBUG

    app = App("x", worker_log_format="%(levelname)s|%(message)s", set_as_current=False)
    app.conf.update(worker_log_datefmt="%H", CELERYD_TASK_LOG_FORMAT="%(task_name)s|%(message)s")
    app.conf.worker_task_log_datefmt = "%M"
    _worker_logging(app)
    formatter: Any = root_logger.handlers[0].formatter
    assert (formatter._fmt, formatter.datefmt) == ("%(levelname)s|%(message)s", "%H")
    task_formatter = formatter.task_formatter
    assert (task_formatter._fmt, task_formatter.datefmt) == ("%(task_name)s|%(message)s", "%M")
