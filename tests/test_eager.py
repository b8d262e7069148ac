"""Eager mode: tasks run in-process for users' own unit tests."""

import pytest
from fastq import App, signals, states
from fastq.errors import MaxRetriesExceededError


@pytest.fixture
def eager() -> App:
    return App("eager", task_always_eager=True, set_as_current=False)


def test_delay_runs_in_process(eager: App) -> None:
    @eager.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(2, 3)
    assert result.get() == 5
    assert result.state == states.SUCCESS and result.successful()


def test_failures_are_results_unless_propagating(eager: App) -> None:
    @eager.task
    def boom() -> None:
        raise KeyError("k")

    result = boom.delay()
    assert result.failed()
    with pytest.raises(KeyError):
        result.get()
    eager.conf.task_eager_propagates = True
    with pytest.raises(KeyError):
        boom.delay()


def test_retries_run_at_once(eager: App) -> None:
    attempts: list[int] = []

    @eager.task(bind=True, max_retries=3)
    def flaky(self) -> int:  # type: ignore[no-untyped-def]
        attempts.append(self.request.retries)
        if self.request.retries < 2:
            raise self.retry(countdown=60)
        return self.request.retries

    assert flaky.delay().get() == 2
    assert attempts == [0, 1, 2]


def test_autoretry_gives_up_with_the_original_error(eager: App) -> None:
    calls = []

    @eager.task(autoretry_for=(ConnectionError,), max_retries=2, retry_backoff=True)
    def unreachable() -> None:
        calls.append(1)
        raise ConnectionError("down")

    result = unreachable.delay()
    assert len(calls) == 3
    with pytest.raises(ConnectionError, match="down"):
        result.get()


def test_retry_past_max_without_exc(eager: App) -> None:
    @eager.task(bind=True, max_retries=0)
    def once(self) -> None:  # type: ignore[no-untyped-def]
        raise self.retry()

    with pytest.raises(MaxRetriesExceededError):
        once.delay().get()


def test_signals_fire_around_a_task(eager: App) -> None:
    seen: list[tuple[str, object]] = []

    @eager.task
    def ok() -> str:
        return "fine"

    def pre(sender, task_id, **kw):  # type: ignore[no-untyped-def]
        seen.append(("prerun", sender))

    def post(sender, state, retval, **kw):  # type: ignore[no-untyped-def]
        seen.append(("postrun", (state, retval)))

    def success(sender, result, **kw):  # type: ignore[no-untyped-def]
        seen.append(("success", result))

    signals.task_prerun.connect(pre)
    signals.task_postrun.connect(post)
    signals.task_success.connect(success, sender=ok)
    try:
        ok.delay()
    finally:
        for sig, fn in ((signals.task_prerun, pre), (signals.task_postrun, post)):
            sig.disconnect(fn)
        signals.task_success.disconnect(success)
    assert seen == [("prerun", ok), ("success", "fine"), ("postrun", ("SUCCESS", "fine"))]


def test_a_failing_receiver_does_not_break_the_task(eager: App) -> None:
    @eager.task
    def ok() -> int:
        return 1

    def broken(**kw: object) -> None:
        raise RuntimeError("receiver bug")

    signals.task_prerun.connect(broken)
    try:
        assert ok.delay().get() == 1
    finally:
        signals.task_prerun.disconnect(broken)


def test_soft_time_limit_raises_inside_the_task(eager: App) -> None:
    import time

    from fastq.errors import SoftTimeLimitExceeded

    @eager.task(soft_time_limit=0.2)
    def slow() -> str:
        try:
            time.sleep(5)
        except SoftTimeLimitExceeded:
            return "cleaned up"
        return "finished"

    started = time.monotonic()
    assert slow.delay().get() == "cleaned up"
    assert time.monotonic() - started < 2


def test_async_def_tasks_run(eager: App) -> None:
    import asyncio

    @eager.task
    async def fetch(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * 2

    assert fetch.delay(21).get() == 42


@pytest.mark.parametrize("store", [False, True])
def test_task_store_eager_result_as_celery(store: bool) -> None:
    import celery

    app = App(
        "e",
        broker="memory://",
        backend="cache+memory://",
        task_always_eager=True,
        task_store_eager_result=store,
        set_as_current=False,
    )
    capp = celery.Celery(
        "e",
        broker="memory://",
        backend="cache+memory://",
        set_as_current=False,
        task_always_eager=True,
        task_store_eager_result=store,
    )
    seen = []
    for each in (app, capp):

        @each.task(name="e.double")
        def double(x: int) -> int:
            return 2 * x

        result = double.delay(21)
        stored = each.AsyncResult(result.id)
        seen.append((stored.state, stored.result if stored.state == "SUCCESS" else None))
    assert seen[0] == seen[1] == (("SUCCESS", 42) if store else ("PENDING", None)), seen
