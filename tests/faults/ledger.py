"""A run ledger: each task appends ``start <seq>`` and ``end <seq>`` lines to one file, one
``O_APPEND`` write each, so a fault test can count exactly how often every task ran."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def append(path: str, line: str) -> None:
    """One write of a whole line: concurrent writers never interleave inside it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Tally:
    """How often each of ``sent`` tasks ran to its end (``end`` lines) and started."""

    sent: int
    once: int
    twice_or_more: int
    never: int
    started_not_ended: int

    def __str__(self) -> str:
        return (
            f"sent {self.sent}: ran once {self.once}, twice or more {self.twice_or_more}, "
            f"never {self.never} (started but never ended: {self.started_not_ended})"
        )


def read(path: str | Path) -> tuple[Counter[int], Counter[int]]:
    """Start and end counts per sequence number."""
    starts: Counter[int] = Counter()
    ends: Counter[int] = Counter()
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return starts, ends
    for line in text.splitlines():
        kind, _, seq = line.partition(" ")
        if not seq.isdigit():  # a task given junk args (the poison tests) wrote junk: not counted
            continue
        if kind == "start":
            starts[int(seq)] += 1
        elif kind == "end":
            ends[int(seq)] += 1
    return starts, ends


def tally(path: str | Path, sent: int) -> Tally:
    starts, ends = read(path)
    once = sum(1 for s in range(sent) if ends[s] == 1)
    more = sum(1 for s in range(sent) if ends[s] > 1)
    never = sum(1 for s in range(sent) if ends[s] == 0)
    dangling = sum(1 for s in range(sent) if starts[s] > ends[s])
    return Tally(sent, once, more, never, dangling)


def ended(path: str | Path) -> int:
    """How many distinct tasks have ended at least once."""
    return len(read(path)[1])


def runs_ended(path: str | Path) -> int:
    """Every run that ended so far, repeats included."""
    return sum(read(path)[1].values())


def wait_drained(
    path: str | Path, sent: int, bound: float, started: float, log: Callable[[], str]
) -> None:
    """Waits until every one of ``sent`` tasks ended, within ``bound`` seconds of ``started``
    (monotonic; at least one more second); fails with the tally and the end of the worker's
    ``log()``."""
    from tests.processes import wait_until

    remaining = bound - (time.monotonic() - started)
    try:
        wait_until(lambda: ended(path) >= sent, timeout=max(remaining, 1))
    except AssertionError:
        raise AssertionError(
            f"not drained in {bound}s: {tally(path, sent)}\n{log()[-4000:]}"
        ) from None
