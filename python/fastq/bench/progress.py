"""A progress bar while tasks drain: rich when it is installed and stderr is a terminal, else a
plain line every few seconds."""

from __future__ import annotations

import sys
import time
from typing import Any

try:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
except ImportError:  # the `bench` extra
    Console = None  # type: ignore[assignment,misc]


class DrainProgress:
    def __init__(self, label: str, total: int, enabled: bool = True) -> None:
        self.label = label
        self.total = total
        self.enabled = enabled
        self._rich: Any = None
        self._next_line = 0.0
        if enabled and Console is not None:
            console = Console(stderr=True)
            if console.is_terminal:
                self._rich = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]:>9} tasks/s  waiting {task.fields[waiting]}"),
                    TimeElapsedColumn(),
                    console=console,
                    transient=True,
                )
                self._task = self._rich.add_task(label, total=total, rate="", waiting="?")

    def __enter__(self) -> DrainProgress:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()

    def update(self, done: int, waiting: int | None, elapsed: float) -> None:
        if not self.enabled:
            return
        rate = f"{done / elapsed:,.0f}" if elapsed > 0 and done else ""
        shown = "?" if waiting is None else f"{waiting:,}"
        if self._rich is not None:
            self._rich.update(self._task, completed=done, rate=rate, waiting=shown)
            return
        now = time.monotonic()
        if now >= self._next_line or done >= self.total:
            self._next_line = now + 2.0
            print(
                f"  {self.label}: {done:,}/{self.total:,} done, {shown} waiting, {elapsed:.1f}s",
                file=sys.stderr,
                flush=True,
            )
