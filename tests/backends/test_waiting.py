"""Waiting on the SQLite and memory backends: ``get()`` obeys its timeout, and ``await result``
costs no thread (one polling task per event loop, one query per turn)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastq import App
from fastq.errors import BackendError
from fastq.errors import TimeoutError as FastqTimeout


@pytest.fixture(params=["sqlite", "memory"])
def apps(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[App, App]]:
    """A client and a second app storing results in the same place (a worker's role)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/fastq.db"
        client = App("c", broker=url, set_as_current=False)
        worker = App("w", broker=url, set_as_current=False)
    else:
        url = f"cache+memory://{uuid.uuid4().hex}"
        client = App("c", broker="memory://", backend=url, set_as_current=False)
        worker = App("w", broker="memory://", backend=url, set_as_current=False)
    yield client, worker
    client.close()
    worker.close()


def test_get_obeys_its_timeout(apps: tuple[App, App]) -> None:
    client, _ = apps
    for timeout in (0.0, 0.2, 0.5):
        started = time.monotonic()
        with pytest.raises(FastqTimeout, match="not ready after"):
            client.AsyncResult(str(uuid.uuid4())).get(timeout=timeout)
        assert time.monotonic() - started < timeout + 0.5


def test_get_returns_a_result_stored_by_another_app(apps: tuple[App, App]) -> None:
    client, worker = apps
    task_id = str(uuid.uuid4())
    timer = threading.Timer(0.2, worker.backend.mark_as_done, (task_id, 7))
    timer.start()
    started = time.monotonic()
    assert client.AsyncResult(task_id).get(timeout=5) == 7
    assert time.monotonic() - started < 1.0
    timer.join()


def test_1000_awaits_take_no_thread(apps: tuple[App, App]) -> None:
    client, worker = apps
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    worker.backend.mark_as_done(ids[0], 0)  # one is ready before anyone waits
    before = threading.active_count()
    peak = [before]

    async def main() -> list[Any]:
        pending = asyncio.gather(*(client.AsyncResult(i) for i in ids))
        await asyncio.sleep(0.1)
        peak[0] = max(peak[0], threading.active_count())
        worker.backend.store_many(
            (i, worker.backend.build_meta(i, n, "SUCCESS")) for n, i in enumerate(ids)
        )
        values = await asyncio.wait_for(pending, 10)
        peak[0] = max(peak[0], threading.active_count())
        return values

    assert asyncio.run(main()) == list(range(1000))
    assert peak[0] == before


def test_an_await_can_be_given_up(apps: tuple[App, App]) -> None:
    client, _ = apps

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.AsyncResult(str(uuid.uuid4())), 0.1)

    started = time.monotonic()
    asyncio.run(main())  # nothing left running that would keep the loop from closing
    assert time.monotonic() - started < 1.0


def test_await_without_a_backend_says_how_to_enable_one() -> None:
    app = App("t", broker="redis://127.0.0.1:6379/8", set_as_current=False)  # never connects

    async def main() -> None:
        with pytest.raises(BackendError, match="no result backend is configured"):
            await asyncio.wait_for(app.AsyncResult("x"), 5)

    asyncio.run(main())


def test_a_poller_that_fails_fails_its_awaits_instead_of_leaving_them_pending() -> None:
    """``await`` has no timeout of its own: a reader that breaks the poller (here one that
    returns fewer metas than ids) must reach every await, not end the task silently."""
    from fastq.backends.waiting import LoopPoller

    poller = LoopPoller(lambda ids: [], lambda task_id: {"status": "PENDING"})

    async def main() -> None:
        waits = [poller.wait(f"t{i}", None) for i in range(3)]
        outcomes = await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), timeout=5)
        assert all(isinstance(o, ValueError) for o in outcomes), outcomes

    asyncio.run(main())
