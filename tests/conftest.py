"""Shared fixtures: real Redis on loopback, one database pair per test run, flushed per test.
Under pytest-xdist each worker gets a Redis server and a RabbitMQ vhost of its own
(``tests/isolation.py``), set up here before anything reads the environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from fastq import App, _state

from tests import isolation
from tests.apps import shared

isolation.isolate_xdist_worker()

#: The Redis server the tests use; FASTQ_TEST_REDIS points a parallel run at a server of its own.
REDIS_HOST = os.environ.get("FASTQ_TEST_REDIS", "redis://127.0.0.1:6379")


def pytest_unconfigure(config: pytest.Config) -> None:
    isolation.cleanup()


#: The ``user_properties`` key under which a fault test's counts travel (tests/faults/conftest.py).
FAULT_TALLY = "fault tally"
_TALLIES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        _TALLIES.extend(str(v) for k, v in report.user_properties if k == FAULT_TALLY)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault suite's counts, from every test's report: here rather than in
    tests/faults/conftest.py because under pytest-xdist only this conftest is loaded in the
    process that prints the summary."""
    if not _TALLIES:
        return
    terminalreporter.section("fault suite: how often each task ran")
    for line in _TALLIES:
        terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _shared_tasks_stay_in_their_test() -> Iterator[None]:
    """A ``@shared_task`` defined in a test reaches every app made after it, as in Celery: take
    it back when the test ends, so later tests' apps hold only their own tasks."""
    before = list(_state._shared)
    yield
    _state._shared[:] = before


#: Databases these tests own (flushed before each test that uses them).
BROKER_DB = int(os.environ.get("FASTQ_TEST_BROKER_DB", "8"))
BACKEND_DB = int(os.environ.get("FASTQ_TEST_BACKEND_DB", "9"))


@pytest.fixture
def broker_url() -> Iterator[str]:
    client = redis.Redis.from_url(f"{REDIS_HOST}/{BROKER_DB}")
    client.flushdb()
    yield f"{REDIS_HOST}/{BROKER_DB}"
    client.close()


@pytest.fixture
def backend_url() -> Iterator[str]:
    client = redis.Redis.from_url(f"{REDIS_HOST}/{BACKEND_DB}")
    client.flushdb()
    yield f"{REDIS_HOST}/{BACKEND_DB}"
    client.close()


@pytest.fixture
def broker_redis(broker_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(broker_url)
    yield client
    client.close()


@pytest.fixture
def backend_redis(backend_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(backend_url)
    yield client
    client.close()


@pytest.fixture
def app(broker_url: str, backend_url: str) -> Iterator[App]:
    application = App("t", broker=broker_url, backend=backend_url, set_as_current=False)
    yield application
    application.close()


@pytest.fixture
def worker_env(broker_url: str, backend_url: str) -> dict[str, str]:
    """Points worker subprocesses (``tests/apps``) at this run's databases."""
    return {"FASTQ_BROKER_URL": broker_url, "FASTQ_RESULT_BACKEND": backend_url}


@pytest.fixture
def runs() -> Iterator[redis.Redis]:
    """The side channel where the test apps' tasks record what ran, emptied for the test."""
    client = redis.Redis.from_url(shared.runs_url())
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def task_client(app: App) -> App:
    """``app`` with the test apps' tasks (``interop.add``...) registered, to build signatures;
    their bodies run in worker subprocesses, not here."""
    return shared.register(app)
