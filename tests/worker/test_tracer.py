"""The tracer: what a task run raised, mapped to an outcome."""

from __future__ import annotations

from typing import Any

import pytest
from fastq import App
from fastq.errors import Ignore, Reject, Retry
from fastq.execution.tracer import Settle, run_task
from fastq.task import Context


@pytest.mark.parametrize("signal", [Ignore("replaced"), Reject("no", requeue=True), Retry("x")])
def test_autoretry_leaves_a_tasks_own_decisions_alone(signal: Exception) -> None:
    # Task.replace raises Ignore and Task.retry raises Retry after sending: retrying them
    # automatically would send the task a second time.
    app = App("t", broker="memory://", set_as_current=False)

    @app.task(name="decides", autoretry_for=(Exception,))
    def decides() -> None:
        raise signal

    sent: list[Any] = []
    app.send_task = lambda *args, **options: sent.append(args)  # type: ignore[method-assign]
    request = Context(id="d", task="decides", called_directly=False, delivery_info={})
    outcome = run_task(decides, request, acks_late=True, enforce_hard_limit=False)
    assert outcome.state == ("RETRY" if isinstance(signal, Retry) else None)
    assert outcome.settle is (Settle.REQUEUE if isinstance(signal, Reject) else Settle.ACK)
    assert sent == []
