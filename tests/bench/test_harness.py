"""The benchmark harness on small N: it runs end to end, its report has every field, and a run
that cannot produce figures reports an error instead. No test here asserts a speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastq.bench import BenchConfig, run_bench
from fastq.bench.spec import parse_sweep, parse_work
from fastq.errors import ConfigurationError

from tests.conftest import REDIS_HOST

#: Databases the benchmark tests use (their keys are per run and deleted afterwards).
BROKER = f"{REDIS_HOST}/{os.environ.get('FASTQ_BENCH_TEST_BROKER_DB', '6')}"
BACKEND = f"{REDIS_HOST}/{os.environ.get('FASTQ_BENCH_TEST_BACKEND_DB', '7')}"
#: A queue of the tests' own, so a benchmark running on the same databases is not disturbed.
QUEUE = f"fastq.bench.test-{os.getpid()}"
#: A port nothing listens on.
UNREACHABLE = "redis://127.0.0.1:6390/6"

RUN_FIELDS = {
    "system",
    "params",
    "run_id",
    "enqueue_per_s",
    "batch_enqueue_per_s",
    "message_bytes",
    "drain_s",
    "drain_per_s",
    "startup_s",
    "steady_per_s",
    "latency",
    "cpu_s",
    "cpu_s_per_1000",
    "peak_rss_mib",
    "pct_of_ceiling",
    "loadavg_before",
    "loadavg_after",
    "worker_command",
    "error",
}
#: Every figure a successful run has (batch enqueue and % of ceiling are fastq's only).
FIGURES = RUN_FIELDS - {
    "system",
    "params",
    "run_id",
    "batch_enqueue_per_s",
    "pct_of_ceiling",
    "loadavg_before",
    "loadavg_after",
    "worker_command",
    "error",
}
REPORT_FIELDS = {
    "schema",
    "created",
    "command",
    "config",
    "machine",
    "ceiling",
    "runs",
    "ratios",
    "errors",
}
MACHINE_FIELDS = {
    "nproc",
    "cpu",
    "ram_gib",
    "os",
    "python",
    "rustc",
    "redis",
    "fastq",
    "celery",
    "loadavg",
    "loadavg_end",
}
RATIO_FIELDS = {
    "params",
    "enqueue",
    "batch_enqueue_vs_celery_delay",
    "drain",
    "steady_drain",
    "latency_p50",
    "latency_p99",
    "cpu_per_task",
    "peak_rss",
}

pytestmark = pytest.mark.redis


def fastq_bench(*args: str, cwd: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "fastq.cli", "bench", "--quiet", "--queue", QUEUE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc.returncode, proc.stdout + proc.stderr


def small(**overrides: Any) -> BenchConfig:
    settings: dict[str, Any] = {
        "broker": BROKER,
        "backend": BACKEND,
        "queue": QUEUE,
        "tasks": 200,
        "latency_tasks": 10,
        "batch_size": 50,
        "start_timeout": 20.0,
        "drain_timeout": 120.0,
    }
    return BenchConfig(**{**settings, **overrides})


# -- options ---------------------------------------------------------------------------------------
def test_work_specs() -> None:
    assert parse_work("noop") == ("noop", 0.0)
    assert parse_work("sleep:5") == ("sleep", 0.005)
    assert parse_work("cpu:0.5") == ("cpu", 0.0005)
    for bad in ("sleep", "cpu:x", "spin:3", "noop:1", "sleep:-1"):
        with pytest.raises(ConfigurationError):
            parse_work(bad)


def test_sweep_makes_every_combination() -> None:
    sweep = parse_sweep(["concurrency=1,2", "prefetch=1,4,16", "results=off,on"])
    assert sweep == {"concurrency": [1, 2], "prefetch": [1, 4, 16], "results": [False, True]}
    points = BenchConfig(sweep=sweep).points()
    assert len(points) == 12
    assert {(p.concurrency, p.prefetch, p.results) for p in points} == {
        (c, p, r) for c in (1, 2) for p in (1, 4, 16) for r in (False, True)
    }
    with pytest.raises(ConfigurationError):
        parse_sweep(["threads=1,2"])
    with pytest.raises(ConfigurationError):
        parse_sweep(["concurrency=two"])


def test_results_need_a_backend() -> None:
    with pytest.raises(ConfigurationError, match="--backend"):
        BenchConfig(broker=BROKER, results=True).validate()


# -- failures are errors, not figures --------------------------------------------------------------
def test_unreachable_broker_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    code, output = fastq_bench(
        "--broker", UNREACHABLE, "--tasks", "10", "--json", str(out), cwd=tmp_path
    )
    assert code == 1, output
    report = json.loads(out.read_text())
    assert report["runs"] == []
    assert "6390" in report["errors"][0]
    assert "cannot reach" in output


def test_worker_that_cannot_start_is_an_error() -> None:
    report = run_bench(
        small(fastq_app="no_such_module_for_fastq_bench", results=False), show_progress=False
    )
    (run,) = report["runs"]
    assert "exited with code" in run["error"]
    assert "no_such_module_for_fastq_bench" in run["error"]  # the worker's own log says why
    assert all(run[name] is None for name in FIGURES), run
    assert report["errors"] and report["ratios"] == []


def test_celery_worker_that_cannot_start_is_an_error() -> None:
    report = run_bench(
        small(systems=("celery",), celery_app="no_such_module_for_fastq_bench", results=False),
        show_progress=False,
    )
    (run,) = report["runs"]
    assert run["error"] and run["drain_per_s"] is None


# -- end to end ------------------------------------------------------------------------------------
def check_run(run: dict[str, Any], results: bool) -> None:
    assert set(run) == RUN_FIELDS
    assert run["error"] is None, run["error"]
    for name in FIGURES - {"latency"}:
        assert isinstance(run[name], (int, float)) and run[name] > 0, (name, run[name])
    if results:
        assert set(run["latency"]) == {"n", "p50_ms", "p95_ms", "p99_ms", "max_ms"}
        assert run["latency"]["p50_ms"] <= run["latency"]["p99_ms"]
    else:
        assert run["latency"] is None


def test_celery_runs_end_to_end() -> None:
    """The harness's own mechanics, whatever state fastq's worker is in."""
    report = run_bench(small(systems=("celery",), results=True), show_progress=False)
    assert set(report) == REPORT_FIELDS
    assert set(report["machine"]) == MACHINE_FIELDS
    (run,) = report["runs"]
    check_run(run, results=True)
    assert run["batch_enqueue_per_s"] is None  # Celery has no batch-send API
    assert report["ceiling"]["push_per_s"] > 0 and report["ceiling"]["pop_per_s"] > 0


def test_compare_end_to_end_through_the_cli(tmp_path: Path) -> None:
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    code, output = fastq_bench(
        "--broker",
        BROKER,
        "--backend",
        BACKEND,
        "--tasks",
        "200",
        "--latency-tasks",
        "10",
        "--compare",
        "celery",
        "--json",
        str(out),
        "--plot",
        str(png),
        cwd=tmp_path,
    )
    assert code == 0, output
    report = json.loads(out.read_text())
    assert set(report) == REPORT_FIELDS
    assert report["command"].startswith("fastq bench")
    fastq_run, celery_run = report["runs"]
    assert (fastq_run["system"], celery_run["system"]) == ("fastq", "celery")
    check_run(fastq_run, results=True)
    check_run(celery_run, results=True)
    assert fastq_run["batch_enqueue_per_s"] > 0
    assert set(fastq_run["pct_of_ceiling"]) == {"enqueue", "batch_enqueue", "drain"}
    (ratio,) = report["ratios"]
    assert set(ratio) == RATIO_FIELDS and all(ratio[k] for k in RATIO_FIELDS)
    assert png.stat().st_size > 0
    assert "fastq / Celery" in output


def test_sweep_writes_a_table_and_a_plot(tmp_path: Path) -> None:
    md, png = tmp_path / "s.md", tmp_path / "s.png"
    code, output = fastq_bench(
        "--broker",
        BROKER,
        "--no-results",
        "--tasks",
        "100",
        "--sweep",
        "concurrency=1,2",
        "--markdown",
        str(md),
        "--plot",
        str(png),
        cwd=tmp_path,
    )
    assert code == 0, output
    table = md.read_text()
    assert table.count("| fastq |") == 2 and "n/a" in table  # latency is n/a without results
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_no_keys_are_left_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's queue, bindings, counters and results are deleted afterwards."""
    import redis
    from fastq.bench import runner

    runs: list[runner.Run] = []
    execute = runner.Run.execute

    def keep(self: runner.Run) -> runner.RunResult:
        runs.append(self)
        return execute(self)

    monkeypatch.setattr(runner.Run, "execute", keep)
    run_bench(small(systems=("fastq", "celery"), tasks=50, results=True), show_progress=False)
    assert len(runs) == 2 and all(r.sent_ids for r in runs)
    with redis.Redis.from_url(BROKER) as broker, redis.Redis.from_url(BACKEND) as backend:
        assert list(broker.scan_iter(f"*{QUEUE}*")) == []
        for run in runs:
            assert list(broker.scan_iter(f"fastq.bench.{run.run_id}.*")) == []
            assert backend.exists(*(f"celery-task-meta-{i}" for i in run.sent_ids)) == 0


def test_bad_options_are_refused_before_anything_runs(tmp_path: Path) -> None:
    for args in (["--work", "spin:3"], ["--sweep", "results=on,off"], ["--sweep", "colour=red"]):
        code, output = fastq_bench("--broker", BROKER, "--tasks", "10", *args, cwd=tmp_path)
        assert code == 2, (args, output)
        assert output.startswith("fastq bench: "), output
