"""Canvas in eager mode (``task_always_eager``): workflows run in-process, for users' tests."""

from __future__ import annotations

from typing import Any

import pytest
from fastq import App, GroupResult, chain, chord, group


@pytest.fixture
def eager() -> App:
    app = App("eager", task_always_eager=True, set_as_current=False)
    calls: list[Any] = []
    app.calls = calls  # type: ignore[attr-defined]

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name="fail")
    def fail(message: str) -> None:
        raise ValueError(message)

    @app.task(name="errback")
    def errback(task_id: str) -> None:
        calls.append(("errback", task_id))

    @app.task(name="errback_request")
    def errback_request(request: Any, exc: BaseException, traceback: Any) -> None:
        calls.append(("errback_request", request.id, str(exc)))

    @app.task(name="record")
    def record(value: Any) -> None:
        calls.append(("record", value))

    @app.task(name="replace", bind=True)
    def replace(self: Any, x: int, how: str) -> Any:
        if how == "task":
            return self.replace(add.s(x, 1))
        if how == "chain":
            return self.replace(add.s(x, 1) | add.s(10))
        if how == "group":
            return self.replace(group(add.s(x, i) for i in range(3)))
        if how == "chunks":
            return self.replace(add.chunks([(x, 1), (x, 2), (x, 3)], 2))
        return self.replace(fail.si(f"replaced {x}"))

    return app


def test_chain_runs_every_step(eager: App) -> None:
    add = eager.tasks["add"]
    result = chain(add.s(1, 2), add.s(10), add.s(100)).apply_async()
    assert result.get() == 113
    assert result.parent is not None and result.parent.get() == 13
    assert (add.s(1, 1) | add.si(5, 5)).delay().get() == 10


def test_group_and_chord(eager: App) -> None:
    add, tsum = eager.tasks["add"], eager.tasks["tsum"]
    members = group(add.s(i, i) for i in range(4)).apply_async()
    assert isinstance(members, GroupResult)
    assert members.get() == [0, 2, 4, 6] and members.completed_count() == 4
    result = chord(add.s(i, i) for i in range(4))(tsum.s())
    assert result.get() == 12
    assert isinstance(result.parent, GroupResult) and result.parent.get() == [0, 2, 4, 6]
    assert chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s()).apply_async().get() == 7


def test_links_and_errbacks_run_in_process(eager: App) -> None:
    add, fail = eager.tasks["add"], eager.tasks["fail"]
    record, errback = eager.tasks["record"], eager.tasks["errback"]
    add.apply_async((1, 2), link=record.s())
    failed = fail.apply_async(
        ("bad",), link_error=[errback.s(), eager.tasks["errback_request"].s()]
    )
    assert failed.failed()
    assert eager.calls == [  # type: ignore[attr-defined]
        ("record", 3),
        ("errback_request", failed.id, "bad"),
        ("errback", failed.id),
    ]


def test_failing_chain_step_raises(eager: App) -> None:
    add, fail = eager.tasks["add"], eager.tasks["fail"]
    with pytest.raises(ValueError, match="stop"):
        chain(add.s(1, 2), fail.si("stop"), add.s(1)).apply_async()


def test_replace_runs_the_replacement_here(eager: App) -> None:
    replace, add, record = eager.tasks["replace"], eager.tasks["add"], eager.tasks["record"]
    assert replace.delay(5, "task").get() == 6
    assert replace.delay(5, "chain").get() == 16
    assert replace.delay(5, "group").get() == [5, 6, 7]
    assert replace.delay(5, "chunks").get() == [[6, 7], [8]]
    # The replaced task then returns that result: its chain and callbacks go on, once.
    assert chain(add.s(1, 1), replace.s("chain"), add.s(100)).apply_async().get() == 113
    replace.apply_async((1, "task"), link=record.s())
    assert eager.calls == [("record", 2)]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="replaced 1"):
        replace.apply((1, "fail"), throw=True)


def test_invert_sends_and_waits(eager: App) -> None:
    add = eager.tasks["add"]
    assert ~add.s(2, 2) == 4
    assert ~group(add.s(i, i) for i in range(3)) == [0, 2, 4]


def test_skew_spreads_countdowns_as_celery() -> None:
    import celery

    fastq_app = App("skew", set_as_current=False)
    celery_app = celery.Celery("skew", set_as_current=False)
    for start, stop, step in [(1.0, None, 1.0), (1.0, 3.0, 1.0), (0.5, 2.0, 0.5), (2.0, 2.5, 1.0)]:
        ours = group(fastq_app.signature("t", (i,)) for i in range(6)).skew(start, stop, step)
        theirs = celery.group(celery_app.signature("t", (i,)) for i in range(6))
        theirs = theirs.skew(start, stop, step)
        assert [t.options["countdown"] for t in ours.tasks] == [
            t.options["countdown"] for t in theirs.tasks
        ]
