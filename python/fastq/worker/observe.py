"""What a consumer loop tells about each task it handles, for metrics and traces.

The loop holds one ``TaskObserver``, or None when both are off (a task then pays one attribute
check); it calls ``begin``/``end`` around a task's run, ``skipped`` for one revoked or expired
before it ran, ``reconnected`` when its broker answers again, and ``tick`` between batches.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NamedTuple

from fastq.task import Context

if TYPE_CHECKING:
    from fastq.execution.tracer import Outcome
    from fastq.tracing import Tracing
    from fastq.worker.metrics import TaskStats


class Watch(NamedTuple):
    """A task being run: what ``TaskObserver.end`` needs."""

    name: str
    started: float  # perf_counter
    wait: float  # seconds from its message's receipt to its start
    span: Any  # the tracing span, or None


class TaskObserver:
    def __init__(self, stats: TaskStats | None, tracing: Tracing | None) -> None:
        self.stats = stats
        self.tracing = tracing

    def begin(self, name: str, context: Context, received: float) -> Watch:
        span = self.tracing.begin(name, context) if self.tracing is not None else None
        return Watch(name, time.perf_counter(), time.time() - received, span)

    def end(
        self, watch: Watch | None, outcome: Outcome | None, error: BaseException | None = None
    ) -> None:
        """The run ended with ``outcome``, or ``error`` escaped it (then it counts as failed)."""
        if watch is None:
            return
        runtime = time.perf_counter() - watch.started
        state = outcome.state if outcome is not None else "FAILURE"
        if watch.span is not None and self.tracing is not None:
            self.tracing.end(watch.span, state, outcome.error if outcome is not None else error)
        if self.stats is not None:
            self.stats.ran(watch.name, state, runtime, watch.wait)

    def skipped(self, name: str, reason: str) -> None:
        if self.stats is not None:
            self.stats.skipped(name, reason)

    def reconnected(self) -> None:
        if self.stats is not None:
            self.stats.reconnected()

    def tick(self, prefetched: int, final: bool = False) -> None:
        if self.stats is not None:
            self.stats.tick(prefetched, final)
