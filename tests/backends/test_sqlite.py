"""The SQLite result backend: metas, the SUCCESS guard, expiry, waiting, the default backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastq import App, states
from fastq.backends import DisabledBackend
from fastq.backends.sqlite import SQLiteBackend
from fastq.errors import TimeoutError as FastqTimeout
from fastq.result import AsyncResult


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/fastq.db"


@pytest.fixture
def app(url: str) -> Iterator[App]:
    application = App("t", broker=url, set_as_current=False)
    yield application
    application.close()


def test_it_is_the_default_backend_of_the_sqlite_broker(app: App, url: str) -> None:
    backend = app.backend
    assert isinstance(backend, SQLiteBackend) and backend.url == url
    assert isinstance(
        App("t", broker="redis://127.0.0.1:6379/8", set_as_current=False).backend,
        DisabledBackend,
    )
    other = App("t", broker=url, backend="cache+memory://", set_as_current=False)
    assert type(other.backend).__name__ == "MemoryBackend"


def test_store_and_read(app: App) -> None:
    assert AsyncResult("missing", app=app).state == states.PENDING
    app.backend.mark_as_done("t1", {"answer": [1, 2]})
    result = AsyncResult("t1", app=app)
    assert result.state == states.SUCCESS and result.get(timeout=1) == {"answer": [1, 2]}
    app.backend.mark_as_failure("t2", ValueError("boom"), traceback="Traceback ...")
    with pytest.raises(ValueError, match="boom"):
        AsyncResult("t2", app=app).get(timeout=1)
    assert AsyncResult("t2", app=app).traceback == "Traceback ..."


def test_a_success_is_never_overwritten(app: App) -> None:
    app.backend.mark_as_done("t", 1)
    app.backend.mark_as_failure("t", ValueError("late duplicate"))
    app.backend.mark_as_started("t")
    assert AsyncResult("t", app=app).get(timeout=1) == 1
    app.backend.mark_as_started("u")
    app.backend.mark_as_done("u", 2)
    assert AsyncResult("u", app=app).get(timeout=1) == 2


def test_results_expire(url: str) -> None:
    app = App("t", broker=url, result_expires=0.2, set_as_current=False)
    backend = app.backend
    assert isinstance(backend, SQLiteBackend)
    backend.mark_as_done("old", 1)
    assert AsyncResult("old", app=app).state == states.SUCCESS
    time.sleep(0.25)
    assert AsyncResult("old", app=app).state == states.PENDING
    backend._next_cleanup = 0.0  # the next store also deletes expired rows
    backend.mark_as_done("new", 2)
    rows = backend.db.execute("list", "SELECT task_id FROM fastq_results")
    assert rows == [("new",)]
    app.close()


def test_get_waits_for_the_result_and_times_out(app: App) -> None:
    threading.Timer(0.1, app.backend.mark_as_done, ("later", 42)).start()
    started = time.monotonic()
    assert AsyncResult("later", app=app).get(timeout=5) == 42
    assert time.monotonic() - started < 0.5  # polling backs off to 50 ms at most
    with pytest.raises(FastqTimeout, match=r"not ready after 0\.2s"):
        AsyncResult("never", app=app).get(timeout=0.2)


def test_forget(app: App) -> None:
    app.backend.mark_as_done("t", 1)
    AsyncResult("t", app=app).forget()
    assert AsyncResult("t", app=app).state == states.PENDING
