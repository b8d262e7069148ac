"""What a consumer holds and has not started (``inspect reserved``/``scheduled``): the entries a
fetched message makes, and how a prefork child sends them to its supervisor without a write of
their own."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

from fastq import App, _core
from fastq.task import Context
from fastq.worker.held import decode_entries, delivery_entry, is_scheduled
from fastq.worker.reports import SupervisorReporter

JSON = "application/json"


def delivery(task_id: str | None, headers: Any) -> Any:
    return SimpleNamespace(
        task_id=task_id,
        task_name="proj.add",
        exchange="",
        queue="celery",
        priority=2,
        redelivered=True,
        message=SimpleNamespace(headers=headers),
    )


def test_a_fetched_message_is_reserved_or_scheduled_by_its_eta() -> None:
    now = time.time()
    future = datetime.now(timezone.utc) + timedelta(seconds=30)
    plain = delivery_entry(delivery("t-1", {"argsrepr": "(1,)", "kwargsrepr": "{}"}), now)
    assert plain == ["t-1", "proj.add", "", "celery", 2, True, None, "(1,)", "{}"]
    later = delivery_entry(delivery("t-2", {"eta": future.isoformat()}), now)
    assert later is not None and is_scheduled(later) and later[6] == future.isoformat()
    past = datetime.now(timezone.utc) - timedelta(seconds=30)
    due = delivery_entry(delivery("t-3", {"eta": past.isoformat()}), now)
    assert due is not None and not is_scheduled(due)  # due: it waits for a slot only
    bad = delivery_entry(delivery("t-4", {"eta": "not a date"}), now)
    assert bad is not None and not is_scheduled(bad)  # refused when it is handled
    assert delivery_entry(delivery(None, {}), now) is None  # no id: nothing to list
    long = delivery_entry(delivery("t-5", {"argsrepr": "x" * 5000}), now)
    assert long is not None and len(long[7]) == 1024 and long[7].endswith("...")


def test_a_childs_holdings_go_with_its_next_start_report() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    try:
        reporter = SupervisorReporter(write_fd)
        entry = ["t-2", "proj.add", "", "celery", 0, False, None, "(2,)", "{}"]
        reporter.held([entry])
        try:
            os.read(read_fd, 65536)
            raise AssertionError("written on its own")
        except BlockingIOError:
            pass
        reporter.started(Context(id="t-1", task="proj.add"), None, False)
        held, start, rest = os.read(read_fd, 65536).split(b"\n")
        assert held[:2] == b"R " and decode_entries(held[2:]) == [entry]
        assert start.startswith(b"S t-1 ") and rest == b""
        reporter.held([])  # nothing started after it: flushed at the end of the cycle
        reporter.flush_events()
        assert os.read(read_fd, 65536) == b"R []\n"
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_the_rest_of_a_fetched_batch_is_written_in_one_call_as_python_would(
    broker_url: str,
) -> None:
    """``_core.encode_held``, the prefork child's common case, against ``delivery_entry`` on real
    deliveries; a batch it leaves to Python (an ETA, another broker's deliveries) says so."""
    app = App("t", broker=broker_url, set_as_current=False)
    queue = f"held-{uuid.uuid4().hex[:8]}"
    try:
        app.send_task("proj.add", (1, "é" * 3000), queue=queue)  # argsrepr cut by characters
        app.send_task("proj.mul", (), {"k": [1]}, queue=queue)
        app.send_task("proj.due", queue=queue, eta=datetime.now(timezone.utc) - timedelta(1))
        consumer = app.broker.consumer([queue], prefetch=10, consumer_id="c", accept=[JSON])
        deliveries = list(consumer.fetch(2.0))
        assert len(deliveries) == 3
        plain = [d for d in deliveries if d.task_name != "proj.due"]
        now = time.time()
        assert decode_entries(_core.encode_held(plain) or b"") == [
            delivery_entry(d, now) for d in plain
        ]
        assert _core.encode_held(deliveries) is None  # the ETA is read in Python
        assert _core.encode_held([delivery("t-1", {})]) is None  # not the extension's
        assert _core.encode_held([]) == b"[]"
        consumer.restore_unacked()
        consumer.close()
    finally:
        app.broker.purge(queue)
        app.close()
