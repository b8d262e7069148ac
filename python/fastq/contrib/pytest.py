"""pytest fixtures for fastq apps (Celery's ``celery.contrib.pytest``, under fastq's names).

Enabled by installing fastq (a ``pytest11`` entry point). Override ``fastq_config``,
``fastq_parameters``, ``fastq_includes`` or ``fastq_worker_parameters`` in a conftest to change
what the fixtures build::

    def test_add(fastq_app, fastq_worker):
        @fastq_app.task
        def add(x, y):
            return x + y

        assert add.delay(2, 2).get(timeout=10) == 4

The default app uses the in-process broker and result store (``memory://``,
``cache+memory://``), so the tests need no server; the worker runs in a thread (``solo`` pool).
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from fastq.app import App
from fastq.contrib.testing.worker import TestWorker, start_worker


@pytest.fixture(scope="session")
def fastq_config() -> Mapping[str, Any]:
    """Settings of the test app: an in-process broker and result store of its own."""
    store = uuid.uuid4().hex
    return {"broker_url": f"memory://{store}", "result_backend": f"cache+memory://{store}"}


@pytest.fixture(scope="session")
def fastq_parameters() -> Mapping[str, Any]:
    """Keyword arguments of the test ``App`` (besides the settings)."""
    return {}


@pytest.fixture(scope="session")
def fastq_includes() -> list[str]:
    """Modules the worker imports (their tasks register in the app)."""
    return []


@pytest.fixture(scope="session")
def fastq_worker_parameters() -> Mapping[str, Any]:
    """Keyword arguments of ``start_worker``."""
    return {}


@pytest.fixture
def fastq_app(
    fastq_config: Mapping[str, Any],
    fastq_parameters: Mapping[str, Any],
    fastq_includes: list[str],
) -> Iterator[App]:
    """An app for one test, the current app while it runs."""
    from fastq._state import get_current_app, set_current_app

    before = get_current_app()
    app = App("fastq.tests", **{"set_as_current": True, **fastq_parameters}, **fastq_config)
    for module in fastq_includes:
        importlib.import_module(module)
    try:
        yield app
    finally:
        app.close()
        set_current_app(before)


@pytest.fixture
def fastq_worker(
    fastq_app: App, fastq_worker_parameters: Mapping[str, Any]
) -> Iterator[TestWorker]:
    """A worker for ``fastq_app`` in this process while the test runs."""
    with start_worker(fastq_app, **fastq_worker_parameters) as worker:
        yield worker
