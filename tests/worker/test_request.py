"""``build_context``: a message's headers as the request a task runs with; every field of the wrong
type is refused naming it (the fast path checks inline, the checkers name the field)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastq import App, errors
from fastq.worker.request import build_context


def _delivery(headers: dict[str, Any] | None = None, **options: Any) -> Any:
    app = App("t", broker=f"memory://{uuid.uuid4()}", set_as_current=False)
    message = app.build_message("t.add", (1, 2), {"x": 1}, **options)
    message.headers.update(headers or {})
    app.broker.publish(message)
    consumer = app.broker.consumer(["celery"], prefetch=1, consumer_id="c", accept=["json"])
    [delivery] = consumer.fetch(0)
    return delivery


def test_a_plain_message_becomes_its_request() -> None:
    delivery = _delivery()
    context = build_context(delivery, "host-1")
    message = delivery.message
    assert (context.id, context.task, context.args, context.kwargs) == (
        message.id,
        "t.add",
        (1, 2),
        {"x": 1},
    )
    assert context.retries == 0 and context.timelimit == (None, None)
    assert context.root_id == message.id and context.parent_id is None and context.group is None
    assert context.hostname == "host-1" and context.called_directly is False
    assert context.delivery_info == {
        "exchange": "",
        "routing_key": "celery",
        "priority": delivery.priority,
        "redelivered": False,
    }
    assert context.callbacks is None and context.chord is None and context.stamps == {}


def test_set_fields_are_read() -> None:
    headers = {"retries": 3, "group": "g", "group_index": 2, "timelimit": [10, 5.5]}
    context = build_context(_delivery(headers), "h")
    assert (context.retries, context.group, context.group_index) == (3, "g", 2)
    assert context.timelimit == (10.0, 5.5)
    assert build_context(_delivery({"ignore_result": 1}), "h").ignore_result is True


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"retries": "3"}, "retries"),
        ({"retries": True}, "retries"),
        ({"retries": -1}, "retries"),
        ({"replaced_task_nesting": 1.5}, "replaced_task_nesting"),
        ({"group": 7}, "group"),
        ({"root_id": ["x"]}, "root_id"),
        ({"parent_id": {}}, "parent_id"),
        ({"group_index": "1"}, "group_index"),
        ({"timelimit": [1]}, "timelimit"),
        ({"timelimit": 0}, "timelimit"),
        ({"ignore_result": "yes"}, "ignore_result"),
        ({"expires": 12}, "expires"),
        ({"expires": "not-a-date"}, "expires"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_by_name(headers: dict[str, Any], named: str) -> None:
    with pytest.raises(errors.InvalidMessage, match=named):
        build_context(_delivery(headers), "h")
