"""RabbitMQ drain throughput: fastq vs Celery on the same broker in one run, next to the broker's
raw publish/consume ceilings measured in the same run.

    .venv/bin/maturin develop --release
    .venv/bin/python bench/amqp_throughput.py --tasks 20000 --concurrency 2 \
        [--prefetch-multiplier 4,64] [--write]

Each side gets its own queue holding one ``bench.mark("first")``, N ``bench.noop`` and 4 x
concurrency ``bench.mark("last")`` messages (results off, early ack: both defaults), published by
that side's own client. Then its worker starts (prefork, ``--concurrency``, the prefetch
multiplier given: 4 is both sides' default, Celery's docs advise a larger one for many short
tasks). ``bench.mark`` appends its time to a file, so the drain is timed without touching the
no-op path: from the worker's start (and from the first task, without boot time) to the last mark.

Two raw ceilings, on the same pre-encoded message published by py-amqp:
- *unbounded*: one Rust ``AmqpConsumer`` (prefetch 500, batched multiple acks) takes them all;
- *at the worker's window*: ``--concurrency`` processes, each one Rust ``AmqpConsumer`` with the
  workers' prefetch and one ack per message, as a worker's children hold them, doing no work. No
  worker that acks each task on its own before running it (both sides' default) drains faster.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import amqp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "python"))

from fastq import App, _core  # noqa: E402
from fastq.brokers.amqp_connection import AmqpParams  # noqa: E402


def admin(url: str) -> Any:
    p = AmqpParams.from_url(url)
    conn = amqp.Connection(
        f"{p.host}:{p.port}", userid=p.userid, password=p.password, virtual_host=p.vhost
    )
    conn.connect()
    return conn


def queue_depth(url: str, queue: str) -> int:
    conn = admin(url)
    try:
        return int(conn.channel().queue_declare(queue, passive=True).message_count)
    finally:
        conn.close()


def delete_queue(url: str, queue: str) -> None:
    conn = admin(url)
    try:
        ch = conn.channel()
        ch.queue_delete(queue)
        ch.exchange_delete(queue)
    except amqp.exceptions.NotFound:
        pass
    finally:
        conn.close()


def fill(ch: Any, queue: str, n: int) -> None:
    """Declares ``queue`` and publishes one pre-encoded no-op task message ``n`` times."""
    headers, body = _core.encode_task_message({"task": "bench.noop", "id": "x"}, [], {}, None)
    ch.queue_declare(queue, durable=True, auto_delete=False)
    message = amqp.Message(
        body,
        content_type="application/json",
        content_encoding="utf-8",
        application_headers=headers,
        delivery_mode=2,
    )
    for _ in range(n):
        ch.basic_publish(message, exchange="", routing_key=queue)


def raw_ceiling(url: str, n: int) -> dict[str, float]:
    """py-amqp publishing one pre-encoded task message n times, then the Rust consumer."""
    queue = f"fastq_bench_raw_{uuid.uuid4().hex[:8]}"
    conn = admin(url)
    try:
        ch = conn.channel()
        started = time.perf_counter()
        fill(ch, queue, n)
        ch.queue_declare(queue, passive=True)  # a round trip: everything before it arrived
        publish = n / (time.perf_counter() - started)
        consumer = _core.AmqpConsumer(
            AmqpParams.from_url(url).lapin_url(),
            [{"name": queue, "exchange": ""}],
            accept=["json"],
            prefetch=500,
            consumer_tag="fastq-bench-raw",
        )
        got = 0
        started = time.perf_counter()
        while got < n:
            batch = consumer.fetch(5.0)
            if not batch:
                raise RuntimeError(f"raw consume stalled at {got}/{n}")
            got += len(batch)
            consumer.ack([d.delivery_tag for d in batch])
        consume = n / (time.perf_counter() - started)
        consumer.close()
        return {"publish": publish, "consume": consume}
    finally:
        try:
            conn.channel().queue_delete(queue)
        finally:
            conn.close()


def _window_consumer(url: str, queue: str, prefetch: int, ready: Any, go: Any) -> None:
    """One process of the window ceiling: consume, ack each message, until the queue is idle."""
    consumer = _core.AmqpConsumer(
        AmqpParams.from_url(url).lapin_url(),
        [{"name": queue, "exchange": ""}],
        accept=["json"],
        prefetch=prefetch,
        consumer_tag=f"fastq-bench-window-{os.getpid()}",
        global_qos=False,  # per consumer, as a worker consuming one queue sets it
    )
    ready.set()
    go.wait()
    while batch := consumer.fetch(1.0):
        for delivery in batch:
            consumer.ack([delivery.delivery_tag], wait=False)
    consumer.close()


def window_ceiling(url: str, n: int, consumers: int, prefetch: int) -> float:
    """Drain rate of ``consumers`` processes with ``prefetch`` each and one ack per message."""
    import multiprocessing

    queue = f"fastq_bench_window_{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")  # no runtime threads inherited through a fork
    conn = admin(url)
    procs = []
    try:
        ch = conn.channel()
        fill(ch, queue, n)
        while ch.queue_declare(queue, passive=True).message_count < n:
            time.sleep(0.05)  # every message in the queue before the clock starts
        go = ctx.Event()
        readies = [ctx.Event() for _ in range(consumers)]
        procs = [
            ctx.Process(target=_window_consumer, args=(url, queue, prefetch, r, go))
            for r in readies
        ]
        for proc in procs:
            proc.start()
        for ready in readies:
            if not ready.wait(60):
                raise RuntimeError("a window-ceiling consumer did not start")
        # Each consumer holds its window already: count from the moment they may ack.
        started = time.perf_counter()
        go.set()
        while ch.queue_declare(queue, passive=True).message_count > 0:
            time.sleep(0.005)
        # The last windows are in flight: at most consumers x prefetch of n, microseconds.
        return n / (time.perf_counter() - started)
    finally:
        for proc in procs:
            proc.join(30)
        try:
            conn.channel().queue_delete(queue)
        finally:
            conn.close()


def publish(side: str, url: str, queue: str, n: int, sentinels: int) -> float:
    """Publishes the side's messages with its own client; returns messages per second."""
    total = n + 1 + sentinels
    if side == "fastq":
        app = App("bench-client", broker=url, task_default_queue=queue, set_as_current=False)
        calls: list[tuple[str, Any, Any]] = [("bench.mark", ("first",), None)]
        calls += [("bench.noop", (), None)] * n
        calls += [("bench.mark", ("last",), None)] * sentinels
        started = time.perf_counter()
        app.send_many(calls, ignore_result=True)
        elapsed = time.perf_counter() - started
        app.close()
        return total / elapsed
    from celery import Celery

    capp = Celery("bench-client", broker=url)
    capp.conf.update(task_default_queue=queue, task_ignore_result=True)
    started = time.perf_counter()
    with capp.producer_or_acquire() as producer:
        capp.send_task("bench.mark", ("first",), producer=producer)
        for _ in range(n):
            capp.send_task("bench.noop", producer=producer)
        for _ in range(sentinels):
            capp.send_task("bench.mark", ("last",), producer=producer)
    elapsed = time.perf_counter() - started
    capp.close()
    return total / elapsed


def drain(side: str, url: str, n: int, concurrency: int, multiplier: int) -> dict[str, float]:
    queue = f"fastq_bench_{side}_{uuid.uuid4().hex[:8]}"
    marks = Path(tempfile.mkstemp(prefix=f"fastq-bench-{side}-")[1])
    sentinels = 4 * concurrency
    env = {
        **os.environ,
        "FASTQ_BENCH_SIDE": side,
        "FASTQ_BENCH_QUEUE": queue,
        "FASTQ_BENCH_MARKS": str(marks),
        "FASTQ_BENCH_AMQP_URL": url,
        "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT / 'python'}",
    }
    if side == "fastq":
        cmd = [str(BIN / "fastq"), "-A", "amqp_bench_apps:fastq_app", "worker"]
    else:
        cmd = [str(BIN / "celery"), "-A", "amqp_bench_apps:celery_app", "worker", "-P", "prefork"]
        cmd += ["--without-mingle", "--without-gossip", "--without-heartbeat"]
    cmd += ["-c", str(concurrency), "-l", "WARNING", "--prefetch-multiplier", str(multiplier)]
    try:
        publish_rate = publish(side, url, queue, n, sentinels)
        log = open(marks.with_suffix(".log"), "wb")  # closed once the worker has stopped
        started = time.time()
        proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + max(120.0, n / 200)
            while True:
                lines = marks.read_text().split("\n") if marks.exists() else []
                lasts = [line.split() for line in lines if line.startswith("last ")]
                if len(lasts) >= sentinels:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{side} worker did not drain; log: {log.name}")
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()
        firsts = [line.split() for line in lines if line.startswith("first ")]
        first = float(firsts[0][2])
        last = max(float(fields[2]) for fields in lasts)
        left = queue_depth(url, queue)
        return {
            "publish": publish_rate,
            "from_start": n / (last - started),
            "steady": n / (last - first),
            "boot": first - started,
            "seconds": last - started,
            "processes_marked": len({fields[1] for fields in lasts}),
            "left_in_queue": left,
        }
    finally:
        delete_queue(url, queue)
        marks.unlink(missing_ok=True)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"model name\s*:\s*(.+)", text)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    try:
        rabbit = subprocess.run(
            ["rabbitmqctl", "-q", "version"], capture_output=True, text=True, timeout=60
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rabbit = "?"
    load = os.getloadavg()[0]
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"RabbitMQ {rabbit} on loopback, load average {load:.2f} at the start"
    )


def report(args: argparse.Namespace, raw: dict, runs: list[dict], where: str) -> str:
    """``runs``: one dict per prefetch multiplier (``multiplier``, ``window``, ``fastq``,
    ``celery``)."""
    rows = [
        [
            "prefetch multiplier",
            "",
            "publish (msg/s)",
            "drain from worker start (tasks/s)",
            "drain, first to last task (tasks/s)",
            "worker boot (s)",
        ],
        ["---:", "---", "---:", "---:", "---:", "---:"],
        [
            "",
            "raw ceiling, unbounded: py-amqp publish, Rust consume (prefetch 500, batched acks)",
            f"{raw['publish']:,.0f}",
            f"{raw['consume']:,.0f} (consume alone)",
            "",
            "",
        ],
    ]
    ratios = []
    for run in runs:
        m = run["multiplier"]
        fq, cel = run["fastq"], run["celery"]
        rows.append(
            [
                f"{m}",
                f"raw ceiling at the workers' window: {args.concurrency} consumers x prefetch "
                f"{m}, one ack per message, no work",
                "",
                f"{run['window']:,.0f}",
                "",
                "",
            ]
        )
        for name, r in (("fastq worker, fastq client", fq), ("Celery worker, Celery client", cel)):
            rows.append(
                [
                    f"{m}",
                    name,
                    f"{r['publish']:,.0f}",
                    f"{r['from_start']:,.0f}",
                    f"{r['steady']:,.0f}",
                    f"{r['boot']:.2f}",
                ]
            )
        ratios.append(
            f"- prefetch multiplier {m}{' (both defaults)' if m == 4 else ''}: "
            f"**{fq['from_start'] / cel['from_start']:.1f}x from worker start, "
            f"{fq['steady'] / cel['steady']:.1f}x first to last task**; fastq drains at "
            f"{100 * fq['steady'] / run['window']:.0f}% of the window ceiling "
            f"({100 * fq['steady'] / raw['consume']:.0f}% of the unbounded one), Celery at "
            f"{100 * cel['steady'] / run['window']:.0f}%. Processes that ran none of the last "
            f"marks: {args.concurrency - fq['processes_marked']} (fastq), "
            f"{args.concurrency - cel['processes_marked']} (Celery); left in the queues: "
            f"{fq['left_in_queue']} / {cel['left_in_queue']}."
        )
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    multipliers = ",".join(str(r["multiplier"]) for r in runs)
    summary = "\n".join(ratios)
    return f"""## RabbitMQ throughput

`{args.tasks}` no-op tasks, prefork `--concurrency {args.concurrency}`, results off, early ack
(both defaults), prefetch multiplier {multipliers} (4 is both sides' default; Celery's docs advise a
large one for many short tasks), one RabbitMQ, one run of
`python bench/amqp_throughput.py --tasks {args.tasks} --concurrency {args.concurrency} \
--prefetch-multiplier {multipliers}` (fastq built with `maturin develop --release`).

Machine: {where}. The 2 cores are shared with RabbitMQ itself (and, on this development machine,
with other work), so read the ratios rather than the absolute numbers.

{table}

{summary}

How it is measured: each side's queue holds `bench.mark("first")`, the no-ops, then
{4 * args.concurrency} `bench.mark("last")`; the marks append their time to a file, and the drain
ends at the last mark. A process that ran none of the last marks held at most its prefetched
no-ops then, microseconds of work. Publish rates are each side's own client (fastq `send_many` on
its Rust publisher, Celery `send_task` with one producer). The window ceiling is what RabbitMQ
and the Rust consumer deliver when each of `--concurrency` consumers may hold `prefetch
multiplier` unacknowledged messages and acks each on its own, as both workers' children do (early
ack, before the task runs): the drain no worker at that prefetch can pass.
"""


def write_section(path: Path, section: str) -> None:
    """Replaces the section of the same ``## `` title in ``path`` (or appends it)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    title = section.split("\n", 1)[0]
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip() + "\n\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument(
        "--prefetch-multiplier",
        default="4",
        help="comma-separated; each runs the window ceiling and both workers (default: 4)",
    )
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    multipliers = [int(m) for m in args.prefetch_multiplier.split(",")]
    where = machine()
    print(f"machine: {where}", flush=True)
    raw = raw_ceiling(args.url, args.tasks)
    print(f"raw: {raw}", flush=True)
    runs = []
    for m in multipliers:
        run: dict[str, Any] = {"multiplier": m}
        run["window"] = window_ceiling(args.url, args.tasks, args.concurrency, m)
        print(f"window ceiling (multiplier {m}): {run['window']:,.0f}/s", flush=True)
        for side in ("fastq", "celery"):
            run[side] = drain(side, args.url, args.tasks, args.concurrency, m)
            print(f"{side} (multiplier {m}): {run[side]}", flush=True)
        runs.append(run)
    section = report(args, raw, runs, where)
    print(section)
    if args.write:
        write_section(HERE / "RESULTS.md", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
