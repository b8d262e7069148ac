"""Workers as real subprocesses (fastq's and Celery's), with their logs kept for assertions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class WorkerProcess:
    """A worker subprocess; ``stop()`` sends SIGTERM (warm) and waits."""

    def __init__(
        self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix="fastq-test-worker-", suffix=".log")[1])
        self._log = self.log_path.open("wb")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            list(argv), cwd=cwd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the worker log after {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker ignored SIGTERM for {timeout}s:\n{self.log()}") from None
        finally:
            self._log.close()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()


def fastq_worker(
    *args: str, app: str = "tests.apps.fastq_app", env: dict[str, str] | None = None
) -> WorkerProcess:
    worker = WorkerProcess(
        [str(BIN / "fastq"), "-A", app, "worker", "--loglevel", "INFO", *args], env
    )
    worker.wait_for_log("ready")
    return worker


def celery_worker(
    *args: str, app: str = "tests.apps.celery_app", env: dict[str, str] | None = None
) -> WorkerProcess:
    worker = WorkerProcess(
        [
            str(BIN / "celery"),
            "-A",
            app,
            "worker",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            *args,
        ],
        env,
    )
    worker.wait_for_log("ready", timeout=60)
    return worker


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Polls ``predicate`` every 50 ms until it holds; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")
