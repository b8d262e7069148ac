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


def _request(task_id: str, name: str) -> Context:
    return Context(id=task_id, task=name, called_directly=False, delivery_info={})


def test_async_tasks_on_one_loop_each_see_their_own_request_and_limits() -> None:
    """``run_task_async``: many at once on one loop, each with its own ``self.request``; the
    soft limit is raised inside the coroutine, the hard one and terminate cancel it."""
    import asyncio

    from fastq.errors import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded
    from fastq.execution.limits import Interrupt
    from fastq.execution.tracer import run_task_async

    app = App("t", broker="memory://", set_as_current=False)
    cleaned: list[str] = []

    @app.task(name="who", bind=True)
    async def who(self: Any, delay: float) -> str | None:
        await asyncio.sleep(delay)
        return self.request.id  # type: ignore[no-any-return]

    @app.task(name="slow")
    async def slow(token: str) -> str:
        try:
            await asyncio.sleep(30)
        except SoftTimeLimitExceeded:
            cleaned.append(token)
            raise
        return token

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()

        def start(task: Any, task_id: str, *args: Any) -> tuple[Interrupt, asyncio.Task[Any]]:
            interrupt = Interrupt()
            request = _request(task_id, task.name)
            request.args = args
            running = loop.create_task(run_task_async(task, request, False, interrupt))
            interrupt.task = running
            return interrupt, running

        mine = [start(who, f"w{i}", 0.01 * (i % 5))[1] for i in range(50)]
        soft, soft_task = start(slow, "s", "soft")
        hard, hard_task = start(slow, "h", "hard")
        ended, ended_task = start(slow, "t", "terminated")
        await asyncio.sleep(0.05)
        loop.call_soon(soft.soft, 0.05)
        loop.call_soon(hard.hard, 0.05)
        loop.call_soon(ended.terminate)
        return await asyncio.gather(*mine, soft_task, hard_task, ended_task)

    *mine, soft, hard, ended = asyncio.run(main())
    assert [o.value for o in mine] == [f"w{i}" for i in range(50)]
    assert soft.state == "FAILURE" and isinstance(soft.value, SoftTimeLimitExceeded)
    assert cleaned == ["soft"]  # raised inside the coroutine, where it awaited
    assert hard.state == "FAILURE" and isinstance(hard.value, TimeLimitExceeded)
    assert ended.state == "REVOKED" and isinstance(ended.value, TaskRevokedError)
