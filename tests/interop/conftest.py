"""Clients of both kinds on the test's Redis broker and backend, for the interop tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery
from fastq import App


@pytest.fixture
def celery_client(broker_url: str, backend_url: str) -> Iterator[Celery]:
    app = Celery("client", broker=broker_url, backend=backend_url, set_as_current=False)
    yield app
    app.close()


@pytest.fixture
def fastq_client(broker_url: str, backend_url: str) -> Iterator[App]:
    app = App("client", broker=broker_url, backend=backend_url, set_as_current=False)
    yield app
    app.close()
