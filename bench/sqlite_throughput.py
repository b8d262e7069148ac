"""Drain rate of N no-op tasks on SQLite: fastq vs Huey's ``SqliteHuey``, same machine, one run.

    .venv/bin/python bench/sqlite_throughput.py [--tasks 10000] [--rounds 3]

For each contender: N tasks are enqueued first (not timed), then the consumer starts and the
queue is watched every 5 ms until it is empty. ``rate`` is N over the time from the first task
taken to the last; ``wall`` also counts the consumer's start-up; ``cpu`` is the CPU time (user +
system) of the consumer and its processes, start-up included, per 1 000 tasks: the figure that
depends least on what else the machine is doing. Contenders:

- fastq, ``fastq worker --pool prefork --concurrency 2``, storing each SUCCESS in the SQLite result
  backend (the default, as Celery does), and again with ``task_ignore_result``;
- Huey, ``huey_consumer -w 2 -k process`` (2 worker processes); a task returning None stores no
  result in Huey, so the second fastq row is the like-for-like one.

Both use a SQLite file in a fresh temporary directory. Use a release build of fastq
(``maturin develop --release``) for figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


@dataclass
class Run:
    name: str
    rate: float
    wall: float
    cpu: float  # seconds per 1 000 tasks


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def count(db: Path, sql: str) -> int | None:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # the consumer is creating its tables
        return None


def drain(name: str, argv: list[str], env: dict[str, str], db: Path, sql: str, n: int) -> Run:
    """Starts the consumer and times the queue going from ``n`` to 0 rows."""
    cpu_before = children_cpu()
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    first = None
    try:
        while True:
            left = count(db, sql)
            now = time.perf_counter()
            if left is not None and left < n and first is None:
                first = now
            if left == 0:
                break
            if proc.poll() is not None:
                _, err = proc.communicate()
                raise SystemExit(f"{name}: consumer exited:\n{err.decode()}")
            if now - started > 600:
                raise SystemExit(f"{name}: {left} tasks left after 600 s")
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGINT)  # warm stop for both
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    end = time.perf_counter()
    # Counted once the consumer has been waited for (it waits for its own worker processes).
    cpu = (children_cpu() - cpu_before) / n * 1000
    return Run(name, n / max(end - (first or started), 1e-9), end - started, cpu)


def fastq_round(n: int, ignore_result: bool) -> Run:
    from fastq import App

    tmp = Path(tempfile.mkdtemp(prefix="fastq-bench-"))
    url = f"sqlite:///{tmp}/fastq.db"
    client = App("bench-client", broker=url, set_as_current=False)
    client.send_many([("bench.noop", (), None)] * n, ignore_result=ignore_result)
    client.close()
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE),
        "FASTQ_BROKER_URL": url,
        "BENCH_IGNORE_RESULT": "1" if ignore_result else "0",
    }
    argv = [str(BIN / "fastq"), "-A", "sqlite_apps", "worker", "--pool", "prefork",
            "--concurrency", "2", "--loglevel", "WARNING"]  # fmt: skip
    name = "fastq prefork x2" + (", ignore_result" if ignore_result else ", results stored")
    run = drain(name, argv, env, tmp / "fastq.db", "SELECT count(*) FROM fastq_messages", n)
    if not ignore_result:
        stored = count(tmp / "fastq.db", "SELECT count(*) FROM fastq_results")
        assert stored == n, f"{stored} results stored for {n} tasks"
    return run


def huey_round(n: int) -> Run:
    tmp = Path(tempfile.mkdtemp(prefix="huey-bench-"))
    env = {**os.environ, "PYTHONPATH": str(HERE), "HUEY_DB": str(tmp / "huey.db")}
    os.environ["HUEY_DB"] = env["HUEY_DB"]
    sys.path.insert(0, str(HERE))
    import importlib

    import sqlite_apps  # type: ignore[import-not-found]

    apps = importlib.reload(sqlite_apps)  # a fresh SqliteHuey on this round's file
    for _ in range(n):
        apps.huey_noop()
    argv = [str(BIN / "huey_consumer"), "sqlite_apps.huey", "-w", "2", "-k", "process", "-q"]
    return drain("huey_consumer -w 2 -k process", argv, env, tmp / "huey.db",
                 "SELECT count(*) FROM task", n)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs per contender (median shown)")
    options = parser.parse_args()
    n = options.tasks
    contenders = {
        "fastq prefork x2, results stored": lambda: fastq_round(n, False),
        "fastq prefork x2, ignore_result": lambda: fastq_round(n, True),
        "huey_consumer -w 2 -k process": lambda: huey_round(n),
    }
    import fastq
    import huey

    print(f"{n} no-op tasks, {options.rounds} round(s) each; fastq {fastq.__version__}, "
          f"huey {huey.__version__}, Python {platform.python_version()}, SQLite "
          f"{sqlite3.sqlite_version}, {os.cpu_count()} CPU(s), {platform.platform()}")  # fmt: skip
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    runs: dict[str, list[Run]] = {name: [] for name in contenders}
    for _ in range(options.rounds):  # interleaved, so a change in machine load hits all alike
        for name, run_once in contenders.items():
            runs[name].append(run_once())
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"{'contender':<36} {'rate (tasks/s)':>15} {'wall (s)':>9} {'cpu (s/1k)':>11}")
    for name, done in runs.items():
        rate = statistics.median(r.rate for r in done)
        wall = statistics.median(r.wall for r in done)
        cpu = statistics.median(r.cpu for r in done)
        spread = ", ".join(f"{r.rate:.0f}" for r in done)
        print(f"{name:<36} {rate:>15,.0f} {wall:>9.2f} {cpu:>11.2f}   (rates: {spread})")


if __name__ == "__main__":
    main()
