"""``AsyncResult.then`` and ``ResultSet.then`` (Celery's promises) and ``join_native``: the same
snippet on a fastq worker and client and on a Celery worker and client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.compat.test_tasks import SIDES, _with_worker


@pytest.fixture(params=SIDES)
def client(request: Any, broker_url: str, backend_url: str) -> Iterator[SimpleNamespace]:
    yield from _with_worker(request.param, broker_url, backend_url, "--pool", "solo")


def _result_set(side: str, results: list[Any], app: Any) -> Any:
    if side == "celery":
        from celery.result import ResultSet
    else:
        from fastq.result import ResultSet  # type: ignore[assignment]
    return ResultSet(results, app=app)


def test_then_calls_back_with_the_result(client: SimpleNamespace) -> None:
    seen: list[Any] = []
    chained: list[Any] = []
    done = threading.Event()

    def on_ready(result: Any) -> int:
        seen.append((result.id, result.state, result.result))
        return int(result.result) + 1

    def after(value: int) -> None:
        chained.append(value)
        done.set()

    res = client.double.delay(21)
    res.then(on_ready).then(after)
    assert res.get(timeout=15) == 42
    assert done.wait(10)
    assert seen == [(res.id, "SUCCESS", 42)]
    assert chained == [43]


def test_then_is_called_for_a_failure_too(client: SimpleNamespace) -> None:
    seen: list[Any] = []
    done = threading.Event()

    def on_ready(result: Any) -> None:
        seen.append((result.state, type(result.result).__name__))
        done.set()

    res = client.fail.delay("then boom")
    res.then(on_ready)
    with pytest.raises(Exception, match="then boom"):
        res.get(timeout=15)
    assert done.wait(10)
    assert seen == [("FAILURE", "ValueError")]


def test_a_result_set_calls_back_when_all_are_ready(client: SimpleNamespace) -> None:
    seen: list[Any] = []
    done = threading.Event()

    def on_ready(results: Any) -> None:
        seen.append(sorted(r.result for r in results.results))
        done.set()

    results = _result_set(client.side, [client.double.delay(i) for i in range(3)], client.app)
    results.then(on_ready)
    assert results.join_native(timeout=15) == [0, 2, 4]
    assert done.wait(10)
    assert seen == [[0, 2, 4]]


@pytest.fixture
def fastq_client(broker_url: str, backend_url: str) -> Iterator[SimpleNamespace]:
    yield from _with_worker("fastq", broker_url, backend_url, "--pool", "solo")


def test_fastq_calls_back_without_a_get(fastq_client: SimpleNamespace) -> None:
    """Different from Celery, whose callbacks run only while something waits on results: fastq's
    result waiter calls them on its own thread."""
    done = threading.Event()
    seen: list[Any] = []
    res = fastq_client.double.delay(5)
    res.then(lambda r: (seen.append(r.result), done.set()))
    assert done.wait(15)
    assert seen == [10]
