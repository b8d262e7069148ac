"""The Redis Cluster scaling curve: drain rate with 1, 2, 3 masters and workers in proportion.

For each N a cluster of N masters is started by scripts/redis_cluster.sh on free ports; N queues
are chosen whose slots fall on N different masters, and N fastq workers (``-c WORKER_C``
prefork children each, one queue each) drain ``--tasks`` no-op tasks per queue (``acks_late``,
no results), preloaded before the workers start. Rounds are interleaved (1 2 3 1 2 3 ...), each
on a fresh cluster. Reported per round: tasks/s from the first task started to the last acked
(read from the workers' ledger-free counters: queue lengths and ``unacked`` polled every 20 ms),
and the Redis CPU time per task summed over the masters (``INFO cpu``), the broker's own cost
that a capacity model multiplies out.

    .venv/bin/python bench/cluster_scaling.py --tasks 20000 --rounds 2 \\
        --json bench/data/cluster_scaling.json --markdown bench/data/cluster_scaling.md

This machine has 2 cores shared with other work: on it the curve shows the cluster's overhead
(routing, per-queue claims), not its ceiling. On N machines each master gets its own core.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "redis_cluster.sh"
APP = "bench.cluster_app"


def _start(masters: int, workdir: Path) -> list[int]:
    subprocess.run(
        ["bash", str(SCRIPT), "start", str(workdir), str(masters)], check=True, capture_output=True
    )
    return [int((workdir / f"n{i}" / "port").read_text()) for i in range(1, masters + 1)]


def _stop(workdir: Path) -> None:
    subprocess.run(["bash", str(SCRIPT), "stop", str(workdir)], check=False)


def _queues(ports: list[int]) -> list[str]:
    """One queue per master: names tried in turn until each master owns one."""
    node = redis.Redis(port=ports[0])
    owners: dict[int, str] = {}
    for i in range(10_000):
        name = f"bench{i}"
        slot = int(node.execute_command("CLUSTER KEYSLOT", f"{{{name}}}"))
        for lo, hi, master, *_ in node.execute_command("CLUSTER SLOTS"):
            if lo <= slot <= hi:
                owners.setdefault(int(master[1]), name)
        if len(owners) == len(ports):
            return [owners[p] for p in ports]
    raise RuntimeError("no queue name for every master")


def _cpu(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        info = redis.Redis(port=port).info("cpu")
        total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return total


def _waiting(client: redis.RedisCluster, queues: list[str]) -> int:
    return sum(client.llen(f"{{{q}}}") + client.hlen(f"{{{q}}}unacked") for q in queues)


def one_round(masters: int, tasks: int, worker_c: int) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="fastq-cluster-bench-"))
    workers: list[subprocess.Popen[bytes]] = []
    try:
        ports = _start(masters, workdir)
        url = ";".join(f"redis+cluster://127.0.0.1:{p}" for p in ports)
        env = {**os.environ, "FASTQ_BROKER_URL": url, "PYTHONPATH": str(ROOT)}
        queues = _queues(ports)
        sys.path.insert(0, str(ROOT))
        from bench.cluster_app import make_app

        app = make_app(url)
        for q in queues:
            for first in range(0, tasks, 1000):
                calls = [("bench.noop", (), None)] * min(1000, tasks - first)
                app.send_many(calls, queue=q)
        app.close()
        client = redis.RedisCluster(host="127.0.0.1", port=ports[0])
        total = tasks * len(queues)
        cpu_before = _cpu(ports)
        for q in queues:
            workers.append(
                subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "fastq"),
                        "worker",
                        "-A",
                        APP,
                        "-Q",
                        q,
                        "-c",
                        str(worker_c),
                        "-l",
                        "warning",
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        # From the first task taken to the last acked.
        deadline = time.monotonic() + 60
        while _waiting(client, queues) >= total:
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                raise RuntimeError("the workers took nothing in 60 s (or exited)")
            time.sleep(0.005)
        began = time.monotonic()
        deadline = began + 600
        while _waiting(client, queues) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("not drained in 600 s")
            time.sleep(0.02)
        elapsed = time.monotonic() - began
        cpu = _cpu(ports) - cpu_before
        return {
            "masters": masters,
            "workers": len(queues),
            "tasks": total,
            "seconds": elapsed,
            "tasks_per_s": total / elapsed,
            "redis_cpu_us_per_task": cpu / total * 1e6,
        }
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
        _stop(workdir)


def main() -> None:
    # SIGTERM (a `timeout`) unwinds like Ctrl-C, so every cluster and worker started is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per queue (per master)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--masters", default="1,2,3")
    parser.add_argument("--worker-concurrency", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    parser.add_argument("--png", help="the curve: tasks/s and Redis CPU per task over masters")
    parser.add_argument("--replot", help="only redraw --png from a --json of an earlier run")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(Path(args.replot).read_text())["runs"], args.png)
        return
    sizes = [int(n) for n in args.masters.split(",")]
    runs: list[dict[str, float]] = []
    for r in range(args.rounds):
        for n in sizes:
            run = one_round(n, args.tasks, args.worker_concurrency)
            run["round"] = r
            runs.append(run)
            print(json.dumps(run), flush=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    base = statistics.median(x["tasks_per_s"] for x in runs if x["masters"] == sizes[0])
    lines = [
        f"Redis Cluster scaling ({args.tasks} no-op tasks per master, acks_late, no results, "
        f"{args.worker_concurrency} prefork child per worker, {args.rounds} interleaved rounds; "
        f"`uptime` at the end: {uptime})",
        "",
        "| masters | workers | tasks/s (median) | vs 1 master | Redis CPU µs/task (median) |",
        "|---|---|---|---|---|",
    ]
    for n in sizes:
        mine = [x for x in runs if x["masters"] == n]
        rate = statistics.median(x["tasks_per_s"] for x in mine)
        cpu = statistics.median(x["redis_cpu_us_per_task"] for x in mine)
        lines.append(f"| {n} | {n} | {rate:,.0f} | {rate / base:.2f}x | {cpu:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"uptime": uptime, "runs": runs}, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.png:
        plot(runs, args.png)


def plot(runs: list[dict[str, float]], path: str) -> None:
    """Medians with min-max bars over the rounds, per number of masters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({int(x["masters"]) for x in runs})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, label) in zip(
        axes,
        [("tasks_per_s", "drain, tasks/s"), ("redis_cpu_us_per_task", "Redis CPU µs / task")],
        strict=True,
    ):
        values = [[x[key] for x in runs if x["masters"] == n] for n in sizes]
        med = [statistics.median(v) for v in values]
        pairs = list(zip(med, values, strict=True))
        err = [[m - min(v) for m, v in pairs], [max(v) - m for m, v in pairs]]
        ax.errorbar(sizes, med, yerr=err, marker="o", capsize=4)
        ax.set_xticks(sizes)
        ax.set_xlabel("Redis Cluster masters (one worker each)")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
    fig.suptitle("Redis Cluster on one 2-core machine (every master and worker shares the cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
