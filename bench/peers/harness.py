"""fastq against the other Python task queues, side by side on one Redis (issue 17's peer harness).

Run with the repo's Python; each peer's client and workers run with that peer's own virtualenv
(``install.sh`` makes them). Usually started by ``bash bench/peers/run.sh`` or
``bash bench/run_all.sh --only peers``.

For each round (3 by default), every system in turn (interleaved, so drift in the machine's load
spreads over all of them), with results off and then on (where the system has results), for each
way of counting completions (one ``INCR`` per task, or a buffered per-process counter):
1. batch enqueue of N tasks through the system's batch API, timed, then flushed (results off,
   ``INCR`` trial only);
2. N tasks sent one at a time, timed, with no worker running;
3. the 2 worker processes start; the drain lasts from the first task's start until the last
   task's end (and, results on, until every result is stored); the workers' CPU time comes from
   /proc (the whole process tree), counted from the first task's start;
4. results on, ``INCR`` trial: latency of tasks sent one at a time, each result awaited;
5. the workers stop (SIGTERM to their process group, SIGKILL after 10 s), the databases are
   flushed.
Then the broker's own ceiling for the same patterns (``ceiling.py``). The harness uses databases
0-2 of its Redis and flushes them: by default it starts a redis-server of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(HERE.parent)]

import ceiling  # noqa: E402  (bench/peers is not a package)
import procstat  # noqa: E402
import report  # noqa: E402

#: Every system, in the order of the table; fastq first (the ratios are against it).
SYSTEMS = [
    "fastq",
    "fastq_pinned",
    "celery",
    "dramatiq",
    "huey",
    "rq",
    "arq",
    "potatoq",
    "taskito",
    "ardiq",
    "mayu",
]
CACHE = Path(os.environ.get("FASTQ_PEERS_CACHE", Path.home() / ".cache/fastq/peers"))
MODES = ("incr", "buffered")
POLL = 0.01


class TrialError(RuntimeError):
    """A trial that produced no figures (its message says why)."""


@dataclass
class System:
    name: str
    python: str
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def python_of(name: str) -> tuple[str, str | None]:
    """The interpreter that runs this system, or why there is none."""
    if name in ("fastq", "fastq_pinned"):
        exe = ROOT / ".venv/bin/python"
        return str(exe), None if exe.exists() else "the repo's .venv is missing (scripts/setup.sh)"
    venv = CACHE / name
    failed = venv / "FAILED"
    if failed.exists():
        return "", "install failed: " + " ".join(failed.read_text().split())[:300]
    exe = venv / "bin/python"
    if not exe.exists():
        return "", f"not installed (bash bench/peers/install.sh {name})"
    return str(exe), None


class Bench:
    def __init__(self, url: str, tasks: int, latency_tasks: int, timeout: float) -> None:
        self.base = url.rstrip("/")
        self.tasks = tasks
        self.latency_tasks = latency_tasks
        self.timeout = timeout
        self.broker_url = f"{self.base}/0"
        self.counter_url = f"{self.base}/1"
        self.backend_url = f"{self.base}/2"
        self.dbs = [redis.Redis.from_url(f"{self.base}/{db}") for db in (0, 1, 2)]

    # -- running a peer's client ---------------------------------------------------------------
    def env(self, mode: str, results: bool, run: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
            "PEERS_BROKER": self.broker_url,
            "PEERS_BACKEND": self.backend_url,
            "PEERS_COUNTER": self.counter_url,
            "PEERS_RESULTS": "1" if results else "0",
            "PEERS_MODE": mode,
            "PEERS_RUN": run,
            "PEERS_TARGET": str(self.tasks),
            "PEERS_QUEUE": "bench",
        }

    def drive(self, system: System, action: str, n: int, env: dict[str, str]) -> dict[str, Any]:
        argv = [system.python, str(HERE / "driver.py"), system.name, action, str(n)]
        limit = self.timeout + n / 20  # a client slower than 20 tasks/s has failed
        try:
            proc = subprocess.run(
                argv, env=env, cwd=HERE, capture_output=True, text=True, timeout=limit
            )
        except subprocess.TimeoutExpired as exc:
            raise TrialError(f"{action}: no answer in {limit:.0f}s") from exc
        lines = proc.stdout.strip().splitlines()
        try:
            out: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            out = {}
        if "error" in out or not out:
            why = out.get("error") or (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise TrialError(f"{action}: {why}")
        return out

    # -- one trial -----------------------------------------------------------------------------
    def flush(self) -> None:
        for db in self.dbs:
            db.flushdb()

    def trial(self, system: System, mode: str, results: bool) -> dict[str, Any]:
        """One drain of N tasks (plus the enqueue figures measured on the way)."""
        run = f"peers.{uuid.uuid4().hex[:10]}"
        env = self.env(mode, results, run)
        out: dict[str, Any] = {"mode": mode, "results": results}
        self.flush()
        if mode == "incr" and not results and system.info.get("batch"):
            out["batch_per_s"] = (
                self.tasks / self.drive(system, "batch", self.tasks, env)["seconds"]
            )
            self.flush()
        out["enqueue_per_s"] = (
            self.tasks / self.drive(system, "enqueue", self.tasks, env)["seconds"]
        )
        workers = procstat.WorkerTree(
            system.info["workers"][int(results)], env, HERE, f"{system.name}-{mode}"
        )
        try:
            out.update(self.drain(system, workers, run, results))
            if results and mode == "incr":
                ms = self.drive(system, "latency", self.latency_tasks, env)["ms"]
                cuts = statistics.quantiles(ms, n=100, method="inclusive")
                out["latency_ms"] = {"n": len(ms), "p50": cuts[49], "p99": cuts[98]}
        except TrialError as exc:
            raise TrialError(f"{exc}\n{workers.log_tail()}") from exc
        finally:
            workers.stop()
        workers.remove_logs()
        self.flush()
        return out

    def drain(
        self, system: System, workers: procstat.WorkerTree, run: str, results: bool
    ) -> dict[str, Any]:
        n, counter = self.tasks, self.dbs[1]
        done_key, first_key, last_key = f"{run}.done", f"{run}.first", f"{run}.last"
        last_done, last_change = -1, time.time()
        while True:
            workers.sample()
            done = int(counter.get(done_key) or 0)
            if done >= n:
                break
            if workers.exited():
                raise TrialError(f"a worker exited after {done}/{n} tasks")
            now = time.time()
            if done != last_done:
                last_done, last_change = done, now
            elif now - last_change > self.timeout:
                raise TrialError(f"stalled at {done}/{n} tasks for {self.timeout:.0f}s")
            time.sleep(POLL)
        # The INCR that reached N is followed by its end-time write: wait for that to land.
        deadline = time.time() + 5
        while not (ends := counter.hgetall(last_key)) and time.time() < deadline:
            time.sleep(POLL)
        if not ends:
            raise TrialError("the last task's end time was never written")
        end = max(float(v) for v in ends.values())  # type: ignore[union-attr]
        if results:
            end = max(end, self.wait_stored(system.info["stored"], workers))
        workers.sample()
        first = min(float(v) for v in counter.hgetall(first_key).values())
        cpu = workers.cpu_since(first)
        return {
            "drain_per_s": n / (end - first),
            "from_launch_per_s": n / (end - workers.started_at),
            "cpu_s_per_1k": cpu / n * 1000 if cpu is not None else None,
        }

    def wait_stored(self, spec: dict[str, Any], workers: procstat.WorkerTree) -> float:
        """When the last of N results was stored (the first time all N are seen)."""
        conn = redis.Redis.from_url(spec["url"])
        deadline = time.time() + self.timeout
        try:
            while True:
                workers.sample()
                count = stored_count(conn, spec)
                if count >= self.tasks:
                    return time.time()
                if time.time() > deadline:
                    raise TrialError(f"only {count}/{self.tasks} results stored")
                # A SCAN walks the whole database: not so often that it loads the server.
                time.sleep(POLL if spec["how"] != "scan" else 5 * POLL)
        finally:
            conn.close()


def stored_count(conn: redis.Redis, spec: dict[str, Any]) -> int:
    how = spec["how"]
    if how == "dbsize":
        return int(conn.dbsize())  # type: ignore[arg-type]
    if how == "scard":
        return int(conn.scard(spec["key"]))  # type: ignore[arg-type]
    if how == "hlen":
        return int(conn.hlen(spec["key"]))  # type: ignore[arg-type]
    if how == "scan":
        return sum(1 for _ in conn.scan_iter(match=spec["match"], count=5000))
    raise ValueError(f"unknown result store {how!r}")


# -- the whole benchmark ---------------------------------------------------------------------------
def start_redis(port: int) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed; pass --redis URL")
    workdir = tempfile.mkdtemp(prefix="fastq-peers-redis-")
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"redis-server on port {port} did not start")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(options: argparse.Namespace) -> dict[str, Any]:
    load_start = list(os.getloadavg())
    bench = Bench(options.redis, options.tasks, options.latency_tasks, options.timeout)
    systems = []
    for name in options.systems:
        exe, error = python_of(name)
        system = System(name, exe, error=error)
        if error is None:
            try:
                system.info = bench.drive(system, "info", 0, bench.env("incr", False, "info"))
            except TrialError as exc:
                system.error = f"adapter failed: {exc}"
        systems.append(system)
        print(f"{name}: {system.error or system.info['version']}", file=sys.stderr, flush=True)
    trials: dict[str, list[dict[str, Any]]] = {s.name: [] for s in systems}
    ceilings: list[dict[str, float]] = []
    steal: list[float] = []
    for round_no in range(1, options.rounds + 1):
        before = cpu_times()
        # Every other round in reverse: no system always goes first (or last) in a round.
        for system in systems if round_no % 2 else systems[::-1]:
            if system.error:
                continue
            for results in (False, True) if system.info["results"] else (False,):
                for mode in MODES:
                    on = "on" if results else "off"
                    print(f"round {round_no} {system.name} {mode} results {on}", file=sys.stderr)
                    try:
                        out = bench.trial(system, mode, results)
                    except Exception as exc:  # a failed trial is reported, never dropped
                        out = {"mode": mode, "results": results, "error": str(exc)[:2000]}
                        print(f"  failed: {str(exc).splitlines()[0]}", file=sys.stderr)
                        bench.flush()
                    trials[system.name].append({"round": round_no, **out})
        ceilings.append(ceiling.measure(bench.broker_url, options.tasks))
        steal.append(steal_share(before, cpu_times()))
    bench.flush()
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tasks": options.tasks,
        "rounds": options.rounds,
        "latency_tasks": options.latency_tasks,
        "machine": {
            "nproc": os.cpu_count(),
            "redis": redis.Redis.from_url(options.redis).info().get("redis_version"),
            "loadavg_start": load_start,
            "loadavg_end": list(os.getloadavg()),
            "steal_by_round": steal,
        },
        "systems": [
            {"name": s.name, "error": s.error, **s.info, "trials": trials[s.name]} for s in systems
        ],
        "ceiling": ceilings,
    }


def cpu_times() -> list[int]:
    """The machine's CPU time so far by kind (/proc/stat's first line: user, nice, system,
    idle, iowait, irq, softirq, steal, ...); empty where there is no /proc."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return []


def steal_share(before: list[int], after: list[int]) -> float:
    """Of the CPU time between two readings, the share stolen by the host (field 8)."""
    if len(before) < 8 or len(after) < 8:
        return 0.0
    total = sum(after[:8]) - sum(before[:8])
    return (after[7] - before[7]) / total if total > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-tasks", type=int, default=500)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument(
        "--redis",
        help="redis://host:port of a server whose dbs 0-2 may be "
        "flushed (default: start a redis-server of its own)",
    )
    parser.add_argument("--port", type=int, help="port for the redis-server it starts")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds without progress")
    parser.add_argument("--json", default=str(ROOT / "bench/data/peers.json"))
    parser.add_argument("--results-md", default=str(ROOT / "bench/RESULTS.md"))
    parser.add_argument("--plot", default=str(ROOT / "bench/peers.png"))
    parser.add_argument("--command", default="bash bench/peers/run.sh", help="shown in RESULTS.md")
    options = parser.parse_args(argv)
    options.systems = [s for s in options.systems.split(",") if s]
    unknown = set(options.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    server = None
    if not options.redis:
        server, options.redis = start_redis(options.port or free_port())
    try:
        data = run(options)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(10)
    Path(options.json).parent.mkdir(parents=True, exist_ok=True)
    Path(options.json).write_text(json.dumps(data, indent=1) + "\n")
    report.write(data, Path(options.results_md), Path(options.plot), options.command)
    print(f"wrote {options.json}, {options.results_md}, {options.plot}", file=sys.stderr)
    failed = any(s["error"] or any("error" in t for t in s["trials"]) for s in data["systems"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
