"""Task bodies both interop apps register under the same names (``interop.*``)."""

from __future__ import annotations

import time


def add(x: int, y: int) -> int:
    return x + y


def fail(message: str) -> None:
    raise ValueError(message)


def sleep(seconds: float, value: int = 0) -> int:
    time.sleep(seconds)
    return value


def noop() -> None:
    return None


#: name -> function, registered by ``amqp_fastq_app`` and ``amqp_celery_app``.
SHARED = {"interop.add": add, "interop.fail": fail, "interop.sleep": sleep, "interop.noop": noop}
