"""A fastq app for the metrics, tracing and log tests: ``fastq -A tests.apps.observed_app worker``.

With ``FASTQ_TEST_SPANS`` set, ``task_tracing`` is on and the OpenTelemetry SDK writes every span
the worker ends to that file, one JSON object a line (the SDK's console exporter), where the test
reads them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from fastq import App
from fastq.utils.log import get_task_logger

from tests.apps.shared import redis_db

app = App(
    "observed",
    broker=os.environ.get("FASTQ_BROKER_URL", redis_db(8)),
    backend=os.environ.get("FASTQ_RESULT_BACKEND", redis_db(9)),
)

SPANS = os.environ.get("FASTQ_TEST_SPANS")
if SPANS:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider()
    out = open(SPANS, "a", buffering=1)
    exporter = ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    app.conf.task_tracing = True

plain = logging.getLogger("tests.observed")
task_log = get_task_logger(__name__)


@app.task(name="observed.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="observed.async_add")
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


@app.task(name="observed.slow")
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="observed.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="observed.chatty")
def chatty(word: str) -> str:
    plain.warning("plain logger says %s", word)
    task_log.warning("task logger says %s", word)
    print(f"print says {word}")
    return word
