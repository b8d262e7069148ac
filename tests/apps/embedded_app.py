"""A fastq app on the embedded broker: ``fastq -A tests.apps.embedded_app worker``.

The tests point ``FASTQ_BROKER_URL`` at a SQLite file in a temporary directory (the backend
follows it), ``FASTQ_TEST_RUNS_FILE`` at the file tasks append to, and may shorten the lease with
``FASTQ_TEST_VISIBILITY_TIMEOUT``.
"""

import os
import time

from fastq import App

app = App("embedded")
if os.environ.get("FASTQ_TEST_VISIBILITY_TIMEOUT"):
    app.conf.broker_transport_options = {
        "visibility_timeout": float(os.environ["FASTQ_TEST_VISIBILITY_TIMEOUT"])
    }


def append(line: str) -> None:
    """One ``write`` on an O_APPEND file: lines from concurrent processes never interleave."""
    fd = os.open(os.environ["FASTQ_TEST_RUNS_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@app.task(name="embedded.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="embedded.fail")
def fail(message: str) -> None:
    raise ValueError(message)


@app.task(name="embedded.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="embedded.record", acks_late=True)
def record(token: str) -> str:
    append(f"{token} {os.getpid()}")
    return token


@app.task(name="embedded.victim", bind=True, acks_late=True)
def victim(self, token: str, seconds: float) -> str:  # type: ignore[no-untyped-def]
    """Sleeps on its first delivery only, long enough to be killed; returns on redelivery."""
    append(f"start-{token} {os.getpid()}")
    if not self.request.delivery_info["redelivered"]:
        time.sleep(seconds)
    append(f"{token} {os.getpid()}")
    return token
