"""``AsyncResult``: a handle on a task's outcome, read through the app's result backend."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from fastq import states
from fastq.backends.base import exception_to_meta, meta_to_exception

if TYPE_CHECKING:
    from fastq.app import App
    from fastq.backends.base import Backend


class AsyncResult:
    """The outcome of a task by id: ``state``, ``ready()``, ``get(timeout)``, ``await``."""

    def __init__(self, id: str, app: App | None = None, backend: Backend | None = None) -> None:
        if app is None:
            from fastq.app import current_app

            app = current_app()
        self.id = id
        self.app = app
        self._backend = backend
        self._cache: dict[str, Any] | None = None

    @property
    def backend(self) -> Backend:
        return self._backend if self._backend is not None else self.app.backend

    @property
    def task_id(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        return other == self.id if isinstance(other, str) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    # -- meta ------------------------------------------------------------------------------------
    def _get_meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get_meta(self.id)
        if meta["status"] in states.READY_STATES:
            self._cache = meta
        return meta

    def _set_cache(self, meta: dict[str, Any]) -> dict[str, Any]:
        if meta["status"] in states.READY_STATES:
            self._cache = meta
        return meta

    @property
    def state(self) -> str:
        return str(self._get_meta()["status"])

    status = state

    @property
    def info(self) -> Any:
        return self._value(self._get_meta())

    result = info

    @property
    def traceback(self) -> str | None:
        return self._get_meta().get("traceback")

    @property
    def date_done(self) -> str | None:
        return self._get_meta().get("date_done")

    @property
    def children(self) -> list[Any]:
        return list(self._get_meta().get("children") or [])

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @staticmethod
    def _value(meta: dict[str, Any]) -> Any:
        if meta["status"] in states.EXCEPTION_STATES:
            return meta_to_exception(meta.get("result"))
        return meta.get("result")

    # -- waiting ---------------------------------------------------------------------------------
    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        **_: Any,
    ) -> Any:
        """Waits until the task is ready and returns its value; re-raises its exception when
        ``propagate`` (with the original type where it can be imported here)."""
        meta = self._cache or self._set_cache(self.backend.wait_for(self.id, timeout, interval))
        value = self._value(meta)
        if propagate and meta["status"] in states.PROPAGATE_STATES:
            assert isinstance(value, BaseException)
            raise value
        return value

    wait = get

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.to_thread(self.get).__await__()

    def forget(self) -> None:
        self._cache = None
        self.backend.forget(self.id)


class EagerResult(AsyncResult):
    """The outcome of a task run in this process by ``apply()`` / ``task_always_eager``."""

    def __init__(
        self, id: str, value: Any, state: str, traceback: str | None, app: App | None = None
    ) -> None:
        super().__init__(id, app=app)
        if state in states.EXCEPTION_STATES and isinstance(value, BaseException):
            value = exception_to_meta(value)
        self._cache = {
            "status": state,
            "result": value,
            "traceback": traceback,
            "children": [],
            "date_done": None,
            "task_id": id,
        }

    def _get_meta(self) -> dict[str, Any]:
        assert self._cache is not None
        return self._cache

    def forget(self) -> None:
        return None
