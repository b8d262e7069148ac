"""One set of tasks, built on either side: ``build("fastq" | "celery", broker, backend)``.

A worker runs it as ``-A tests.compat.apps`` with ``FASTQ_COMPAT_SIDE`` naming its side; a test
builds the same tasks as its client. The task bodies and handlers are the same code on both
sides, so a difference in outcome is a difference between the workers. What tasks and handlers
did is recorded in the result backend's database (``CALLS``), which the tests own.
"""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace
from typing import Any

import redis
from pydantic import BaseModel

#: The Redis list where tasks and handlers record what they were called with.
CALLS = "compat:calls"
_clients: dict[str, redis.Redis] = {}


def note(url: str, *entry: Any) -> None:
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url)
    client.rpush(CALLS, json.dumps(entry, default=repr))


def calls(url: str) -> list[list[Any]]:
    client = redis.Redis.from_url(url)
    try:
        return [json.loads(item) for item in client.lrange(CALLS, 0, -1)]
    finally:
        client.close()


def attempt(url: str, token: str) -> int:
    """Counts this token's runs; returns the count (1 on the first run)."""
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url)
    return int(client.hincrby("compat:attempts", token, 1))


class _Handlers:
    """The handlers of Celery's ``Task``, recording their arguments (mixed into either side's
    ``Task``)."""

    name: str
    backend_url: str
    AsyncResult: Any  # the side's Task has it

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        note(self.backend_url, "before_start", self.name, task_id, list(args), dict(kwargs))

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        state = self.AsyncResult(task_id).state  # stored before on_success, as in Celery
        note(self.backend_url, "on_success", self.name, retval, task_id, list(args), state)

    def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        traced = type(exc).__name__ in einfo.traceback and "Traceback" in str(einfo)
        self._note_error("on_failure", exc, task_id, args, einfo, traced)

    def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        self._note_error("on_retry", exc, task_id, args, einfo)

    def _note_error(self, handler: str, exc: Any, task_id: str, args: Any, *more: Any) -> None:
        einfo, *rest = more
        what = (type(exc).__name__, str(exc), task_id, list(args), einfo.type.__name__, *rest)
        note(self.backend_url, handler, self.name, *what)

    def after_return(
        self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        value = retval if status == "SUCCESS" else type(retval).__name__
        note(self.backend_url, "after_return", self.name, status, value, task_id, einfo)


class Point(BaseModel):
    """A pydantic model for ``@app.task(pydantic=True)``."""

    x: int
    y: int


def build(side: str, broker: str, backend: str) -> SimpleNamespace:
    """The app and its tasks on ``side``; ``SimpleNamespace(app=..., <task name>=task...)``."""
    if side == "celery":
        from celery import Celery, Task
        from celery.exceptions import Reject

        app: Any = Celery("compat", broker=broker, backend=backend, set_as_current=False)
        app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
    else:
        from fastq import App, Task  # type: ignore[assignment]
        from fastq.errors import Reject  # type: ignore[assignment]

        app = App("compat", broker=broker, backend=backend, set_as_current=False)

    class Recording(_Handlers, Task):  # type: ignore[misc, valid-type]
        backend_url = backend

    class StartsBadly(Recording):  # type: ignore[misc, valid-type]
        def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
            super().before_start(task_id, args, kwargs)
            raise RuntimeError("refused before start")

    class BadHandler(Recording):  # type: ignore[misc, valid-type]
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            raise RuntimeError("on_success broke")

    class InContext(Task):  # type: ignore[misc, valid-type]
        """Flask's pattern: every run wrapped by the base class's ``__call__``."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            note(backend, "in context", self.name, list(args))
            return self.run(*args, **kwargs)

    @app.task(name="compat.in_context", base=InContext, bind=True)
    def in_context(self: Any, x: int) -> list[Any]:
        return [self.name, x]

    @app.task(name="compat.in_context_unbound", base=InContext)
    def in_context_unbound(x: int) -> int:
        return x + 1

    @app.task(name="compat.bad_handler", base=BadHandler)
    def bad_handler(x: int) -> int:
        return x + 1

    @app.task(name="compat.double", base=Recording)
    def double(x: int) -> int:
        return x * 2

    @app.task(name="compat.fail", base=Recording)
    def fail(message: str) -> None:
        raise ValueError(message)

    @app.task(name="compat.retry_once", base=Recording, bind=True, default_retry_delay=0)
    def retry_once(self: Any, token: str) -> int:
        if attempt(backend, token) == 1:
            raise self.retry(exc=KeyError("first attempt"), countdown=0)
        return int(self.request.retries)

    @app.task(name="compat.starts_badly", base=StartsBadly)
    def starts_badly(x: int) -> int:
        return x

    @app.task(
        name="compat.autoretry_countdown",
        autoretry_for=(ValueError,),
        retry_kwargs={"countdown": 1},
        max_retries=3,
    )
    def autoretry_countdown(token: str) -> int:
        count = attempt(backend, token)
        note(backend, "attempt", token, time.time())
        if count < 3:
            raise ValueError(f"attempt {count}")
        return count

    @app.task(
        name="compat.autoretry_max",
        autoretry_for=(ValueError,),
        retry_kwargs={"max_retries": 1, "countdown": 0},
    )
    def autoretry_max(token: str) -> None:
        raise ValueError(f"attempt {attempt(backend, token)}")

    @app.task(
        name="compat.autoretry_backoff",
        autoretry_for=(ValueError,),
        retry_backoff=True,
        retry_jitter=False,
        max_retries=2,
    )
    def autoretry_backoff(token: str) -> None:
        note(backend, "attempt", token, time.time())
        raise ValueError(f"attempt {attempt(backend, token)}")

    @app.task(name="compat.ignored", ignore_result=True)
    def ignored(token: str) -> str:
        note(backend, "ran", token)
        return token

    @app.task(name="compat.ignored_retry", bind=True, ignore_result=True)
    def ignored_retry(self: Any, token: str) -> str:
        note(backend, "ran", token, self.request.retries)
        if self.request.retries == 0:
            raise self.retry(countdown=0)
        return token

    @app.task(name="compat.reject")
    def reject(requeue: bool) -> None:
        raise Reject("not for me", requeue=requeue)

    @app.task(name="compat.reject_late", acks_late=True)
    def reject_late(token: str) -> None:
        note(backend, "ran", token)
        raise Reject("not for me either", requeue=False)

    @app.task(name="compat.spawn")
    def spawn(x: int) -> str:
        return str(double.delay(x).id)

    @app.task(name="compat.spawn_untracked", trail=False)
    def spawn_untracked(x: int) -> str:
        return str(double.delay(x).id)

    @app.task(name="compat.returns_result")
    def returns_result(x: int) -> Any:
        return double.delay(x)

    @app.task(name="compat.stamped", bind=True)
    def stamped(self: Any, x: int) -> int:
        request = self.request
        names = sorted(request.stamped_headers or [])
        note(backend, "stamped", request.id, x, names, dict(request.stamps or {}))
        return x + 1

    @app.task(name="compat.shift", pydantic=True)
    def shift(point: Point, by: int = 1) -> Point:
        assert isinstance(point, Point)
        return Point(x=point.x + by, y=point.y + by)

    return SimpleNamespace(
        app=app,
        shift=shift,
        stamped=stamped,
        side=side,
        double=double,
        bad_handler=bad_handler,
        in_context=in_context,
        in_context_unbound=in_context_unbound,
        fail=fail,
        retry_once=retry_once,
        starts_badly=starts_badly,
        autoretry_countdown=autoretry_countdown,
        autoretry_max=autoretry_max,
        autoretry_backoff=autoretry_backoff,
        ignored=ignored,
        ignored_retry=ignored_retry,
        reject=reject,
        reject_late=reject_late,
        spawn=spawn,
        spawn_untracked=spawn_untracked,
        returns_result=returns_result,
    )


def _worker_app() -> Any:
    side = os.environ.get("FASTQ_COMPAT_SIDE", "fastq")
    broker = os.environ.get("FASTQ_BROKER_URL", "redis://127.0.0.1:6379/11")
    backend = os.environ.get("FASTQ_RESULT_BACKEND", "redis://127.0.0.1:6379/12")
    return build(side, broker, backend).app


app = _worker_app()
