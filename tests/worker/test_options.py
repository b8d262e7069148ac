"""``fastq worker``'s Celery flags (``fastq.worker.options``): each does what it does in Celery,
or the worker refuses to start and says what to use instead."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from fastq import App
from fastq.cli import _parser
from fastq.config import Config
from fastq.errors import ConfigurationError
from fastq.worker.options import node_name, worker_kwargs, write_pidfile

from tests.processes import BIN, ROOT, WorkerProcess


def test_node_name_expands_as_celery() -> None:
    assert node_name("w1@%h", "box.example.com") == "w1@box.example.com"
    assert node_name("w1@%n", "box.example.com") == "w1@box"
    assert node_name("w1.%d", "box.example.com") == "w1.example.com@box.example.com"
    assert node_name("100%%@%n", "box") == "100%@box"
    assert node_name("plain", "box") == "plain@box"


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--pool", "gevent"], "--pool threads"),
        (["-P", "eventlet"], "async def"),
        (["--autoscale", "10,3"], "--concurrency"),
        (["--detach"], "systemd"),
        (["--statedb", "/tmp/x"], "revoke again"),
        (["--purge"], "fastq purge"),
    ],
)
def test_refused_flags_say_what_to_use(flags: list[str], reason: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "fastq"), "-b", f"sqlite:///{tmp_path}/x.db", "worker", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "is not supported" in done.stderr and reason in done.stderr


def test_flags_that_set_settings() -> None:
    conf = Config()
    options = _parser().parse_args(
        ["worker", "--time-limit", "30", "--soft-time-limit", "20", "-I", "a.tasks,b.tasks",
         "-n", "w1@%n", "-O", "fair", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-Q", "x,y"]
    )  # fmt: skip
    kwargs = worker_kwargs(options, conf)
    assert (conf.task_time_limit, conf.task_soft_time_limit) == (30, 20)
    assert conf.include == ["a.tasks", "b.tasks"]
    assert kwargs["queues"] == ["x", "y"]
    assert kwargs["hostname"].startswith("w1@")


def test_pidfile_refuses_a_live_worker_and_replaces_a_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "w.pid"
    path.write_text("1\n")  # init: alive
    with pytest.raises(Exception, match="which is running"):
        write_pidfile(str(path))
    proc = subprocess.Popen(["true"])  # once reaped, its pid names no process
    proc.wait()
    path.write_text(f"{proc.pid}\n")
    write_pidfile(str(path))
    assert path.read_text() == f"{os.getpid()}\n"


def test_logfile_pidfile_and_events_warning_on_a_running_worker(tmp_path: Path) -> None:
    db, logfile, pidfile = tmp_path / "w.db", tmp_path / "worker.log", tmp_path / "worker.pid"
    argv = [str(BIN / "fastq"), "-A", "tests.apps.embedded_app", "worker", "--pool", "solo",
            "-f", str(logfile), "--pidfile", str(pidfile), "-E"]  # fmt: skip
    worker = WorkerProcess(argv, {"FASTQ_BROKER_URL": f"sqlite:///{db}"})
    try:
        for _ in range(300):
            if logfile.exists() and "ready" in logfile.read_text():
                break
            assert worker.proc.poll() is None, worker.log()
            time.sleep(0.05)
        assert pidfile.read_text() == f"{worker.pid}\n"
        client = App("client", broker=f"sqlite:///{db}", set_as_current=False)
        assert client.send_task("embedded.add", (1, 2)).get(timeout=20) == 3
        client.close()
        text = logfile.read_text()
        assert "cannot carry Celery's events" in text  # -E on SQLite: said, not ignored
        assert "ready" not in worker.log()  # the log went to the file, not stderr
    finally:
        assert worker.stop() == 0
    assert not pidfile.exists()


def test_exclude_queues() -> None:
    conf = Config()
    parse = _parser().parse_args
    known = ["celery", "low", "high"]
    assert worker_kwargs(parse(["worker", "-X", "low"]), conf, known)["queues"] == [
        "celery",
        "high",
    ]
    assert worker_kwargs(parse(["worker", "-Q", "a,b", "-X", "b"]), conf, known)["queues"] == ["a"]
    with pytest.raises(ConfigurationError, match="leaves no queue"):
        worker_kwargs(parse(["worker", "-Q", "a", "-X", "a"]), conf, known)
