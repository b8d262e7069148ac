"""Drain of N ``async def`` no-op tasks on Redis: ``--pool asyncio`` vs ``--pool threads``.

    .venv/bin/python bench/asyncio_drain.py --redis redis://127.0.0.1:6379 [--tasks 20000]

For each pool: N tasks are enqueued first (not timed, ``send_many``), then the worker starts and
the result database is watched every 10 ms until it holds N results. ``wall`` is from the
worker's launch to the last result stored (start-up included); ``rate`` is N over the time from
the first result to the last; ``cpu`` is the worker's CPU time (user + system) per 1 000 tasks,
the figure that depends least on what else the machine does. Results are on (Redis backend,
one key per task), acks early (the default). The threads pool runs each coroutine to its end on
a per-thread event loop; the asyncio pool awaits up to ``--concurrency`` of them on one loop.
Uses databases 11 (broker) and 12 (results) of the given Redis, emptied before each run.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import redis
from fastq import App

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
POOLS = [("asyncio", 100), ("threads", 2), ("threads", 16)]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drain(base: str, pool: str, concurrency: int, n: int) -> tuple[float, float, float]:
    broker, backend = f"{base}/11", f"{base}/12"
    for url in (broker, backend):
        redis.Redis.from_url(url).flushdb()
    env = {**os.environ, "FASTQ_BROKER_URL": broker, "FASTQ_RESULT_BACKEND": backend}
    client = App("client", broker=broker, backend=backend, set_as_current=False)
    for start in range(0, n, 1000):
        client.send_many([("bench.anoop", (), None) for _ in range(min(1000, n - start))])
    client.close()
    results = redis.Redis.from_url(backend)
    cpu_before = children_cpu()
    launched = time.perf_counter()
    argv = [str(BIN / "fastq"), "-A", "asyncio_apps", "worker", "--loglevel", "WARNING"]
    argv += ["--pool", pool, "--concurrency", str(concurrency)]
    proc = subprocess.Popen(argv, cwd=HERE, env=env, stderr=subprocess.PIPE)
    first = None
    try:
        while True:
            stored = results.dbsize()
            now = time.perf_counter()
            if stored and first is None:
                first = now
            if stored >= n:
                break
            if proc.poll() is not None:
                raise SystemExit(f"worker exited:\n{proc.communicate()[1].decode()}")
            if now - launched > 900:
                raise SystemExit(f"{pool}: not drained in 900 s ({stored} of {n})")
            time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(60)
    end = time.perf_counter()
    cpu = (children_cpu() - cpu_before) / n * 1000
    return end - launched, n / (end - (first or launched)), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--tasks", type=int, default=20000)
    options = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    print("| pool | concurrency | wall s | rate tasks/s | worker CPU s / 1000 tasks |")
    print("|---|---|---|---|---|")
    for pool, concurrency in POOLS:
        wall, rate, cpu = drain(options.redis, pool, concurrency, options.tasks)
        print(f"| {pool} | {concurrency} | {wall:.2f} | {rate:,.0f} | {cpu:.3f} |", flush=True)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
