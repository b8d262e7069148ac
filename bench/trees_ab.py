"""A/B of two fastq source trees on one machine, one Redis, one venv: a drain of no-op tasks
(queued with ``send_many`` first, so only the worker is measured), rounds interleaved A B A B.

    python bench/trees_ab.py --port 6420 --a /path/to/old/python --b python [--rounds 4]
        [--tasks 40000] [--work incr] [--results] [-- worker options, e.g. --prefetch-multiplier 16]

Each tree is a directory holding the ``fastq`` package with its built ``_core`` extension (for
an old commit: a worktree whose ``python/fastq/_core.abi3.so`` is a release build of it); it
goes first on ``PYTHONPATH`` for the client and the worker. Prints, per round and tree, the
drain rate (first task start to last task end, from the bench probe's times) and CPU
microseconds per task of the worker's children, its supervisor and redis-server (``/proc``).
``--work incr``: each task does one Redis ``INCR`` (the peer benchmark's task); ``--results``:
results on (database 1 of the same Redis), the drain ending when the last result is stored.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import redis

CLIENT = """
import os, sys
from fastq.bench.apps.fastq_app import make_app
from fastq.bench.spec import TASK_NAME
app, _ = make_app(sys.argv[1], os.environ.get("FASTQ_BENCH_BACKEND"))
for _ in range(int(sys.argv[2]) // 1000):
    app.send_many([(TASK_NAME, ("", sys.argv[3]), None)] * 1000)
app.close()
"""


def ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0
    return int(fields[11]) + int(fields[12])


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def one_drain(
    tree: str, port: int, tasks: int, worker_args: list[str], work: str, results: bool
) -> dict[str, float]:
    url = f"redis://127.0.0.1:{port}/0"
    r = redis.Redis(port=port)
    r.flushall()
    stored = redis.Redis(port=port, db=1)
    run = f"ab{time.time_ns()}"
    env = dict(os.environ, PYTHONPATH=tree, FASTQ_BENCH_BROKER=url)
    env.update(FASTQ_BENCH_COUNTER=url, FASTQ_BENCH_RUN=run)
    if results:
        env["FASTQ_BENCH_BACKEND"] = f"redis://127.0.0.1:{port}/1"
    subprocess.run([sys.executable, "-c", CLIENT, url, str(tasks), work], env=env, check=True)
    rpid = int(r.info("server")["process_id"])
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastq.cli",
            "-A",
            "fastq.bench.apps.fastq_app",
            "worker",
            "--concurrency",
            "2",
            "--pool",
            "prefork",
            "-Q",
            "fastq.bench",
            "--loglevel",
            "WARNING",
            *worker_args,
        ],
        env=env,
    )
    keys = {k: f"fastq.bench.{run}.{k}" for k in ("done", "first", "last")}
    try:
        while not r.hlen(keys["first"]):
            time.sleep(0.005)
        kids = children(worker.pid)
        before = (ticks(rpid), ticks(worker.pid), sum(ticks(k) for k in kids))
        while int(r.get(keys["done"]) or 0) < tasks:
            time.sleep(0.01)
        while results and stored.dbsize() < tasks:
            time.sleep(0.005)
        end = time.time()
        after = (ticks(rpid), ticks(worker.pid), sum(ticks(k) for k in kids))
        first = min(float(v) for v in r.hvals(keys["first"]))
        last = end if results else max(float(v) for v in r.hvals(keys["last"]))
    finally:
        worker.terminate()
        worker.wait()
    us = 1e6 / os.sysconf("SC_CLK_TCK") / tasks
    return {
        "drain": tasks / (last - first),
        "children": (after[2] - before[2]) * us,
        "supervisor": (after[1] - before[1]) * us,
        "redis": (after[0] - before[0]) * us,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="a redis-server of your own")
    parser.add_argument("--a", required=True, help="tree A (PYTHONPATH entry)")
    parser.add_argument("--b", required=True, help="tree B")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=40_000)
    parser.add_argument("--work", default="noop", help="noop or incr (one Redis INCR per task)")
    parser.add_argument("--results", action="store_true", help="results on (database 1)")
    parser.add_argument("worker_args", nargs="*", help="after --: options for both workers")
    args = parser.parse_args()
    seen: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for n in range(1, args.rounds + 1):
        for arm, tree in (("A", args.a), ("B", args.b)):
            got = one_drain(
                os.path.abspath(tree),
                args.port,
                args.tasks,
                args.worker_args,
                args.work,
                args.results,
            )
            seen[arm].append(got)
            print(
                f"round {n} {arm}: drain {got['drain']:,.0f}/s, CPU us/task: children "
                f"{got['children']:.1f} supervisor {got['supervisor']:.1f} redis "
                f"{got['redis']:.1f} (load {got['load']:.2f})",
                flush=True,
            )
    for arm, runs in seen.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"median {arm}: drain {med['drain']:,.0f}/s, CPU us/task: children "
            f"{med['children']:.1f} supervisor {med['supervisor']:.1f} redis {med['redis']:.1f}"
        )


if __name__ == "__main__":
    main()
