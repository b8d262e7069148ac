"""Fault-suite fixtures: a Redis server of the test's own, a run ledger, and the tallies every
test reports, printed together at the end of the run (``pytest`` output, no ``-s`` needed; the
summary itself is in tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FAULT_TALLY
from tests.faults.ledger import Tally
from tests.faults.redis_server import RedisServer

#: Tallies reported by the running test, attached to its report when it ends.
_PENDING: list[tuple[str, Tally]] = []


def report(name: str, tally: Tally) -> None:
    """Keeps a test's counts for the summary and prints them (seen with ``-s`` or on failure).
    They travel in the test's report (``user_properties``), so under pytest-xdist they reach
    the summary that tests/conftest.py prints in the controlling process."""
    _PENDING.append((name, tally))
    print(f"[fault tally] {name}: {tally}")


@pytest.fixture(autouse=True)
def _tallies_in_report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    while _PENDING:
        name, tally = _PENDING.pop(0)
        request.node.user_properties.append((FAULT_TALLY, f"{name}: {tally}"))


def worker_env(
    broker: str,
    backend: str,
    ledger: str,
    acks_late: bool = False,
    visibility_timeout: float | None = None,
    transport_options: dict[str, object] | None = None,
) -> dict[str, str]:
    """The environment that points a ``tests.faults.app`` worker at a test's own broker,
    backend (``""``: none) and run ledger."""
    env = {
        "FASTQ_BROKER_URL": broker,
        "FASTQ_RESULT_BACKEND": backend,
        "FASTQ_FAULT_LEDGER": ledger,
        "FASTQ_FAULT_ACKS_LATE": "1" if acks_late else "",
    }
    if visibility_timeout is not None:
        env["FASTQ_FAULT_VISIBILITY_TIMEOUT"] = str(visibility_timeout)
    if transport_options:
        env["FASTQ_FAULT_TRANSPORT_OPTIONS"] = json.dumps(transport_options)
    return env


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server on a free port with an AOF (fsync always), killed at the end."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def ledger_path(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.txt")
