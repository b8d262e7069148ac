"""The peer harness (bench/peers): fastq end to end on a redis-server of the harness's own, the
report's handling of failed systems and trials, and the worker CPU read from /proc. No test here
asserts a speed; the other peers need their virtualenvs (bench/peers/install.sh), so only fastq
runs here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "bench/peers"
sys.path[:0] = [str(PEERS), str(ROOT / "bench")]

import procstat  # noqa: E402
import report  # noqa: E402


def trial(mode: str, results: bool, **figures: Any) -> dict[str, Any]:
    return {"round": 1, "mode": mode, "results": results, **figures}


def data(*systems: dict[str, Any]) -> dict[str, Any]:
    return {
        "created": "2026-12-02T00:00:00+00:00",
        "tasks": 20_000,
        "rounds": 3,
        "machine": {"nproc": 2, "loadavg_end": [0.1, 0.1, 0.1]},
        "systems": list(systems),
        "ceiling": [
            {"rpop_incr_2": 400.0, "rpop_2": 800.0, "lpush_one": 1000.0, "lpush_pipelined": 9000.0}
        ],
    }


def system(name: str, trials: list[dict[str, Any]], error: str | None = None) -> dict[str, Any]:
    info = {"version": "1.0", "python": "3.11", "config": "c", "batch": None, "results": True}
    return {"name": name, "error": error, **({} if error else info), "trials": trials}


def test_report_keeps_failed_systems_and_trials_with_their_reason() -> None:
    fastq = system(
        "fastq",
        [
            trial("incr", False, drain_per_s=200.0, enqueue_per_s=100.0),
            trial("buffered", False, drain_per_s=300.0, enqueue_per_s=120.0, cpu_s_per_1k=0.2),
        ],
    )
    peer = system(
        "peer",
        [
            trial("incr", False, drain_per_s=100.0, enqueue_per_s=100.0),
            trial("buffered", False, error="stalled at 10/20000 tasks for 120s\nlog"),
        ],
    )
    broken = system("broken", [], error="install failed: no wheel for this Python")
    text = report.section(data(fastq, peer, broken), "peers.png", "bash bench/peers/run.sh")
    assert "| broken | **not measured**: install failed: no wheel for this Python |" in text
    (peer_row,) = [line for line in text.splitlines() if line.startswith("| peer 1.0 |")]
    assert peer_row.split(" | ")[2] == "**failed**"  # the buffered drain, results off
    assert "- peer round 1 (buffered, results off): stalled at 10/20000 tasks for 120s" in text
    assert "| peer | 2.00x |" in text  # drain, INCR: fastq 200 against 100
    assert "fastq as % of Redis itself | 50% | 38%" in text  # 200/400, 300/800
    assert "quick run" not in text  # 20 000 tasks, 3 rounds: a measurement


def test_ratios_pair_the_systems_within_each_round() -> None:
    """A round the machine ran slow in (CPU steal) counts against both systems alike: the ratio is
    the median of the ratios within rounds, not a ratio of medians taken over different rounds."""

    def rounds(*rates: float) -> list[dict[str, Any]]:
        return [
            {**trial("incr", False, drain_per_s=rate), "round": n}
            for n, rate in enumerate(rates, start=1)
        ]

    fastq = system("fastq", rounds(600.0, 600.0, 300.0))  # slow in round 3
    peer = system("peer", rounds(500.0, 250.0, 250.0))  # slow in rounds 2 and 3
    run = data(fastq, peer)
    run["ceiling"] = [{**run["ceiling"][0], "rpop_incr_2": c} for c in (1000.0, 500.0, 500.0)]
    run["machine"]["steal_by_round"] = [0.01, 0.1, 0.12]
    text = report.section(run, "peers.png", "cmd")
    assert "| peer | 1.20x (1.20x-2.40x) |" in text  # not 600/250 = 2.40x
    assert "| fastq as % of Redis itself | 60% (60%-120%) |" in text
    assert "CPU steal (time the host gave other guests) by round: 1%, 10%, 12%." in text


def test_steal_share_is_read_from_proc_stat_fields() -> None:
    import harness

    before = [100, 0, 50, 800, 0, 0, 0, 50]
    after = [200, 0, 100, 1550, 0, 0, 0, 150]  # 1 000 ticks in all, 100 of them stolen
    assert harness.steal_share(before, after) == pytest.approx(0.1)
    assert harness.steal_share([], after) == 0.0
    assert len(harness.cpu_times()) >= 8  # Linux


def test_a_small_run_says_it_is_not_a_measurement() -> None:
    small = data(system("fastq", [trial("incr", False, drain_per_s=1.0)]))
    small["tasks"] = 500
    assert "not a measurement" in report.section(small, "p.png", "cmd")


def test_worker_cpu_counts_the_whole_process_tree() -> None:
    # A parent that starts a busy child: the child's CPU is the tree's.
    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}]); "
    code += "import time; time.sleep(1)"
    tree = procstat.WorkerTree([[sys.executable, "-c", code]], {}, ROOT, "test")
    try:
        deadline = time.time() + 10
        while time.time() < deadline and (tree.samples[-1][1] if tree.samples else 0) < 0.3:
            tree.sample()
            time.sleep(0.02)
        assert tree.cpu_since(0.0) is not None and tree.cpu_since(0.0) >= 0.25  # type: ignore[operator]
        scanned = procstat._descendants_by_scan([tree.procs[0].pid])
        assert set(procstat.descendants([tree.procs[0].pid])) == set(scanned)
    finally:
        tree.stop()
        tree.remove_logs()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_fastq_end_to_end_on_a_redis_server_of_its_own(tmp_path: Path) -> None:
    out, md = tmp_path / "peers.json", tmp_path / "RESULTS.md"
    md.write_text("# kept\n")
    argv = [sys.executable, str(PEERS / "harness.py"), "--systems", "fastq", "--tasks", "100"]
    argv += ["--rounds", "1", "--latency-tasks", "5", "--timeout", "60", "--json", str(out)]
    argv += ["--results-md", str(md), "--plot", str(tmp_path / "peers.png")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report_data = json.loads(out.read_text())
    (fastq,) = report_data["systems"]
    assert fastq["error"] is None
    assert [(t["mode"], t["results"]) for t in fastq["trials"]] == [
        ("incr", False),
        ("buffered", False),
        ("incr", True),
        ("buffered", True),
    ]
    for t in fastq["trials"]:
        assert "error" not in t, t
        assert t["drain_per_s"] > 0 and t["enqueue_per_s"] > 0 and t["cpu_s_per_1k"] > 0
    assert fastq["trials"][0]["batch_per_s"] > 0
    assert fastq["trials"][2]["latency_ms"]["n"] == 5
    assert set(report_data["ceiling"][0]) == {
        "lpush_one",
        "lpush_pipelined",
        "rpop_incr_2",
        "rpop_2",
    }
    text = md.read_text()
    assert text.startswith("# kept\n") and "<!-- fastq-bench:peers -->" in text
    assert (tmp_path / "peers.png").stat().st_size > 0
