"""Showing a report: a terminal table, Markdown tables, and a PNG plot of a sweep."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: Parameters that vary between runs of one report become table columns; these always do.
PARAM_LABELS = {
    "concurrency": "c",
    "prefetch": "prefetch",
    "pool": "pool",
    "payload": "payload B",
    "work": "work",
    "results": "results",
    "acks_late": "acks late",
    "tasks": "N",
}
RUN_COLUMNS = [
    "enqueue/s",
    "batch/s",
    "drain/s",
    "steady/s",
    "start s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "CPU s/1k",
    "RSS MiB",
    "load",
]
#: The ratios' keys (see ``runner.ratios``) and their column headers.
RATIO_COLUMNS = {
    "enqueue": "enqueue",
    "batch_enqueue_vs_celery_delay": "batch vs delay",
    "drain": "drain",
    "steady_drain": "steady",
    "latency_p50": "p50",
    "latency_p99": "p99",
    "cpu_per_task": "CPU",
    "peak_rss": "RSS",
}


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def varying_params(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The parameters that differ between runs (what a row is about), in a fixed order."""
    names = [n for n in PARAM_LABELS if len({repr(r["params"][n]) for r in runs}) > 1]
    return names


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def run_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    runs = report["runs"]
    params = varying_params(runs)
    header = ["system", *(PARAM_LABELS[p] for p in params), *RUN_COLUMNS]
    rows = []
    for r in runs:
        cells = [r["system"], *(_param(r["params"][p]) for p in params)]
        if r["error"]:
            cells += ["error: " + r["error"].splitlines()[0]] + [""] * (len(RUN_COLUMNS) - 1)
        else:
            lat = r["latency"] or {}
            cells += [
                _num(r["enqueue_per_s"]),
                _num(r["batch_enqueue_per_s"]),
                _num(r["drain_per_s"]),
                _num(r["steady_per_s"]),
                _num(r["startup_s"], 2),
                _num(lat.get("p50_ms"), 2),
                _num(lat.get("p95_ms"), 2),
                _num(lat.get("p99_ms"), 2),
                _num(r["cpu_s_per_1000"], 3),
                _num(r["peak_rss_mib"], 1),
                " ".join(f"{x:.2f}" for x in r["loadavg_before"][:1]) or "n/a",
            ]
        rows.append(cells)
    return header, rows


def ratio_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    ratios = report["ratios"]
    params = varying_params(report["runs"])
    header = [*(PARAM_LABELS[p] for p in params), *RATIO_COLUMNS.values()]
    rows = [
        [*(_param(r["params"][p]) for p in params), *(_ratio(r[k]) for k in RATIO_COLUMNS)]
        for r in ratios
    ]
    return header, rows


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def ceiling_line(report: dict[str, Any]) -> str:
    ceil = report["ceiling"]
    if ceil is None:
        scheme = str(report["config"]["broker"]).split("://", 1)[0]
        return f"Broker ceiling: n/a (no probe for {scheme}:// yet)"
    text = (
        f"Broker ceiling ({ceil['method']}): push {_num(ceil['push_per_s'])}/s, "
        f"pop {_num(ceil['pop_per_s'])}/s"
    )
    if ceil.get("server_push_per_s"):
        text += (
            f"; redis-benchmark push {_num(ceil['server_push_per_s'])}/s, "
            f"pop {_num(ceil['server_pop_per_s'])}/s"
        )
    pcts = [
        (r["params"], r["pct_of_ceiling"])
        for r in report["runs"]
        if r["system"] == "fastq" and r["pct_of_ceiling"]
    ]
    if len(pcts) == 1:
        p = pcts[0][1]
        text += ". fastq: " + ", ".join(f"{k} {v:.1f}%" for k, v in p.items()) + " of it"
    return text


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: runs, ratios (with ``--compare``), the ceiling, errors."""
    parts = [markdown_table(*run_rows(report))]
    if report["ratios"]:
        parts += [
            "fastq / Celery (> 1 means fastq is better; latency, CPU and RSS inverted):",
            markdown_table(*ratio_rows(report)),
        ]
    parts.append(ceiling_line(report))
    if report["errors"]:
        parts.append("Errors:\n" + "\n".join(f"- {e.splitlines()[0]}" for e in report["errors"]))
    return "\n\n".join(parts) + "\n"


def print_report(report: dict[str, Any]) -> None:
    """Tables on stdout: rich when installed, plain Markdown otherwise."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(markdown(report))
        for error in report["errors"]:
            print(f"\nerror: {error}")
        return
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a log file or a pipe: never squeeze the columns
    for title, (header, rows) in (
        ("fastq bench", run_rows(report)),
        ("fastq / Celery (> 1: fastq better)", ratio_rows(report)),
    ):
        if not rows:
            continue
        table = Table(title=title)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    console.print(ceiling_line(report), highlight=False)
    for error in report["errors"]:
        console.print(f"[red]error:[/red] {error}", highlight=False)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(report: dict[str, Any]) -> str:
    load = report["machine"].get("loadavg") or []
    config = report["config"]
    return (
        f"fastq bench: {config['tasks']:,} x {config['work']}, {report['machine']['nproc']} CPUs, "
        f"load {load[0] if load else 'n/a'}"
    )


def plot(report: dict[str, Any], path: str) -> None:
    """Drain rate and p99 latency against the swept parameters, one line per system and per
    value of the other parameters (x is the first swept parameter); bars when nothing varies
    or when only ``results`` does."""
    params = varying_params(report["runs"])
    if params in ([], ["results"]):
        bars(report, path)
        return
    plt = _pyplot()
    runs = [r for r in report["runs"] if not r["error"]]
    x_name, others = params[0], params[1:]
    with_latency = any(r["latency"] for r in runs)
    fig, axes = plt.subplots(1, 2 if with_latency else 1, figsize=(11 if with_latency else 6, 4.2))
    axes = list(axes) if with_latency else [axes]
    # One colour per value of the other parameters, one line style per system.
    series: dict[tuple[str, tuple[Any, ...]], list[dict[str, Any]]] = {}
    for r in runs:
        key = tuple(_sort_key(_param(r["params"][o])) for o in others)
        series.setdefault((r["system"], key), []).append(r)
    colours = {key: f"C{i}" for i, key in enumerate(sorted({k for _, k in series}))}
    xs_all = sorted({_param(r["params"][x_name]) for r in runs}, key=_sort_key)
    for (system, key), points in sorted(series.items(), key=lambda s: (s[0][0] != "fastq", s[0])):
        points.sort(key=lambda r: _sort_key(_param(r["params"][x_name])))
        xs = [xs_all.index(_param(r["params"][x_name])) for r in points]
        label = ", ".join(f"{PARAM_LABELS[o]}={_param(points[0]['params'][o])}" for o in others)
        fmt, colour = ("-o" if system == "fastq" else "--s"), colours[key]
        name = f"{system} {label}".strip()
        drain = [r["drain_per_s"] for r in points]
        axes[0].plot(xs, drain, fmt, color=colour, label=name)
        if with_latency:
            lat = [r["latency"]["p99_ms"] if r["latency"] else None for r in points]
            axes[1].plot(xs, lat, fmt, color=colour, label=name)
    axes[0].set_ylabel("drain rate (tasks/s)")
    if with_latency:
        axes[1].set_ylabel("p99 latency (ms)")
    for ax in axes:
        ax.set_xticks(range(len(xs_all)), xs_all)
        ax.set_xlabel(x_name.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    fig.suptitle(_title(report), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


BAR_METRICS = [
    ("enqueue_per_s", "enqueue, .delay() loop (tasks/s)"),
    ("batch_enqueue_per_s", "enqueue, batch send_many (tasks/s)"),
    ("drain_per_s", "drain (tasks/s)"),
]


def bars(report: dict[str, Any], path: str) -> None:
    """One panel per rate (enqueue, batch enqueue, drain), a group of bars per parameter point,
    one bar per system, on a log scale so a 10x gap and a 2x gap both stay readable."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, NullFormatter

    runs = [r for r in report["runs"] if not r["error"]]
    params = varying_params(report["runs"])
    points: list[str] = []
    for r in runs:
        if _point(r, params) not in points:
            points.append(_point(r, params))
    systems = sorted({r["system"] for r in runs}, key=lambda s: (s != "fastq", s))
    fig, axes = plt.subplots(1, len(BAR_METRICS), figsize=(4.2 * len(BAR_METRICS), 4.2))
    width = 0.8 / max(1, len(systems))
    for ax, (metric, title) in zip(axes, BAR_METRICS, strict=True):
        for i, system in enumerate(systems):
            xs, heights = [], []
            for r in runs:
                if r["system"] == system and r[metric]:
                    xs.append(
                        points.index(_point(r, params)) + (i - (len(systems) - 1) / 2) * width
                    )
                    heights.append(r[metric])
            drawn = ax.bar(xs, heights, width, label=system)
            ax.bar_label(drawn, labels=[f"{h:,.0f}" for h in heights], fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(points)), points, fontsize=8)
        values = [r[metric] for r in runs if r[metric]]
        if not values:
            ax.text(0.5, 0.5, "n/a", ha="center", transform=ax.transAxes)
            continue
        ax.set_yscale("log")  # from a decade below the smallest bar, with room for labels
        ax.set_ylim(10 ** (math.floor(math.log10(min(values))) - 1), max(values) * 3)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle(_title(report), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _point(run: dict[str, Any], params: list[str]) -> str:
    return ", ".join(f"{PARAM_LABELS[p]} {_param(run['params'][p])}" for p in params) or "all"


def _sort_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)
