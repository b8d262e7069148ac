"""Example tasks for the demo and the README: ``fastq worker -A examples.tasks``."""

import time

from fastq import App

# No broker named: FASTQ_BROKER_URL if set, else the embedded default sqlite:///fastq.db in the
# working directory, which is also the result backend. No server needed.
app = App("examples")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def slow_square(x: int, delay: float = 0.2) -> int:
    time.sleep(delay)
    return x * x


@app.task
def divide(x: float, y: float) -> float:
    return x / y  # divide(1, 0) fails with ZeroDivisionError, which the client sees


@app.task(bind=True, max_retries=2, default_retry_delay=0.2)
def flaky(self, succeed_on: int) -> str:
    if self.request.retries < succeed_on:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries} failed"))
    return f"succeeded after {self.request.retries} retries"
