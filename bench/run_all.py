"""Regenerates the benchmark sections of ``bench/RESULTS.md`` in one command:

    .venv/bin/python bench/run_all.py            # or: bash bench/run_all.sh

It runs ``fastq bench`` (the exact commands are written into RESULTS.md), keeps each report as
JSON in ``bench/data/``, draws the plots into ``bench/``, and rewrites only the sections between
``<!-- fastq-bench:NAME -->`` and ``<!-- /fastq-bench:NAME -->``; everything else in the file
(other engineers' sections, hand-written analysis) is kept as it is.

Options: ``--quick`` (small N, to check the pipeline), ``--only headline|sweep|micro|peers``,
``--broker``/``--backend`` (default Redis databases 6 and 7 on 127.0.0.1). ``peers`` is
``bench/peers/run.sh`` (fastq against the other task queues, on a redis-server of its own).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastq.bench import machine
from fastq.bench import report as show

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"
DATA = HERE / "data"
#: issue 3's targets on the headline run: fastq / Celery.
TARGETS = {"drain": 10.0, "enqueue": 5.0}

INTRO = """# fastq benchmarks

## How to run them

`fastq bench` starts the workers itself (fastq's, and Celery's with `--compare celery`), fills
the queue with no worker running, then measures from the workers' launch until every task has
run. It prints enqueue rate (one client, a `.delay()` loop, plus fastq's batch `send_many`),
drain rate, end-to-end latency p50/p95/p99 (send → result available, tasks sent one at a time,
results on only), worker CPU seconds per 1 000 tasks and peak RSS of the worker process tree, and
the broker's raw limit (pipelined LPUSH/RPOP) with fastq as a percentage of it.

```sh
pip install 'fastq-worker[bench,compare]'  # rich, matplotlib, psutil; Celery for --compare
fastq bench --broker redis://127.0.0.1:6379/6 --backend redis://127.0.0.1:6379/7 \\
    --tasks 20000 --concurrency 2 --pool prefork --compare celery --json out.json
fastq bench --broker redis://127.0.0.1:6379/6 --backend redis://127.0.0.1:6379/7 \\
    --tasks 5000 --sweep concurrency=1,2,4 prefetch=1,4,16 --plot sweep.png
bash bench/run_all.sh                   # regenerates this file's generated sections
```

Work per task: `--work noop|sleep:MS|cpu:MS`, argument size `--payload BYTES`; worker settings:
`--pool`, `--concurrency`, `--prefetch-multiplier`, `--acks-late`, `--results/--no-results`.
A worker that does not start, or stalls, makes that run an error with the worker's log, never a
figure. The benchmark uses its own queue (`fastq.bench`) and deletes the keys it creates. Tasks
count their completions in Redis, so with `--broker amqp://…` pass `--counter redis://…` too;
the broker ceiling has a probe for Redis only so far (`fastq.bench.ceiling.register`).
Sections between `fastq-bench` markers are generated; edit outside them.

`bash bench/run_all.sh --only peers` measures fastq against Celery, Dramatiq, Huey, RQ, arq,
potatoq, taskito, ardiq and mayu side by side, each in a virtualenv of its own, on a redis-server
the harness starts (`bench/peers/README.md` says how and with which configurations).
"""


def fastq_bench(args: str, name: str) -> tuple[str, dict[str, Any]]:
    """Runs one ``fastq bench`` command (its JSON and Markdown go to ``bench/data/NAME.*``);
    returns the command as a user would type it, and the report."""
    out = DATA / f"{name}.json"
    json_out, md_out = (str(out.relative_to(ROOT)), str(out.with_suffix(".md").relative_to(ROOT)))
    argv = [*shlex.split(args), "--json", json_out, "--markdown", md_out, "--quiet"]
    shown = shlex.join(["fastq", "bench", *argv])
    print("$", shown, file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "fastq.cli", "bench", *argv], cwd=ROOT, check=False)
    return shown, json.loads(out.read_text())


def machine_section(report: dict[str, Any]) -> str:
    m = report["machine"]
    commit = _git("rev-parse", "--short", "HEAD")
    # The outputs this script is writing do not make the measured code dirty.
    outputs = [":!bench/data", ":!bench/*.png", ":!bench/RESULTS.md"]
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *outputs)
    dirty = " (with uncommitted changes)" if changed else ""
    rows = [
        ("CPUs (nproc)", m["nproc"]),
        ("CPU", m["cpu"]),
        ("RAM", f"{m['ram_gib']} GiB"),
        ("OS", m["os"]),
        ("Python", m["python"]),
        ("Rust", m["rustc"] or "n/a"),
        ("Redis", m["redis"] or "n/a"),
        ("fastq", f"{m['fastq']}, commit {commit}{dirty}"),
        ("Celery", m["celery"] or "not installed"),
        ("load average at start (1, 5, 15 min)", ", ".join(map(str, m["loadavg"]))),
        ("load average at end", ", ".join(map(str, m.get("loadavg_end") or []))),
        ("measured", report["created"]),
    ]
    table = show.markdown_table(["", ""], [[k, str(v)] for k, v in rows])
    return "## The machine (Redis runs)\n\n" + table + "\n"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def section(title: str, about: str, command: str, *parts: str) -> str:
    """A generated section: title, what it measures, the exact command, then its tables."""
    body = [f"## {title}", "", about.strip(), "", "```sh", command, "```"]
    return "\n".join([*body, *(f"\n{p.rstrip()}" for p in parts)]) + "\n"


HEADLINE_ABOUT = """
Both on the same Redis, in one run: results off (no backend), then on (Redis backend).
Drain = from the workers' launch (process start) until every task has run and, with
results on, every result is stored; steady = from the first task's start. Load average
(1 min) is the one at each run's start; on this 2-core machine anything above ~0.5 means
other work shared the CPUs and the figures are low and noisy.
"""
SWEEP_ABOUT = "Where the knee is: drain rate and p99 latency (results on) for each combination."


def targets(report: dict[str, Any]) -> str:
    """issue 3's targets against the measured ratios, said plainly."""
    out = ["Targets (issue 3: drain ≥ 10x Celery, enqueue ≥ 5x Celery's `.delay()` loop):", ""]
    if not report["ratios"]:
        return "\n".join([*out, "- not measured: a run failed (see the errors above)."])
    for r in report["ratios"]:
        mode = "results on" if r["params"]["results"] else "results off"
        for key, label in (
            ("drain", "drain"),
            ("enqueue", "enqueue, `.delay()`"),
            ("batch_enqueue_vs_celery_delay", "enqueue, `send_many` vs Celery `.delay()`"),
        ):
            target = TARGETS["drain" if key == "drain" else "enqueue"]
            value = r[key]
            if value is None:
                out.append(f"- {mode}, {label}: n/a")
                continue
            verdict = "met" if value >= target else "**not met**"
            out.append(f"- {mode}, {label}: {value:.2f}x (target {target:.0f}x): {verdict}")
    return "\n".join(out)


def micro_section() -> tuple[str, bool]:
    """pytest-benchmark of the result meta; a table of medians, fastq against Celery."""
    out = DATA / "micro.json"
    load = ", ".join(map(str, machine.loadavg()))
    argv = ["bench/test_result_meta_bench.py", "--benchmark-only", "--benchmark-json", str(out)]
    argv.append("-q")
    shown = ["pytest", *[a.replace(str(ROOT) + "/", "") for a in argv]]
    print("$", shlex.join(shown), file=sys.stderr, flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *argv], cwd=ROOT, check=False
    )
    data = json.loads(out.read_text()) if out.exists() else {"benchmarks": []}
    for b in data["benchmarks"]:
        b["stats"].pop("data", None)  # every timing of every round: megabytes, not kept
    out.write_text(json.dumps(data, indent=1) + "\n")
    groups: dict[str, dict[str, float]] = {}
    for b in data["benchmarks"]:
        side = "fastq" if b["name"].endswith("_fastq") else "other"
        groups.setdefault(b["group"], {})[side] = b["stats"]["median"] * 1e6
    rows = [
        [group, f"{t['fastq']:.1f}", f"{t['other']:.1f}", f"{t['other'] / t['fastq']:.2f}x"]
        for group, t in groups.items()
        if "fastq" in t and "other" in t
    ]
    about = f"""
Median microseconds per call (pytest-benchmark), fastq's backend against Celery's on the same
result document: encoded by the worker for every task when results are on, decoded by the
client in `get()`. CPU only, no I/O; load average at the start: {load}. The task message codec
has its own benchmark and section ("Codec micro-benchmark").
"""
    table = show.markdown_table(["job", "fastq µs", "Celery µs", "speed-up"], rows)
    body = section("Result meta micro-benchmark", about, shlex.join(shown), table)
    return body, proc.returncode == 0 and bool(rows)


def replace_section(text: str, name: str, body: str) -> str:
    """Rewrites the text between this section's markers, or appends the section."""
    start, end = f"<!-- fastq-bench:{name} -->", f"<!-- /fastq-bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    return text.rstrip() + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N: check the pipeline only")
    parser.add_argument("--only", choices=["headline", "sweep", "micro", "peers"])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--backend", default="redis://127.0.0.1:6379/7")
    options = parser.parse_args(argv)
    DATA.mkdir(exist_ok=True)
    urls = shlex.join(["--broker", options.broker, "--backend", options.backend])
    n_head, n_sweep = ("1000", "500") if options.quick else ("20000", "5000")
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if "<!-- fastq-bench:intro -->" in text:
        text = replace_section(text, "intro", INTRO)
    else:  # the how-to leads the file; whatever others wrote stays below it
        text = replace_section("", "intro", INTRO).lstrip() + "\n" + text
    failed = False
    if options.only in (None, "headline"):
        command, report = fastq_bench(
            f"{urls} --tasks {n_head} --concurrency 2 --pool prefork --compare celery "
            "--sweep results=off,on --plot bench/headline.png",
            "headline",
        )
        failed |= bool(report["errors"])
        text = replace_section(text, "machine", machine_section(report))
        n = report["config"]["tasks"]
        body = section(
            f"Redis: fastq vs Celery, {n:,} no-op tasks, prefork, concurrency 2",
            HEADLINE_ABOUT,
            command,
            show.markdown(report),
            targets(report),
            "![fastq vs Celery](headline.png)",
        )
        text = replace_section(text, "headline", body)
    if options.only in (None, "sweep"):
        command, report = fastq_bench(
            f"{urls} --tasks {n_sweep} --results --compare celery "
            "--sweep concurrency=1,2,4 prefetch=1,4,16 --plot bench/sweep.png",
            "sweep",
        )
        failed |= bool(report["errors"])
        body = section(
            "Sweep: concurrency x prefetch multiplier",
            SWEEP_ABOUT,
            command,
            show.markdown(report),
            "![sweep](sweep.png)",
        )
        text = replace_section(text, "sweep", body)
    if options.only in (None, "micro"):
        body, ok = micro_section()
        failed |= not ok
        text = replace_section(text, "micro", body)
    RESULTS.write_text(text)
    print(f"wrote {RESULTS}", file=sys.stderr)
    if options.only in (None, "peers"):  # after the write above: it rewrites its own section
        failed |= not peers(options.quick)
    return 1 if failed else 0


def peers(quick: bool) -> bool:
    """fastq against the other task queues (bench/peers); it writes its own section and plot."""
    argv = ["bash", "bench/peers/run.sh", *(["--tasks", "500", "--rounds", "1"] if quick else [])]
    print("$", shlex.join(argv), file=sys.stderr, flush=True)
    return subprocess.run(argv, cwd=ROOT, check=False).returncode == 0


if __name__ == "__main__":
    raise SystemExit(main())
