"""Early acks sent by the prefork supervisor for its children, one round trip per batch.

Celery acknowledges a task's message before the task runs (unless ``acks_late``). A prefork child
already reports each start to its supervisor (``S`` lines, ``worker/reports.py``) before the task
runs; where the broker allows it (``Broker.settler``: Redis), that report *is* the ack: the child
only releases the message from its window and the supervisor acknowledges every start it read,
from all children, in one transaction per read of the pipes (at most ~100 a second, see
``REPORT_GAP``), instead of one transaction per task from each child.

What it changes: a child that dies running such a task still has it acknowledged (the
supervisor reads its start report first), so it is not redelivered, as in Celery. If the whole
worker is killed (the supervisor too) within the few milliseconds between a start and its batch,
those few tasks run again after the visibility timeout rather than never: at-least-once for
them where Celery's early ack is at-most-once.
"""

from __future__ import annotations

import logging

from fastq import errors
from fastq.brokers.base import Settler

log = logging.getLogger("fastq.worker")


class EarlyAcks:
    def __init__(self, settler: Settler) -> None:
        self.settler = settler
        #: consumer id -> tags started and not acknowledged yet, in start order.
        self._pending: dict[str, list[str]] = {}
        #: The broker refused the last batch (logged once until one goes through).
        self._failing = False

    def add(self, consumer_id: str, delivery_tag: str) -> None:
        self._pending.setdefault(consumer_id, []).append(delivery_tag)

    @property
    def pending(self) -> int:
        return sum(len(tags) for tags in self._pending.values())

    def flush(self) -> bool:
        """Acknowledges everything pending; False (kept for the next flush) if the broker
        cannot be reached."""
        if not self._pending:
            return True
        batch = list(self._pending.items())
        try:
            self.settler.ack(batch)
        except errors.FastqError as exc:
            if not self._failing:
                log.error(
                    "could not acknowledge %d started task(s) (%s); retrying until the broker "
                    "answers",
                    self.pending,
                    exc,
                )
            self._failing = True
            return False
        if self._failing:
            log.warning("acknowledged %d started task(s) at last", self.pending)
            self._failing = False
        self._pending.clear()
        return True

    def close(self) -> None:
        """A last flush; what cannot be acknowledged now runs again after the visibility
        timeout (it is still recorded as unacknowledged), which is said."""
        if not self.flush():
            log.error(
                "stopped with %d started task(s) not acknowledged (the broker is down): they "
                "will run again after the visibility timeout",
                self.pending,
            )
        self.settler.close()
