"""Fault-suite fixtures: a Redis server of the test's own, a run ledger, and the tallies every
test reports, printed together at the end of the run (``pytest`` output, no ``-s`` needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.ledger import Tally
from tests.faults.redis_server import RedisServer

_TALLIES: list[tuple[str, Tally]] = []


def report(name: str, tally: Tally) -> None:
    """Keeps a test's counts for the summary and prints them (seen with ``-s`` or on failure)."""
    _TALLIES.append((name, tally))
    print(f"[fault tally] {name}: {tally}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TALLIES:
        return
    terminalreporter.section("fault suite: how often each task ran")
    for name, tally in _TALLIES:
        terminalreporter.write_line(f"{name}: {tally}")


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server on a free port with an AOF (fsync always), killed at the end."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def ledger_path(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.txt")
