"""The CPU cost of task events per task, in isolation: a prefork child's side (the events of a
no-op task encoded and written with its reports, to /dev/null) and the supervisor's (those
reports read from a pipe, the events stamped with their clocks and put in kombu's Redis
envelope; no network), events on vs off, best of 5 rounds of 20 000 tasks (process CPU time).

    python bench/events_micro.py

Far less sensitive to other load than a worker's drain. Also runs against fastq as it was
before 2026-12-03 (``PYTHONPATH=<old checkout>/python``), whose child handed each event to the
reporter encoded (``SupervisorReporter.event``), for an A/B comparison.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from fastq.brokers.redis_events import event_envelope
from fastq.events import EventDispatcher, TaskEvents
from fastq.execution.tracer import Outcome, Settle
from fastq.task import Context
from fastq.worker.reports import SupervisorReporter
from fastq.worker.supervisor import Child, Supervisor

N = 20_000
ROUNDS = 5
OUTCOME = Outcome("SUCCESS", 0, None, Settle.ACK)


class Switch:
    send_events = True


class Publisher:
    def publish(self, messages: list[tuple[str, bytes]]) -> None:
        for routing_key, body in messages:
            event_envelope(body, "celery@host", "celeryev", routing_key)

    def close(self) -> None:
        pass


def child_side(fd: int, on: bool) -> tuple[SupervisorReporter, TaskEvents]:
    reporter = SupervisorReporter(fd)
    switch = Switch()
    switch.send_events = on
    if hasattr(reporter, "event"):  # fastq before 2026-12-03
        events = TaskEvents("celery@host", 1234, reporter.event, switch)
    else:
        events = TaskEvents("celery@host", 1234, None, switch)
        reporter.events = events
    return reporter, events


def context() -> Context:
    return Context(
        id=str(uuid.uuid4()), task="fastq.bench.task", args=("", "noop"), kwargs={}, retries=0,
        headers={"argsrepr": "('', 'noop')", "kwargsrepr": "{}"}, ignore_result=True,
    )  # fmt: skip


def one_task(reporter: SupervisorReporter, events: TaskEvents, ctx: Context) -> None:
    """What the loop does around a task's run, for its events and reports."""
    if events.enabled:
        events.received(ctx)
    if events.enabled:
        events.started(ctx)
    reporter.started(ctx, None, False)
    if events.enabled:
        events.outcome(ctx, OUTCOME, 0.00012)
    reporter.hand_over([], False)


def child(on: bool, contexts: list[Context]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        fd = os.open(os.devnull, os.O_WRONLY)
        reporter, events = child_side(fd, on)
        started = time.process_time()
        for ctx in contexts:
            one_task(reporter, events, ctx)
        best = min(best, time.process_time() - started)
        os.close(fd)
    return best / len(contexts) * 1e6


def report_chunks(on: bool, contexts: list[Context]) -> list[bytes]:
    """What a child writes, read in chunks of 50 tasks (a pipe holds 64 KiB)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    reporter, events = child_side(write_fd, on)
    chunks = []
    for i, ctx in enumerate(contexts):
        one_task(reporter, events, ctx)
        if i % 50 == 49:
            chunks.append(os.read(read_fd, 1 << 20))
    os.close(read_fd)
    os.close(write_fd)
    return chunks


def supervisor(on: bool, contexts: list[Context]) -> float:
    chunks = report_chunks(on, contexts)
    best = float("inf")
    for _ in range(ROUNDS):
        dispatcher = EventDispatcher(Publisher, "celery@host")
        noop: Any = None
        sup = Supervisor(1, noop, noop, noop, on_events=dispatcher.put_many)
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        reports = Child(0, 1, "c", 0.0, read_fd, -1)
        started = time.process_time()
        for k, chunk in enumerate(chunks):
            os.write(write_fd, chunk)
            sup._read_reports(reports)
            if k % 6 == 5:  # a batch of ~300 tasks' events, as every 100 ms at ~3 000 tasks/s
                dispatcher.tick(force=True)
        dispatcher.tick(force=True)
        best = min(best, time.process_time() - started)
        os.close(read_fd)
        os.close(write_fd)
    return best / len(contexts) * 1e6


def main() -> None:
    contexts = [context() for _ in range(N)]
    for name, side in (("child", child), ("supervisor", supervisor)):
        off, on = side(False, contexts), side(True, contexts)
        print(f"{name:10s} µs/task: events off {off:.2f}, on {on:.2f}, extra {on - off:.2f}")


if __name__ == "__main__":
    main()
