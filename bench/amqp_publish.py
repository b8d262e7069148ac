"""RabbitMQ publish path: fastq's Rust publisher (lapin) against Celery's `.delay()`; one
RabbitMQ, rounds interleaved, medians. (fastq's py-amqp publisher, measured here until it was
dropped, is in the earlier sections of `bench/RESULTS.md`.)

    .venv/bin/maturin develop --release
    .venv/bin/python bench/amqp_publish.py --rounds 7 --json bench/data/amqp-publish-1.json
    ...   # as many runs as the machine's noise asks for, then:
    .venv/bin/python bench/amqp_publish.py --merge bench/data/amqp-publish-*.json --write

The clients are the `fastq bench` harness's own (`fastq.bench.apps`: the same task, no backend,
so results are off and `ignore_result` is set). Each measurement builds a fresh client app,
sends one untimed task (connection and declarations), then times, on one queue emptied before
each measurement:

- `.delay()`: N single publishes in a loop, fastq and Celery;
- `send_many`: fastq's batch call, chunks of `--batch-size`;
- `send_many` with publisher confirms (`broker_confirm_publish`);
- `.delay()` with confirms, fastq's Rust path and Celery (kombu's `confirm_publish`): fastq's
  default since confirms went on, against Celery's opt-in.

Every fastq and Celery client states whether it confirms, so a row means the same whatever the
default. ``--title`` writes the report under another ``## `` heading of ``bench/RESULTS.md``.

Rate = tasks / time until the last call returned (a publish returns once written to the socket,
or acked with confirms, with all three clients). "In queue" = tasks / time until RabbitMQ reports
them all in the queue, which also checks that none was lost. CPU = the client process's CPU time
(all its threads, lapin's included) per task. The order of the measurements rotates from round
to round so that drifting load favours none; ratios are taken within each round, then the median.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import amqp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE))

from amqp_throughput import admin, delete_queue, machine, write_section  # noqa: E402
from fastq.bench.apps.fastq_app import make_app  # noqa: E402
from fastq.bench.spec import TASK_NAME  # noqa: E402

TITLE = "RabbitMQ publish path"
DELAY_RUST, DELAY_CELERY = "delay-rust", "delay-celery"
BATCH_RUST = "batch-rust"
CONFIRM_RUST = "confirm-rust"
DELAY_CONFIRM_RUST, DELAY_CONFIRM_CELERY = "delay-confirm-rust", "delay-confirm-celery"
THREADS_CONFIRM_RUST, THREADS_CONFIRM_CELERY = "threads-confirm-rust", "threads-confirm-celery"
#: Threads calling `.delay()` at once in the threaded rows (a threaded web server's workers).
THREADS = 8
#: Rows of the table, in order.
LABELS = {
    DELAY_RUST: "fastq `.delay()`, confirms off, Rust publisher",
    DELAY_CELERY: "Celery `.delay()` (confirms off, its default)",
    DELAY_CONFIRM_RUST: "fastq `.delay()`, confirms (the default), Rust publisher",
    DELAY_CONFIRM_CELERY: "Celery `.delay()`, `confirm_publish`",
    THREADS_CONFIRM_RUST: f"fastq `.delay()` from {THREADS} threads, confirms, Rust publisher",
    THREADS_CONFIRM_CELERY: f"Celery `.delay()` from {THREADS} threads, `confirm_publish`",
    BATCH_RUST: "fastq `send_many`, confirms off, Rust publisher",
    CONFIRM_RUST: "fastq `send_many`, confirms (the default), Rust publisher",
}
#: (label, numerator, denominator) of the ratio table.
RATIOS = [
    ("`.delay()`: Rust / Celery", DELAY_RUST, DELAY_CELERY),
    ("`send_many`, Rust / Celery `.delay()`", BATCH_RUST, DELAY_CELERY),
    ("`.delay()`, Rust: confirms on / off", DELAY_CONFIRM_RUST, DELAY_RUST),
    ("`send_many`, Rust: confirms on / off", CONFIRM_RUST, BATCH_RUST),
    ("`.delay()` with confirms: fastq / Celery without", DELAY_CONFIRM_RUST, DELAY_CELERY),
    ("`.delay()` with confirms: fastq / Celery with", DELAY_CONFIRM_RUST, DELAY_CONFIRM_CELERY),
    ("`send_many` with confirms: fastq / Celery `.delay()` without", CONFIRM_RUST, DELAY_CELERY),
    (
        f"`.delay()` with confirms, {THREADS} threads / 1, fastq",
        THREADS_CONFIRM_RUST,
        DELAY_CONFIRM_RUST,
    ),
    (
        f"`.delay()` with confirms, {THREADS} threads: fastq / Celery",
        THREADS_CONFIRM_RUST,
        THREADS_CONFIRM_CELERY,
    ),
]


class Broker:
    """One py-amqp connection for the checks (queue depth, purge), kept for the whole run."""

    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue
        self.reconnect()

    def reconnect(self) -> None:
        self.conn = admin(self.url)
        self.channel = self.conn.channel()

    def depth(self) -> int:
        try:
            return int(self.channel.queue_declare(self.queue, passive=True).message_count)
        except amqp.exceptions.NotFound:
            self.channel = self.conn.channel()  # a 404 closes the channel
            return 0

    def purge(self) -> None:
        if self.depth():
            self.channel.queue_purge(self.queue)

    def wait_for(self, total: int, started: float) -> float:
        """Seconds from ``started`` until ``total`` messages are in the queue."""
        deadline = time.monotonic() + 120
        while True:
            now = time.perf_counter()
            n = self.depth()
            if n >= total:
                return now - started
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {n} of {total} messages reached {self.queue}")
            time.sleep(0.005)

    def close(self) -> None:
        self.conn.close()
        delete_queue(self.url, self.queue)


def fastq_client(url: str, queue: str, confirm: bool) -> tuple[Any, Any]:
    app, task = make_app(url, None, queue=queue)
    app.conf.broker_confirm_publish = confirm
    return app, task


def celery_client(url: str, queue: str, confirm: bool = False) -> tuple[Any, Any]:
    module = importlib.import_module("fastq.bench.apps.celery_app")
    app, task = module.make_app(url, None, queue=queue)
    app.conf.broker_transport_options = {"confirm_publish": confirm}
    return app, task


def delay(app: Any, task: Any, count: int) -> None:
    for _ in range(count):
        task.delay("", "noop")


def threaded(app: Any, task: Any, count: int) -> None:
    """``count`` `.delay()` calls shared by ``THREADS`` threads of one client."""
    if count < THREADS:
        delay(app, task, count)
        return
    share = [count // THREADS + (i < count % THREADS) for i in range(THREADS)]
    workers = [threading.Thread(target=delay, args=(app, task, n)) for n in share]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def batches(size: int) -> Callable[[Any, Any, int], None]:
    def send(app: Any, task: Any, count: int) -> None:
        for offset in range(0, count, size):
            app.send_many([(TASK_NAME, ("", "noop"), None)] * min(size, count - offset))

    return send


def measure(
    broker: Broker,
    n: int,
    client: Callable[[], tuple[Any, Any]],
    send: Callable[[Any, Any, int], None],
) -> dict[str, float]:
    app, task = client()
    try:
        send(app, task, 1)  # connects and declares, untimed
        broker.wait_for(1, time.perf_counter())
        cpu, started = time.process_time(), time.perf_counter()
        send(app, task, n)
        sent, cpu = time.perf_counter() - started, time.process_time() - cpu
        stored = broker.wait_for(n + 1, started)
    finally:
        app.close()
    return {"rate": n / sent, "in_queue": n / stored, "cpu_us": cpu / n * 1e6}


def plan(args: argparse.Namespace, broker: Broker) -> dict[str, Callable[[], dict[str, float]]]:
    url, queue = args.url, broker.queue
    n, b, c, batch = args.tasks, args.batch_tasks, args.confirm_tasks, batches(args.batch_size)

    def fq(confirm: bool = False) -> Callable[[], tuple[Any, Any]]:
        return lambda: fastq_client(url, queue, confirm)

    def celery(confirm: bool = False) -> Callable[[], tuple[Any, Any]]:
        return lambda: celery_client(url, queue, confirm)

    return {
        DELAY_RUST: lambda: measure(broker, n, fq(), delay),
        DELAY_CELERY: lambda: measure(broker, n, celery(), delay),
        DELAY_CONFIRM_RUST: lambda: measure(broker, n, fq(True), delay),
        DELAY_CONFIRM_CELERY: lambda: measure(broker, n, celery(True), delay),
        THREADS_CONFIRM_RUST: lambda: measure(broker, n, fq(True), threaded),
        THREADS_CONFIRM_CELERY: lambda: measure(broker, n, celery(True), threaded),
        BATCH_RUST: lambda: measure(broker, b, fq(), batch),
        CONFIRM_RUST: lambda: measure(broker, c, fq(True), batch),
    }


def attempt(broker: Broker, step: Callable[[], dict[str, float]]) -> dict[str, float]:
    """One measurement on an empty queue; measured again when something else on this shared
    RabbitMQ cut the connections (another test suite's close_all_connections or restart)."""
    for tries_left in (2, 1, 0):
        try:
            broker.purge()
            return step()
        except (OSError, amqp.exceptions.AMQPError) as exc:
            if not tries_left:
                raise
            print(f"  interrupted ({exc!r}); measuring again", flush=True)
            time.sleep(5)
            broker.reconnect()
    raise AssertionError("unreachable")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One run: ``rounds`` x every measurement; what ``--json`` writes."""
    broker = Broker(args.url, f"fastq_bench_publish_{uuid.uuid4().hex[:8]}")
    steps = list(plan(args, broker).items())
    rounds: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            figures: dict[str, Any] = {"load": os.getloadavg()[0]}
            for key, step in steps[r % len(steps) :] + steps[: r % len(steps)]:
                figures[key] = attempt(broker, step)
                print(
                    f"round {r + 1}: {LABELS[key]}: {figures[key]['rate']:,.0f}/s, in queue "
                    f"{figures[key]['in_queue']:,.0f}/s, {figures[key]['cpu_us']:.0f} µs CPU",
                    flush=True,
                )
            rounds.append(figures)
    finally:
        broker.close()
    settings = ("tasks", "batch_tasks", "confirm_tasks", "batch_size", "rounds")
    return {
        "machine": machine().split(", load average")[0],
        "commit": _git_commit(),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "settings": {k: getattr(args, k) for k in settings},
        "rounds": rounds,
    }


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head.stdout.strip() or "?"


def med(values: list[float]) -> float:
    return statistics.median(values)


def report(runs: list[dict[str, Any]], sources: list[str], title: str = TITLE) -> str:
    rounds = [r for run in runs for r in run["rounds"]]
    # Runs from before a row existed lack it: report the rows every round has.
    labels = {k: v for k, v in LABELS.items() if all(k in r for r in rounds)}
    s = runs[0]["settings"]
    options = (
        f"--tasks {s['tasks']} --batch-tasks {s['batch_tasks']} --confirm-tasks "
        f"{s['confirm_tasks']} --batch-size {s['batch_size']} --rounds {s['rounds']}"
    )
    command = "\n".join(
        [
            *(f"python bench/amqp_publish.py {options} --json {path}" for path in sources),
            f"python bench/amqp_publish.py --merge {' '.join(sources)} --write"
            + ("" if title == TITLE else f' --title "{title}"'),
        ]
    )
    rows = [
        "| publish | tasks/s | in queue, tasks/s | client CPU µs/task | median of each run |",
        "|---|---:|---:|---:|---|",
    ]
    for key, label in labels.items():
        per_run = ", ".join(f"{med([r[key]['rate'] for r in run['rounds']]):,.0f}" for run in runs)
        rows.append(
            f"| {label} | {med([r[key]['rate'] for r in rounds]):,.0f} | "
            f"{med([r[key]['in_queue'] for r in rounds]):,.0f} | "
            f"{med([r[key]['cpu_us'] for r in rounds]):.0f} | {per_run} |"
        )
    ratio_rows = ["| ratio | rate (range over rounds) | client CPU per task |", "|---|---:|---:|"]
    for label, a, b in RATIOS:
        if a not in labels or b not in labels:
            continue
        rates = [r[a]["rate"] / r[b]["rate"] for r in rounds]
        cpus = [r[b]["cpu_us"] / r[a]["cpu_us"] for r in rounds]
        ratio_rows.append(
            f"| {label} | {med(rates):.2f}x ({min(rates):.2f} to {max(rates):.2f}) | "
            f"{med(cpus):.2f}x less |"
        )
    where = "; ".join(sorted({run["machine"].split(", load average")[0] for run in runs}))
    loads = ", ".join(f"{r['load']:.1f}" for r in rounds)
    when = ", ".join(run["finished"][11:] for run in runs)
    commits = "; ".join(sorted({run.get("commit", "?") for run in runs}))
    day = runs[0]["finished"][:10]
    return f"""## {title}

fastq's task messages on RabbitMQ through its Rust publisher (`_core.AmqpPublisher`, lapin),
with publisher confirms (fastq's default) and without, and Celery 5.7's `.delay()` with and
without kombu's `confirm_publish`, in the same rounds. Results off (no backend), the `fastq
bench` harness's task and client apps, fastq built with `maturin develop --release` (commit
{commits}).
{len(runs)} run(s) of {s["rounds"]} rounds, finished on {day} at {when}; each round measures
everything once, in an order that rotates. The figures are medians over all {len(rounds)}
rounds; the ratios are taken within each round, then the median.

```sh
{command}
```

Machine: {where}. 1-minute load average at the start of each round: {loads}. The 2 cores
are shared with RabbitMQ (and, on this development machine, with other engineers' builds and
tests), so the rates move with the load; the ratios and the CPU per task move much less.

{chr(10).join(rows)}

{chr(10).join(ratio_rows)}

Each measurement: {s["tasks"]:,} `.delay()` calls, {s["batch_tasks"]:,} tasks in `send_many`
calls of {s["batch_size"]:,} ({s["confirm_tasks"]:,} with confirms). "In queue" runs until
RabbitMQ reports every task in the queue (a check that none was lost; the broker's own pace when the
client outruns it, as the Rust `send_many` does). Client CPU is the publishing process's, all
threads (lapin's I/O thread and runtime included).
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000, help=".delay() calls a measurement")
    parser.add_argument("--batch-tasks", type=int, default=20_000)
    parser.add_argument("--confirm-tasks", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=1_000, help="tasks per send_many call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--json", metavar="OUT", help="keep this run's figures")
    parser.add_argument(
        "--merge", nargs="+", metavar="RUN.json", help="report these runs instead of measuring"
    )
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    parser.add_argument("--title", default=TITLE, help="the ## heading to write under")
    args = parser.parse_args()
    if args.merge:
        sources = args.merge
        runs = [json.loads(Path(p).read_text()) for p in sources]
    else:
        runs = [run(args)]
        sources = [args.json] if args.json else []
        if args.json:
            Path(args.json).write_text(json.dumps(runs[0], indent=2) + "\n")
    section = report(runs, sources, args.title)
    print(section)
    if args.write:
        write_section(HERE / "RESULTS.md", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
