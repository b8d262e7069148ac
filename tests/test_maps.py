"""``task.map``, ``task.starmap``, ``task.chunks`` and the built-in tasks that run them: eagerly,
and on a real fastq worker over Redis. (Their wire forms: ``test_canvas_wire.py``.)"""

from __future__ import annotations

import pytest
from fastq import App, GroupResult, chain, errors
from fastq.result import result_from_tuple

from tests.processes import fastq_worker

pytestmark = pytest.mark.usefixtures("runs")


@pytest.fixture
def eager() -> App:
    app = App("eager", task_always_eager=True, set_as_current=False)

    @app.task(name="add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="double", bind=True)
    def double(self: object, x: int) -> int:
        return 2 * x

    return app


def test_maps_run_eagerly(eager: App) -> None:
    add, double = eager.tasks["add"], eager.tasks["double"]
    assert double.map([1, 2, 3]).apply_async().get() == [2, 4, 6]
    assert add.starmap([(1, 2), (3, 4)]).delay().get() == [3, 7]
    result = add.chunks([(i, i) for i in range(5)], 2).apply_async()
    assert isinstance(result, GroupResult)
    assert result.get() == [[0, 2], [4, 6], [8]]
    assert add.chunks([(1, 1)], 1)().get() == [[2]]  # calling it sends it, as in Celery
    assert len(add.chunks(range(10), 3).group()) == 4
    # Immutable: a parent's result is not passed on.
    assert chain(add.s(1, 1), double.map([5])).apply_async().get() == [10]


def test_builtin_tasks_are_registered_but_not_listed(eager: App) -> None:
    assert {"celery.map", "celery.starmap", "celery.chunks", "celery.accumulate"} <= set(
        eager.tasks
    )
    from fastq.builtin_tasks import user_tasks

    assert user_tasks(eager) == ["add", "double"]
    accumulate = eager.tasks["celery.accumulate"]
    assert accumulate.apply((1, 2), {"index": 1}).get() == 2
    assert accumulate.apply((1, 2)).get() == (1, 2)
    with pytest.raises(errors.NotRegistered, match=r"no\.such"):
        eager.tasks["celery.map"].apply((), {"task": {"task": "no.such"}, "it": [1]}, throw=True)


# -- on a worker ---------------------------------------------------------------------------------
def test_maps_on_a_worker(task_client: App, worker_env: dict[str, str]) -> None:
    with fastq_worker("--concurrency", "2", env=worker_env) as worker:
        add, tsum = task_client.tasks["interop.add"], task_client.tasks["interop.tsum"]
        assert tsum.map([[1, 2], [3]]).apply_async().get(timeout=20) == [3, 3]
        assert add.starmap([(1, 2), (3, 4)]).delay().get(timeout=20) == [3, 7]
        result = add.chunks([(i, i) for i in range(10)], 3).apply_async()
        assert result.get(timeout=20) == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]
        # A chunks signature sent as a task (by name, as a chain step or callback would send it):
        # the worker sends the group and returns its result tree, as Celery's worker does.
        sent = task_client.send_task(
            "celery.chunks", kwargs={"task": add.s(), "it": [[1, 1], [2, 2], [3, 3]], "n": 2}
        )
        tree = result_from_tuple(sent.get(timeout=20), app=task_client)
        assert isinstance(tree, GroupResult) and tree.get(timeout=20) == [[2, 4], [6]]
        # The mapped task must be registered in the worker.
        with pytest.raises(errors.NotRegistered, match=r"interop\.nope"):
            task_client.send_task(
                "celery.map", kwargs={"task": {"task": "interop.nope"}, "it": [1]}
            ).get(timeout=20)
    assert "could not send" not in worker.log(), worker.log()
