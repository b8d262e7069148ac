"""``AsyncResult`` and ``GroupResult``: handles on outcomes, read through the result backend."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic

from fastq import _state, errors, states
from fastq._state import get_current_app
from fastq._typing import R
from fastq.backends.base import exception_to_meta, meta_to_exception
from fastq.promise import Promise

#: What ``then`` takes: a callback (or a promise) and an error handler.
Callback = Callable[[Any], Any] | Promise
OnError = Callable[[BaseException], Any] | None

if TYPE_CHECKING:
    from fastq.app import App
    from fastq.backends.base import Backend


class AsyncResult(Generic[R]):
    """The outcome of a task by id: ``state``, ``ready()``, ``get(timeout)``, ``await``.
    ``AsyncResult[R]``: ``get()`` returns an ``R`` (``AsyncResult(id)`` is ``AsyncResult[Any]``)."""

    def __init__(
        self,
        id: str,
        app: App | None = None,
        backend: Backend | None = None,
        parent: ResultNode | None = None,
    ) -> None:
        self.id = id
        self.app = app or get_current_app()
        self._backend = backend
        self._cache: dict[str, Any] | None = None
        #: The result this one's task was started from, in a chain or chord (``None`` otherwise).
        self.parent = parent
        #: Sent with ``ignore_result``: no result will ever be stored, ``get()`` returns None.
        self.ignored = False

    @property
    def backend(self) -> Backend:
        return self._backend if self._backend is not None else self.app.backend

    @property
    def task_id(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __str__(self) -> str:
        return self.id

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

    def then(self, callback: Callback, on_error: OnError = None, weak: bool = False) -> Promise:
        """Celery's promise: ``callback(result)`` once the task is ready (succeeded or failed),
        from a thread of fastq's, without any ``get()``; ``on_error(exc)`` if reading the
        result fails. Returns the callback's promise. ``weak`` is accepted and changes
        nothing (the pending callback keeps the result alive until it is ready)."""
        promise = callback if isinstance(callback, Promise) else Promise(callback, on_error)

        def settle(outcome: dict[str, Any] | BaseException) -> None:
            if isinstance(outcome, BaseException):
                promise.throw(outcome)
            else:
                self._set_cache(outcome)
                promise(self)

        self._when_ready(settle)
        return promise

    def _when_ready(self, settle: Callable[[dict[str, Any] | BaseException], None]) -> None:
        self.backend.on_ready(self.id, settle)

    status = state

    @property
    def info(self) -> Any:
        return self._value(self._get_meta())

    result = info

    @property
    def traceback(self) -> str | None:
        return self._get_meta().get("traceback")

    @property
    def date_done(self) -> datetime | None:
        """When the task finished (UTC), as Celery gives it: a datetime."""
        value = self._get_meta().get("date_done")
        if isinstance(value, str):
            return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        return value

    @property
    def children(self) -> list[ResultNode]:
        """What the task sent while it ran, its link callbacks included, as results (Celery's
        ``children``)."""
        return [result_from_tuple(c, self.app) for c in self._get_meta().get("children") or []]

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
        disable_sync_subtasks: bool = True,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        **_: Any,
    ) -> R:
        """Waits until the task is ready and returns its value; re-raises its exception when
        ``propagate`` (with the original type where it can be imported here). A task sent
        with ``ignore_result`` stores nothing to wait for: None at once, as in Celery."""
        if self.ignored:
            return None  # type: ignore[return-value]
        if disable_sync_subtasks:
            assert_will_not_block()
        if on_message is not None:
            meta = self._follow(on_message, timeout, interval)
        else:
            meta = self._cache or self._set_cache(self.backend.wait_for(self.id, timeout, interval))
        value = self._value(meta)
        if propagate and meta["status"] in states.PROPAGATE_STATES:
            assert isinstance(value, BaseException)
            raise value
        return value

    wait = get

    def _follow(
        self, on_message: Callable[[dict[str, Any]], Any], timeout: float | None, interval: float
    ) -> dict[str, Any]:
        """Waits for the task, calling ``on_message`` with each new meta it reads (custom states
        from ``update_state`` included, then the final one), as Celery's ``get(on_message=)``.
        States are read every ``interval`` at most (from 10 ms, doubling), so one that lasts
        less than that may not be seen; the final one always is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[Any, ...] | None = None
        pause = min(0.01, interval)
        while True:
            meta = self._cache or self.backend.get_meta(self.id)
            key = (meta.get("status"), repr(meta.get("result")))
            if key != seen and meta.get("status") != states.PENDING:
                seen = key
                on_message(meta)
            if meta["status"] in states.READY_STATES:
                return self._set_cache(meta)
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.TimeoutError(f"task {self.id} not ready after {timeout}s")
            time.sleep(
                pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic()))
            )
            pause = min(pause * 2, interval)

    def __await__(self) -> Generator[Any, None, R]:
        return self._await_value().__await__()

    async def _await_meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        return self._set_cache(await self.backend.wait_async(self.id))

    async def _await_value(self) -> R:
        if self.ignored:
            return None  # type: ignore[return-value]
        meta = await self._await_meta()
        value = self._value(meta)
        if meta["status"] in states.PROPAGATE_STATES:
            assert isinstance(value, BaseException)
            raise value
        return value

    def forget(self) -> None:
        self._cache = None
        self.backend.forget(self.id)

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM") -> None:
        """Asks the workers not to run this task (``terminate``: kill it if running)."""
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    def as_tuple(self) -> list[Any]:
        """Celery's nested form, ``[[id, parent], None]``, as saved in a group's meta."""
        return [[self.id, self.parent.as_tuple() if self.parent else None], None]

    # -- the result graph ------------------------------------------------------------------------
    def iterdeps(self, intermediate: bool = False) -> Iterator[tuple[Any, ResultNode]]:
        """``(parent, node)`` for this result and, once each is ready, what its task sent
        (``children``), breadth first. A node not ready yet ends the walk with
        ``IncompleteStream`` unless ``intermediate``."""
        stack: deque[tuple[Any, ResultNode]] = deque([(None, self)])
        while stack:
            parent, node = stack.popleft()
            yield parent, node
            if node.ready():
                stack.extend((node, _as_node(c, self.app)) for c in node.children or [])
            elif not intermediate:
                raise errors.IncompleteStream(f"{node!r} is not ready")

    def collect(self, intermediate: bool = False, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        """``(result, value)`` for this result and every result its tasks sent, waiting for
        each (``get(**kwargs)``): Celery's ``collect``."""
        for _, node in self.iterdeps(intermediate=intermediate):
            yield node, node.get(**kwargs)

    def maybe_throw(self, propagate: bool = True, callback: Any = None) -> None:
        """Raises the task's exception if it failed (and ``propagate``)."""
        meta = self._get_meta()
        value = self._value(meta)
        if callback is not None:
            callback(self.id, value)
        if propagate and meta["status"] in states.PROPAGATE_STATES:
            assert isinstance(value, BaseException)
            raise value


class EagerResult(AsyncResult[R]):
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
        # A task that rejected its message or was ignored has no value: get() is None, as in
        # Celery's EagerResult.
        self.ignored = state in (states.REJECTED, states.IGNORED)

    def _get_meta(self) -> dict[str, Any]:
        assert self._cache is not None
        return self._cache

    def _when_ready(self, settle: Callable[[dict[str, Any] | BaseException], None]) -> None:
        settle(self._get_meta())  # ready already: ``then`` calls back at once, as in Celery

    def forget(self) -> None:
        return None


class ResultSet:
    """A set of results handled together (Celery's ``ResultSet``): ``ready()``, ``join()``,
    ``revoke()`` over all of them. ``GroupResult`` is one with an id that can be saved."""

    def __init__(
        self,
        results: Sequence[ResultNode] | None = None,
        app: App | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.results: list[ResultNode] = list(results or [])
        self.app = app or get_current_app()
        self._backend = backend

    @property
    def backend(self) -> Backend:
        return self._backend if self._backend is not None else self.app.backend

    def then(self, callback: Callback, on_error: OnError = None, weak: bool = False) -> Promise:
        """Celery's promise: ``callback(self)`` once every result of the set is ready."""
        promise = callback if isinstance(callback, Promise) else Promise(callback, on_error)
        remaining = len(self.results)
        lock = threading.Lock()

        def one_ready(_: Any) -> None:
            nonlocal remaining
            with lock:
                remaining -= 1
                done = remaining == 0
            if done:
                promise(self)

        if not self.results:
            promise(self)
        for result in self.results:
            result.then(one_ready, promise.throw)
        return promise

    #: ``join_native`` is ``join``: fastq's always reads the states in one round trip.
    supports_native_join = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[ResultNode]:
        return iter(self.results)

    def __getitem__(self, index: int) -> ResultNode:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet) and not isinstance(other, GroupResult):
            return other.results == self.results
        return NotImplemented

    # -- membership ------------------------------------------------------------------------------
    def add(self, result: ResultNode) -> None:
        if result not in self.results:
            self.results.append(result)

    def update(self, results: Iterable[ResultNode]) -> None:
        self.results.extend(r for r in results if r not in self.results)

    def remove(self, result: ResultNode | str) -> None:
        """Removes ``result`` (or the result of that id); ``KeyError`` when it is not here."""
        if isinstance(result, str):
            result = AsyncResult(result, app=self.app)
        try:
            self.results.remove(result)
        except ValueError:
            raise KeyError(result) from None

    def discard(self, result: ResultNode | str) -> None:
        try:
            self.remove(result)
        except KeyError:
            pass

    def clear(self) -> None:
        self.results[:] = []

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM", **_: Any) -> None:
        """Asks the workers not to run any of these tasks."""
        ids = [r.id for r in self.leaves()]
        if ids:
            self.app.control.revoke(ids, terminate=terminate, signal=signal)

    # -- state -----------------------------------------------------------------------------------
    def leaves(self) -> Iterator[AsyncResult]:
        """The task results, with nested groups flattened."""
        for result in self.results:
            if isinstance(result, GroupResult):
                yield from result.leaves()
            else:
                yield result

    def _statuses(self) -> dict[str, str]:
        """The state of every task, reading the ones not known to be ready in one MGET."""
        leaves = list(self.leaves())
        unknown = [r for r in leaves if r._cache is None]
        ids = [r.id for r in unknown]
        fresh = dict(zip(ids, self.backend.get_many(ids), strict=True))
        statuses = {}
        for result in leaves:
            meta = result._cache or result._set_cache(fresh[result.id])
            statuses[result.id] = str(meta["status"])
        return statuses

    def ready(self) -> bool:
        """True when every task finished (succeeded, failed or was revoked)."""
        return all(s in states.READY_STATES for s in self._statuses().values())

    def successful(self) -> bool:
        """True when every task succeeded."""
        return all(s == states.SUCCESS for s in self._statuses().values())

    def failed(self) -> bool:
        """True when any task failed."""
        return any(s == states.FAILURE for s in self._statuses().values())

    def waiting(self) -> bool:
        """True while any task has not finished."""
        return not self.ready()

    def completed_count(self) -> int:
        """How many of the results succeeded (a nested group counts once, when all of it did)."""
        statuses = self._statuses()

        def succeeded(result: ResultNode) -> bool:
            if isinstance(result, GroupResult):
                return all(statuses[r.id] == states.SUCCESS for r in result.leaves())
            return statuses[result.id] == states.SUCCESS

        return sum(succeeded(r) for r in self.results)

    def maybe_throw(self, callback: Any = None, propagate: bool = True) -> None:
        """Raises the first failure, in order (and ``propagate``)."""
        self._statuses()
        for result in self.results:
            result.maybe_throw(callback=callback, propagate=propagate)

    # -- waiting ---------------------------------------------------------------------------------
    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], Any] | None = None,
        disable_sync_subtasks: bool = True,
        **_: Any,
    ) -> list[Any]:
        """Waits for every task and returns their values in order; ``timeout`` is for the whole
        set. With ``propagate``, the first failure (in order) is raised. With ``callback``, each
        ``(task_id, value)`` goes to it instead, and the list is empty (Celery's)."""
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._statuses()  # one MGET fills the cache of the finished ones
        values = []
        for result in self.results:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0 and not result.ready():
                raise errors.TimeoutError(f"{self!r} not ready after {timeout}s")
            value = result.get(
                timeout=None if remaining is None else max(remaining, 0.001),
                propagate=propagate,
                interval=interval,
                disable_sync_subtasks=False,
            )
            if callback is not None:
                callback(result.id, value)
            else:
                values.append(value)
        return values

    get = join
    join_native = join

    def __await__(self) -> Generator[Any, None, Any]:
        return self._await_values().__await__()

    async def _await_values(self) -> list[Any]:
        # Waits for every task at once (no thread each), then raises the first failure in order
        # as ``join`` does.
        import asyncio  # only here: a worker that never awaits does not pay for the import

        await asyncio.gather(*(leaf._await_meta() for leaf in self.leaves()))
        return [await result for result in self.results]  # all cached now: no I/O


class GroupResult(ResultSet):
    """The results of a group's tasks, in the order they were given::

    res = group(add.s(i, i) for i in range(10)).apply_async()
    res.get(timeout=10)  # [0, 2, 4, ...]
    res.save()  # later: GroupResult.restore(res.id)
    """

    def __init__(
        self,
        id: str,
        results: Sequence[ResultNode] | None = None,
        app: App | None = None,
        backend: Backend | None = None,
        parent: ResultNode | None = None,
    ) -> None:
        super().__init__(results, app, backend)
        self.id = id
        self.parent = parent

    @property
    def children(self) -> list[ResultNode]:
        return self.results

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __str__(self) -> str:
        return self.id

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    # -- storing ---------------------------------------------------------------------------------
    def save(self, backend: Backend | None = None) -> GroupResult:
        """Stores the group under ``celery-taskset-meta-<id>``, so ``restore`` can rebuild it
        (in this process or another, fastq or Celery)."""
        (backend or self.backend).save_group(self.id, self.as_tuple())
        return self

    @classmethod
    def restore(
        cls, id: str, app: App | None = None, backend: Backend | None = None
    ) -> GroupResult | None:
        """The group saved under ``id``, or ``None`` when nothing is saved."""
        app = app or get_current_app()
        meta = (backend or app.backend).restore_group(id)
        if meta is None:
            return None
        restored = result_from_tuple(meta["result"], app)
        if not isinstance(restored, GroupResult):
            raise errors.DecodeError(f"saved group {id} holds a single result: {meta!r:.200}")
        return restored

    def delete(self, backend: Backend | None = None) -> None:
        """Removes the saved group (not the tasks' results)."""
        (backend or self.backend).delete_group(self.id)

    def forget(self) -> None:
        """Removes the tasks' results and the saved group."""
        for result in self.results:
            result.forget()
        self.delete()

    def as_tuple(self) -> list[Any]:
        """Celery's nested form, ``[[id, parent], [child, ...]]``."""
        return [
            [self.id, self.parent.as_tuple() if self.parent else None],
            [r.as_tuple() for r in self.results],
        ]


#: A node of a workflow's result tree.
ResultNode = AsyncResult | GroupResult


def _as_node(value: Any, app: App) -> ResultNode:
    return value if isinstance(value, (AsyncResult, GroupResult)) else result_from_tuple(value, app)


# -- waiting inside a task -------------------------------------------------------------------------
def assert_will_not_block() -> None:
    """Celery's guard: in a worker's pool process, a task that waits for another task's result
    can deadlock the pool (every process waiting, none free to run what they wait for). Only a
    task running in this thread is refused (an in-process test worker leaves its caller free)."""
    if _state.task_join_will_block() and _state.current_task:
        raise RuntimeError(
            "never call result.get() within a task: it can deadlock the worker (see Celery's "
            "'Avoid launching synchronous subtasks'); use a chain or a chord, or, knowing the "
            "risk, get(disable_sync_subtasks=False) or `with allow_join_result():`"
        )


@contextmanager
def allow_join_result() -> Iterator[None]:
    """Lets the tasks run in this block wait for results (Celery's ``allow_join_result``)."""
    before = _state.task_join_will_block()
    _state.set_task_join_will_block(False)
    try:
        yield
    finally:
        _state.set_task_join_will_block(before)


def result_from_tuple(value: Any, app: App | None = None) -> ResultNode:
    """Rebuilds a result tree from Celery's nested form (``as_tuple``)."""
    node, children = value
    if isinstance(node, (list, tuple)):
        id, parent_value = node
    else:  # Celery before 4.0 saved a bare id
        id, parent_value = node, None
    parent = result_from_tuple(parent_value, app) if parent_value else None
    if children is not None:
        return GroupResult(id, [result_from_tuple(c, app) for c in children], app, parent=parent)
    return AsyncResult(id, app, parent=parent)
