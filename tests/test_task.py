"""``Task`` behaviour that needs no worker, compared with Celery's where Celery defines it."""

from __future__ import annotations

from typing import Any

import celery
import fastq
import pytest
from fastq import App
from fastq.errors import ConfigurationError


def _apps() -> list[Any]:
    fastq_app = App("typing", broker="memory://", set_as_current=False)
    celery_app = celery.Celery("typing", broker="memory://", set_as_current=False)
    return [fastq_app, celery_app]


@pytest.mark.parametrize("flavour", ["fastq", "celery"])
def test_wrong_arguments_raise_before_sending(flavour: str) -> None:
    app = _apps()[0 if flavour == "fastq" else 1]

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.bound", bind=True)
    def bound(self: Any, x: int) -> int:
        return x

    @app.task(name="t.loose", typing=False)
    def loose(x: int) -> int:
        return x

    # The wording differs (Celery calls a stub with the same parameters), the cause does not.
    with pytest.raises(TypeError, match=r"missing .*'y'"):
        add.delay(1)
    with pytest.raises(TypeError, match="positional argument"):
        bound.apply_async((1, 2))
    with pytest.raises(TypeError, match="keyword argument 'z'"):
        add.apply_async((1, 2), {"z": 3})
    with pytest.raises(TypeError):
        add.s(1).delay()  # still one short when sent
    if flavour == "fastq":  # sent: nothing checks it (memory:// has no worker here)
        assert loose.apply_async((1, 2, 3)).id


class Resize:  # the body shared by both flavours' class-based tasks
    name = "images.resize"

    def run(self, path: str, size: int) -> str:
        return f"{path}@{size}"


@pytest.mark.parametrize("flavour", ["fastq", "celery"])
def test_class_based_tasks_register_and_run(flavour: str) -> None:
    app = _apps()[0 if flavour == "fastq" else 1]
    base = fastq.Task if flavour == "fastq" else celery.Task
    resize = app.register_task(type("ResizeTask", (Resize, base), {})())
    assert app.tasks["images.resize"] is resize
    assert resize("a.png", 10) == "a.png@10"
    assert resize.apply(("b.png", 20)).get() == "b.png@20"
    if flavour == "fastq":  # Celery checks only decorated functions; fastq these too
        with pytest.raises(TypeError):
            resize.delay("c.png")
    unnamed = app.register_task(type("Unnamed", (base,), {"run": lambda self: 1})())
    assert unnamed.name.endswith("Unnamed")


class Audited(fastq.Task):  # type: ignore[type-arg]
    audited = True


def test_task_cls_is_the_default_base() -> None:
    app = App("cls", broker="memory://", set_as_current=False, task_cls=f"{__name__}:Audited")

    @app.task
    def hello() -> str:
        return "hi"

    assert isinstance(hello, Audited) and app.task_cls is Audited
    assert App("plain", broker="memory://", set_as_current=False).task_cls is fastq.Task
    with pytest.raises(ConfigurationError, match="task_cls must be a fastq Task subclass"):
        App("bad", broker="memory://", set_as_current=False, task_cls="builtins:dict")


def test_the_positional_fast_path_decides_as_bind_does() -> None:
    app = App("arity", broker="memory://", set_as_current=False)

    @app.task(name="a.defaults")
    def defaults(x: int, y: int = 1, *, z: int = 2) -> int:
        return x

    @app.task(name="a.star")
    def star(x: int, *rest: int) -> int:
        return x

    @app.task(name="a.kwonly")
    def kwonly(x: int, *, must: int) -> int:
        return x

    for task, args, ok in [
        (defaults, (1,), True), (defaults, (1, 2), True), (defaults, (), False),
        (defaults, (1, 2, 3), False), (star, (1, 2, 3, 4), True), (star, (), False),
        (kwonly, (1,), False),
    ]:  # fmt: skip
        if ok:
            task.check_arguments(args)
        else:
            with pytest.raises(TypeError):
                task.check_arguments(args)
