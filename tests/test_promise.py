"""``fastq.promise.Promise``: what ``AsyncResult.then`` returns (vine's behaviour)."""

from __future__ import annotations

import threading
from typing import Any

from fastq import App
from fastq.promise import Promise


def test_values_pass_down_a_chain_also_after_it_settled() -> None:
    seen: list[Any] = []
    first = Promise(lambda x: x * 2)
    first.then(lambda v: v + 1).then(seen.append)
    first(5)
    first.then(seen.append)  # chained after: called at once
    assert seen == [11, 10]
    assert first.ready and first.value == 10


def test_an_error_goes_to_on_error_or_down_the_chain() -> None:
    errors: list[str] = []

    def boom(_: Any) -> None:
        raise ValueError("boom")

    head = Promise(boom)
    head.then(lambda v: None, on_error=lambda exc: errors.append(f"chained {exc}"))
    head(1)
    assert head.failed and errors == ["chained boom"]
    handled = Promise(on_error=lambda exc: errors.append(f"own {exc}"))
    handled.throw(KeyError("k"))
    assert errors[-1] == "own 'k'"


def test_eager_and_polling_backends_call_back() -> None:
    app = App("then", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.task_always_eager = True

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    seen: list[int] = []
    add.delay(1, 2).then(lambda r: seen.append(r.get()))
    assert seen == [3]  # eager: at once

    app.conf.task_always_eager = False
    done = threading.Event()
    res = app.AsyncResult("polled")
    res.then(lambda r: (seen.append(r.result), done.set()))
    app.backend.mark_as_done("polled", 7)
    assert done.wait(5)
    assert seen == [3, 7]
    app.close()
