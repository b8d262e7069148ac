"""What the metrics and tracing hooks cost a task, in-process: ``TaskObserver.begin`` + ``end``
(and a tick per 4 tasks, a batch at the default prefetch) timed over many calls, next to the loop's
check when both are off. Steadier than a drain on a shared machine; bench/RESULTS.md has both.

    .venv/bin/python bench/observer_cost.py
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from fastq import App, states
from fastq.execution.tracer import Outcome, Settle
from fastq.task import Context
from fastq.worker.metrics import TaskStats, encode
from fastq.worker.observe import TaskObserver

N = 200_000


def per_task(observer: TaskObserver | None, context: Context, outcome: Outcome) -> float:
    start = time.perf_counter()
    for i in range(N):
        if observer is not None:
            watch = observer.begin("bench.noop", context, 0.0)
            observer.end(watch, outcome)
            if i % 4 == 0:
                observer.tick(4)
    return (time.perf_counter() - start) / N * 1e6


def main() -> None:
    context = Context(
        id="3f2a0000-0000-0000-0000-000000000000",
        task="bench.noop",
        retries=0,
        delivery_info={"routing_key": "celery"},
        headers={},
    )
    outcome = Outcome(states.SUCCESS, None, None, Settle.ACK)
    written: list[str] = []
    stats = TaskStats(lambda taken: written.append(encode(taken)))  # as a prefork child writes

    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)
    app = App("bench", broker="memory://", task_tracing=True, set_as_current=False)
    arms = {
        "off (the loop's None check)": None,
        "metrics": TaskObserver(stats, None),
        "tracing (SDK, batch processor)": TaskObserver(None, app.tracing),
        "metrics + tracing": TaskObserver(stats, app.tracing),
    }
    tracer = trace.get_tracer("bench")

    def bare_span() -> float:  # the SDK's own floor: one span started and ended, nothing else
        start = time.perf_counter()
        for _ in range(N):
            tracer.start_span("run/bench.noop").end()
        return (time.perf_counter() - start) / N * 1e6

    for _ in range(3):  # interleaved rounds
        for name, observer in arms.items():
            print(f"{name:32} {per_task(observer, context, outcome):7.2f} µs/task")
        print(f"{'(SDK alone: start_span + end)':32} {bare_span():7.2f} µs/span")
    provider.shutdown()


if __name__ == "__main__":
    main()
