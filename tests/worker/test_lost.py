"""The start report a prefork child sends its supervisor, and the request the supervisor rebuilds
from it to record the result of a task the child did not finish (no broker needed)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from fastq import errors
from fastq.task import Context
from fastq.worker.reports import ReportedTask, SupervisorReporter, decode_request
from fastq.worker.supervisor import Child, Supervisor


@pytest.fixture
def pipe() -> Iterator[tuple[SupervisorReporter, Supervisor, Child]]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    supervisor = Supervisor(1, lambda *_: 0, lambda _: 0, lambda i, g: f"c{i}.{g}")
    child = Child(0, os.getpid(), "c0.1", 0.0, read_fd, -1)
    yield SupervisorReporter(write_fd), supervisor, child
    os.close(read_fd)
    os.close(write_fd)


def report(
    pipe: tuple[SupervisorReporter, Supervisor, Child],
    request: Context,
    deadline: float | None = None,
    acks_late: bool = False,
) -> ReportedTask:
    reporter, supervisor, child = pipe
    reporter.started(request, deadline, acks_late)
    supervisor._read_reports(child)
    assert child.running is not None
    return child.running


def test_a_plain_task_reports_its_reply_queue_and_no_json(
    pipe: tuple[SupervisorReporter, Supervisor, Child],
) -> None:
    request = Context(
        id="t1",
        task="proj.add",
        args=(1, 2),
        kwargs={},
        reply_to="client-oid",
        correlation_id="t1",
        root_id="t1",
        delivery_info={"routing_key": "celery"},
        delivery_tag="tag-1",
    )
    running = report(pipe, request, deadline=1234.5, acks_late=True)
    assert (running.task_id, running.delivery_tag, running.deadline) == ("t1", "tag-1", 1234.5)
    assert (running.name, running.acks_late, running.request) == ("proj.add", True, "client-oid")
    rebuilt = decode_request(running, "w@host")
    assert (rebuilt.id, rebuilt.task, rebuilt.reply_to) == ("t1", "proj.add", "client-oid")
    assert rebuilt.hostname == "w@host" and rebuilt.chord is None and rebuilt.errbacks is None


def test_canvas_ids_and_awkward_values_survive_the_line(
    pipe: tuple[SupervisorReporter, Supervisor, Child],
) -> None:
    chord = {"task": "proj.tsum", "args": [], "kwargs": {}, "options": {"task_id": "body"}}
    request = Context(
        id="t2",
        task="proj.part",
        args=("two\nlines", "é"),
        kwargs={"k": 1},
        reply_to="a reply queue\nwith a newline",
        correlation_id="corr",
        root_id="root",
        parent_id="parent",
        group="g1",
        group_index=3,
        chord=chord,
        chain=[{"task": "proj.next", "args": [], "kwargs": {}, "options": {}}],
        errbacks=[{"task": "proj.on_error", "args": [], "kwargs": {}, "options": {}}],
        retries=2,
        delivery_info={"routing_key": "q1"},
        delivery_tag="tag-2",
    )
    running = report(pipe, request)
    rebuilt = decode_request(running, "w@host")
    for name in ("reply_to", "correlation_id", "root_id", "parent_id", "group", "group_index"):
        assert getattr(rebuilt, name) == getattr(request, name), name
    assert rebuilt.chord == chord and rebuilt.chain == request.chain
    assert rebuilt.errbacks == request.errbacks
    # An errback may be called with the request: it gets the arguments too.
    assert list(rebuilt.args) == ["two\nlines", "é"] and rebuilt.kwargs == {"k": 1}
    assert rebuilt.retries == 2 and rebuilt.delivery_info == {"routing_key": "q1"}


def test_arguments_json_cannot_carry_are_left_out(
    pipe: tuple[SupervisorReporter, Supervisor, Child],
) -> None:
    pipe[0].with_args = True  # result_extended
    request = Context(id="t3", task="proj.x", args=(object(),), kwargs={}, reply_to="oid")
    rebuilt = decode_request(report(pipe, request), "w@host")
    assert rebuilt.reply_to == "oid" and rebuilt.args == ()


def test_kept_results_reach_the_supervisor_until_stored(
    pipe: tuple[SupervisorReporter, Supervisor, Child],
) -> None:
    """While the backend is down a child hands copies of the results it keeps to the supervisor
    (to store should it die); once it stored them itself, the copies are dropped."""
    reporter, supervisor, child = pipe
    meta = {"status": "SUCCESS", "result": [1, "two", None], "task_id": "t1", "traceback": None}
    reporter.kept([("t1", meta), ("t 2", meta)])  # an id with a space cannot be reported
    supervisor._read_reports(child)
    assert [(t, json.loads(data)) for t, data in child.kept] == [("t1", meta)]
    reporter.stored()
    supervisor._read_reports(child)
    assert child.kept == []


def test_a_finished_task_is_handed_over_until_its_batch_is_flushed(
    pipe: tuple[SupervisorReporter, Supervisor, Child],
) -> None:
    """Prefork: a task's end report carries a copy of its result and, with a late ack still to
    send, its delivery tag: what the supervisor stores and settles should the child die."""
    reporter, supervisor, child = pipe
    meta = {"status": "SUCCESS", "result": 3, "task_id": "t1", "traceback": None}
    report(pipe, Context(id="t1", task="proj.add", delivery_tag="tag-1"), acks_late=True)
    reporter.hand_over([("t1", meta)], late_ack=True)
    report(pipe, Context(id="t2", task="proj.add", delivery_tag="tag-2"))
    reporter.hand_over([], late_ack=False)
    supervisor._read_reports(child)
    assert child.running is None
    assert [(t, json.loads(data)) for t, data in child.kept] == [("t1", meta)]
    assert child.done == [("t1", "tag-1")]
    reporter.stored()
    supervisor._read_reports(child)
    assert (child.kept, child.done) == ([], [])


def test_a_result_with_no_copy_leaves_its_message_to_come_back(
    pipe: tuple[SupervisorReporter, Supervisor, Child],
) -> None:
    """A result JSON cannot carry (pickle accepted) has no copy in the supervisor: its late ack
    is not reported as pending, so should the child die the message comes back, never lost."""
    reporter, supervisor, child = pipe
    meta = {"status": "SUCCESS", "result": object(), "task_id": "t1", "traceback": None}
    report(pipe, Context(id="t1", task="proj.add", delivery_tag="tag-1"), acks_late=True)
    reporter.hand_over([("t1", meta)], late_ack=True)
    supervisor._read_reports(child)
    assert (child.kept, child.done, child.running) == ([], [], None)


def test_a_dead_childs_result_refused_for_its_key_is_logged_and_its_message_settled(
    pipe: tuple[SupervisorReporter, Supervisor, Child], caplog: pytest.LogCaptureFixture
) -> None:
    """The supervisor stores what a dead child finished: a result the backend refuses for its
    key alone (``ResultsRefused``) is logged as lost, not retried for ever, and the finished
    tasks' messages are settled all the same (they ran; running them again could not store it)."""
    reporter, supervisor, child = pipe
    stored: list[list[str]] = []
    settled: list[tuple[str, list[str]]] = []

    def store(metas: list[tuple[str, dict[str, Any]]]) -> None:
        stored.append([task_id for task_id, _ in metas])
        raise errors.ResultsRefused("refused", {"t2": "WRONGTYPE Operation against a key"})

    supervisor.store_results = store
    supervisor.settle_done = lambda consumer, tags: settled.append((consumer, tags))
    for task_id in ("t1", "t2"):
        meta = {"status": "SUCCESS", "result": 1, "task_id": task_id, "traceback": None}
        report(
            pipe, Context(id=task_id, task="proj.add", delivery_tag=f"tag-{task_id}"), None, True
        )
        reporter.hand_over([(task_id, meta)], late_ack=True)
    supervisor._read_reports(child)
    with caplog.at_level(logging.ERROR, logger="fastq.worker"):
        supervisor._settle_finished(child)
    assert stored == [["t1", "t2"]]
    assert settled == [("c0.1", ["tag-t1", "tag-t2"])]
    assert supervisor._unrecorded == []
    assert "the result of task t2 cannot be stored, and is lost: WRONGTYPE" in caplog.text
