"""Worker subprocesses for a run, and what they cost (CPU seconds, RSS of the process tree)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastq.bench.spec import BenchConfig

try:
    import psutil
except ImportError:  # the `bench` extra; without it CPU and RSS are reported as n/a
    psutil = None


class WorkerStartError(RuntimeError):
    """The workers exited or never ran a task: the run has no figures, only this error."""


def worker_argv(system: str, config: BenchConfig) -> list[str]:
    """The command line that starts ``system``'s workers with the run's pool settings."""
    common = [
        "worker",
        "--concurrency",
        str(config.concurrency),
        "--pool",
        config.pool,
        "--prefetch-multiplier",
        str(config.prefetch),
        "-Q",
        config.queue,
        # Celery logs two INFO lines per task; fastq none. WARNING keeps logging out of both.
        "--loglevel",
        "WARNING",
        *(["-E"] if config.events else []),
    ]
    if system == "fastq":
        return [sys.executable, "-m", "fastq.cli", "-A", config.fastq_app, *common]
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        config.celery_app,
        *common,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def worker_env(config: BenchConfig, run_id: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "FASTQ_BENCH_BROKER": config.broker,
        "FASTQ_BENCH_BACKEND": config.backend if config.results and config.backend else "",
        "FASTQ_BENCH_ACKS_LATE": "1" if config.acks_late else "0",
        "FASTQ_BENCH_COUNTER": config.counter_url(),
        "FASTQ_BENCH_RUN": run_id,
        "FASTQ_BENCH_QUEUE": config.queue,
    }
    return env


@dataclass
class Usage:
    """Samples of the worker tree: (time, CPU seconds so far, RSS bytes now)."""

    samples: list[tuple[float, float, int]] = field(default_factory=list)
    _cpu_by_pid: dict[int, float] = field(default_factory=dict)

    def cpu_at(self, when: float) -> float:
        """CPU seconds used by the latest sample taken at or before ``when``."""
        before = [cpu for t, cpu, _ in self.samples if t <= when]
        return before[-1] if before else 0.0

    @property
    def cpu(self) -> float:
        return self.samples[-1][1] if self.samples else 0.0

    @property
    def peak_rss(self) -> int:
        return max((rss for _, _, rss in self.samples), default=0)


class WorkerGroup:
    """One ``fastq worker`` / ``celery worker`` subprocess (with its pool children)."""

    def __init__(self, system: str, config: BenchConfig, run_id: str) -> None:
        self.system = system
        self.argv = worker_argv(system, config)
        fd, name = tempfile.mkstemp(prefix=f"fastq-bench-{system}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        self._log = self.log_path.open("wb")
        self.usage = Usage()
        self.started_at = time.time()
        # Its own session: stopping it can signal exactly the group this harness started.
        self.proc = subprocess.Popen(
            self.argv,
            env=worker_env(config, run_id),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._root = psutil.Process(self.proc.pid) if psutil is not None else None

    def exited(self) -> int | None:
        return self.proc.poll()

    def log_tail(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace").rstrip().splitlines()
        return "\n".join(text[-lines:])

    def failure(self, why: str) -> WorkerStartError:
        return WorkerStartError(
            f"{self.system} worker {why}\n  command: {' '.join(self.argv)}\n"
            f"  log ({self.log_path}):\n{self.log_tail()}"
        )

    def sample(self) -> None:
        """Adds a (time, CPU, RSS) sample of the process tree; a no-op without psutil."""
        if self._root is None or psutil is None:
            return
        rss = 0
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            procs = []
        for proc in procs:
            try:
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    mem = proc.memory_info()
            except psutil.Error:
                continue  # exited between listing and reading; its last sample still counts
            self.usage._cpu_by_pid[proc.pid] = cpu.user + cpu.system
            rss += mem.rss
        self.usage.samples.append((time.time(), sum(self.usage._cpu_by_pid.values()), rss))

    def stop(self, timeout: float = 30.0) -> None:
        """Warm stop (SIGTERM); the whole group is killed if it is still there after ``timeout``."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # pool children left behind, if any
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(5)
        finally:
            self._log.close()

    def remove_log(self) -> None:
        self.log_path.unlink(missing_ok=True)
