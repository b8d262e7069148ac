"""Signals users hook for database connections, tracing and metrics, with Celery's names.

``@task_prerun.connect`` registers a receiver; receivers are called with ``sender`` and keyword
arguments, and one receiver's exception is logged without stopping the others or the task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fastq.signals")

Receiver = Callable[..., Any]


class Signal:
    def __init__(self, name: str, arguments: tuple[str, ...] = ()) -> None:
        self.name = name
        self.arguments = arguments
        self._receivers: list[tuple[Receiver, object | None]] = []

    def __repr__(self) -> str:
        return f"<Signal {self.name}>"

    def connect(self, receiver: Receiver | None = None, *, sender: object | None = None) -> Any:
        """Registers ``receiver``: ``@signal.connect`` or ``@signal.connect(sender=task)``."""

        def register(fn: Receiver) -> Receiver:
            if all(r is not fn for r, _ in self._receivers):
                self._receivers.append((fn, sender))
            return fn

        return register(receiver) if receiver is not None else register

    def disconnect(self, receiver: Receiver) -> None:
        self._receivers = [(r, s) for r, s in self._receivers if r is not receiver]

    @property
    def receivers(self) -> bool:
        return bool(self._receivers)

    def send(self, sender: object | None = None, **named: Any) -> list[tuple[Receiver, Any]]:
        responses = []
        for receiver, wanted in self._receivers:
            if (
                wanted is not None
                and wanted is not sender
                and wanted != getattr(sender, "name", None)
            ):
                continue
            try:
                responses.append((receiver, receiver(sender=sender, signal=self, **named)))
            except Exception as exc:
                log.exception("receiver %r of signal %s raised: %r", receiver, self.name, exc)
                responses.append((receiver, exc))
        return responses


task_prerun = Signal("task_prerun", ("task_id", "task", "args", "kwargs"))
task_postrun = Signal("task_postrun", ("task_id", "task", "args", "kwargs", "retval", "state"))
task_success = Signal("task_success", ("result",))
task_failure = Signal(
    "task_failure", ("task_id", "exception", "args", "kwargs", "traceback", "einfo")
)
task_retry = Signal("task_retry", ("request", "reason", "einfo"))
task_revoked = Signal("task_revoked", ("request", "terminated", "signum", "expired"))
task_unknown = Signal("task_unknown", ("message", "exc", "name", "id"))
task_rejected = Signal("task_rejected", ("message", "exc"))
worker_init = Signal("worker_init")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown", ("pid", "exitcode"))
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
