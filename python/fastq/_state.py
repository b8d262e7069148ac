"""The current app: the one signatures and results use when they are not given one (Celery's
``current_app``). Kept apart from ``app.py`` so that ``result`` and ``canvas`` read it without
importing the ``App`` class."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastq.app import App

_current: App | None = None
_default: App | None = None


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
