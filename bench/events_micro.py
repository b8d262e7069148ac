"""The CPU cost of task events per task, in isolation: a prefork child's side (the events of a
no-op task encoded and written with its reports, to /dev/null; the ``task-received`` of a
fetched batch of 10 in one call) and the supervisor's (those reports read from a pipe, the
events stamped with their clocks and put in kombu's Redis envelope; no network), events on vs
off, best of 5 rounds of 20 000 tasks (process CPU time).

    python bench/events_micro.py [REDIS_URL]

With ``REDIS_URL`` (a Redis nothing else uses), the deliveries are real ones, fetched from it
by the Rust consumer (sent with ``send_many`` first); without, stand-ins with the same
attributes (slower to read). Far less sensitive to other load than a worker's drain. Also runs
against older fastq (``PYTHONPATH=<old checkout>/python``) for an A/B comparison: before
2026-12-03 the child handed each event to the reporter encoded (``SupervisorReporter.event``);
until the evening of 2026-12-03, it encoded each task's ``task-received`` when it handled the
task (no ``TaskEvents.fetched``) and its start and outcome as events of their own.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from types import SimpleNamespace
from typing import Any

from fastq import _core
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
            _core.redis_event_command(
                "/0.celeryev/" + routing_key, body, "celery@host", "celeryev", routing_key
            )

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


TASKS = {"fastq.bench.task": None}
BATCH = 10


def deliveries(url: str | None) -> list[Any]:
    """``N`` deliveries of a no-op task sent as fastq sends it: fetched from ``url`` by the Rust
    consumer, or stand-ins with the attributes the loop reads."""
    if url is None:
        return [
            SimpleNamespace(
                message=SimpleNamespace(
                    id=str(uuid.uuid4()), task="fastq.bench.task", args=("", "noop"), kwargs={},
                    headers={"argsrepr": "('', 'noop')", "kwargsrepr": "{}", "retries": 0},
                )
            )
            for _ in range(N)
        ]  # fmt: skip
    from fastq import App

    app = App("events-micro", broker=url, set_as_current=False)
    queue = f"fastq.bench.micro.{os.getpid()}"
    for _ in range(0, N, 1000):
        app.send_many([("fastq.bench.task", ("", "noop"), None)] * 1000, queue=queue)
    consumer = app.broker.consumer(
        [queue], prefetch=1000, consumer_id=queue, accept=["application/json"]
    )
    got: list[Any] = []
    while len(got) < N:
        batch = list(consumer.fetch(1.0))
        if not batch:
            raise SystemExit(f"only {len(got)} of {N} messages came back from {url}")
        consumer.ack([d.delivery_tag for d in batch])
        got += batch
    consumer.close()
    app.close()
    return got


def context(delivery: Any) -> Context:
    message = delivery.message
    return Context(
        id=message.id, task=message.task, args=message.args, kwargs=message.kwargs,
        retries=0, headers=message.headers, ignore_result=True,
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


def run(reporter: SupervisorReporter, events: TaskEvents, batch: list[Any]) -> None:
    """A fetched batch: its task-received (when ``TaskEvents.fetched`` exists), its tasks."""
    if events.enabled and hasattr(events, "fetched"):
        events.fetched(batch, TASKS)
    for delivery in batch:
        one_task(reporter, events, context(delivery))


def child(on: bool, got: list[Any]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        fd = os.open(os.devnull, os.O_WRONLY)
        reporter, events = child_side(fd, on)
        started = time.process_time()
        for i in range(0, len(got), BATCH):
            run(reporter, events, got[i : i + BATCH])
        best = min(best, time.process_time() - started)
        os.close(fd)
    return best / len(got) * 1e6


def report_chunks(on: bool, got: list[Any]) -> list[bytes]:
    """What a child writes, read in chunks of 50 tasks (a pipe holds 64 KiB)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    reporter, events = child_side(write_fd, on)
    chunks = []
    for i in range(0, len(got), BATCH):
        run(reporter, events, got[i : i + BATCH])
        if i % 50 == 40:
            chunks.append(os.read(read_fd, 1 << 20))
    try:
        chunks.append(os.read(read_fd, 1 << 20))
    except BlockingIOError:
        pass
    os.close(read_fd)
    os.close(write_fd)
    return chunks


def supervisor(on: bool, got: list[Any]) -> float:
    chunks = report_chunks(on, got)
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
    return best / len(got) * 1e6


def main() -> None:
    got = deliveries(sys.argv[1] if len(sys.argv) > 1 else None)
    for name, side in (("child", child), ("supervisor", supervisor)):
        off, on = side(False, got), side(True, got)
        print(f"{name:10s} µs/task: events off {off:.2f}, on {on:.2f}, extra {on - off:.2f}")


if __name__ == "__main__":
    main()
