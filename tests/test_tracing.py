"""OpenTelemetry across a real worker process: a chain of three tasks sent inside a span makes one
connected trace (client PRODUCER -> worker CONSUMER -> its PRODUCER -> ...), with the W3C
``traceparent`` carried in the message headers. The worker's spans come from the SDK's console
exporter writing to a file (``tests/apps/observed_app.py``); the client's from its in-memory
exporter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastq import App, chain
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.processes import fastq_worker

APP = "tests.apps.observed_app"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """This process's spans: the SDK's provider (set once per process), a fresh exporter."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()


def _hex(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


def _worker_spans(path: Path, count: int) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert len(lines) == count, lines
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    ("pool", "task"),
    [
        ("prefork", "observed.add"),
        ("threads", "observed.add"),
        ("asyncio", "observed.add"),  # a plain def: in a thread of the pool
        ("asyncio", "observed.async_add"),  # a coroutine, many at once on the loop
    ],
)
def test_a_chain_of_three_tasks_is_one_trace(
    pool: str,
    task: str,
    spans: InMemorySpanExporter,
    broker_url: str,
    backend_url: str,
    tmp_path: Path,
) -> None:
    span_file = tmp_path / "spans.jsonl"
    span_file.touch()
    env = {
        "FASTQ_BROKER_URL": broker_url,
        "FASTQ_RESULT_BACKEND": backend_url,
        "FASTQ_TEST_SPANS": str(span_file),
    }
    client = App("observed", broker=broker_url, backend=backend_url, set_as_current=False)
    client.conf.task_tracing = True
    add = client.signature
    with fastq_worker("-P", pool, "-c", "2", app=APP, env=env):
        with trace.get_tracer("test").start_as_current_span("client") as root:
            result = chain(add(task, (1, 2)), add(task, (3,)), add(task, (4,))).apply_async()
        assert result.get(timeout=30) == 10
    client.close()

    trace_id = _hex(root.get_span_context().trace_id, 32)
    mine = {s.name: s for s in spans.get_finished_spans()}
    publish = mine[f"apply_async/{task}"]
    assert publish.kind is trace.SpanKind.PRODUCER
    assert publish.parent is not None and publish.parent.span_id == root.get_span_context().span_id
    # The worker: three runs, and the two publishes of the chain's next steps.
    theirs = _worker_spans(span_file, 5)
    assert {s["context"]["trace_id"] for s in theirs} == {trace_id}
    runs = [s for s in theirs if s["kind"] == "SpanKind.CONSUMER"]
    sends = [s for s in theirs if s["kind"] == "SpanKind.PRODUCER"]
    assert len(runs) == 3 and len(sends) == 2
    by_id = {s["context"]["span_id"]: s for s in theirs}
    by_id[_hex(publish.context.span_id, 16)] = {"name": "client publish", "parent_id": None}
    # Walk up from each run: run <- publish <- run <- publish ... <- the client's publish.
    ids = []
    for run in runs:
        assert run["name"] == f"run/{task}"
        attributes = run["attributes"]
        assert attributes["celery.task_name"] == task
        assert attributes["celery.state"] == "SUCCESS"
        assert attributes["celery.retries"] == 0
        assert attributes["messaging.destination.name"] == "celery"
        ids.append(attributes["messaging.message.id"])
        parent = by_id[run["parent_id"]]
        assert parent["name"] in (f"apply_async/{task}", "client publish")
    # One connected line: each run's publish is the parent of the next run.
    first = next(r for r in runs if r["parent_id"] == _hex(publish.context.span_id, 16))
    chain_order = [first]
    while len(chain_order) < 3:
        send = next(s for s in sends if s["parent_id"] == chain_order[-1]["context"]["span_id"])
        chain_order.append(next(r for r in runs if r["parent_id"] == send["context"]["span_id"]))
    assert chain_order[-1]["attributes"]["messaging.message.id"] == result.id
    assert sorted(ids) == sorted({*ids})


def test_a_failing_task_s_span_says_so(
    spans: InMemorySpanExporter, broker_url: str, backend_url: str, tmp_path: Path
) -> None:
    span_file = tmp_path / "spans.jsonl"
    span_file.touch()
    env = {
        "FASTQ_BROKER_URL": broker_url,
        "FASTQ_RESULT_BACKEND": backend_url,
        "FASTQ_TEST_SPANS": str(span_file),
    }
    client = App("observed", broker=broker_url, backend=backend_url, set_as_current=False)
    client.conf.task_tracing = True
    with fastq_worker("-P", "solo", app=APP, env=env):
        result = client.send_task("observed.fail", ["broken"])
        with pytest.raises(ValueError):
            result.get(timeout=30)
    client.close()
    (run,) = _worker_spans(span_file, 1)
    assert run["attributes"]["celery.state"] == "FAILURE"
    assert run["status"]["status_code"] == "ERROR"
    assert run["events"][0]["name"] == "exception"
    (publish,) = spans.get_finished_spans()
    assert run["context"]["trace_id"] == _hex(publish.context.trace_id, 32)
    assert run["parent_id"] == _hex(publish.context.span_id, 16)
