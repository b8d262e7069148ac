"""OpenTelemetry traces of task messages (``task_tracing``; the ``fastq-worker[otel]`` extra).

With ``task_tracing`` on, each publish is a span of kind PRODUCER (``apply_async/<task>``) whose
W3C trace context goes in the message's headers (``traceparent``, and ``tracestate`` when there
is one), as opentelemetry-instrumentation-celery puts it there; a worker runs each task in a span
of kind CONSUMER (``run/<task>``), the child of the context its message carries, and current while
the task runs, so what the task sends (a chain's next step) continues the same trace. Spans go to
the global tracer provider the application configures (the SDK and an exporter); with none, the
API's no-op provider records nothing. ``opentelemetry`` is imported only when tracing is on.
"""

from __future__ import annotations

from typing import Any

from fastq.errors import ConfigurationError

EXTRA = "pip install 'fastq-worker[otel]'"
#: Span attributes, named as opentelemetry-instrumentation-celery names them.
TASK_NAME = "celery.task_name"
TASK_ID = "messaging.message.id"
QUEUE = "messaging.destination.name"
RETRIES = "celery.retries"
STATE = "celery.state"


class Tracing:
    """Spans for one application: publishes and task runs."""

    def __init__(self) -> None:
        try:
            from opentelemetry import context, trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:
            raise ConfigurationError(
                f"task_tracing needs the OpenTelemetry API (opentelemetry-api): {EXTRA}"
            ) from None
        self._trace = trace
        self._context = context
        self._tracer = trace.get_tracer("fastq")
        self._propagator = TraceContextTextMapPropagator()

    # -- publishing ------------------------------------------------------------------------------
    def publishing(self, headers: dict[str, Any], name: str, task_id: str, queue: str) -> Any:
        """Starts the PRODUCER span of a publish, the child of the current span, and writes its
        context into ``headers``; the caller ends it once the message is sent (``end_publish``)."""
        span = self._tracer.start_span(
            f"apply_async/{name}",
            kind=self._trace.SpanKind.PRODUCER,
            attributes={TASK_NAME: name, TASK_ID: task_id, QUEUE: queue},
        )
        self._propagator.inject(headers, context=self._trace.set_span_in_context(span))
        return span

    def end_publish(self, span: Any, error: BaseException | None = None) -> None:
        if error is not None:
            span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)))
        span.end()

    # -- running ---------------------------------------------------------------------------------
    def begin(self, name: str, request: Any) -> tuple[Any, Any]:
        """Starts the CONSUMER span of a task run, the child of the context its message carries,
        and makes it current; returns what ``end`` needs."""
        headers = request.headers or {}
        parent = self._propagator.extract(headers) if "traceparent" in headers else None
        delivery_info = request.delivery_info or {}
        span = self._tracer.start_span(
            f"run/{name}",
            context=parent,
            kind=self._trace.SpanKind.CONSUMER,
            attributes={
                TASK_NAME: name,
                TASK_ID: request.id or "",
                QUEUE: delivery_info.get("routing_key") or "",
                RETRIES: int(request.retries or 0),
            },
        )
        token = self._context.attach(self._trace.set_span_in_context(span))
        return span, token

    def release(self, begun: tuple[Any, Any]) -> tuple[Any, Any]:
        """The span stops being current here (it stays current in the copies of this context
        made meanwhile, where the task runs); ``end`` then only ends it."""
        span, token = begun
        if token is not None:
            self._context.detach(token)
        return span, None

    def end(self, begun: tuple[Any, Any], state: str | None, error: BaseException | None) -> None:
        span, token = begun
        if token is not None:
            self._context.detach(token)
        span.set_attribute(STATE, state or "IGNORED")
        if state == "FAILURE":
            if error is not None:
                span.record_exception(error)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, repr(error)))
        span.end()
