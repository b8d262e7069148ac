"""`fastq bench`'s worker app with metrics and/or tracing on, for the A/B drain in bench/RESULTS.md
("Metrics and tracing: drain cost"). Run from ``bench/`` so the worker finds it::

    FASTQ_BENCH_METRICS_PORT=19808 fastq bench --fastq-app observed_bench_app:app ...
    FASTQ_BENCH_TRACING=1 fastq bench --fastq-app observed_bench_app:app ...

Neither variable set: the same app with both off (the A side). Tracing uses the OpenTelemetry
SDK with a batch processor and an exporter that drops what it gets: the cost of making the spans,
not of shipping them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from fastq.bench.apps.fastq_app import app, work

__all__ = ["app", "work"]

if os.environ.get("FASTQ_BENCH_METRICS_PORT"):
    app.conf.worker_metrics_port = int(os.environ["FASTQ_BENCH_METRICS_PORT"])

if os.environ.get("FASTQ_BENCH_TRACING") == "1":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)
    app.conf.task_tracing = True
