"""What one benchmark asks for: the workload, the workers' settings, and sweeps over them."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

from fastq.errors import ConfigurationError

#: The queue a benchmark uses unless told otherwise; on its own, so purging it touches nothing
#: else. Two benchmarks on one broker at once need two queues (``--queue``).
QUEUE = "fastq.bench"
#: The task both benchmark apps register (same name, so the messages are identical).
TASK_NAME = "fastq.bench.work"
SYSTEMS = ("fastq", "celery")
POOLS = ("prefork", "threads", "solo")


def parse_work(spec: str) -> tuple[str, float]:
    """``noop``, ``incr``, ``sleep:MS`` or ``cpu:MS`` → (kind, seconds). ``incr``: one Redis
    ``INCR`` on the counter per task (a round trip inside every task, as the peer benchmark's)."""
    kind, _, amount = spec.partition(":")
    if kind in ("noop", "incr") and not amount:
        return kind, 0.0
    if kind in ("sleep", "cpu") and amount:
        try:
            ms = float(amount)
        except ValueError:
            ms = -1.0
        if ms >= 0:
            return kind, ms / 1000.0
    raise ConfigurationError(f"--work {spec!r}: use noop, incr, sleep:MS or cpu:MS")


@dataclass
class BenchConfig:
    """One benchmark: every field maps to a ``fastq bench`` option."""

    broker: str = "redis://127.0.0.1:6379/0"
    backend: str | None = None
    #: Where tasks count their completions; a Redis URL (defaults to the broker or the backend).
    counter: str | None = None
    queue: str = QUEUE
    tasks: int = 20_000
    payload: int = 0
    work: str = "noop"
    concurrency: int = 2
    pool: str = "prefork"
    prefetch: int = 4
    acks_late: bool = False
    results: bool = False
    #: Workers send Celery's task events (``-E``).
    events: bool = False
    #: Tasks sent one by one, each awaited, for the latency figures (results on only).
    latency_tasks: int = 300
    #: Messages per ``send_many`` call in the batch enqueue measurement.
    batch_size: int = 1_000
    systems: tuple[str, ...] = ("fastq",)
    #: Seconds a started worker may take to complete its first task before the run fails.
    start_timeout: float = 30.0
    #: Upper bound on one drain; a run still draining then is reported as failed.
    drain_timeout: float = 600.0
    #: Module[:attr] of the worker apps; they must register ``TASK_NAME``.
    fastq_app: str = "fastq.bench.apps.fastq_app"
    celery_app: str = "fastq.bench.apps.celery_app:app"
    #: Parameter name → values; every combination is one run per system.
    sweep: dict[str, list[Any]] = field(default_factory=dict)

    def validate(self) -> None:
        parse_work(self.work)
        if self.tasks < 1 or self.concurrency < 1 or self.prefetch < 1 or self.payload < 0:
            raise ConfigurationError("--tasks, --concurrency and --prefetch must be >= 1")
        if self.pool not in POOLS:
            raise ConfigurationError(f"--pool {self.pool!r}: choose one of {', '.join(POOLS)}")
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise ConfigurationError(f"unknown system(s) {unknown}; known: {', '.join(SYSTEMS)}")
        if self.results and not self.backend:
            raise ConfigurationError("--results needs --backend redis://...")
        self.counter_url()

    def counter_url(self) -> str:
        for url in (self.counter, self.broker, self.backend):
            if url and url.split("://", 1)[0] in ("redis", "rediss"):
                return url
        raise ConfigurationError("the completion counter needs Redis: pass --counter redis://...")

    def points(self) -> list[BenchConfig]:
        """One config per combination of the swept values (just this one without a sweep)."""
        if not self.sweep:
            return [self]
        names = list(self.sweep)
        return [
            dataclasses.replace(self, sweep={}, **dict(zip(names, combo, strict=True)))
            for combo in itertools.product(*(self.sweep[n] for n in names))
        ]

    def params(self) -> dict[str, Any]:
        """The settings that define a run's workload and workers (its row in a table)."""
        return {
            "tasks": self.tasks,
            "payload": self.payload,
            "work": self.work,
            "concurrency": self.concurrency,
            "pool": self.pool,
            "prefetch": self.prefetch,
            "acks_late": self.acks_late,
            "results": self.results,
            "events": self.events,
        }


#: ``--sweep`` names → config fields and how to read their values.
SWEEPABLE: dict[str, tuple[str, Any]] = {
    "concurrency": ("concurrency", int),
    "prefetch": ("prefetch", int),
    "prefetch-multiplier": ("prefetch", int),
    "pool": ("pool", str),
    "payload": ("payload", int),
    "work": ("work", str),
    "results": ("results", lambda v: {"on": True, "off": False}[v]),
    "acks-late": ("acks_late", lambda v: {"on": True, "off": False}[v]),
    "events": ("events", lambda v: {"on": True, "off": False}[v]),
}


def parse_sweep(items: list[str]) -> dict[str, list[Any]]:
    """``["concurrency=1,2,4", "prefetch=1,4,16"]`` → ``{"concurrency": [1, 2, 4], ...}``."""
    sweep: dict[str, list[Any]] = {}
    for item in items:
        name, _, values = item.partition("=")
        if name not in SWEEPABLE or not values:
            raise ConfigurationError(
                f"--sweep {item!r}: use NAME=V1,V2 with NAME one of {', '.join(SWEEPABLE)}"
            )
        attr, convert = SWEEPABLE[name]
        try:
            sweep[attr] = [convert(v) for v in values.split(",")]
        except (ValueError, KeyError):
            raise ConfigurationError(f"--sweep {item!r}: bad value") from None
    return sweep
