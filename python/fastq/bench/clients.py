"""The benchmark's clients: send the task with ``.delay()`` (and fastq's batch API), await results.

Each system gets a fresh client app per phase, so no state (connections, Celery's result
subscriptions) carries from one measurement into the next.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Protocol

from fastq.bench.spec import TASK_NAME, BenchConfig
from fastq.errors import ConfigurationError


class Handle(Protocol):
    id: str

    def get(self, timeout: float | None = ...) -> Any: ...


class Client(Protocol):
    def delay(self, payload: str, work: str) -> Handle: ...
    def send_batch(self, payload: str, work: str, count: int) -> list[str] | None:
        """Sends ``count`` tasks in one call; None when the system has no batch API."""
        ...

    def close(self) -> None: ...


class FastqClient:
    def __init__(self, config: BenchConfig) -> None:
        from fastq.bench.apps.fastq_app import make_app

        backend = config.backend if config.results else None
        self.app, self.task = make_app(config.broker, backend, config.acks_late, config.queue)

    def delay(self, payload: str, work: str) -> Handle:
        return self.task.delay(payload, work)

    def send_batch(self, payload: str, work: str, count: int) -> list[str] | None:
        calls = [(TASK_NAME, (payload, work), None)] * count
        return [r.id for r in self.app.send_many(calls)]

    def close(self) -> None:
        self.app.close()


class CeleryClient:
    def __init__(self, config: BenchConfig) -> None:
        require_celery()
        module = importlib.import_module("fastq.bench.apps.celery_app")
        backend = config.backend if config.results else None
        self.app, self.task = module.make_app(
            config.broker, backend, config.acks_late, config.queue
        )

    def delay(self, payload: str, work: str) -> Handle:
        result: Handle = self.task.delay(payload, work)
        return result

    def send_batch(self, payload: str, work: str, count: int) -> list[str] | None:
        return None

    def close(self) -> None:
        self.app.close()


def require_celery() -> None:
    if importlib.util.find_spec("celery") is None:
        raise ConfigurationError(
            "--compare celery needs Celery, which is not installed: "
            "pip install 'fastq-worker[compare]'"
        )


def client(system: str, config: BenchConfig) -> Client:
    return FastqClient(config) if system == "fastq" else CeleryClient(config)
