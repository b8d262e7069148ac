"""The current app, ``@shared_task`` and ``current_task`` (``fastq._state``)."""

from __future__ import annotations

from typing import Any

import pytest
from fastq import App, current_app, current_task, shared_task
from fastq._state import set_current_app


@pytest.fixture
def restore_current_app() -> Any:
    before = current_app()
    yield
    set_current_app(before)


@pytest.mark.usefixtures("restore_current_app")
def test_shared_task_reaches_apps_made_before_and_after_it() -> None:
    before = App("before", broker="memory://", task_always_eager=True)

    @shared_task(name="state.shared_mul")
    def mul(x: int, y: int) -> int:
        return x * y

    after = App("after", broker="memory://", task_always_eager=True)
    assert "state.shared_mul" in before.tasks
    assert "state.shared_mul" in after.tasks
    assert before.tasks["state.shared_mul"] is not after.tasks["state.shared_mul"]
    # Used directly, it is the current app's task (the last one created here).
    assert mul.app is after
    assert mul.delay(6, 7).get() == 42
    set_current_app(before)
    assert mul.app is before
    assert mul(2, 3) == 6


@pytest.mark.usefixtures("restore_current_app")
def test_shared_task_without_parentheses_gets_the_module_name() -> None:
    app = App("plain", broker="memory://", task_always_eager=True)

    @shared_task
    def echo(value: str) -> str:
        return value

    assert (
        f"{__name__}.test_shared_task_without_parentheses_gets_the_module_name.<locals>.echo"
        in (app.tasks)
    )
    assert echo.apply(("x",)).get() == "x"


def test_shared_task_refuses_positional_options() -> None:
    with pytest.raises(TypeError, match="keyword options only"):
        shared_task("name")  # type: ignore[call-overload]


@pytest.mark.usefixtures("restore_current_app")
def test_current_task_is_the_running_task_and_false_outside() -> None:
    app = App("running", broker="memory://", task_always_eager=True)
    assert not current_task
    with pytest.raises(AttributeError, match="no task is running"):
        current_task.request  # noqa: B018

    @app.task(name="state.outer")
    def outer() -> list[Any]:
        inner_seen = inner.apply().get()
        return [current_task.name, current_task.request.id, inner_seen]

    @app.task(name="state.inner")
    def inner() -> str:
        return str(current_task.name)

    result = outer.apply(task_id="the-id")
    assert result.get() == ["state.outer", "the-id", "state.inner"]
    assert not current_task
