"""The result backend interface and Celery's result meta format.

A backend stores one meta document per task id (``{"status", "result", "traceback", "children",
"date_done", "task_id"}``) and wakes up waiters when a task becomes ready. ``AsyncResult`` talks to
nothing else.
"""

from __future__ import annotations

import builtins
import importlib
import logging
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, Any

from fastq import errors, serialization, states
from fastq.config import app_timezone

if TYPE_CHECKING:
    from fastq.backends.waiting import LoopPoller
    from fastq.config import Config

log = logging.getLogger("fastq.backends")


def exception_to_meta(exc: BaseException) -> dict[str, Any]:
    """Celery's exception format: type name, module and the constructor arguments."""
    cls = type(exc)
    module = cls.__module__
    if module == errors.__name__ and cls.__qualname__ in errors.CELERY_EQUIVALENTS:
        module = "celery.exceptions"
    args = list(exc.args)
    try:
        serialization.dumps(args, "json")
    except errors.EncodeError:
        args = [str(exc)]
    return {"exc_type": cls.__qualname__, "exc_message": args, "exc_module": module}


def meta_to_exception(value: Any) -> BaseException:
    """Rebuilds an exception from its meta; never unpickles, refuses non-exception types."""
    if not isinstance(value, Mapping) or "exc_type" not in value:
        return errors.TaskError("Exception", "builtins", repr(value))
    exc_type = str(value.get("exc_type"))
    exc_module = str(value.get("exc_module") or "builtins")
    message = value.get("exc_message")
    args = tuple(message) if isinstance(message, (list, tuple)) else (message,)
    cls = _find_class(exc_module, exc_type)
    if cls is None:
        return errors.TaskError(exc_type, exc_module, ", ".join(map(str, args)))
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise errors.SecurityError(
            f"result names {exc_module}.{exc_type}, which is not an exception type"
        )
    try:
        return cls(*args)
    except Exception:  # a constructor with another signature: keep type name and text
        return errors.TaskError(exc_type, exc_module, ", ".join(map(str, args)))


#: Where Celery's exceptions live: a Celery worker names billiard's for its time limits and a
#: lost worker process (``celery.exceptions`` re-exports them).
_CELERY_MODULES = ("celery.exceptions", "billiard.exceptions")


def _find_class(module_name: str, qualname: str) -> Any:
    if module_name in ("builtins", "exceptions"):
        obj: Any = builtins
    elif module_name in _CELERY_MODULES and qualname in errors.CELERY_EQUIVALENTS:
        obj = errors
    else:
        obj = sys.modules.get(module_name)
        if obj is None:
            try:
                obj = importlib.import_module(module_name)
            except Exception:
                return None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


#: ``(second, zone, date and time to the second, UTC offset)`` of the latest ``now_iso``.
_iso_second: tuple[int, tzinfo, str, str] = (0, timezone.utc, "", "")


def now_iso(tz: tzinfo = timezone.utc) -> str:
    """``datetime.now(tz).isoformat()``, formatted once per second (a result stores one per task,
    and the formatting is most of its cost): the microseconds go between the cached parts."""
    global _iso_second
    micros = time.time_ns() // 1000
    second, micro = divmod(micros, 1_000_000)
    cached, zone, head, offset = _iso_second
    if cached != second or zone is not tz:
        whole = datetime.fromtimestamp(second, tz).isoformat()  # no fraction at .000000
        head, offset = whole[:19], whole[19:]
        _iso_second = (second, tz, head, offset)
    return f"{head}.{micro:06d}{offset}" if micro else head + offset


@dataclass(slots=True)
class ChordJoin:
    """The parts of a chord, handed to the one worker that won the right to send its body."""

    group_id: str
    #: ``(task_id, state, result)`` in header order; failures hold Celery's exception dict.
    parts: list[tuple[str, str, Any]]
    #: Proves the claim when the worker reports the body sent (``Backend.chord_done``).
    token: str

    def values(self) -> list[Any]:
        """The header's results in order, or ``ChordError`` naming the first part that failed,
        with Celery's message (``Dependency <id> raised ValueError('boom')``)."""
        for task_id, state, result in self.parts:
            if state in states.PROPAGATE_STATES:
                cause = meta_to_exception(result)
                error = errors.ChordError(f"Dependency {task_id} raised {cause!r}")
                error.__cause__ = cause
                raise error
        return [result for _, _, result in self.parts]


class Backend(ABC):
    """Stores task outcomes and lets clients wait for them."""

    def __init__(self, conf: Config, url: str) -> None:
        self.conf = conf
        self.url = url
        self.serializer: str = conf.result_serializer
        self.accept: list[str] = list(conf.result_accept_content or conf.accept_content)
        self.expires: float | None = conf.result_expires
        self.timezone = app_timezone(conf)  # of date_done, as Celery's
        self._async_poller: LoopPoller | None = None

    # -- meta ------------------------------------------------------------------------------------
    def build_meta(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
    ) -> dict[str, Any]:
        if state in states.EXCEPTION_STATES and isinstance(result, BaseException):
            result = exception_to_meta(result)
        elif self.serializer != "pickle" and callable(getattr(type(result), "as_tuple", None)):
            # A task returned an AsyncResult/GroupResult: stored as its id tree, as Celery does.
            result = result.as_tuple()
        meta: dict[str, Any] = {
            "status": state,
            "result": result,
            "traceback": traceback,
            "children": [],
            "date_done": now_iso(self.timezone) if state in states.READY_STATES else None,
            "task_id": task_id,
        }
        if request is not None:
            group = getattr(request, "group", None)
            parent = getattr(request, "parent_id", None)
            if group:
                meta["group_id"] = group
            if parent:
                meta["parent_id"] = parent
            children = getattr(request, "children", None)
            if children:
                meta["children"] = [child.as_tuple() for child in children]
            if self.conf.result_extended:
                meta.update(
                    name=getattr(request, "task", None),
                    args=getattr(request, "args", None),
                    kwargs=getattr(request, "kwargs", None),
                    worker=getattr(request, "hostname", None),
                    retries=getattr(request, "retries", 0),
                    queue=(getattr(request, "delivery_info", None) or {}).get("routing_key"),
                )
        return meta

    def encode_meta(self, meta: Mapping[str, Any]) -> bytes:
        """Serializes a meta; a result the serializer cannot carry is stored as a FAILURE that
        says so (the client would otherwise wait forever), and logged."""
        try:
            return serialization.dumps(meta, self.serializer)[0]
        except errors.EncodeError as exc:
            task_id = str(meta.get("task_id"))
            error = errors.EncodeError(
                f"the {str(meta.get('status')).lower()} result of task {task_id} cannot be "
                f"stored with the {self.serializer} serializer: {exc}"
            )
            log.error("%s", error)
            failure = self.build_meta(task_id, error, states.FAILURE)
            return serialization.dumps(failure, self.serializer)[0]

    def decode_meta(self, data: bytes) -> dict[str, Any]:
        content_type = serialization.content_type_of(self.serializer)
        if data[:1] in (b"{", b"[") and content_type != "application/json":
            content_type = "application/json"  # a Celery peer may use another result serializer
        meta = serialization.loads(data, content_type, [*self.accept, content_type])
        if not isinstance(meta, dict) or "status" not in meta:
            raise errors.DecodeError(f"stored result is not a task meta document: {meta!r:.200}")
        return meta

    def encode_value(self, value: Any) -> bytes:
        return serialization.dumps(value, self.serializer)[0]

    def decode_value(self, data: bytes) -> Any:
        content_type = serialization.content_type_of(self.serializer)
        if data[:1] in (b"{", b"[") and content_type != "application/json":
            content_type = "application/json"  # written by a Celery peer with another serializer
        return serialization.loads(data, content_type, [*self.accept, content_type])

    @staticmethod
    def pending_meta(task_id: str) -> dict[str, Any]:
        return {
            "status": states.PENDING,
            "result": None,
            "traceback": None,
            "children": [],
            "date_done": None,
            "task_id": task_id,
        }

    # -- storing ---------------------------------------------------------------------------------
    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
    ) -> None:
        self.store_many([(task_id, self.build_meta(task_id, result, state, traceback, request))])

    def mark_as_done(self, task_id: str, result: Any, request: Any = None) -> None:
        self.store_result(task_id, result, states.SUCCESS, request=request)

    def mark_as_failure(
        self, task_id: str, exc: BaseException, traceback: str | None = None, request: Any = None
    ) -> None:
        self.store_result(task_id, exc, states.FAILURE, traceback, request)

    def mark_as_started(self, task_id: str, request: Any = None, **meta: Any) -> None:
        self.store_result(task_id, meta, states.STARTED, request=request)

    def mark_as_retry(
        self, task_id: str, exc: BaseException, traceback: str | None = None, request: Any = None
    ) -> None:
        self.store_result(task_id, exc, states.RETRY, traceback, request)

    def mark_as_revoked(self, task_id: str, reason: str = "revoked", request: Any = None) -> None:
        self.store_result(task_id, errors.TaskRevokedError(reason), states.REVOKED, None, request)

    @abstractmethod
    def store_many(self, metas: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Stores several metas in one round trip where the store allows it."""

    # -- reading ---------------------------------------------------------------------------------
    @abstractmethod
    def get_meta(self, task_id: str) -> dict[str, Any]:
        """The stored meta, or a PENDING meta when nothing is stored."""

    def get_many(self, task_ids: list[str]) -> list[dict[str, Any]]:
        """The metas of several tasks; backends that can read them in one round trip do."""
        return [self.get_meta(task_id) for task_id in task_ids]

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict:
        """Blocks until the task is ready; backends override this with a wake-up channel."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(0.005, interval)
        while True:
            meta = self.get_meta(task_id)
            if meta["status"] in states.READY_STATES:
                return meta
            if deadline is not None and time.monotonic() >= deadline:
                raise errors.TimeoutError(f"task {task_id} not ready after {timeout}s")
            time.sleep(delay)
            delay = min(delay * 2, interval)

    async def wait_async(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        """``wait_for`` for ``await result``: by default one polling task per event loop reads
        every awaited id with ``get_many`` in the loop's executor, up to every 0.2 s. Redis
        (pub/sub and a shared waiter), SQLite and memory (local reads) do better."""
        if self._async_poller is None:
            from fastq.backends.waiting import LoopPoller

            self._async_poller = LoopPoller(
                self.get_many, self.get_meta, first=0.01, cap=0.2, in_thread=True
            )
        return await self._async_poller.wait(task_id, timeout)

    def on_ready(
        self, task_id: str, callback: Callable[[dict[str, Any] | BaseException], None]
    ) -> None:
        """Calls ``callback`` once, from a thread of fastq's, with the task's ready meta (or
        the error reading it raised): what ``AsyncResult.then`` needs. By default a thread
        waits with ``wait_for``; the Redis backend's shared waiter watches it instead."""

        def wait() -> None:
            try:
                outcome: dict[str, Any] | BaseException = self.wait_for(task_id, None)
            except Exception as exc:
                outcome = exc
            callback(outcome)

        threading.Thread(target=wait, name="fastq-then", daemon=True).start()

    def on_task_sent(self, task_id: str) -> None:  # noqa: B027 - optional hook
        """Called before a task is published (rpc:// declares its reply queue here)."""

    def on_tasks_sent(self, task_ids: list[str]) -> None:
        """``on_task_sent`` for a batch (``send_many``); backends may do it in one go."""
        for task_id in task_ids:
            self.on_task_sent(task_id)

    @abstractmethod
    def forget(self, task_id: str) -> None:
        """Removes the stored result."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases connections."""

    # -- groups and chords -----------------------------------------------------------------------
    # Only backends with atomic counters can join a chord; the others say so instead of hanging.
    def _no_groups(self, what: str) -> errors.NotSupportedByBackend:
        return errors.NotSupportedByBackend(
            f"{what} needs a result backend that stores groups (redis://); "
            f"this app's backend is {type(self).__name__}"
        )

    def save_group(self, group_id: str, result: list[Any]) -> None:
        """Stores a group's result tree (``GroupResult.as_tuple()``)."""
        raise self._no_groups("GroupResult.save()")

    def restore_group(self, group_id: str) -> dict[str, Any] | None:
        """The saved group meta ``{"result": tree}``, or ``None``."""
        raise self._no_groups("GroupResult.restore()")

    def delete_group(self, group_id: str) -> None:
        raise self._no_groups("GroupResult.delete()")

    def set_chord_size(self, group_id: str, size: int) -> None:
        """Called by the client before it sends a chord's header."""
        raise self._no_groups("a chord")

    def chord_part_return(
        self, group_id: str, task_id: str, group_index: int | None, state: str, result: Any
    ) -> ChordJoin | None:
        """Records one header task's outcome. Returns the parts to the single caller that
        completes the chord and wins the right to send the body; ``None`` to every other."""
        raise self._no_groups("a chord")

    def chord_done(self, join: ChordJoin) -> None:
        """The body was sent (or failed for good): drop the counter, refuse late duplicates."""
        raise self._no_groups("a chord")


class DisabledBackend(Backend):
    """No result backend configured: storing is a no-op and reading says how to enable one."""

    def __init__(self, conf: Config, url: str = "disabled://") -> None:
        super().__init__(conf, url)

    def _refuse(self) -> errors.BackendError:
        return errors.BackendError(
            "no result backend is configured: pass backend='redis://...' to App(), "
            "or set result_backend / FASTQ_RESULT_BACKEND"
        )

    def store_many(self, metas: Iterable[tuple[str, dict[str, Any]]]) -> None:
        return None

    def get_meta(self, task_id: str) -> dict[str, Any]:
        raise self._refuse()

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict:
        raise self._refuse()

    def forget(self, task_id: str) -> None:
        raise self._refuse()
