"""RabbitMQ on one node against a 3-node cluster with quorum queues: fastq's publish and drain
rates, and the CPU the broker's Erlang VMs spend per task, in interleaved rounds.

    .venv/bin/python bench/rabbitmq_scaling.py [--tasks 10000] [--rounds 3] [--workers 3] \\
        [--png docs/img/rabbitmq_scaling.png] [--json run.json]

Starts two clusters with ``scripts/rabbitmq_cluster.sh`` (one node; three nodes), and a
redis-server on ``--counter-port`` for the completion counter, and stops them all at the end. Each
round runs every configuration once, in turn (A B C D, A B C D, ...), on a fresh queue:

1. publish ``--tasks`` no-op tasks with ``send_many`` (1,000 a call, publisher confirms on, the
   default) through node 1; timed, with the VMs' CPU;
2. start ``--workers`` fastq workers (prefork ``-c --concurrency``, prefetch multiplier 4,
   results off, early ack) at once, worker i connected first to node i (its URL list rotated;
   or all to node 1, the queue's), and wait until every task ran; the drain rate is from the
   first task's start to the last task's end, and the VMs' CPU from the workers' start on.

"RabbitMQ CPU" is the CPU time of the cluster's Erlang VMs (every node, /proc/<pid>/stat)
divided by the tasks. The other cluster idles meanwhile (its VMs' CPU is not counted). The nodes
run without scheduler busy-waiting (``+sbwt none +sbwtdcpu none +sbwtdio none``, RabbitMQ's advice
for hosts whose cores are shared): otherwise a VM spins on cores the workers need, and its CPU
time measures the spinning more than the work. ``--busy-wait`` keeps Erlang's default.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from broker_ops import (  # noqa: E402
    beam_cpu,
    delete_queue,
    drain,
    fill,
    fmt,
    node_url,
    spread,
    start_redis,
    stop_redis,
)
from fastq.bench.apps.fastq_app import make_app  # noqa: E402
from fastq.bench.spec import BenchConfig  # noqa: E402

CLUSTER = ROOT / "scripts" / "rabbitmq_cluster.sh"
NO_BUSY_WAIT = "+sbwt none +sbwtdcpu none +sbwtdio none"

#: name → (cluster, queue type, workers spread over the nodes or all on node 1). The queue is
#: declared through node 1, so a quorum queue's leader (and a classic queue) is on node 1.
CONFIGS = {
    "1 node, classic queue": ("one", "classic", False),
    "1 node, quorum queue": ("one", "quorum", False),
    "3 nodes, classic queue (on node 1), workers on nodes 1-3": ("three", "classic", True),
    "3 nodes, quorum queue, workers on nodes 1-3": ("three", "quorum", True),
    "3 nodes, quorum queue, workers on node 1 (the leader's)": ("three", "quorum", False),
}


def cluster(command: str, directory: str, *args: str) -> str:
    return subprocess.run(
        ["bash", str(CLUSTER), command, directory, *args],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def rotated(urls: list[str], i: int) -> str:
    """The node list starting at node ``i % len(urls)``: where worker ``i`` connects first."""
    k = i % len(urls)
    return ";".join(urls[k:] + urls[:k])


def one_round(
    directory: str, queue_type: str, spread_workers: bool, counter: str, args: argparse.Namespace
) -> dict[str, Any]:
    count = int(Path(directory, "count").read_text())
    urls = [node_url(directory, i) for i in range(1, count + 1)]
    queue = f"scaling.{uuid.uuid4().hex[:6]}"
    os.environ["FASTQ_BENCH_QUEUE_TYPE"] = queue_type  # the workers' apps read it
    app, task = make_app(urls[0], None, queue=queue, queue_type=queue_type)
    try:
        fill(app, task, 10)  # connection open, queue declared
        cpu0, started = beam_cpu(directory), time.perf_counter()
        fill(app, task, args.tasks - 10)
        publish_s, cpu1 = time.perf_counter() - started, beam_cpu(directory)
    finally:
        app.close()
    configs = [
        BenchConfig(
            broker=rotated(urls, i if spread_workers else 0),
            queue=queue,
            counter=counter,
            concurrency=args.concurrency,
            prefetch=args.prefetch,
        )
        for i in range(args.workers)
    ]
    cpu2 = beam_cpu(directory)
    drained = drain(configs, counter, args.tasks)
    cpu3 = beam_cpu(directory)
    delete_queue(urls[0], queue)
    return {
        "publish_per_s": (args.tasks - 10) / publish_s,
        "publish_cpu_us": (cpu1 - cpu0) / (args.tasks - 10) * 1e6,
        "drain_per_s": args.tasks / drained["steady"],
        "drain_from_start_per_s": args.tasks / drained["seconds"],
        "drain_cpu_us": (cpu3 - cpu2) / args.tasks * 1e6,
    }


FIGURES = (
    ("publish_per_s", "publish, `send_many` with confirms (tasks/s)", 0),
    ("drain_per_s", "drain, first to last task (tasks/s)", 0),
    ("drain_from_start_per_s", "drain from the workers' start (tasks/s)", 0),
    ("publish_cpu_us", "RabbitMQ CPU per publish (µs)", 1),
    ("drain_cpu_us", "RabbitMQ CPU per task drained (µs)", 1),
)


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = [
        "| configuration | " + " | ".join(label for _, label, _ in FIGURES) + " |",
        "|---|" + "---:|" * len(FIGURES),
    ]
    for name, runs in results.items():
        cells = [fmt(spread([r[key] for r in runs]), digits) for key, _, digits in FIGURES]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(results: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    panels: list[tuple[str, Callable[[dict[str, Any]], float]]] = [
        ("drain (tasks/s)", lambda r: r["drain_per_s"]),
        ("publish, confirms on (tasks/s)", lambda r: r["publish_per_s"]),
        (
            "RabbitMQ CPU µs / task (publish + drain)",
            lambda r: r["publish_cpu_us"] + r["drain_cpu_us"],
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    colors = ["#4c72b0", "#55a868", "#c44e52", "#dd8452", "#8172b3"]
    for ax, (label, value) in zip(axes, panels, strict=True):
        runs = [[value(r) for r in results[n]] for n in names]
        med = [statistics.median(v) for v in runs]
        lo = [m - min(v) for m, v in zip(med, runs, strict=True)]
        hi = [max(v) - m for m, v in zip(med, runs, strict=True)]
        ax.barh(range(len(names)), med, xerr=[lo, hi], color=colors[: len(names)], capsize=4)
        ax.set_yticks(range(len(names)), names if ax is axes[0] else [""] * len(names))
        ax.invert_yaxis()
        ax.set_xlabel(label, fontsize=9)
        for y, m in enumerate(med):
            ax.text(m * 0.02, y, f"{m:,.0f}", va="center", color="white", fontsize=9)
    fig.suptitle(title + "; medians, bars min-max", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--prefetch", type=int, default=4, help="prefetch multiplier")
    parser.add_argument("--counter-port", type=int, default=7410)
    parser.add_argument("--busy-wait", action="store_true", help="Erlang's default spinning")
    parser.add_argument("--png", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--replot", type=Path, help="only redraw --png from a --json of a run")
    args = parser.parse_args()
    if args.replot:
        saved = json.loads(args.replot.read_text())
        plot(saved["results"], args.png, saved["title"])
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clusters and workers stopped
    base = Path(tempfile.mkdtemp(prefix="fastq-rmq-scaling-"))
    dirs = {"one": str(base / "one"), "three": str(base / "three")}
    counter = f"redis://127.0.0.1:{args.counter_port}/0"
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    loads = [uptime()]
    if not args.busy_wait:
        os.environ["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = NO_BUSY_WAIT
    start_redis(args.counter_port)
    try:
        cluster("start", dirs["one"], "1")
        cluster("start", dirs["three"], "3")
        print(f"clusters up; {loads[0]}", flush=True)
        for r in range(args.rounds):
            for name, (which, queue_type, spread_workers) in CONFIGS.items():
                out = one_round(dirs[which], queue_type, spread_workers, counter, args)
                results[name].append(out)
                print(f"round {r + 1} {name}: {json.dumps(out)}", flush=True)
            loads.append(uptime())
    finally:
        for d in dirs.values():
            subprocess.run(["bash", str(CLUSTER), "stop", d], check=False)
        stop_redis(args.counter_port)
        shutil.rmtree(base, ignore_errors=True)
    print("\n".join(f"load: {load}" for load in loads))
    print(table(results))
    title = (
        f"fastq on RabbitMQ: one node vs a 3-node cluster on one 2-core machine "
        f"({args.tasks} no-op tasks, {args.workers} workers x -c {args.concurrency}, "
        f"{args.rounds} rounds)"
    )
    if args.png:
        plot(results, args.png, title)
    if args.json:
        args.json.write_text(
            json.dumps({"title": title, "loads": loads, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
