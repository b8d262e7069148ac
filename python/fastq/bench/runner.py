"""One benchmark run (one system, one set of parameters), and a whole benchmark of many.

A run, in order, so that no measurement disturbs another:
1. batch enqueue (fastq's ``send_many``), timed, then purged;
2. ``.delay()`` enqueue of N tasks from one client, timed, with no worker running;
3. the workers start; the drain lasts from their launch until every task has run (and, with
   results on, every result is stored); CPU and RSS of the worker tree are sampled meanwhile;
4. with results on: a smaller run of tasks sent one at a time, each result awaited (latency);
5. the workers stop, and the run's keys (counter, results it created) are deleted.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import redis

from fastq.bench import ceiling, machine, probe
from fastq.bench.apps.fastq_app import make_app
from fastq.bench.clients import client, require_celery
from fastq.bench.progress import DrainProgress
from fastq.bench.spec import QUEUE, BenchConfig
from fastq.bench.workers import WorkerGroup, WorkerStartError
from fastq.urls import redact

SCHEMA = 1
POLL = 0.05
#: Tasks sent and awaited before the timed latency run (connections, imports, first fetch).
LATENCY_WARMUP = 10


class BenchError(RuntimeError):
    """A run that cannot produce figures (its message says why)."""


@dataclass
class Latency:
    n: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class RunResult:
    """One system on one set of parameters. Figures are None when not measured or on error."""

    system: str
    params: dict[str, Any]
    enqueue_per_s: float | None = None
    batch_enqueue_per_s: float | None = None
    message_bytes: int | None = None
    drain_s: float | None = None
    drain_per_s: float | None = None
    startup_s: float | None = None
    steady_per_s: float | None = None
    latency: Latency | None = None
    cpu_s: float | None = None
    cpu_s_per_1000: float | None = None
    peak_rss_mib: float | None = None
    pct_of_ceiling: dict[str, float] | None = None
    loadavg_before: list[float] = field(default_factory=list)
    loadavg_after: list[float] = field(default_factory=list)
    worker_command: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Run:
    """Measures one system on one config; ``execute()`` never raises for a failed run."""

    def __init__(self, system: str, config: BenchConfig, show_progress: bool) -> None:
        self.system = system
        self.config = config
        self.show_progress = show_progress
        self.run_id = uuid.uuid4().hex[:12]
        self.payload = "x" * config.payload
        self.counter = redis.Redis.from_url(config.counter_url(), socket_connect_timeout=5)
        self.keys = probe.keys(self.run_id)
        self.result = RunResult(system, config.params())
        self.sent_ids: list[str] = []
        self.admin, _ = make_app(config.broker, None)

    def execute(self) -> RunResult:
        self.result.loadavg_before = machine.loadavg()
        try:
            self._measure()
        except (WorkerStartError, BenchError) as exc:
            self._fail(str(exc))
        except Exception as exc:  # a broker error, a refused connection: a failed run
            self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            self._cleanup()
        self.result.loadavg_after = machine.loadavg()
        return self.result

    def _fail(self, error: str) -> None:
        """A failed run keeps no figure, not even those measured before the failure."""
        failed = RunResult(self.system, self.result.params, error=error)
        failed.loadavg_before = self.result.loadavg_before
        failed.worker_command = self.result.worker_command
        self.result = failed

    # -- the phases ------------------------------------------------------------------------------
    def _measure(self) -> None:
        config = self.config
        self._purge()
        if self.system == "fastq":
            self.result.batch_enqueue_per_s = self._batch_enqueue()
            self._purge()
        self.result.enqueue_per_s = self._delay_enqueue()
        self.result.message_bytes = self._message_bytes()
        group = WorkerGroup(self.system, config, self.run_id)
        self.result.worker_command = " ".join(group.argv)
        try:
            self._drain(group)
            if config.results:
                self.result.latency = self._latency(group)
        finally:
            group.stop()
        group.remove_log()

    def _batch_enqueue(self) -> float:
        sender = client(self.system, self.config)
        try:
            n, size = self.config.tasks, self.config.batch_size
            start = time.perf_counter()
            for offset in range(0, n, size):
                sender.send_batch(self.payload, self.config.work, min(size, n - offset))
            return n / (time.perf_counter() - start)
        finally:
            sender.close()

    def _delay_enqueue(self) -> float:
        sender = client(self.system, self.config)
        try:
            ids = self.sent_ids
            payload, work = self.payload, self.config.work
            start = time.perf_counter()
            for _ in range(self.config.tasks):
                ids.append(sender.delay(payload, work).id)
            return self.config.tasks / (time.perf_counter() - start)
        finally:
            sender.close()

    def _message_bytes(self) -> int | None:
        if not self.config.broker.startswith(("redis://", "rediss://")):
            return None
        conn = redis.Redis.from_url(self.config.broker)
        try:
            raw: bytes | None = conn.lindex(QUEUE, 0)  # type: ignore[assignment]
        finally:
            conn.close()
        return len(raw) if raw is not None else None

    def _drain(self, group: WorkerGroup) -> None:
        config, n = self.config, self.config.tasks
        label = f"{self.system} c={config.concurrency} p={config.prefetch}"
        last_done, last_progress = 0, time.time()
        with DrainProgress(label, n, self.show_progress) as bar:
            while True:
                group.sample()
                done = int(self.counter.get(self.keys["done"]) or 0)  # type: ignore[arg-type]
                now = time.time()
                bar.update(done, self._waiting(), now - group.started_at)
                if done >= n:
                    break
                code = group.exited()
                if code is not None:
                    raise group.failure(f"exited with code {code} after {done}/{n} tasks ran")
                if done != last_done:
                    last_done, last_progress = done, now
                elif now - last_progress > config.start_timeout:
                    what = "ran no task" if done == 0 else f"stalled at {done}/{n} tasks"
                    raise group.failure(f"{what} in {config.start_timeout:.0f}s")
                if now - group.started_at > config.drain_timeout:
                    raise group.failure(f"ran {done}/{n} tasks in {config.drain_timeout:.0f}s")
                time.sleep(POLL)
        first = min(self._times("first"), default=group.started_at)
        end = max(self._times("last"), default=time.time())
        if config.results:
            end = max(end, self._results_stored(self.sent_ids))
        group.sample()
        r = self.result
        r.drain_s = end - group.started_at
        r.drain_per_s = n / r.drain_s
        r.startup_s = first - group.started_at
        r.steady_per_s = n / (end - first) if end > first else None
        if group.usage.samples:
            r.cpu_s = group.usage.cpu
            r.cpu_s_per_1000 = (group.usage.cpu - group.usage.cpu_at(first)) / n * 1000
            r.peak_rss_mib = group.usage.peak_rss / 2**20

    def _waiting(self) -> int | None:
        try:
            return self.admin.broker.queue_length(QUEUE)
        except Exception:
            return None

    def _times(self, which: str) -> list[float]:
        values: dict[bytes, bytes] = self.counter.hgetall(self.keys[which])  # type: ignore[assignment]
        return [float(v) for v in values.values()]

    def _results_stored(self, ids: list[str], timeout: float = 60.0) -> float:
        """Waits until every task's result is stored; returns when the last one was (its
        ``date_done``, or when it was first seen if that cannot be read)."""
        assert self.config.backend
        conn = redis.Redis.from_url(self.config.backend)
        keys = [f"celery-task-meta-{i}" for i in ids]
        deadline = time.monotonic() + timeout
        latest = 0.0
        try:
            while keys:
                seen_at = time.time()
                values = _mget(conn, keys)
                missing = [k for k, v in zip(keys, values, strict=True) if v is None]
                for value in values:
                    if value is not None:
                        latest = max(latest, _date_done(value, seen_at))
                if missing and time.monotonic() > deadline:
                    raise BenchError(
                        f"{len(missing)} result(s) not stored {timeout:.0f}s after their tasks ran"
                    )
                keys = missing
                if keys:
                    time.sleep(0.005)
        finally:
            conn.close()
        return latest

    def _latency(self, group: WorkerGroup) -> Latency:
        sender = client(self.system, self.config)
        samples: list[float] = []
        try:
            for i in range(LATENCY_WARMUP + self.config.latency_tasks):
                if group.exited() is not None:
                    raise group.failure("exited during the latency run")
                start = time.perf_counter()
                handle = sender.delay(self.payload, self.config.work)
                self.sent_ids.append(handle.id)
                handle.get(timeout=30)
                if i >= LATENCY_WARMUP:
                    samples.append((time.perf_counter() - start) * 1000)
        finally:
            sender.close()
        return _latency(samples)

    # -- cleaning up -----------------------------------------------------------------------------
    def _purge(self) -> None:
        self.admin.broker.purge(QUEUE)

    def _cleanup(self) -> None:
        try:
            self._purge()
            self.counter.delete(*self.keys.values())
            if self.config.results and self.config.backend and self.sent_ids:
                conn = redis.Redis.from_url(self.config.backend)
                for i in range(0, len(self.sent_ids), 1000):
                    conn.delete(*(f"celery-task-meta-{t}" for t in self.sent_ids[i : i + 1000]))
                conn.close()
        except Exception as exc:
            print(f"fastq bench: cleanup after the run failed: {exc}", file=sys.stderr)
        finally:
            self.counter.close()
            self.admin.close()


def _mget(conn: redis.Redis, keys: list[str]) -> list[bytes | None]:
    values: list[bytes | None] = []
    for i in range(0, len(keys), 1000):
        values.extend(conn.mget(keys[i : i + 1000]))  # type: ignore[arg-type]
    return values


def _date_done(raw: bytes, fallback: float) -> float:
    import json

    try:
        text = json.loads(raw).get("date_done")
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, TypeError, AttributeError):
        return fallback


def _latency(samples: list[float]) -> Latency:
    if len(samples) < 2:
        raise BenchError("the latency run needs at least 2 tasks (--latency-tasks)")
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return Latency(len(samples), cuts[49], cuts[94], cuts[98], max(samples))


# -- a whole benchmark -----------------------------------------------------------------------------
def ratios(runs: list[RunResult]) -> list[dict[str, Any]]:
    """fastq against Celery on each parameter point: how many times better fastq is (> 1)."""
    out = []
    by_point: dict[str, dict[str, RunResult]] = {}
    for run in runs:
        by_point.setdefault(repr(sorted(run.params.items())), {})[run.system] = run
    for pair in by_point.values():
        fq, cel = pair.get("fastq"), pair.get("celery")
        if fq is None or cel is None or fq.error or cel.error:
            continue

        def up(a: float | None, b: float | None) -> float | None:
            return a / b if a and b else None

        out.append(
            {
                "params": fq.params,
                "enqueue": up(fq.enqueue_per_s, cel.enqueue_per_s),
                "batch_enqueue_vs_celery_delay": up(fq.batch_enqueue_per_s, cel.enqueue_per_s),
                "drain": up(fq.drain_per_s, cel.drain_per_s),
                "steady_drain": up(fq.steady_per_s, cel.steady_per_s),
                "latency_p50": up(*_lat(cel, fq, "p50_ms")),
                "latency_p99": up(*_lat(cel, fq, "p99_ms")),
                "cpu_per_task": up(cel.cpu_s_per_1000, fq.cpu_s_per_1000),
                "peak_rss": up(cel.peak_rss_mib, fq.peak_rss_mib),
            }
        )
    return out


def _lat(a: RunResult, b: RunResult, name: str) -> tuple[float | None, float | None]:
    la, lb = a.latency, b.latency
    return (getattr(la, name) if la else None, getattr(lb, name) if lb else None)


def _pct_of_ceiling(run: RunResult, ceil: ceiling.Ceiling | None) -> dict[str, float] | None:
    if ceil is None or run.error:
        return None
    pct: dict[str, float] = {}
    if run.enqueue_per_s:
        pct["enqueue"] = 100 * run.enqueue_per_s / ceil.push_per_s
    if run.batch_enqueue_per_s:
        pct["batch_enqueue"] = 100 * run.batch_enqueue_per_s / ceil.push_per_s
    if run.drain_per_s:
        pct["drain"] = 100 * run.drain_per_s / ceil.pop_per_s
    return pct


def preflight(config: BenchConfig) -> None:
    """Fails fast, with the URL, when a Redis the benchmark needs does not answer."""
    urls = {config.counter_url(), config.broker}
    if config.results and config.backend:
        urls.add(config.backend)
    for url in sorted(urls):
        if not url.startswith(("redis://", "rediss://")):
            continue
        conn = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        try:
            conn.ping()
        except redis.RedisError as exc:
            raise BenchError(f"cannot reach {redact(url)}: {exc}") from exc
        finally:
            conn.close()


def run_bench(
    config: BenchConfig,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Runs every parameter point on every system and returns the report (what ``--json``
    writes). A failed run is in the report with its ``error`` and no figures."""
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    config.validate()
    points = config.points()
    for point in points:
        point.validate()
    if "celery" in config.systems:
        require_celery()
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": None,
        "config": {
            **asdict(config),
            "broker": redact(config.broker),
            "backend": redact(config.backend) if config.backend else None,
        },
        "machine": machine.facts(config.broker),
        "ceiling": None,
        "runs": [],
        "ratios": [],
        "errors": [],
    }
    try:
        preflight(config)
    except BenchError as exc:
        report["errors"].append(str(exc))
        return report
    runs: list[RunResult] = []
    total = len(points) * len(config.systems)
    for point in points:
        for system in config.systems:
            say(f"[{len(runs) + 1}/{total}] {system}: {_describe(point)}")
            result = Run(system, point, show_progress).execute()
            if result.error:
                say(f"  failed: {result.error.splitlines()[0]}")
            runs.append(result)
    sizes = [r.message_bytes for r in runs if r.message_bytes]
    try:
        ceil = ceiling.measure(
            config.broker,
            sizes[0] if sizes else config.payload + 600,
            min(max(config.tasks, 10_000), 100_000),
        )
    except Exception as exc:
        ceil = None
        report["errors"].append(f"ceiling probe failed: {exc}")
    report["ceiling"] = ceil.to_json() if ceil else None
    for r in runs:
        if r.system == "fastq":
            r.pct_of_ceiling = _pct_of_ceiling(r, ceil)
    report["runs"] = [r.to_json() for r in runs]
    report["ratios"] = ratios(runs)
    report["errors"] += [
        f"{r.system} {_describe_params(r.params)}: {r.error}" for r in runs if r.error
    ]
    report["machine"]["loadavg_end"] = machine.loadavg()
    return report


def _describe(config: BenchConfig) -> str:
    return _describe_params(config.params())


def _describe_params(params: dict[str, Any]) -> str:
    return (
        f"{params['tasks']:,} x {params['work']} ({params['payload']} B), {params['pool']} "
        f"x{params['concurrency']}, prefetch {params['prefetch']}, "
        f"results {'on' if params['results'] else 'off'}"
        + (", acks late" if params["acks_late"] else "")
    )


def exit_code(report: dict[str, Any]) -> int:
    return 1 if report["errors"] else 0
