"""``fastq bench``: its options, and running it from parsed options."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastq.bench.spec import POOLS, QUEUE, BenchConfig, parse_sweep
from fastq.errors import FastqError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        dest="bench_broker",
        metavar="URL",
        default=os.environ.get("FASTQ_BROKER_URL", "redis://127.0.0.1:6379/0"),
        help="broker both systems use (default: $FASTQ_BROKER_URL or redis://127.0.0.1:6379/0)",
    )
    p.add_argument("--backend", dest="bench_backend", metavar="URL", help="result backend URL")
    p.add_argument(
        "--counter",
        metavar="URL",
        help="Redis for the completion counter "
        "(default: the broker, or the backend when the broker is not Redis)",
    )
    p.add_argument("--queue", default=QUEUE, help=f"the queue to use (default {QUEUE})")
    p.add_argument("--tasks", "-n", type=int, default=20_000, metavar="N")
    p.add_argument("--payload", type=int, default=0, metavar="BYTES", help="argument size")
    p.add_argument("--work", default="noop", help="noop | incr (a Redis INCR) | sleep:MS | cpu:MS")
    p.add_argument("--concurrency", "-c", type=int, default=2, metavar="C")
    p.add_argument("--pool", "-P", choices=POOLS, default="prefork")
    p.add_argument("--prefetch-multiplier", type=int, default=4, metavar="M")
    p.add_argument("--acks-late", action="store_true")
    p.add_argument(
        "--results",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store results and measure latency (default: on when --backend is given)",
    )
    p.add_argument(
        "--latency-tasks",
        type=int,
        default=300,
        metavar="N",
        help="tasks sent one at a time, each awaited, for latency (default 300)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=1_000,
        metavar="N",
        help="tasks per send_many call in the batch enqueue figure",
    )
    p.add_argument("--compare", choices=["celery"], help="run the same workload on Celery too")
    p.add_argument(
        "--sweep",
        nargs="+",
        metavar="NAME=V1,V2",
        help="e.g. concurrency=1,2,4 prefetch=1,4,16 (also pool, payload, work, "
        "results=on,off, acks-late=on,off); writes --markdown and --plot, by default "
        "fastq-bench-sweep.md and fastq-bench-sweep.png",
    )
    p.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="plot drain rate and p99 latency")
    p.add_argument("--markdown", metavar="OUT.md", help="write the tables as Markdown")
    p.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="fail a run whose workers complete no task for this long (default 30)",
    )
    p.add_argument("--drain-timeout", type=float, default=600.0, metavar="S")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.add_argument("--fastq-app", default=BenchConfig.fastq_app, help=argparse.SUPPRESS)
    p.add_argument("--celery-app", default=BenchConfig.celery_app, help=argparse.SUPPRESS)


def config_from_options(options: argparse.Namespace) -> BenchConfig:
    results = options.results if options.results is not None else bool(options.bench_backend)
    return BenchConfig(
        broker=options.bench_broker,
        backend=options.bench_backend,
        counter=options.counter,
        queue=options.queue,
        tasks=options.tasks,
        payload=options.payload,
        work=options.work,
        concurrency=options.concurrency,
        pool=options.pool,
        prefetch=options.prefetch_multiplier,
        acks_late=options.acks_late,
        results=results,
        latency_tasks=options.latency_tasks,
        batch_size=options.batch_size,
        systems=("fastq", "celery") if options.compare else ("fastq",),
        start_timeout=options.start_timeout,
        drain_timeout=options.drain_timeout,
        fastq_app=options.fastq_app,
        celery_app=options.celery_app,
        sweep=parse_sweep(options.sweep or []),
    )


def run(options: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark the options describe; 0 when every run produced figures."""
    from fastq.bench import report as show
    from fastq.bench.runner import exit_code, run_bench

    try:
        config = config_from_options(options)
        result = run_bench(config, show_progress=not options.quiet)
    except FastqError as exc:
        print(f"fastq bench: {exc}", file=sys.stderr)
        return 2
    result["command"] = shlex.join(["fastq", *(sys.argv[1:] if argv is None else argv)])
    show.print_report(result)
    _write(options.json, json.dumps(result, indent=2, default=str) + "\n")
    if options.markdown or config.sweep:
        path = options.markdown or "fastq-bench-sweep.md"
        _write(path, show.markdown(result))
    plot_path = options.plot or ("fastq-bench-sweep.png" if config.sweep else None)
    if plot_path and any(not r["error"] for r in result["runs"]):
        show.plot(result, plot_path)
        print(f"plot: {plot_path}", file=sys.stderr)
    return exit_code(result)


def _write(path: str | None, text: str) -> None:
    if path:
        Path(path).write_text(text)
        print(f"wrote {path}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fastq.bench``: the same as ``fastq bench``."""
    parser = argparse.ArgumentParser(prog="fastq bench", description=__doc__)
    add_arguments(parser)
    options: Any = parser.parse_args(argv)
    return run(options, argv)
