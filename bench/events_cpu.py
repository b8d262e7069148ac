"""Events on vs off: CPU seconds per 1 000 tasks of the supervisor and of the prefork children,
and the drain time.

    python bench/events_cpu.py BROKER_URL [--counter REDIS_URL] [-n 10000] [-c 2] [-E]

Starts ``fastq worker -c 2`` (with ``-E`` when given) on a queue of its own, waits until it is
idle, reads each worker process's CPU seconds (user + system, ``/proc``, Linux), sends the tasks
(no-op, results off) with ``send_many``, waits until every one has run (the benchmark task's
completion counter, in Redis: ``--counter``, the broker's URL when it is Redis), and reads the
CPU seconds again. The difference is the cost of the tasks alone, without the worker's start,
split between the supervisor (reading reports, publishing events) and the children (running
tasks, encoding events): far less sensitive to other load on the machine than a drain rate.
Run it interleaved, off and on, a few times. The load average (1 min) is printed with each run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import redis
from fastq import App
from fastq.bench.probe import keys
from fastq.bench.spec import TASK_NAME

QUEUE = "fastq.bench.events"
RUN = "events"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return sorted(int(p) for p in out.stdout.split())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("broker")
    p.add_argument("--counter", help="Redis URL of the completion counter (default: the broker)")
    p.add_argument("-n", type=int, default=10_000, help="tasks (default 10 000)")
    p.add_argument("-c", type=int, default=2, help="prefork children (default 2)")
    p.add_argument("-E", action="store_true", help="task events on")
    options = p.parse_args()
    counter_url = options.counter or options.broker
    counter = redis.Redis.from_url(counter_url)
    done_key = keys(RUN)["done"]
    counter.delete(*keys(RUN).values())
    env = {**os.environ, "FASTQ_BENCH_BROKER": options.broker, "FASTQ_BENCH_QUEUE": QUEUE,
           "FASTQ_BENCH_COUNTER": counter_url, "FASTQ_BENCH_RUN": RUN}  # fmt: skip
    argv = [sys.executable, "-m", "fastq.cli", "-A", "fastq.bench.apps.fastq_app", "worker",
            "-c", str(options.c), "-Q", QUEUE, "-l", "WARNING"]  # fmt: skip
    if options.E:
        argv.append("-E")
    worker = subprocess.Popen(argv, env=env)
    app = App("events-bench", broker=options.broker, set_as_current=False)
    try:
        time.sleep(4)  # started, idle
        pids = [worker.pid, *children(worker.pid)]
        if len(pids) != options.c + 1:
            raise SystemExit(f"expected {options.c} children, found {pids[1:]}")
        before = [cpu_seconds(pid) for pid in pids]
        load = os.getloadavg()[0]
        started = time.monotonic()
        for start in range(0, options.n, 1000):
            batch = min(1000, options.n - start)
            app.send_many([(TASK_NAME, ("", "noop"), None)] * batch, queue=QUEUE)
        while int(counter.get(done_key) or 0) < options.n:
            time.sleep(0.005)
            if time.monotonic() - started > 300:
                raise SystemExit(f"only {counter.get(done_key)} of {options.n} tasks ran")
        drained = time.monotonic() - started
        after = [cpu_seconds(pid) for pid in pids]
        per_k = [(b - a) * 1000 / options.n for a, b in zip(before, after, strict=True)]
        print(
            f"events {'on ' if options.E else 'off'} load {load:4.1f} drain {drained:5.2f} s "
            f"({options.n / drained:5.0f}/s)  CPU s/1k tasks: supervisor {per_k[0]:.3f} "
            f"children {sum(per_k[1:]):.3f} ({' + '.join(f'{c:.3f}' for c in per_k[1:])})",
            flush=True,
        )
    finally:
        app.close()
        worker.terminate()
        worker.wait(30)
        counter.delete(*keys(RUN).values())


if __name__ == "__main__":
    main()
