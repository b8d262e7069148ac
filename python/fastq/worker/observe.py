"""What a consumer loop tells about each task it handles, for metrics and traces.

The loop holds one ``TaskObserver``, or None when both are off (a task then pays one attribute
check); it calls ``begin``/``end`` around a task's run (the asyncio pool, which runs many at
once on one thread, ``release`` after starting it), ``skipped`` for one revoked or expired
before it ran, ``reconnected`` when its broker answers again, and ``tick`` between batches.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastq.task import Context

if TYPE_CHECKING:
    from fastq.execution.tracer import Outcome
    from fastq.tracing import Tracing
    from fastq.worker.metrics import TaskStats


#: A task being run, what ``TaskObserver.end`` needs: its name, when it started and how long it
#: waited since its message's receipt (``perf_counter``), its tracing span (or None).
Watch = tuple[str, float, float, Any]


class TaskObserver:
    def __init__(self, stats: TaskStats | None, tracing: Tracing | None) -> None:
        self.stats = stats
        self.tracing = tracing

    def begin(self, name: str, context: Context, received: float) -> Watch:
        """``received``: when the loop fetched its message (``perf_counter``)."""
        span = self.tracing.begin(name, context) if self.tracing is not None else None
        started = time.perf_counter()
        return name, started, started - received, span

    def release(self, watch: Watch) -> Watch:
        """The span ``begin`` made current stops being current here (the asyncio pool runs the
        task in a copy of this context, and starts others meanwhile); ``end`` still ends it."""
        name, started, wait, span = watch
        if span is not None and self.tracing is not None:
            span = self.tracing.release(span)
        return name, started, wait, span

    def end(
        self, watch: Watch | None, outcome: Outcome | None, error: BaseException | None = None
    ) -> None:
        """The run ended with ``outcome``, or ``error`` escaped it (then it counts as failed)."""
        if watch is None:
            return
        name, started, wait, span = watch
        runtime = time.perf_counter() - started
        state = outcome.state if outcome is not None else "FAILURE"
        if span is not None and self.tracing is not None:
            self.tracing.end(span, state, outcome.error if outcome is not None else error)
        if self.stats is not None:
            self.stats.ran(name, state, runtime, wait)

    def skipped(self, name: str, reason: str) -> None:
        if self.stats is not None:
            self.stats.skipped(name, reason)

    def reconnected(self) -> None:
        if self.stats is not None:
            self.stats.reconnected()

    def tick(self, prefetched: int, final: bool = False) -> None:
        if self.stats is not None:
            self.stats.tick(prefetched, final)
