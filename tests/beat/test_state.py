"""The beat state stores (Redis, SQLite, memory://): one lease holder at a time, takeover after
expiry, and last runs changed only by the holder and only from the value it read."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastq.beat.state import BeatState, MemoryBeatState, RedisBeatState, SQLiteBeatState

LEASE = 0.4


@pytest.fixture(params=["redis", "sqlite", "memory"])
def two_states(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[BeatState, BeatState]]:
    if request.param == "redis":
        url = request.getfixturevalue("broker_url")
        prefix = f"t{uuid.uuid4().hex[:8]}."
        pair: tuple[BeatState, BeatState] = (
            RedisBeatState(url, LEASE, prefix),
            RedisBeatState(url, LEASE, prefix),
        )
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/beat.db"
        pair = (SQLiteBeatState(url, LEASE), SQLiteBeatState(url, LEASE))
    else:
        url = f"memory://{uuid.uuid4().hex}"
        pair = (MemoryBeatState(url, LEASE), MemoryBeatState(url, LEASE))
    yield pair
    for state in pair:
        state.close()


def test_one_holder_renewal_and_takeover_after_expiry(two_states: tuple) -> None:
    a, b = two_states
    assert a.acquire("A") and a.holder() == "A"
    assert not b.acquire("B")
    time.sleep(LEASE * 0.6)
    assert a.acquire("A")  # renewed: still A's past the first lease's end
    time.sleep(LEASE * 0.6)
    assert not b.acquire("B") and b.holder() == "A"
    time.sleep(LEASE * 1.3)  # A stopped renewing
    assert b.acquire("B") and a.holder() == "B"
    assert not a.acquire("A")
    a.release("A")  # not A's any more: nothing happens
    assert b.holder() == "B"
    b.release("B")
    assert a.holder() is None and a.acquire("A")


def test_a_run_is_recorded_only_by_the_holder_from_the_value_it_read(two_states: tuple) -> None:
    a, b = two_states
    assert a.acquire("A")
    assert a.record("A", "e", None, 100.0)
    assert not a.record("A", "e", None, 101.0)  # not the stored value any more
    assert not b.record("B", "e", 100.0, 101.0)  # B does not hold the lease
    assert a.record("A", "e", 100.0, 101.5)
    assert b.last_runs() == {"e": 101.5}
    time.sleep(LEASE * 1.3)
    assert not a.record("A", "e", 101.5, 102.0)  # A's lease ran out: fenced off
    assert b.acquire("B") and b.record("B", "e", 101.5, 102.0)
    assert not a.record("A", "e", 101.5, 103.0)  # a stale leader, even with the old value
    assert b.record("B", "e", 102.0, None) and a.last_runs() == {}
