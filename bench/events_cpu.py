"""Events on vs off: CPU seconds per 1 000 tasks of the supervisor and of the prefork children,
and the drain time.

    python bench/events_cpu.py BROKER_URL [--counter REDIS_URL] [-n 10000] [-c 2] [-E]
                               [--perf FILE] [--work noop|incr] [--backend URL]
                               [--worker-args "--prefetch-multiplier 16"]
                               [--alternate PAIRS [--same]]

Starts ``fastq worker -c 2`` (with ``-E`` when given) on a queue of its own, waits until it is
idle, reads each worker process's CPU seconds (``/proc``, Linux), sends the tasks
(no-op, results off) with ``send_many``, waits until every one has run (the benchmark task's
completion counter, in Redis: ``--counter``, the broker's URL when it is Redis), and reads the
CPU seconds again. The difference is the cost of the tasks alone, without the worker's start,
split between the supervisor (reading reports, publishing events) and the children (running
tasks, encoding events): far less sensitive to other load on the machine than a drain rate.
Run it interleaved, off and on, a few times. The load average (1 min) is printed with each run,
and the context switches per task (voluntary + involuntary) of the supervisor and the children;
with a Redis broker, the Redis server's CPU per task too (``INFO``: the server's own, so
meaningful only for a Redis nothing else uses). ``--perf FILE``: ``perf record -g`` of the
children over the drain, into ``FILE`` (``perf report -i FILE``).

``--alternate PAIRS``: one worker, ``PAIRS`` pairs of drains with events off and on (switched by
remote control), the order in a pair in turn, and the medians of what each pair differs by.
On a 2-CPU VM, two drains in a row differ by several per cent with nothing changed between them:
``--same`` runs the pairs with events off in both, and shows that noise for the same settings.
Compare a few dozen pairs of each before reading anything into a figure of a few per cent.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import redis
from fastq import App
from fastq.bench.probe import keys
from fastq.bench.spec import TASK_NAME

QUEUE = "fastq.bench.events"
RUN = "events"


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid``'s threads so far: from ``schedstat`` in nanoseconds (``stat``'s
    clock ticks, 10 ms, are a few per cent of a child's share of a drain), else ``stat``."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def switches(pid: int) -> int:
    """Context switches of ``pid`` so far (voluntary + involuntary)."""
    with open(f"/proc/{pid}/status") as f:
        return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)


def redis_cpu(client: redis.Redis) -> tuple[float, int]:
    """The server's CPU seconds so far, and the reads it has processed (one per batch of
    commands a client wrote at once)."""
    info = client.info()
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"]), int(
        info.get("total_reads_processed", 0)
    )


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return sorted(int(p) for p in out.stdout.split())


class Probe:
    """CPU seconds and context switches of the worker's processes, and the Redis server's CPU."""

    def __init__(self, pids: list[int], broker: str) -> None:
        self.pids = pids
        self.redis = redis.Redis.from_url(broker) if broker.startswith("redis") else None

    def read(self) -> tuple[list[float], list[int], tuple[float, int]]:
        return (
            [cpu_seconds(pid) for pid in self.pids],
            [switches(pid) for pid in self.pids],
            redis_cpu(self.redis) if self.redis is not None else (0.0, 0),
        )


def drain(app: App, counter: redis.Redis, done_key: str, target: int, n: int, work: str) -> float:
    """Sends ``n`` tasks doing ``work`` (``fastq.bench.spec``'s: ``noop``, ``incr``…) and waits
    until the completion counter reaches ``target``: seconds."""
    started = time.monotonic()
    for start in range(0, n, 1000):
        batch = min(1000, n - start)
        app.send_many([(TASK_NAME, ("", work), None)] * batch, queue=QUEUE)
    while int(counter.get(done_key) or 0) < target:
        time.sleep(0.005)
        if time.monotonic() - started > 300:
            raise SystemExit(f"only {counter.get(done_key)} of {target} tasks ran")
    return time.monotonic() - started


def report(on: bool, load: float, n: int, drained: float, before: Any, after: Any) -> list[float]:
    """Prints one drain's figures; returns µs per task: supervisor, children, Redis."""
    per_k = [(b - a) * 1000 / n for a, b in zip(before[0], after[0], strict=True)]
    switched = [b - a for a, b in zip(before[1], after[1], strict=True)]
    redis_used = (after[2][0] - before[2][0]) * 1000 / n
    reads = (after[2][1] - before[2][1]) / n
    print(
        f"events {'on ' if on else 'off'} load {load:4.1f} drain {drained:5.2f} s "
        f"({n / drained:5.0f}/s)  CPU s/1k tasks: supervisor {per_k[0]:.3f} "
        f"children {sum(per_k[1:]):.3f} ({' + '.join(f'{c:.3f}' for c in per_k[1:])})"
        f" redis {redis_used:.3f} ({reads:.2f} reads/task)  switches/1k tasks: supervisor "
        f"{switched[0] * 1000 / n:.1f} children {sum(switched[1:]) * 1000 / n:.1f}",
        flush=True,
    )
    return [per_k[0] * 1000, sum(per_k[1:]) * 1000, redis_used * 1000, drained]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("broker")
    p.add_argument("--counter", help="Redis URL of the completion counter (default: the broker)")
    p.add_argument("-n", type=int, default=10_000, help="tasks (default 10 000)")
    p.add_argument("-c", type=int, default=2, help="prefork children (default 2)")
    p.add_argument("-E", action="store_true", help="task events on")
    p.add_argument("--perf", help="perf record -g the children over the drain, into this file")
    p.add_argument(
        "--work", default="noop", help="what each task does (default noop; incr: one INCR)"
    )
    p.add_argument("--backend", help="result backend URL (default: results off)")
    p.add_argument(
        "--worker-args", default="", help='more worker options, e.g. "--prefetch-multiplier 16"'
    )
    p.add_argument(
        "--alternate",
        type=int,
        metavar="PAIRS",
        help="one worker started with -E; PAIRS pairs of drains of -n tasks, one with events off "
        "and one on (disable_events / enable_events), in turn first, and the medians of the "
        "differences and ratios",
    )
    p.add_argument(
        "--same",
        action="store_true",
        help="with --alternate: both drains of a pair with events off, to see the harness's "
        "own noise next to an events run",
    )
    options = p.parse_args()
    if options.same and not options.alternate:
        p.error("--same compares the drains of --alternate's pairs: give --alternate PAIRS")
    counter_url = options.counter or options.broker
    counter = redis.Redis.from_url(counter_url)
    done_key = keys(RUN)["done"]
    counter.delete(*keys(RUN).values())
    env = {**os.environ, "FASTQ_BENCH_BROKER": options.broker, "FASTQ_BENCH_QUEUE": QUEUE,
           "FASTQ_BENCH_COUNTER": counter_url, "FASTQ_BENCH_RUN": RUN,
           "FASTQ_BENCH_BACKEND": options.backend or ""}  # fmt: skip
    argv = [sys.executable, "-m", "fastq.cli", "-A", "fastq.bench.apps.fastq_app", "worker",
            "-c", str(options.c), "-Q", QUEUE, "-l", "WARNING"]  # fmt: skip
    argv += options.worker_args.split()
    if options.E or options.alternate:
        argv.append("-E")
    worker = subprocess.Popen(argv, env=env)
    app = App("events-bench", broker=options.broker, set_as_current=False)
    try:
        time.sleep(4)  # started, idle
        pids = [worker.pid, *children(worker.pid)]
        if len(pids) != options.c + 1:
            raise SystemExit(f"expected {options.c} children, found {pids[1:]}")
        probe = Probe(pids, options.broker)
        perf = None
        if options.perf:
            perf = subprocess.Popen(
                ["perf", "record", "-g", "-q", "-o", options.perf,
                 "-p", ",".join(map(str, pids[1:]))],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1)
        if not options.alternate:
            before, load = probe.read(), os.getloadavg()[0]
            drained = drain(app, counter, done_key, options.n, options.n, options.work)
            report(options.E, load, options.n, drained, before, probe.read())
        else:
            alternate(
                app, probe, counter, done_key, options.n, options.alternate, options.work,
                options.same,
            )  # fmt: skip
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
    finally:
        app.close()
        worker.terminate()
        worker.wait(30)
        counter.delete(*keys(RUN).values())


def alternate(
    app: App,
    probe: Probe,
    counter: redis.Redis,
    done_key: str,
    n: int,
    pairs: int,
    work: str,
    same: bool = False,
) -> None:
    """``pairs`` pairs of drains, one with events off and one on, in turn first (ABBA: what the
    order of a pair does cancels out); ``same``: both off (what the harness alone varies)."""
    done = 0
    figures: dict[bool, list[list[float]]] = {False: [], True: []}
    for pair in range(pairs):
        for on in (False, True) if pair % 2 == 0 else (True, False):
            events_on = on and not same
            (app.control.enable_events if events_on else app.control.disable_events)(reply=True)
            time.sleep(0.3)  # the children hear it on their next cycle
            before, load = probe.read(), os.getloadavg()[0]
            done += n
            drained = drain(app, counter, done_key, done, n, work)
            figures[on].append(report(events_on, load, n, drained, before, probe.read()))
    off, on = figures[False], figures[True]
    diff = [[b - a for a, b in zip(x, y, strict=True)] for x, y in zip(off, on, strict=True)]
    ratio = [y[3] / x[3] for x, y in zip(off, on, strict=True)]
    cpu = [sum(y[:3]) / sum(x[:3]) for x, y in zip(off, on, strict=True)]
    label = "second off / first off (no events: the harness's noise)" if same else "on / off"
    print(
        f"medians over {pairs} pairs, µs/task on - off: supervisor "
        f"{statistics.median(d[0] for d in diff):+.2f} children "
        f"{statistics.median(d[1] for d in diff):+.2f} redis "
        f"{statistics.median(d[2] for d in diff):+.2f}; off: supervisor "
        f"{statistics.median(x[0] for x in off):.2f} children "
        f"{statistics.median(x[1] for x in off):.2f} redis "
        f"{statistics.median(x[2] for x in off):.2f}; {label}: drain time "
        f"{_spread(ratio)}, CPU a task (all three) {_spread(cpu)}",
        flush=True,
    )


def _spread(values: list[float]) -> str:
    """The median, with the middle half of ``values`` around it."""
    if len(values) < 4:
        return f"{statistics.median(values):.3f}"
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"{q2:.3f} ({q1:.3f}-{q3:.3f})"


if __name__ == "__main__":
    main()
