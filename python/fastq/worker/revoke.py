"""Revoked task ids, as each consumer loop sees them.

The worker's control server learns of a revoke; the threads and solo pools share one
``RevokedIds`` with it, and the prefork supervisor writes each id down a pipe to every child (a
child forked later inherits the supervisor's set). Like Celery's, the set lives in memory and
is bounded: the oldest ids are forgotten first.
"""

from __future__ import annotations

import os
import select
from collections import OrderedDict
from collections.abc import Iterable

#: Celery keeps the last 50 000 revoked ids.
MAX_REVOKED = 50_000


class IdSet:
    """Task ids in the order they came, the oldest forgotten past ``maxlen``."""

    def __init__(self, maxlen: int = MAX_REVOKED) -> None:
        self.maxlen = maxlen
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, task_ids: Iterable[str]) -> None:
        for task_id in task_ids:
            self._ids[task_id] = None
            self._ids.move_to_end(task_id)
        while len(self._ids) > self.maxlen:
            self._ids.popitem(last=False)


class RevokedIds(IdSet):
    def __init__(self, maxlen: int = MAX_REVOKED) -> None:
        super().__init__(maxlen)
        #: Tasks whose result the prefork supervisor recorded when it killed their child (time
        #: limit, terminate): a late-acknowledged message that comes back for one of them (a
        #: broker that requeues what a dead connection held) is dropped, not run again.
        self.settled = IdSet(maxlen)
        #: Tasks to end at once if running when a SIGTERM or SIGINT comes (``revoke`` with
        #: ``terminate=True``): the prefork supervisor writes them just before the signal.
        self.terminate = IdSet(maxlen)
        #: Task setting changes (``fastq.worker.task_settings``), JSON, for the loop to apply.
        self.changes: list[str] = []
        #: Send task events (``-E``; ``enable_events``/``disable_events`` change it at run time,
        #: told to prefork children on this pipe as ``^1``/``^0``).
        self.send_events = False
        self._buffer = b""
        self._poll: tuple[int, select.poll] | None = None

    def read_pipe(self, fd: int) -> None:
        """Adds the ids the supervisor wrote to ``fd`` (non-blocking; one id per line, settled
        ones marked with a leading ``=``, ones to terminate with ``!``; ``~`` marks a task setting
        change, ``^1``/``^0`` turn task events on or off)."""
        if self._poll is None or self._poll[0] != fd:
            poll = select.poll()
            poll.register(fd, select.POLLIN)
            self._poll = (fd, poll)
        # Called before every batch: asking is cheaper than a read that raises BlockingIOError.
        if not self._poll[1].poll(0):
            return
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not data:
                return
            lines = (self._buffer + data).split(b"\n")
            self._buffer = lines.pop()
            self.add(line.decode() for line in lines if line and line[:1] not in b"=!~^")
            self.settled.add(line[1:].decode() for line in lines if line[:1] == b"=")
            self.terminate.add(line[1:].decode() for line in lines if line[:1] == b"!")
            self.changes.extend(line[1:].decode() for line in lines if line[:1] == b"~")
            for line in lines:
                if line[:1] == b"^":
                    self.send_events = line == b"^1"


def revoked_lines(task_ids: Iterable[str]) -> str:
    """What the supervisor writes down a child's pipe for ids to skip (``read_pipe``)."""
    return "".join(f"{task_id}\n" for task_id in task_ids)


def settled_lines(task_ids: Iterable[str]) -> str:
    """For ids whose result the supervisor recorded: dropped should their message come back."""
    return "".join(f"={task_id}\n" for task_id in task_ids)


def terminate_line(task_id: str) -> str:
    """For the id to end at once when the signal the supervisor sends next arrives."""
    return f"!{task_id}\n"


def events_line(on: bool) -> str:
    """Turns a child's task events on or off (``enable_events``, ``disable_events``)."""
    return "^1\n" if on else "^0\n"


def revoke_arguments(arguments: dict[str, object]) -> tuple[list[str], bool, str]:
    """``(ids, terminate, signal)`` from a ``revoke`` command (Celery's argument names)."""
    raw = arguments.get("task_id") or []
    ids = [raw] if isinstance(raw, str) else [str(i) for i in raw]  # type: ignore[attr-defined]
    return ids, bool(arguments.get("terminate")), str(arguments.get("signal") or "SIGTERM")
