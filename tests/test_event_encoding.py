"""How task events are encoded where they happen and stamped with the clock where they are sent
(``_core.encode_events``, ``_core.stamp_events``), without a broker: Celery's fields, JSON a
receiver reads, consecutive Lamport clocks, and a prefork child's events carried by its reports
as ``E`` lines (a batch's ``task-received`` encoded when it is fetched, a task's start and
success as they happen), which the supervisor takes off and stamps as they are."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from fastq import _core, states
from fastq.control_channel import _Clock
from fastq.events import (
    REPR_MAX,
    TaskEvents,
    common_members,
    encode_events,
    short_repr,
    utcoffset,
    with_clock,
)
from fastq.execution.tracer import Outcome, Settle
from fastq.task import Context
from fastq.worker.reports import SupervisorReporter
from fastq.worker.supervisor import Child, Supervisor


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


def _stand_in(task_id: str, task: str, **headers: Any) -> SimpleNamespace:
    """A delivery as the loop reads it (another broker's: ``encode_received`` reads attributes)."""
    message = SimpleNamespace(id=task_id, task=task, args=(1,), kwargs={}, headers=headers)
    return SimpleNamespace(message=message)


def _child_reports(run: Callable[[SupervisorReporter, TaskEvents], None]) -> bytes:
    """What a prefork child writes on its report pipe while ``run`` plays a loop's part."""
    read_fd, write_fd = os.pipe()
    try:
        reporter = SupervisorReporter(write_fd)
        events = TaskEvents("w@h", 7, None, Switch())
        reporter.events = events
        run(reporter, events)
        reporter.flush_events()
        return os.read(read_fd, 65536)
    finally:
        os.close(read_fd)
        os.close(write_fd)


def _published(reports: bytes) -> list[dict[str, Any]]:
    """The events a supervisor publishes from ``reports`` (one ``task.multi`` body)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    taken: list[bytes] = []
    noop: Any = None
    supervisor = Supervisor(1, noop, noop, noop, on_events=taken.extend)
    try:
        os.write(write_fd, reports)
        supervisor._read_reports(Child(0, 1, "c", 0.0, read_fd, -1))
    finally:
        os.close(read_fd)
        os.close(write_fd)
    events: list[dict[str, Any]] = json.loads(_core.stamp_events(taken, 5))
    assert len(events) == _core.count_events(taken)
    return events


def test_a_prefork_childs_events_reach_the_supervisor_with_its_reports() -> None:
    """The batch's task-received when it is fetched, a task's start and success as they happen,
    each an ``E`` line written with the next report: the supervisor publishes Celery's three
    events, in order."""
    batch = [
        _stand_in("id-1", "t", argsrepr="(1,)", root_id="r", retries=2, eta="2026-01-01T00:00:00"),
        _stand_in("id-2", "t"),  # no argsrepr: the args' repr
        _stand_in("id-3", "unknown"),  # not registered: refused, no task-received
        SimpleNamespace(message=None),  # did not decode: none either
    ]

    def run(reporter: SupervisorReporter, events: TaskEvents) -> None:
        events.fetched(batch, {"t": None})
        context = Context(id="id-1", task="t", args=(1,), kwargs={}, headers={})
        events.started(context)
        reporter.started(context, None, False)
        events.outcome(context, Outcome(states.SUCCESS, {"a": 1}, None, Settle.ACK), 0.25)
        reporter.hand_over([], False)

    reports = _child_reports(run)
    assert [line[:2] for line in reports.splitlines()] == [b"E "] * 3 + [b"S ", b"E ", b"D"]
    events = _published(reports)
    assert [(e["type"], e["uuid"], e["clock"]) for e in events] == [
        ("task-received", "id-1", 5),
        ("task-received", "id-2", 6),
        ("task-started", "id-1", 7),
        ("task-succeeded", "id-1", 8),
    ]
    received, other, started, succeeded = events
    for event in events:
        assert (event["hostname"], event["pid"], event["utcoffset"]) == ("w@h", 7, utcoffset())
    assert received == {
        **received,
        "name": "t",
        "args": "(1,)",
        "kwargs": "{}",
        "root_id": "r",
        "parent_id": None,
        "retries": 2,
        "eta": "2026-01-01T00:00:00",
        "expires": None,
    }
    assert (other["args"], other["retries"], other["root_id"]) == ("(1,)", 0, None)
    assert received["timestamp"] <= started["timestamp"] <= succeeded["timestamp"]
    assert abs(succeeded["timestamp"] - time.time()) < 5
    assert (succeeded["result"], succeeded["runtime"]) == ("{'a': 1}", 0.25)


def test_reprs_are_cut_as_celery_cuts_them() -> None:
    def run(reporter: SupervisorReporter, events: TaskEvents) -> None:
        message = SimpleNamespace(id="id-1", task="t", args=("é" * 2000,), kwargs=None, headers={})
        events.fetched([SimpleNamespace(message=message)], {"t": None})
        context = Context(id="id-1", task="t")
        events.started(context)
        reporter.started(context, None, False)
        events.outcome(context, Outcome(states.SUCCESS, "x" * 5000, None, Settle.ACK), 0.5)
        reporter.finished()

    received, _, succeeded = _published(_child_reports(run))
    assert received["args"] == short_repr(("é" * 2000,)) and len(received["args"]) == REPR_MAX
    assert received["kwargs"] == "{}"
    assert succeeded["result"] == short_repr("x" * 5000) and succeeded["result"].endswith("...")


def test_a_repr_over_lines_and_the_other_outcomes_are_e_lines_too() -> None:
    """A result whose repr spans lines is escaped in its line; a failure is an ``E`` line."""

    class Lines:
        def __repr__(self) -> str:
            return "two\nlines"

    def run(reporter: SupervisorReporter, events: TaskEvents) -> None:
        for task_id, outcome in [
            ("id-1", Outcome(states.SUCCESS, Lines(), None, Settle.ACK)),
            ("id-2", Outcome(states.FAILURE, KeyError("k"), "Traceback…", Settle.ACK)),
        ]:
            context = Context(id=task_id, task="t")
            events.started(context)
            reporter.started(context, None, False)
            events.outcome(context, outcome, 0.5)
            reporter.hand_over([], False)

    events = _published(_child_reports(run))
    assert [(e["type"], e["uuid"]) for e in events] == [
        ("task-started", "id-1"),
        ("task-succeeded", "id-1"),
        ("task-started", "id-2"),
        ("task-failed", "id-2"),
    ]
    assert events[1]["result"] == "two\nlines"
    assert (events[3]["exception"], events[3]["traceback"]) == ("KeyError('k')", "Traceback…")


def test_with_events_off_the_reports_say_nothing_of_them() -> None:
    def run(reporter: SupervisorReporter, events: TaskEvents) -> None:
        events.switch.send_events = False
        context = Context(id="id-1", task="t")
        reporter.started(context, None, False)
        reporter.hand_over([], False)

    reports = _child_reports(run)
    assert reports == b"S id-1 - - t - -\nD\n"
    assert _published(reports) == []


def test_a_malformed_event_line_is_left_out_with_its_clock() -> None:
    runs = [b'{"a":1}\nnot an object\n{"b":2}\n', b"{oops", b'{"c":3}', b"\n"]
    assert _core.count_events(runs) == 5
    assert json.loads(_core.stamp_events(runs, 1)) == [
        {"clock": 1, "a": 1},
        {"clock": 3, "b": 2},
        {"clock": 5, "c": 3},
    ]


def test_a_chunk_splits_into_event_lines_other_lines_and_its_tail() -> None:
    """What the supervisor reads from a child: E lines off in one pass, prefix and all."""
    events, lines, tail = _core.split_reports(b"E {1}\nS a b\nE {2}\nD\nE {3", b"E ")
    assert (events, lines, tail) == (b"{1}\n{2}\n", [b"S a b", b"D"], b"E {3")
    assert _core.split_reports(b"partial", b"E ") == (b"", [], b"partial")
    assert _core.split_reports(b"", b"E ") == (b"", [], b"")


def test_a_lone_surrogate_in_a_result_is_sent_as_its_escape() -> None:
    """A repr ``started_line``/``succeeded_line`` cannot write as UTF-8 takes the general path,
    which writes what it can: the event is not lost, and the child does not fail."""

    class Odd:
        def __repr__(self) -> str:
            return "bad \ud800 repr"

    def run(reporter: SupervisorReporter, events: TaskEvents) -> None:
        context = Context(id="id-1", task="t")
        events.started(context)
        reporter.started(context, None, False)
        events.outcome(context, Outcome(states.SUCCESS, Odd(), None, Settle.ACK), 0.5)
        reporter.finished()

    started, succeeded = _published(_child_reports(run))
    assert (started["type"], succeeded["type"]) == ("task-started", "task-succeeded")
    assert succeeded["uuid"] == "id-1" and succeeded["result"] == "bad \\ud800 repr"


def test_without_a_report_pipe_each_event_is_handed_on_at_once() -> None:
    sent: list[list[bytes]] = []
    events = TaskEvents("w@h", 7, sent.append, Switch())
    events.started(Context(id="id-1"))
    assert len(sent) == 1 and json.loads(sent[0][0])["uuid"] == "id-1"
    assert len(events.held) == 0 and events.take() == b""
