"""The peer harness's report: a generated section of ``bench/RESULTS.md`` and a bar chart."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from run_all import replace_section  # bench/ is on sys.path (harness.py puts it there)

Trial = dict[str, Any]
Pick = Callable[[Trial], float | None]


def _get(*path: str) -> Pick:
    def pick(t: Trial) -> float | None:
        value: Any = t
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    return pick


def _when(mode: str | None, results: bool) -> Callable[[Trial], bool]:
    return lambda t: t["results"] == results and (mode is None or t["mode"] == mode)


#: (column, which trials, what figure, higher is better, broker ceiling key)
COLUMNS: list[tuple[str, Callable[[Trial], bool], Pick, bool, str | None]] = [
    ("drain/s, INCR per task", _when("incr", False), _get("drain_per_s"), True, "rpop_incr_2"),
    ("drain/s, buffered counter", _when("buffered", False), _get("drain_per_s"), True, "rpop_2"),
    ("drain/s, INCR, results on", _when("incr", True), _get("drain_per_s"), True, "rpop_incr_2"),
    ("drain/s, buffered, results on", _when("buffered", True), _get("drain_per_s"), True, "rpop_2"),
    ("enqueue/s, one at a time", _when(None, False), _get("enqueue_per_s"), True, "lpush_one"),
    ("batch enqueue/s", _when("incr", False), _get("batch_per_s"), True, "lpush_pipelined"),
    ("worker CPU s / 1k tasks", _when("buffered", False), _get("cpu_s_per_1k"), False, None),
    ("latency p50 ms", _when("incr", True), _get("latency_ms", "p50"), False, None),
    ("latency p99 ms", _when("incr", True), _get("latency_ms", "p99"), False, None),
]
CEILING_NAMES = {
    "rpop_incr_2": "RPOP + INCR, one at a time, 2 processes",
    "rpop_2": "RPOP one at a time, 2 processes",
    "lpush_one": "LPUSH one at a time",
    "lpush_pipelined": "LPUSH in pipelines of 1 000",
}


def values(system: dict[str, Any], column: int) -> list[float]:
    _, which, pick, _, _ = COLUMNS[column]
    out = []
    for t in system["trials"]:
        if "error" not in t and which(t):
            value = pick(t)
            if value is not None:
                out.append(float(value))
    return out


def fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}".replace(",", " ")
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def cell(vals: list[float]) -> str:
    if not vals:
        return "—"
    med = fmt(statistics.median(vals))
    return med if len(vals) == 1 else f"{med} ({fmt(min(vals))}-{fmt(max(vals))})"


def failed_columns(system: dict[str, Any], column: int) -> bool:
    which = COLUMNS[column][1]
    return any("error" in t and which(t) for t in system["trials"])


def table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def figures_table(data: dict[str, Any]) -> str:
    rows = []
    for s in data["systems"]:
        label = f"{s['name']} {s.get('version', '')}".strip()
        if s["error"]:
            rows.append([label, f"**not measured**: {s['error']}"] + [""] * (len(COLUMNS) - 1))
            continue
        row = [label]
        for i in range(len(COLUMNS)):
            text = cell(values(s, i))
            if failed_columns(s, i):
                text = f"{text} **failed**" if text != "—" else "**failed**"
            row.append(text)
        rows.append(row)
    ceilings = data["ceiling"]
    row = ["Redis itself (redis-py, no task queue)"]
    for _, _, _, _, key in COLUMNS:
        row.append(cell([c[key] for c in ceilings]) if key and ceilings else "")
    rows.append(row)
    return table(rows, ["system", *(c[0] for c in COLUMNS)])


def by_round(system: dict[str, Any], column: int) -> dict[int, float]:
    """The column's figure in each round (the trials of a round are one per column)."""
    _, which, pick, _, _ = COLUMNS[column]
    out: dict[int, float] = {}
    for t in system["trials"]:
        if "error" not in t and which(t):
            value = pick(t)
            if value is not None:
                out[t["round"]] = float(value)
    return out


def paired(mine: dict[int, float], theirs: dict[int, float], higher: bool) -> list[float]:
    """fastq's figure over the other's, round by round (> 1: fastq ahead)."""
    return [
        (mine[r] / theirs[r] if higher else theirs[r] / mine[r])
        for r in sorted(mine.keys() & theirs.keys())
        if mine[r] and theirs[r]
    ]


def ratio_cell(ratios: list[float], fmt_one: Callable[[float], str]) -> str:
    if not ratios:
        return "—"
    med = fmt_one(statistics.median(ratios))
    return med if len(ratios) == 1 else f"{med} ({fmt_one(min(ratios))}-{fmt_one(max(ratios))})"


def ratio_table(data: dict[str, Any]) -> str:
    """How many times better fastq is than each system (> 1: fastq ahead): the median over
    rounds of the two systems' ratio within a round, so that a round the machine ran slower in
    (another tenant, CPU steal) weighs on both alike."""
    systems = {s["name"]: s for s in data["systems"] if not s["error"]}
    fastq = systems.get("fastq")
    if fastq is None:
        return "fastq was not measured: no ratios."
    rows = []
    for name, s in systems.items():
        if name == "fastq":
            continue
        row = [name]
        for i, (_, _, _, higher, _) in enumerate(COLUMNS):
            ratios = paired(by_round(fastq, i), by_round(s, i), higher)
            row.append(ratio_cell(ratios, lambda x: f"{x:.2f}x"))
        rows.append(row)
    ceilings = {n: c for n, c in enumerate(data["ceiling"], start=1)}
    row = ["fastq as % of Redis itself"]
    for i, (_, _, _, _, key) in enumerate(COLUMNS):
        if key and ceilings:
            broker = {n: c[key] for n, c in ceilings.items()}
            row.append(ratio_cell(paired(by_round(fastq, i), broker, True), _percent))
        else:
            row.append("")
    rows.append(row)
    return table(rows, ["fastq ÷ system", *(c[0] for c in COLUMNS)])


def steal_line(data: dict[str, Any]) -> str:
    """The share of CPU time the hypervisor gave other tenants, per round (Linux /proc/stat)."""
    steal = data["machine"].get("steal_by_round")
    if not steal:
        return ""
    shares = ", ".join(f"{100 * x:.0f}%" for x in steal)
    return f"CPU steal (time the host gave other guests) by round: {shares}."


def _percent(x: float) -> str:
    return f"{100 * x:.0f}%"


def config_table(data: dict[str, Any]) -> str:
    rows = []
    for s in data["systems"]:
        if s["error"]:
            rows.append([s["name"], "—", "—", f"not measured: {s['error']}", "—"])
            continue
        batch = f"`{s['batch']}`" if s["batch"] else "none"
        rows.append([s["name"], s["version"], s["python"], s["config"], batch])
    return table(
        rows, ["system", "version", "Python", "worker configuration (2 processes)", "batch API"]
    )


def errors(data: dict[str, Any]) -> str:
    out = []
    for s in data["systems"]:
        for t in s["trials"]:
            if "error" in t:
                mode = f"{t['mode']}, results {'on' if t['results'] else 'off'}"
                first = t["error"].strip().splitlines()[0]
                out.append(f"- {s['name']} round {t['round']} ({mode}): {first}")
    return (
        "\n".join(["Failed trials (full text in `bench/data/peers.json`):", "", *out])
        if out
        else ""
    )


ABOUT = """
Every system runs the same task on the same Redis (a redis-server the harness starts), with 2
worker processes, in its best documented configuration for many short tasks (table below). The
task does nothing but count its completion, the same way in every system: one Redis `INCR` per
task (a round trip inside every task), or a per-process counter flushed every 20 ms (`buffered`,
as `fastq bench` does). Drain = N tasks queued with no worker running, then from the first
task's start to the last task's end (results on: to the last result stored), so worker start-up
is not counted. Enqueue = one client sending N tasks one at a time (or through the batch API).
Worker CPU = user + system seconds of the workers' whole process tree (/proc) from the first
task's start, buffered counter, results off. Latency = send → result available, tasks sent one at
a time with the workers idle. Rounds are interleaved (every system once per round, in reverse
order every other round); a cell is the median with min-max over rounds. A ratio is the median
(min-max) over rounds of the two systems' figures within a round, so that a round the machine
ran slower in (CPU steal by other tenants of the host: its share is given per round) weighs on
both alike. A system or trial that failed shows as such, with the reason.
"""


def section(data: dict[str, Any], plot_name: str, command: str) -> str:
    n, rounds = data["tasks"], data["rounds"]
    quick = (
        "**A quick run (a check of the pipeline, not a measurement): "
        "run `bash bench/run_all.sh --only peers` on a quiet machine for figures.**"
        if n < 5000 or rounds < 3
        else ""
    )

    def load(key: str) -> str:
        return ", ".join(f"{x:.2f}" for x in data["machine"].get(key, [])) or "n/a"

    parts = [
        f"## fastq and its peers, {n:,} tasks, 2 worker processes, {rounds} round(s)",
        quick,
        ABOUT.strip(),
        "```sh\n" + command + "\n```",
        f"Measured {data['created']} on {data['machine']['nproc']} CPUs, Redis "
        f"{data['machine'].get('redis') or 'n/a'}; load average (1, 5, "
        f"15 min) at the start {load('loadavg_start')}, at the end {load('loadavg_end')}.",
        figures_table(data),
        steal_line(data),
        "Ratios, fastq ÷ system (throughput) or system ÷ fastq (CPU, latency), round by round: "
        "above 1, fastq is ahead. The last row is fastq against Redis itself for the same pattern "
        "(the Redis row above: " + "; ".join(f"{k}: {v}" for k, v in CEILING_NAMES.items()) + ").",
        ratio_table(data),
        config_table(data),
        errors(data),
        f"![fastq and its peers]({plot_name})",
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [s for s in data["systems"] if not s["error"]]
    names = [s["name"] for s in systems]
    panels = [("drain (tasks/s)", [0, 1, 2, 3]), ("enqueue (tasks/s)", [4, 5])]
    fig, axes = plt.subplots(2, 1, figsize=(11, 8))
    for ax, (title, columns) in zip(axes, panels, strict=True):
        width = 0.8 / len(columns)
        for k, i in enumerate(columns):
            meds, lows, highs = [], [], []
            for s in systems:
                vals = values(s, i) or [0.0]
                med = statistics.median(vals)
                meds.append(med)
                lows.append(med - min(vals))
                highs.append(max(vals) - med)
            xs = [j + (k - (len(columns) - 1) / 2) * width for j in range(len(systems))]
            ax.bar(xs, meds, width, yerr=[lows, highs], capsize=2, label=COLUMNS[i][0])
        ax.set_xticks(range(len(systems)), names)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"{data['tasks']:,} tasks, 2 worker processes, median and min-max of "
        f"{data['rounds']} round(s)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(data: dict[str, Any], results_md: Path, plot_path: Path, command: str) -> None:
    plot(data, plot_path)
    text = results_md.read_text() if results_md.exists() else ""
    rel = Path(plot_path).resolve().relative_to(results_md.resolve().parent)
    results_md.write_text(replace_section(text, "peers", section(data, str(rel), command)))
