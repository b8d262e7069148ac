"""Events on vs off: drain time and CPU seconds of the supervisor and of each prefork child.

    python bench/events_cpu.py redis://127.0.0.1:6379/3 [-E]

Starts ``fastq worker -c 2`` (with ``-E`` when given) on a queue of its own, sends 10 000 no-op
tasks with ``send_many``, waits until the queue is empty, and prints the drain time and the
worker processes' CPU seconds (``/proc``, Linux), so the cost of events can be split between the
children (encoding) and the supervisor (publishing). Run it interleaved, off and on, a few times.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import redis
from fastq import App
from fastq.bench.spec import TASK_NAME

QUEUE = "fastq.bench.events"
TASKS = 10_000


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(url: str, flags: list[str]) -> None:
    client = redis.Redis.from_url(url)
    client.delete(QUEUE)
    env = {**os.environ, "FASTQ_BENCH_BROKER": url, "FASTQ_BENCH_QUEUE": QUEUE,
           "FASTQ_BENCH_COUNTER": url, "FASTQ_BENCH_RUN": "events"}  # fmt: skip
    argv = [sys.executable, "-m", "fastq.cli", "-A", "fastq.bench.apps.fastq_app", "worker",
            "-c", "2", "-Q", QUEUE, "-l", "WARNING", *flags]  # fmt: skip
    worker = subprocess.Popen(argv, env=env)
    try:
        time.sleep(4)  # started, idle
        app = App("events-bench", broker=url, set_as_current=False)
        started = time.monotonic()
        for _ in range(TASKS // 1000):
            app.send_many([(TASK_NAME, ("", "noop"), None)] * 1000, queue=QUEUE)
        while client.llen(QUEUE) > 0:
            time.sleep(0.01)
        drained = time.monotonic() - started
        time.sleep(0.5)  # the last prefetched ones run
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(worker.pid)],
                             capture_output=True, text=True).stdout  # fmt: skip
        children = [round(cpu_seconds(int(p)), 2) for p in out.split()]
        print(f"events {'on ' if flags else 'off'} drain {drained:.2f} s, CPU s: supervisor "
              f"{cpu_seconds(worker.pid):.2f}, children {children}")  # fmt: skip
        app.close()
    finally:
        worker.terminate()
        worker.wait(30)
        client.delete(QUEUE)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
