"""How task events are encoded where they happen and stamped with the clock where they are sent
(``_core.encode_events``, ``_core.stamp_events``), without a broker: Celery's fields, JSON a
receiver reads, consecutive Lamport clocks, and a prefork child's events carried by its next
report."""

from __future__ import annotations

import json
import os

from fastq import _core
from fastq.control_channel import _Clock
from fastq.events import TaskEvents, common_members, encode_events, utcoffset, with_clock
from fastq.task import Context
from fastq.worker.reports import SupervisorReporter


class Switch:
    send_events = True


def test_an_event_carries_celerys_fields_as_json() -> None:
    fields = {"uuid": "id-1", "name": "t", "args": "(1,\n'é')", "eta": None, "retries": 0}
    [raw] = encode_events([("task-received", 1733212345.25, fields)], common_members("w@h", 42))
    assert b"\n" not in raw  # one report line each
    assert json.loads(raw) == {
        "type": "task-received",
        "timestamp": 1733212345.25,
        "hostname": "w@h",
        "utcoffset": utcoffset(),
        "pid": 42,
        **fields,
    }


def test_a_field_json_cannot_carry_is_sent_as_its_repr() -> None:
    class Odd:
        def __repr__(self) -> str:
            return "<odd>"

    common = common_members("w@h", 1)
    plain, odd = encode_events(
        [("task-started", 1.0, {"uuid": "a"}), ("task-failed", 2.0, {"uuid": "b", "x": Odd()})],
        common,
    )
    assert json.loads(plain)["uuid"] == "a"
    assert json.loads(odd)["x"] == "<odd>" and json.loads(odd)["uuid"] == "b"


def test_stamping_splices_consecutive_clocks_as_with_clock_does() -> None:
    common = common_members("w@h", 1)
    raws = encode_events([("task-started", 1.0, {"uuid": str(i)}) for i in range(3)], common)
    clock = _Clock()
    clock.value = 9
    first = clock.forward_many(len(raws))
    assert (first, clock.value) == (10, 12)
    body = json.loads(_core.stamp_events(raws, first))
    assert [e["clock"] for e in body] == [10, 11, 12]
    assert body == [json.loads(with_clock(raw, 10 + i)) for i, raw in enumerate(raws)]
    assert _core.stamp_events([], 1) == b"[]"


def test_a_prefork_childs_events_go_before_the_report_that_carries_them() -> None:
    read_fd, write_fd = os.pipe()
    try:
        reporter = SupervisorReporter(write_fd)
        events = TaskEvents("w@h", 7, None, Switch())
        reporter.events = events
        context = Context(id="id-1", task="t", args=(1,), kwargs={}, headers={})
        events.received(context)
        events.started(context)
        reporter.started(context, None, False)
        reporter.flush_events()  # nothing held: nothing written
        lines = os.read(read_fd, 65536).decode().splitlines()
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert [line[:2] for line in lines] == ["E ", "E ", "S "]
    received, started = (json.loads(line[2:]) for line in lines[:2])
    assert (received["type"], received["args"], received["pid"]) == ("task-received", "(1,)", 7)
    assert started["type"] == "task-started" and started["timestamp"] >= received["timestamp"]


def test_without_a_report_pipe_each_event_is_handed_on_at_once() -> None:
    sent: list[list[bytes]] = []
    events = TaskEvents("w@h", 7, sent.append, Switch())
    events.started(Context(id="id-1"))
    assert len(sent) == 1 and json.loads(sent[0][0])["uuid"] == "id-1"
    assert events.held == [] and events.take(b"E ") == b""
