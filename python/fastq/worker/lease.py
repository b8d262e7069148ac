"""Lease renewal: a live worker keeps the leases of the messages its consumers hold fresh, so a
task that runs longer than the broker's visibility timeout is not handed to another worker and
run twice. A worker that dies stops renewing, and its messages come back after the timeout.

The prefork supervisor calls ``tick()`` from its loop (it starts no threads); the threads and
solo pools run ``serve()`` on a thread of their own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from fastq import errors
from fastq.brokers.base import Broker

log = logging.getLogger("fastq.worker")

#: Renew this many times per visibility timeout: a late or failed renewal still leaves time.
PER_TIMEOUT = 4
#: Never more often than this (seconds).
MIN_INTERVAL = 0.5


class LeaseRenewer:
    def __init__(self, broker: Callable[[], Broker], consumer_ids: Callable[[], list[str]]) -> None:
        """``broker()`` is the app's broker at each call (the supervisor closes the app's
        connections before it forks); ``consumer_ids()`` lists the live consumers."""
        self.broker = broker
        self.consumer_ids = consumer_ids
        timeout = broker().visibility_timeout
        #: None: the broker has no leases to renew.
        self.interval = max(MIN_INTERVAL, timeout / PER_TIMEOUT) if timeout else None
        self._next = time.monotonic() + (self.interval or 0.0)
        self._failing = False

    def tick(self) -> None:
        """Renews if an interval has passed since the last renewal."""
        if self.interval is None or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.interval
        try:
            self.broker().renew(self.consumer_ids())
        except errors.FastqError as exc:
            if not self._failing:  # once per outage: the consumer loops report it too
                log.warning("could not renew the leases of running tasks: %s", exc)
            self._failing = True
            return
        self._failing = False

    def serve(self, stop: threading.Event) -> None:
        """Renews every interval until ``stop`` is set (a thread of the threads/solo pools)."""
        if self.interval is None:
            return
        while not stop.wait(self.interval):
            self.tick()
