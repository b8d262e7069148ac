"""What one task costs the broker: commands (Redis) or messages (RabbitMQ) per task, by type, and
the broker's own CPU time per task, for fastq's hot paths. The inputs of docs/scaling.md.

    .venv/bin/python bench/broker_ops.py redis --port 7400 [--tasks 20000] [--rounds 3]
    .venv/bin/python bench/broker_ops.py rabbitmq --cluster-dir DIR --counter redis://127.0.0.1:7401
    .venv/bin/python bench/broker_ops.py redis-benchmark --port 7400

``redis`` starts its own redis-server on ``--port`` (broker, results in db 1) and ``--port + 1``
(the benchmark's completion counter, so that counting is not in the figures), both removed at the
end. ``rabbitmq`` uses node 1 of a cluster started by ``scripts/rabbitmq_cluster.sh start DIR 1``:
messages from ``rabbit_global_counters`` (RabbitMQ >= 3.9, no plugin needed) and the CPU of the
node's Erlang VM from /proc. Each scenario runs ``--rounds`` times, interleaved; the figures are
medians with min-max. A drain counts from the worker's start (its boot and idle polls are in the
figures) to the moment the counter says every task ran, with ``fastq worker -c 2`` (prefork,
prefetch multiplier 4), a no-op task, no events.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from amqp_throughput import delete_queue, queue_depth  # noqa: E402
from fastq.bench import probe  # noqa: E402
from fastq.bench.apps.fastq_app import make_app  # noqa: E402
from fastq.bench.spec import BenchConfig  # noqa: E402
from fastq.bench.workers import WorkerGroup  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
BATCH = 1_000  # tasks per send_many call


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def fill(app: Any, task: Any, n: int, batch: int = BATCH) -> None:
    """Queues ``n`` no-op benchmark tasks with ``send_many``, ``batch`` a call."""
    for start in range(0, n, batch):
        app.send_many([(task.name, ("", "noop"), None)] * min(batch, n - start))


def queue_tasks(config: BenchConfig, n: int) -> None:
    """Queues ``n`` tasks for a drain on ``config``, sent by an app configured as the workers'
    (with results off, the messages say ``ignore_result``)."""
    app, task = make_app(config.broker, config.backend, queue=config.queue)
    fill(app, task, n)
    app.close()


def delay_loop(app: Any, task: Any, n: int) -> None:
    for _ in range(n):
        task.delay("", "noop")


def drain(
    configs: list[BenchConfig], counter: str, n: int, timeout: float = 600.0
) -> dict[str, float]:
    """Starts one fastq worker per config at once and waits until ``n`` tasks ran: seconds from
    the start of the workers, and from the first task's start to the last task's end."""
    run = uuid.uuid4().hex[:8]
    keys = probe.keys(run)
    counter_client = redis.Redis.from_url(counter)
    started_wall, started = time.time(), time.perf_counter()
    groups = [WorkerGroup("fastq", config, run) for config in configs]
    try:
        while int(counter_client.get(keys["done"]) or 0) < n:
            for group in groups:
                if group.exited() is not None:
                    raise RuntimeError(group.failure("exited during the drain"))
            if time.perf_counter() - started > timeout:
                raise RuntimeError(groups[0].failure(f"did not drain {n} tasks in {timeout}s"))
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        first = min(float(t) for t in counter_client.hvals(keys["first"]))
        last = max(float(t) for t in counter_client.hvals(keys["last"]))
        return {"seconds": seconds, "steady": last - first, "boot": first - started_wall}
    finally:
        for group in groups:
            group.stop()
            group.remove_log()
        for key in keys.values():
            counter_client.delete(key)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(s: dict[str, float], digits: int = 2) -> str:
    if s["max"] - s["min"] < 10**-digits:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


# --- Redis -------------------------------------------------------------------------------------


def start_redis(port: int) -> None:
    subprocess.run(
        ["redis-server", "--port", str(port), "--daemonize", "yes", "--save", "",
         "--appendonly", "no", "--bind", "127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on {port} did not start")


def stop_redis(port: int) -> None:
    try:
        redis.Redis(port=port).shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # it closes the connection as it exits


def redis_snapshot(client: redis.Redis) -> tuple[dict[str, tuple[int, float]], float, int]:
    """({command: (calls, usec)}, server CPU seconds, network bytes in + out)."""
    stats = {
        name.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"]))
        for name, v in client.info("commandstats").items()
    }
    cpu, net = client.info("cpu"), client.info("stats")
    return (
        stats,
        float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        int(net["total_net_input_bytes"]) + int(net["total_net_output_bytes"]),
    )


#: Commands of the measuring itself (INFO, CONFIG RESETSTAT), not of the task path.
OWN = {"info", "config|resetstat", "config"}


def redis_measure(client: redis.Redis, action: Callable[[], Any], n: int) -> dict[str, Any]:
    """Runs ``action`` (which handles ``n`` tasks) between two snapshots of the server."""
    stats0, cpu0, net0 = redis_snapshot(client)
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    stats1, cpu1, net1 = redis_snapshot(client)
    per_task: dict[str, float] = {}
    usec: dict[str, float] = {}
    for name, (calls, us) in stats1.items():
        c0, u0 = stats0.get(name, (0, 0.0))
        if name in OWN or calls == c0:
            continue
        per_task[name] = (calls - c0) / n
        usec[name] = (us - u0) / (calls - c0)
    return {
        "commands": per_task,
        "usec_per_call": usec,
        "commands_per_task": sum(per_task.values()),
        "server_cpu_us_per_task": (cpu1 - cpu0) / n * 1e6,
        "net_bytes_per_task": (net1 - net0) / n,
        "tasks_per_s": n / seconds,
    }


def redis_scenarios(port: int, counter: str, n: int) -> dict[str, Callable[[], dict[str, Any]]]:
    broker, backend = f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1"
    client = redis.Redis(port=port)

    def client_side(results: bool, how: str) -> Callable[[], dict[str, Any]]:
        def scenario() -> dict[str, Any]:
            queue = f"ops.{uuid.uuid4().hex[:6]}"
            app, task = make_app(broker, backend if results else None, queue=queue)
            fill(app, task, 100)  # connections open, scripts loaded
            try:
                if how == "delay":
                    return redis_measure(client, lambda: delay_loop(app, task, n), n)
                return redis_measure(client, lambda: fill(app, task, n), n)
            finally:
                client.delete(queue)
                app.close()

        return scenario

    def drained(results: bool, acks_late: bool) -> Callable[[], dict[str, Any]]:
        def scenario() -> dict[str, Any]:
            queue = f"ops.{uuid.uuid4().hex[:6]}"
            config = BenchConfig(
                broker=broker, backend=backend if results else None, results=results,
                acks_late=acks_late, queue=queue, counter=counter,
            )  # fmt: skip
            queue_tasks(config, n)
            out = redis_measure(client, lambda: drain([config], counter, n), n)
            client.delete(queue)
            redis.Redis(port=port, db=1).flushdb()  # this run's results, in our own server
            return out

        return scenario

    return {
        "`.delay()`, results off": client_side(False, "delay"),
        "`.delay()`, results on": client_side(True, "delay"),
        f"`send_many` ({BATCH} a call), results off": client_side(False, "send_many"),
        "drain, results off, early ack": drained(False, False),
        "drain, results on, early ack": drained(True, False),
        "drain, results off, acks_late": drained(False, True),
        "drain, results on, acks_late": drained(True, True),
    }


#: Commands the claim script (RPOP, HSET, ZADD, SADD, EXPIRE) and the result store script (GET,
#: SETEX, PUBLISH) run inside their EVALSHA: commandstats counts them too, and EVALSHA's time
#: includes theirs.
IN_SCRIPTS = {"rpop", "hset", "zadd", "sadd", "expire", "get", "setex", "publish"}
#: Below this many calls per task a command is the worker's boot or idle polling, summed as other.
MINOR = 0.01


def redis_table(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = [
        "| scenario | commands sent per task | run inside those scripts, per task "
        "| other (boot, idle polls) | Redis CPU µs / task | µs per call inside Redis "
        "| bytes in+out / task | rate here (tasks/s) |",
        "|---|---|---|---:|---:|---|---:|---:|",
    ]
    for name, runs in results.items():
        names = sorted({c for r in runs for c in r["commands"]}, key=lambda c: c.lower())
        med = {c: statistics.median(r["commands"].get(c, 0.0) for r in runs) for c in names}
        major = [c for c in names if med[c] >= MINOR]
        usec = {
            c: statistics.median(r["usec_per_call"][c] for r in runs if c in r["usec_per_call"])
            for c in major
        }
        inner = [c for c in major if c in IN_SCRIPTS and "evalsha" in major]
        sent = [c for c in major if c not in inner]
        other = sum(med[c] for c in names if c not in major)
        cpu = spread([r["server_cpu_us_per_task"] for r in runs])
        rate = spread([r["tasks_per_s"] for r in runs])
        cells = [
            ", ".join(f"{c.upper()} {med[c]:.2f}" for c in sent),
            ", ".join(f"{c.upper()} {med[c]:.2f}" for c in inner) or "-",
            f"{other:.3f}",
            fmt(cpu, 1),
            ", ".join(f"{c.upper()} {usec[c]:.1f}" for c in sent),
            f"{statistics.median(r['net_bytes_per_task'] for r in runs):,.0f}",
            fmt(rate, 0),
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def claim_script() -> str:
    """The worker's claim script, as the Rust consumer sends it (rust/.../redis/scripts.rs)."""
    source = (ROOT / "rust/fastq-core/src/redis/scripts.rs").read_text()
    found = re.search(r'pub const CLAIM: &str = r#"(.*?)"#;', source, re.S)
    if not found:
        raise RuntimeError("CLAIM not found in scripts.rs")
    return found.group(1)


def claim_parts() -> dict[str, str]:
    """The claim script without its parts, to tell their costs apart: reading the delivery tag,
    exchange and routing key out of the envelope (plain searches and anchored matches), and
    recording the claimed messages as unacknowledged (one HSET of the envelopes, ZADD, SADD)."""
    full = claim_script()
    parse = "local tag, ex, rk = fields(raw)"
    record = re.search(
        r"  redis\.call\('HSET', unpack\(hset\)\).*?redis\.call\('SADD', unpack\(sadd\)\)",
        full,
        re.S,
    )
    if parse not in full or not record:
        raise RuntimeError("the claim script changed: update claim_parts()")
    unique_tag = (
        "local tag, ex, rk = now .. ':' .. k .. ':' .. #out .. ':' .. math.random(), "
        """'""', '""'"""
    )
    no_record = full.replace(record.group(0), "")
    return {
        "without the tag parse": full.replace(parse, unique_tag),
        "without the record": no_record,
        "pop only (neither)": no_record.replace(parse, unique_tag),
    }


def claim_and_ack(
    port: int, n: int, want: int, pipeline: int, script: str | None = None
) -> tuple[float, float]:
    """Redis CPU µs per message to claim ``n`` real task messages ``want`` a call, and to ack
    them one tag a MULTI/EXEC, ``pipeline`` calls a round trip."""
    client = redis.Redis(port=port)
    queue = f"claim.{uuid.uuid4().hex[:6]}"
    app, task = make_app(f"redis://127.0.0.1:{port}/0", None, queue=queue)
    fill(app, task, n)
    app.close()
    sha = client.script_load(script or claim_script())
    keys = [queue, "unacked", "unacked_index", f"consumer.{queue}", "malformed"]
    _, cpu0, _ = redis_snapshot(client)
    tags: list[bytes] = []
    while len(tags) < n:
        pipe = client.pipeline(transaction=False)
        for _ in range(pipeline):
            pipe.evalsha(sha, len(keys), *keys, want, int(time.time()), 100, 3600)
        for claimed, _refused, _visited in pipe.execute():
            tags += [tag for _, tag, _ in claimed]
    _, cpu1, _ = redis_snapshot(client)
    for start in range(0, n, pipeline):
        pipe = client.pipeline(transaction=False)
        for tag in tags[start : start + pipeline]:
            pipe.execute_command("MULTI")
            pipe.hdel("unacked", tag)
            pipe.zrem("unacked_index", tag)
            pipe.srem(f"consumer.{queue}", tag)
            pipe.execute_command("EXEC")
        pipe.execute()
    _, cpu2, _ = redis_snapshot(client)
    client.delete(queue, "unacked", "unacked_index", f"consumer.{queue}")
    return (cpu1 - cpu0) / n * 1e6, (cpu2 - cpu1) / n * 1e6


def redis_benchmark_round(port: int, n: int, claims: int) -> dict[str, tuple[float, float]]:
    """One round: {operation | pipeline: (requests/s or nan, Redis CPU µs per request or
    message)}, for plain commands (redis-benchmark, 10 clients), then the worker's claim script
    and ack transaction on real task messages, then the claim script without its parts."""
    client = redis.Redis(port=port)
    nan = float("nan")
    out: dict[str, tuple[float, float]] = {}
    for test in ("lpush", "rpop", "set"):
        for pipeline in (1, 16):
            _, cpu0, _ = redis_snapshot(client)
            text = subprocess.run(
                ["redis-benchmark", "-p", str(port), "-t", test, "-n", str(n), "-P",
                 str(pipeline), "-q", "-c", "10"],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            _, cpu1, _ = redis_snapshot(client)
            found = re.findall(r"([\d.]+) requests per second", text)
            rps = float(found[-1]) if found else nan
            out[f"redis-benchmark {test.upper()} | {pipeline}"] = (rps, (cpu1 - cpu0) / n * 1e6)
    client.flushall()
    for want, pipeline in ((1, 1), (4, 1), (16, 1), (4, 50)):
        claim, ack = claim_and_ack(port, claims, want, pipeline)
        out[f"claim script, {want} message(s) a call | {pipeline}"] = (nan, claim)
        out[f"ack (MULTI HDEL ZREM SREM EXEC), 1 tag; claims of {want} | {pipeline}"] = (nan, ack)
    for name, script in claim_parts().items():
        claim, _ = claim_and_ack(port, claims, 4, 50, script)
        out[f"claim script {name}, 4 messages a call | 50"] = (nan, claim)
    return out


def redis_benchmark(port: int, n: int, claims: int, rounds: int) -> str:
    runs = [redis_benchmark_round(port, n, claims) for _ in range(rounds)]
    rows = [
        "| operation | pipeline | requests/s (client and server on this machine) "
        "| Redis CPU µs / request or message |",
        "|---|---:|---:|---:|",
    ]
    for name in runs[0]:
        rps = [r[name][0] for r in runs]
        rate = "" if rps[0] != rps[0] else fmt(spread(rps), 0)  # nan: not a redis-benchmark row
        rows.append(f"| {name} | {rate} | {fmt(spread([r[name][1] for r in runs]))} |")
    return "\n".join(rows)


# --- RabbitMQ ----------------------------------------------------------------------------------


def rabbit_ctl(cluster_dir: str, node: int, *args: str) -> str:
    return subprocess.run(
        ["bash", str(ROOT / "scripts/rabbitmq_cluster.sh"), "ctl", cluster_dir, str(node), *args],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip


COUNTERS = (
    "messages_received_total",
    "messages_received_confirm_total",
    "messages_confirmed_total",
    "messages_routed_total",
    "messages_delivered_total",
    "messages_acknowledged_total",
    "messages_redelivered_total",
)


def rabbit_counters(cluster_dir: str, node: int) -> dict[str, int]:
    """The node's global AMQP 0-9-1 message counters, summed over queue types."""
    text = rabbit_ctl(cluster_dir, node, "eval", "rabbit_global_counters:overview().")
    totals = dict.fromkeys(COUNTERS, 0)
    for name, value in re.findall(r"(messages_\w+_total) => (\d+)", text):
        if name in totals:
            totals[name] += int(value)
    return totals


def beam_pids(cluster_dir: str) -> list[int]:
    count = int(Path(cluster_dir, "count").read_text())
    return [int(Path(cluster_dir, f"n{i}", "node.pid").read_text()) for i in range(1, count + 1)]


def beam_cpu(cluster_dir: str) -> float:
    """CPU seconds of every node of the cluster (the Erlang VMs), summed."""
    return sum(proc_cpu(pid) for pid in beam_pids(cluster_dir))


def rabbit_measure(
    cluster_dir: str, action: Callable[[], Any], n: int, settle: Callable[[], Any] = lambda: None
) -> dict[str, Any]:
    """Runs ``action`` (timed), then ``settle`` (untimed: until the broker has done the work the
    action handed it, e.g. unconfirmed publishes still in its buffers), between two readings of
    the counters and the VMs' CPU."""
    count = int(Path(cluster_dir, "count").read_text())
    before = [rabbit_counters(cluster_dir, i) for i in range(1, count + 1)]
    cpu0 = beam_cpu(cluster_dir)
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    settle()
    cpu1 = beam_cpu(cluster_dir)
    after = [rabbit_counters(cluster_dir, i) for i in range(1, count + 1)]
    per_task = {
        c.removeprefix("messages_").removesuffix("_total"): sum(
            a[c] - b[c] for a, b in zip(after, before, strict=True)
        )
        / n
        for c in COUNTERS
    }
    return {
        "messages": per_task,
        "server_cpu_us_per_task": (cpu1 - cpu0) / n * 1e6,
        "tasks_per_s": n / seconds,
    }


def node_url(cluster_dir: str, node: int) -> str:
    port = Path(cluster_dir, f"n{node}", "port").read_text().strip()
    return f"amqp://guest:guest@127.0.0.1:{port}//"


def rabbit_scenarios(
    cluster_dir: str, counter: str, n: int, n_delay: int
) -> dict[str, Callable[[], dict[str, Any]]]:
    url = node_url(cluster_dir, 1)

    def client_side(confirms: bool, how: str) -> Callable[[], dict[str, Any]]:
        count = n_delay if how == "delay" and confirms else n  # one confirm a round trip

        def scenario() -> dict[str, Any]:
            queue = f"ops.{uuid.uuid4().hex[:6]}"
            app, task = make_app(url, None, queue=queue)
            app.conf.broker_confirm_publish = confirms
            fill(app, task, 100)

            def settle() -> None:
                while queue_depth(url, queue) < 100 + count:
                    time.sleep(0.01)

            try:
                if how == "delay":
                    action = lambda: delay_loop(app, task, count)  # noqa: E731
                else:
                    action = lambda: fill(app, task, count)  # noqa: E731
                out = rabbit_measure(cluster_dir, action, count, settle)
            finally:
                app.close()
                delete_queue(url, queue)
            return out

        return scenario

    def drained(acks_late: bool) -> Callable[[], dict[str, Any]]:
        def scenario() -> dict[str, Any]:
            queue = f"ops.{uuid.uuid4().hex[:6]}"
            config = BenchConfig(broker=url, acks_late=acks_late, queue=queue, counter=counter)
            queue_tasks(config, n)
            out = rabbit_measure(cluster_dir, lambda: drain([config], counter, n), n)
            delete_queue(url, queue)
            return out

        return scenario

    return {
        "`.delay()`, confirms on (default)": client_side(True, "delay"),
        "`.delay()`, confirms off": client_side(False, "delay"),
        f"`send_many` ({BATCH} a call), confirms on": client_side(True, "send_many"),
        f"`send_many` ({BATCH} a call), confirms off": client_side(False, "send_many"),
        "drain, results off, early ack": drained(False),
        "drain, results off, acks_late": drained(True),
    }


def rabbit_table(results: dict[str, list[dict[str, Any]]]) -> str:
    short = ("received", "confirmed", "routed", "delivered", "acknowledged", "redelivered")
    rows = [
        "| scenario | "
        + " | ".join(f"{s} / task" for s in short)
        + " | RabbitMQ CPU µs / task | rate here (tasks/s) |",
        "|---|" + "---:|" * (len(short) + 2),
    ]
    for name, runs in results.items():
        cells = [f"{statistics.median(r['messages'][s] for r in runs):.2f}" for s in short]
        cpu = spread([r["server_cpu_us_per_task"] for r in runs])
        rate = spread([r["tasks_per_s"] for r in runs])
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {fmt(cpu, 1)} | {fmt(rate, 0)} |")
    return "\n".join(rows)


# --- main --------------------------------------------------------------------------------------


def run_rounds(
    scenarios: dict[str, Callable[[], dict[str, Any]]], rounds: int
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in scenarios}
    for r in range(rounds):
        for name, scenario in scenarios.items():
            out = scenario()
            results[name].append(out)
            print(
                f"round {r + 1} {name}: {out.get('commands_per_task', '')} "
                f"cpu {out['server_cpu_us_per_task']:.1f} µs/task, {out['tasks_per_s']:,.0f}/s",
                flush=True,
            )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("broker", choices=["redis", "rabbitmq", "redis-benchmark"])
    parser.add_argument("--port", type=int, default=7400, help="redis: its own redis-server")
    parser.add_argument("--cluster-dir", help="rabbitmq: DIR of scripts/rabbitmq_cluster.sh")
    parser.add_argument("--counter", help="rabbitmq: a Redis URL for the completion counter")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument(
        "--delay-tasks", type=int, default=3_000, help="RabbitMQ: .delay() with confirms"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # servers and workers stopped
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    if args.broker == "rabbitmq":
        if not args.cluster_dir or not args.counter:
            parser.error("rabbitmq needs --cluster-dir and --counter")
        scenarios = rabbit_scenarios(args.cluster_dir, args.counter, args.tasks, args.delay_tasks)
        results = run_rounds(scenarios, args.rounds)
        print(rabbit_table(results))
    else:
        start_redis(args.port)
        try:
            if args.broker == "redis-benchmark":
                print(redis_benchmark(args.port, args.tasks * 10, args.tasks, args.rounds))
                results = {}
            else:
                start_redis(args.port + 1)
                counter = f"redis://127.0.0.1:{args.port + 1}/0"
                try:
                    results = run_rounds(
                        redis_scenarios(args.port, counter, args.tasks), args.rounds
                    )
                finally:
                    stop_redis(args.port + 1)
                print(redis_table(results))
        finally:
            stop_redis(args.port)
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
