"""Task handlers, autoretry, ignored results, Reject, children: the same snippet against a fastq
worker and a Celery worker (``tests/compat/apps.py``), asserting the same outcome."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.compat import apps
from tests.processes import celery_worker, fastq_worker, wait_until

SIDES = ["fastq", "celery"]


def _client(side: str, broker_url: str, backend_url: str) -> Iterator[SimpleNamespace]:
    tasks = apps.build(side, broker_url, backend_url)
    yield tasks
    tasks.app.close()


def _with_worker(
    side: str, broker_url: str, backend_url: str, *flags: str
) -> Iterator[SimpleNamespace]:
    env = {
        "FASTQ_COMPAT_SIDE": side,
        "FASTQ_BROKER_URL": broker_url,
        "FASTQ_RESULT_BACKEND": backend_url,
    }
    start = fastq_worker if side == "fastq" else celery_worker
    with start(*flags, app="tests.compat.apps", env=env):
        yield from _client(side, broker_url, backend_url)


@pytest.fixture(params=SIDES)
def client(request: Any, broker_url: str, backend_url: str) -> Iterator[SimpleNamespace]:
    """The tasks, sent to a worker of the same side (solo pool on both)."""
    yield from _with_worker(request.param, broker_url, backend_url, "--pool", "solo")


@pytest.fixture(params=SIDES)
def prefork(request: Any, broker_url: str, backend_url: str) -> Iterator[SimpleNamespace]:
    """The tasks, sent to a prefork worker of the same side (two children)."""
    flags = ("--pool", "prefork", "--concurrency", "2")
    yield from _with_worker(request.param, broker_url, backend_url, *flags)


@pytest.fixture(params=SIDES)
def eager(request: Any, broker_url: str, backend_url: str) -> Iterator[SimpleNamespace]:
    """The tasks, to run with ``apply()`` (no worker)."""
    yield from _client(request.param, broker_url, backend_url)


def _calls_of(backend_url: str, task_id: str) -> list[list[Any]]:
    return [c for c in apps.calls(backend_url) if task_id in c]


def _wait_calls(backend_url: str, task_id: str, last: str) -> list[list[Any]]:
    wait_until(lambda: any(c[0] == last for c in _calls_of(backend_url, task_id)), timeout=15)
    return _calls_of(backend_url, task_id)


# -- handlers on a custom Task base class -------------------------------------------------------
def test_handlers_on_success(client: SimpleNamespace, backend_url: str) -> None:
    res = client.double.delay(21)
    assert res.get(timeout=15) == 42
    assert _wait_calls(backend_url, res.id, "after_return") == [
        ["before_start", "compat.double", res.id, [21], {}],
        ["on_success", "compat.double", 42, res.id, [21], "SUCCESS"],
        ["after_return", "compat.double", "SUCCESS", 42, res.id, None],
    ]


def test_handlers_in_a_prefork_child(prefork: SimpleNamespace, backend_url: str) -> None:
    ok, failed = prefork.double.delay(4), prefork.fail.delay("child boom")
    assert ok.get(timeout=15) == 8
    with pytest.raises(Exception, match="child boom"):
        failed.get(timeout=15)
    assert _wait_calls(backend_url, ok.id, "after_return")[1:] == [
        ["on_success", "compat.double", 8, ok.id, [4], "SUCCESS"],
        ["after_return", "compat.double", "SUCCESS", 8, ok.id, None],
    ]
    assert [c[0] for c in _wait_calls(backend_url, failed.id, "after_return")] == [
        "before_start",
        "on_failure",
        "after_return",
    ]


def test_handlers_on_failure(client: SimpleNamespace, backend_url: str) -> None:
    res = client.fail.delay("boom")
    with pytest.raises(Exception, match="boom") as raised:
        res.get(timeout=15)
    assert type(raised.value).__name__ == "ValueError"
    assert _wait_calls(backend_url, res.id, "after_return") == [
        ["before_start", "compat.fail", res.id, ["boom"], {}],
        ["on_failure", "compat.fail", "ValueError", "boom", res.id, ["boom"], "ValueError", True],
        ["after_return", "compat.fail", "FAILURE", "ValueError", res.id, None],
    ]


def test_handlers_on_retry(client: SimpleNamespace, backend_url: str) -> None:
    token = uuid.uuid4().hex
    res = client.retry_once.delay(token)
    assert res.get(timeout=15) == 1
    assert _wait_calls(backend_url, res.id, "after_return") == [
        ["before_start", "compat.retry_once", res.id, [token], {}],
        ["on_retry", "compat.retry_once", "KeyError", "'first attempt'", res.id, [token], "Retry"],
        ["before_start", "compat.retry_once", res.id, [token], {}],
        ["on_success", "compat.retry_once", 1, res.id, [token], "SUCCESS"],
        ["after_return", "compat.retry_once", "SUCCESS", 1, res.id, None],
    ]


def test_an_error_in_before_start_fails_the_task(client: SimpleNamespace, backend_url: str) -> None:
    res = client.starts_badly.delay(7)
    with pytest.raises(Exception, match="refused before start"):
        res.get(timeout=15)
    assert [c[0] for c in _wait_calls(backend_url, res.id, "after_return")] == [
        "before_start",
        "on_failure",
        "after_return",
    ]


def test_an_error_in_on_success_leaves_the_outcome(
    client: SimpleNamespace, backend_url: str
) -> None:
    res = client.bad_handler.delay(1)
    assert res.get(timeout=15) == 2
    assert [c[0] for c in _wait_calls(backend_url, res.id, "after_return")] == [
        "before_start",
        "after_return",  # still called
    ]
    assert client.double.delay(2).get(timeout=15) == 4  # and the worker goes on


def test_an_error_in_on_success_is_raised_in_eager_mode(eager: SimpleNamespace) -> None:
    with pytest.raises(RuntimeError, match="on_success broke"):
        eager.bad_handler.apply((1,))


def test_a_base_class_call_wraps_every_run(client: SimpleNamespace, backend_url: str) -> None:
    assert client.in_context.delay(3).get(timeout=15) == ["compat.in_context", 3]
    assert client.in_context_unbound.delay(3).get(timeout=15) == 4
    assert [c for c in apps.calls(backend_url) if c[0] == "in context"] == [
        ["in context", "compat.in_context", [3]],
        ["in context", "compat.in_context_unbound", [3]],
    ]


def test_handlers_in_eager_mode(eager: SimpleNamespace, backend_url: str) -> None:
    ok = eager.double.apply((5,))
    assert ok.get() == 10
    failed = eager.fail.apply(("eager boom",), throw=False)
    assert failed.state == "FAILURE"
    assert _calls_of(backend_url, ok.id) == [
        ["before_start", "compat.double", ok.id, [5], {}],
        ["on_success", "compat.double", 10, ok.id, [5], "PENDING"],  # eager: nothing stored
        ["after_return", "compat.double", "SUCCESS", 10, ok.id, None],
    ]
    assert [c[0] for c in _calls_of(backend_url, failed.id)] == [
        "before_start",
        "on_failure",
        "after_return",
    ]
    # Propagating (throw=True), the error is raised before any failure handler runs.
    with pytest.raises(ValueError, match="thrown"):
        eager.fail.apply(("thrown",), throw=True)
    assert [c[0] for c in apps.calls(backend_url) if ["thrown"] in c] == ["before_start"]


# -- autoretry_for -----------------------------------------------------------------------------
def _attempt_times(backend_url: str, token: str) -> list[float]:
    return [c[2] for c in apps.calls(backend_url) if c[:2] == ["attempt", token]]


def test_autoretry_with_a_countdown(client: SimpleNamespace, backend_url: str) -> None:
    token = uuid.uuid4().hex
    assert client.autoretry_countdown.delay(token).get(timeout=20) == 3
    first, second, third = _attempt_times(backend_url, token)
    assert second - first >= 0.9 and third - second >= 0.9  # retry_kwargs={"countdown": 1}


def test_autoretry_max_retries_from_retry_kwargs(client: SimpleNamespace) -> None:
    res = client.autoretry_max.delay(uuid.uuid4().hex)
    with pytest.raises(Exception, match="attempt 2") as raised:
        res.get(timeout=20)
    assert type(raised.value).__name__ == "ValueError"


def test_autoretry_backoff_without_jitter(client: SimpleNamespace, backend_url: str) -> None:
    token = uuid.uuid4().hex
    res = client.autoretry_backoff.delay(token)
    with pytest.raises(Exception, match="attempt 3"):
        res.get(timeout=20)
    first, second, third = _attempt_times(backend_url, token)
    assert 0.9 <= second - first < 1.9  # 1 * 2**0
    assert third - second >= 1.9  # 1 * 2**1


# -- results that will never arrive ------------------------------------------------------------
def test_get_on_an_ignored_result_returns_none_at_once(
    client: SimpleNamespace, backend_url: str
) -> None:
    token = uuid.uuid4().hex
    started = time.monotonic()
    assert client.double.apply_async((1,), ignore_result=True).get() is None
    assert client.ignored.delay(token).get() is None  # the task's own ignore_result
    assert time.monotonic() - started < 2
    wait_until(lambda: ["ran", token] in apps.calls(backend_url), timeout=15)


def test_the_message_decides_whether_the_result_is_stored(
    client: SimpleNamespace, backend_url: str
) -> None:
    """A message that says ``ignore_result=False`` gets its result stored even from a task that
    ignores its results; one that does not say (``send_task`` by name) leaves it to the task."""
    said = client.app.send_task("compat.ignored", ("said",), ignore_result=False)
    assert said.get(timeout=15) == "said"
    silent = client.app.send_task("compat.ignored", ("silent",))
    wait_until(lambda: ["ran", "silent"] in apps.calls(backend_url), timeout=15)
    time.sleep(0.5)
    assert silent.state == "PENDING"  # as Celery: no result will come (get() needs a timeout)
    # A retry keeps what the first message decided (here: the task's own ignore_result).
    retried = client.app.send_task("compat.ignored_retry", ("retried",))
    wait_until(lambda: ["ran", "retried", 1] in apps.calls(backend_url), timeout=15)
    time.sleep(0.5)
    assert retried.state == "PENDING"


def test_get_without_a_result_backend_says_so_at_once(
    eager: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("FASTQ_RESULT_BACKEND", "CELERY_RESULT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    if eager.side == "celery":
        from celery import Celery

        app: Any = Celery("nobackend", broker=eager.app.conf.broker_url, set_as_current=False)
    else:
        from fastq import App

        app = App("nobackend", broker=eager.app.conf.broker_url, set_as_current=False)
    started = time.monotonic()
    with pytest.raises(Exception, match=r"(?i)no result backend is configured"):
        app.send_task("compat.double", (1,)).get()
    assert time.monotonic() - started < 2
    app.close()


# -- Reject, children, a returned AsyncResult --------------------------------------------------
def test_reject_without_requeue_stores_failure(client: SimpleNamespace, backend_url: str) -> None:
    res = client.reject.delay(False)
    wait_until(lambda: res.state == "FAILURE", timeout=15)
    assert type(res.result).__name__ == "Reject"
    late = client.reject_late.delay("late")  # acks_late: rejected, not redelivered
    wait_until(lambda: late.state == "FAILURE", timeout=15)
    time.sleep(1)
    assert [c for c in apps.calls(backend_url) if c[0] == "ran"] == [["ran", "late"]]


def test_reject_in_eager_mode(eager: SimpleNamespace) -> None:
    res = eager.reject.apply((False,))
    assert (res.state, type(res.result).__name__, res.get()) == ("REJECTED", "Reject", None)


def test_link_callbacks_and_sent_tasks_are_children(client: SimpleNamespace) -> None:
    res = client.double.apply_async((1,), link=client.double.s())
    assert res.get(timeout=15) == 2
    assert [child.get(timeout=15) for child in res.children] == [4]
    spawned = client.spawn.delay(3)
    child_id = spawned.get(timeout=15)
    assert [child.id for child in spawned.children] == [child_id]
    untracked = client.spawn_untracked.delay(3)
    untracked.get(timeout=15)
    assert untracked.children == []  # trail=False


def test_a_task_returning_an_async_result(client: SimpleNamespace) -> None:
    res = client.returns_result.delay(5)
    value = res.get(timeout=15)
    assert [child.id for child in res.children] == [value[0][0]]
    assert value == [[value[0][0], None], None]
