"""Celery's built-in tasks that canvas messages name, registered in every app so that a fastq
worker runs them as a Celery worker does: ``celery.map``, ``celery.starmap`` and
``celery.chunks`` (``fastq.maps``), and ``celery.accumulate`` (``Task.replace`` with a group).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastq.app import App

#: Names of built-in tasks start with this; ``inspect registered`` leaves them out, as Celery's.
PREFIX = "celery."


def register(app: App) -> None:
    """Adds the built-in tasks to ``app``'s registry."""

    @app.task(name="celery.map")
    def xmap(task: Mapping[str, Any], it: Iterable[Any]) -> list[Any]:
        run = _registered(app, task)
        return [run(item) for item in it]

    @app.task(name="celery.starmap")
    def xstarmap(task: Mapping[str, Any], it: Iterable[Any]) -> list[Any]:
        run = _registered(app, task)
        return [run(*item) for item in it]

    @app.task(name="celery.chunks")
    def chunks(task: Mapping[str, Any], it: Iterable[Any], n: int) -> Any:
        from fastq.maps import chunks

        # A task that returns a result tree stores its nested form, as Celery's worker does.
        return chunks(task, it, n, app=app).apply_async().as_tuple()

    @app.task(name="celery.accumulate")
    def accumulate(*args: Any, **kwargs: Any) -> Any:
        index = kwargs.get("index")
        return args[index] if index is not None else args


def _registered(app: App, task: Mapping[str, Any]) -> Callable[..., Any]:
    """The task a map signature names, to call here for each item. As in Celery, the task's own
    arguments in that signature are not used."""
    from fastq.canvas import signature
    from fastq.errors import NotRegistered

    found = signature(task, app=app).type
    if found is None:
        raise NotRegistered(f"task {task.get('task')!r} (mapped) is not registered in this worker")
    return found


def user_tasks(app: App) -> list[str]:
    """The names of ``app``'s tasks without the built-in ones, sorted."""
    return sorted(name for name in app.tasks if not name.startswith(PREFIX))
