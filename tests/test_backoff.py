"""Backoff: the wait between tries of something that keeps failing."""

from __future__ import annotations

from fastq.backoff import Backoff


def test_waits_double_up_to_the_cap_and_start_over_after_a_reset() -> None:
    backoff = Backoff(0.25, 1.0)
    assert [backoff.next() for _ in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert backoff.failures == 5
    backoff.reset()
    assert (backoff.failures, backoff.next()) == (0, 0.25)


def test_jitter_adds_up_to_its_fraction_of_each_wait() -> None:
    backoff = Backoff(1.0, 8.0, jitter=0.25)
    for base in (1.0, 2.0, 4.0, 8.0, 8.0):
        assert base <= backoff.next() <= base * 1.25
