"""The current app: the one signatures and results use when they are not given one (Celery's
``current_app``). Kept apart from ``app.py`` so that ``result`` and ``canvas`` read it without
importing the ``App`` class."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, overload

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from fastq._typing import P, R
    from fastq.app import App, BoundTaskDecorator, TaskDecorator
    from fastq.task import Task

_current: App | None = None
_default: App | None = None
#: Every app created, so a ``@shared_task`` defined after an app still reaches it.
_apps: weakref.WeakSet[App] = weakref.WeakSet()
#: ``@shared_task`` definitions: (function, options), added to each app as it is created.
_shared: list[tuple[Callable[..., Any], dict[str, Any]]] = []
#: The running tasks, innermost last: per thread and per asyncio task (the asyncio pool).
_tasks: ContextVar[tuple[Task, ...]] = ContextVar("fastq.current_task", default=())


def set_current_app(app: App) -> None:
    global _current
    _current = app


def get_current_app() -> App:
    """The most recently created app, else a default one made on first use."""
    global _default
    if _current is not None:
        return _current
    if _default is None:
        from fastq.app import App  # only when no app was ever created

        _default = App("default")
    return _default


class CurrentApp:
    """Stands for the current app, as Celery's proxy does: ``current_app.conf``,
    ``current_app.tasks``. Calling it returns the app itself (fastq's earlier function form)."""

    __slots__ = ()

    def __call__(self) -> App:
        return get_current_app()

    def __getattr__(self, name: str) -> Any:
        return getattr(get_current_app(), name)

    def __repr__(self) -> str:
        return f"<current_app: {get_current_app()!r}>"


current_app = CurrentApp()


# -- apps and shared tasks -------------------------------------------------------------------------
def add_app(app: App) -> None:
    """Called by each new app: it gets every shared task defined so far."""
    _apps.add(app)
    for fun, options in _shared:
        _register(app, fun, options)


# Typed as ``App.task``: what it returns is used as the task itself.
@overload
def shared_task(
    fun: Callable[P, Coroutine[Any, Any, R]], /
) -> Task[P, R, Coroutine[Any, Any, R]]: ...
@overload
def shared_task(fun: Callable[P, R], /) -> Task[P, R]: ...
@overload
def shared_task(*, bind: Literal[True], **options: Any) -> BoundTaskDecorator: ...
@overload
def shared_task(*, bind: Literal[False] = False, **options: Any) -> TaskDecorator: ...
def shared_task(*args: Any, **options: Any) -> Any:
    """``@shared_task``: a task every app has (those that exist and those made later), as in
    Celery, for reusable modules that must not import a project's app. What it returns stands
    for the task of the current app: ``add.delay(2, 2)`` sends through ``current_app``."""

    def create(fun: Callable[..., Any]) -> Any:
        _shared.append((fun, options))
        name: str | None = None
        for app in list(_apps):
            name = _register(app, fun, options).name
        return SharedTask(fun, options, name)

    if len(args) == 1 and callable(args[0]) and not options:
        return create(args[0])
    if args:
        raise TypeError("shared_task takes the function, or keyword options only")
    return create


def _register(app: App, fun: Callable[..., Any], options: dict[str, Any]) -> Task:
    name = options.get("name") or app.gen_task_name(fun)
    task = app.tasks.get(name)
    return task if task is not None else app.task(**dict(options))(fun)


class SharedTask:
    """A shared task, resolved in the current app on each use (Celery returns a proxy too)."""

    __slots__ = ("_fun", "_name", "_options")

    def __init__(self, fun: Callable[..., Any], options: dict[str, Any], name: str | None) -> None:
        self._fun = fun
        self._options = options
        self._name = name

    def _get_current_object(self) -> Task:
        task = _register(get_current_app(), self._fun, self._options)
        self._name = task.name
        return task

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get_current_object(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get_current_object()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<shared task {self._name or self._fun.__qualname__}>"


# -- the running task ------------------------------------------------------------------------------
def push_task(task: Task) -> None:
    _tasks.set((*_tasks.get(), task))


def pop_task() -> None:
    _tasks.set(_tasks.get()[:-1])


class CurrentTask:
    """The task running in this thread or asyncio task (Celery's ``current_task``); false
    outside a task."""

    __slots__ = ()

    def _get_current_object(self) -> Task | None:
        stack = _tasks.get()
        return stack[-1] if stack else None

    def __bool__(self) -> bool:
        return self._get_current_object() is not None

    def __getattr__(self, name: str) -> Any:
        task = self._get_current_object()
        if task is None:
            raise AttributeError(f"no task is running, so current_task has no {name!r}")
        return getattr(task, name)

    def __repr__(self) -> str:
        return f"<current_task: {self._get_current_object()!r}>"


current_task = CurrentTask()


# -- waiting for results inside a task ----------------------------------------------------------
_join_will_block = False


def task_join_will_block() -> bool:
    """True in a worker's pool process: ``get()`` inside a task refuses to wait there."""
    return _join_will_block


def set_task_join_will_block(value: bool) -> None:
    global _join_will_block
    _join_will_block = value
