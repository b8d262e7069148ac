"""fastq's codec against real Celery and kombu, both directions, with no broker running.

Celery publishes through a kombu transport whose ``_put`` keeps what kombu's Redis channel would
LPUSH (``kombu.utils.json.dumps`` of the prepared message); Celery's worker side reads fastq's
bytes through kombu's own ``Message`` and ``celery.worker.request.Request``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from celery import Celery, Task, chain, chord
from celery.worker.request import Request
from celery.worker.strategy import proto1_to_proto2
from fastq import _core
from kombu import Connection, serialization
from kombu.transport import memory
from kombu.utils import json as kombu_json

pytestmark = pytest.mark.interop

JSON = "application/json"
MSGPACK = "application/x-msgpack"
ACCEPT = ["json", "msgpack"]
KOMBU_ACCEPT = {JSON, MSGPACK}
EMPTY_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
WHEN = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
TYPED_ARGS = (
    WHEN,
    datetime(2024, 1, 2, 3, 4, 5),
    Decimal("12.50"),
    UUID("0123456789abcdef0123456789abcdef"),
    b"\xff\x00 binary",
    b"text bytes",
)


class CapturingChannel(memory.Channel):
    """Keeps the exact list element kombu's Redis channel would LPUSH, per queue."""

    published: ClassVar[list[tuple[str, bytes]]] = []

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        self.published.append((queue, kombu_json.dumps(message).encode()))


class CapturingTransport(memory.Transport):
    Channel = CapturingChannel


@pytest.fixture
def published() -> Iterator[list[tuple[str, bytes]]]:
    CapturingChannel.published = []
    yield CapturingChannel.published


@pytest.fixture
def app(published: list[tuple[str, bytes]]) -> Celery:
    app = Celery("x", backend="cache+memory://", set_as_current=False)
    app.conf.broker_transport = CapturingTransport
    app.conf.accept_content = ["json", "msgpack"]

    @app.task(name="proj.add", shared=False)
    def add(x: Any, y: Any) -> Any:
        return x + y

    @app.task(name="proj.echo", shared=False)
    def echo(*args: Any, **kwargs: Any) -> Any:
        return [list(args), kwargs]

    return app


def last_envelope(published: list[tuple[str, bytes]]) -> bytes:
    queue, raw = published[-1]
    assert queue == "celery"
    return raw


def wire(value: Any) -> Any:
    """What a JSON round trip makes of a plain value (tuples become lists)."""
    return json.loads(json.dumps(value))


# -- Celery → fastq ------------------------------------------------------------------------------
@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_as_task_v2_body_decodes_in_fastq(app: Celery, serializer: str) -> None:
    task_id = str(uuid4())
    args = (1, "two", [3.5, None], {"four": True})
    kwargs = {"k": "v", "n": -(2**63), "u": 2**64 - 1}
    headers, _props, body, _ = app.amqp.as_task_v2(
        task_id, "proj.add", args=args, kwargs=kwargs, countdown=30, expires=600
    )
    content_type, _encoding, data = serialization.dumps(body, serializer)
    message = _core.decode_task(headers, _bytes(data), content_type, ACCEPT)
    assert (message.task, message.id, message.protocol) == ("proj.add", task_id, 2)
    assert list(message.args) == wire(args)
    assert message.kwargs == kwargs
    assert message.embed == EMPTY_EMBED
    assert message.headers == wire(headers)
    eta = datetime.fromisoformat(message.headers["eta"])
    expires = datetime.fromisoformat(message.headers["expires"])
    assert eta.utcoffset() == timedelta(0)
    assert timedelta(seconds=569) < expires - eta < timedelta(seconds=571)


def _bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_send_task_envelope_decodes_in_fastq(
    app: Celery, published: list[tuple[str, bytes]], serializer: str
) -> None:
    add = app.tasks["proj.add"]
    eta = datetime.now(timezone.utc) + timedelta(hours=1)
    result = app.send_task(
        "proj.add",
        (2, 3),
        {"extra": "x"},
        eta=eta,
        expires=3600,
        serializer=serializer,
        priority=6,
        link=add.s(10),
        link_error=add.si(0, 0),
        time_limit=30,
        soft_time_limit=20,
    )
    raw = last_envelope(published)
    envelope, message = _core.decode_task_envelope(raw, ACCEPT)
    sent = kombu_json.loads(raw)

    assert envelope.content_type == (JSON if serializer == "json" else MSGPACK)
    assert envelope.content_encoding == sent["content-encoding"]
    assert envelope.body == base64.b64decode(sent["body"])
    assert envelope.headers == sent["headers"]
    assert envelope.properties == sent["properties"]
    assert envelope.delivery_tag == sent["properties"]["delivery_tag"]
    assert (envelope.exchange, envelope.routing_key) == ("", "celery")
    assert envelope.priority == 6
    assert envelope.properties["expiration"] == "3600000"
    assert envelope.properties["correlation_id"] == result.id

    assert (message.task, message.id) == ("proj.add", result.id)
    assert message.headers == sent["headers"]
    assert datetime.fromisoformat(message.headers["eta"]) == eta
    assert message.headers["timelimit"] == [30, 20]
    assert message.args == (2, 3)
    assert message.kwargs == {"extra": "x"}
    celery_args, celery_kwargs, celery_embed = serialization.loads(
        envelope.body, envelope.content_type, envelope.content_encoding, accept=KOMBU_ACCEPT
    )
    assert list(message.args) == celery_args
    assert message.kwargs == celery_kwargs
    assert message.embed == celery_embed
    assert message.embed["callbacks"] == wire([add.s(10)])
    assert message.embed["errbacks"] == wire([add.si(0, 0)])
    assert message.embed["errbacks"][0]["immutable"] is True


def test_typed_arguments_from_celery(app: Celery, published: list[tuple[str, bytes]]) -> None:
    kwargs = {"when": WHEN.date(), "at": WHEN.timetz(), "amount": Decimal("-0.001")}
    app.send_task("proj.echo", TYPED_ARGS, kwargs)
    _, message = _core.decode_task_envelope(last_envelope(published), ["json"])
    assert message.args == TYPED_ARGS
    assert [type(a) for a in message.args] == [type(a) for a in TYPED_ARGS]
    assert message.kwargs == kwargs
    assert str(message.kwargs["amount"]) == "-0.001"


def test_msgpack_bytes_from_celery(app: Celery, published: list[tuple[str, bytes]]) -> None:
    app.send_task("proj.echo", (b"\x00\xff", "str"), {"b": b""}, serializer="msgpack")
    _, message = _core.decode_task_envelope(last_envelope(published), ["msgpack"])
    assert message.args == (b"\x00\xff", "str")
    assert message.kwargs == {"b": b""}


def test_chain_from_celery(app: Celery, published: list[tuple[str, bytes]]) -> None:
    add = app.tasks["proj.add"]
    chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()
    _, message = _core.decode_task_envelope(last_envelope(published), ["json"])
    assert message.args == (1, 2)
    steps = message.embed["chain"]
    # Reversed: the worker pops the next task from the end.
    assert [(s["task"], s["args"]) for s in steps] == [("proj.add", [4]), ("proj.add", [3])]
    assert all(s["subtask_type"] is None and "task_id" in s["options"] for s in steps)


def test_chord_from_celery(app: Celery, published: list[tuple[str, bytes]]) -> None:
    add = app.tasks["proj.add"]
    chord([add.s(1, 1), add.s(2, 2)], add.s(10)).apply_async()
    messages = [_core.decode_task_envelope(raw, ["json"])[1] for _, raw in published]
    assert [m.args for m in messages] == [(1, 1), (2, 2)]
    group_id = messages[0].headers["group"]
    assert group_id is not None
    assert [m.headers["group_index"] for m in messages] == [0, 1]
    for message in messages:
        assert message.headers["group"] == group_id
        body = message.embed["chord"]
        assert (body["task"], body["args"]) == ("proj.add", [10])
        assert body["options"]["group_id"] == group_id


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_protocol_1_from_celery(
    app: Celery, published: list[tuple[str, bytes]], serializer: str
) -> None:
    app.conf.task_protocol = 1
    add = app.tasks["proj.add"]
    result = app.send_task(
        "proj.add",
        (5, 6),
        {"k": 1},
        countdown=60,
        expires=120,
        serializer=serializer,
        link=add.s(1),
        group_id="g-1",
        retries=2,
        time_limit=9,
    )
    raw = last_envelope(published)
    envelope, message = _core.decode_task_envelope(raw, ACCEPT)
    assert envelope.headers == {}
    assert (message.protocol, message.task, message.id) == (1, "proj.add", result.id)

    # What Celery's own worker makes of it.
    kombu_message = _kombu_message(raw)
    (args, kwargs, embed), headers, _, utc = proto1_to_proto2(kombu_message, kombu_message.decode())
    assert utc is True
    assert list(message.args) == list(args) == [5, 6]
    assert message.kwargs == kwargs
    assert message.embed == embed
    for key in ("task", "id", "eta", "expires", "group", "retries"):
        assert message.headers[key] == headers[key], key
    assert message.headers["group"] == "g-1"
    assert message.headers["retries"] == 2
    assert message.headers["timelimit"] == list(headers["timelimit"]) == [9, None]
    assert datetime.fromisoformat(message.headers["eta"]) > datetime.now(timezone.utc)


def test_decode_task_with_celery_headers_and_kombu_body(app: Celery) -> None:
    """The AMQP path: headers and body arrive separately."""
    headers, _, body, _ = app.amqp.as_task_v2(
        "id-9", "proj.echo", args=TYPED_ARGS, kwargs={"k": WHEN}, retries=3, shadow="nice name"
    )
    content_type, _, data = serialization.dumps(body, "json")
    message = _core.decode_task(headers, _bytes(data), content_type, ["json"])
    assert message.args == TYPED_ARGS
    assert message.kwargs == {"k": WHEN}
    assert message.headers["shadow"] == "nice name"
    assert message.headers["retries"] == 3


# -- fastq → Celery ------------------------------------------------------------------------------
def _kombu_message(raw: bytes) -> Any:
    """A message as kombu's Redis channel hands it to a consumer."""
    channel = Connection("localhost", transport=CapturingTransport).channel()
    message = channel.Message(kombu_json.loads(raw), channel=channel)
    message.accept = KOMBU_ACCEPT
    return message


def _request(app: Celery, raw: bytes) -> Request:
    message = _kombu_message(raw)
    return Request(message, app=app, task=app.tasks[message.headers["task"]])


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_fastq_message_body_loads_in_kombu(serializer: str) -> None:
    args: list[Any] = [1, "two", {"three": [3.0]}, None, True]
    kwargs = {"k": b"\xfe\xff" if serializer == "msgpack" else Decimal("1.10")}
    embed = {"callbacks": [{"task": "cb", "args": [], "kwargs": {}, "options": {}}]}
    headers, body = _core.encode_task_message(
        {"task": "proj.echo", "id": "id-1"}, args, kwargs, embed, serializer
    )
    content_type = JSON if serializer == "json" else MSGPACK
    loaded = serialization.loads(body, content_type, "utf-8", accept=KOMBU_ACCEPT)
    assert loaded == [args, kwargs, {**EMPTY_EMBED, **embed}]
    assert headers["task"] == "proj.echo"
    assert headers["root_id"] == "id-1"


def test_fastq_typed_arguments_load_in_kombu() -> None:
    _, body = _core.encode_task_message({"task": "t", "id": "i"}, TYPED_ARGS, {"k": WHEN})
    args, kwargs, _ = serialization.loads(body, JSON, "utf-8", accept=KOMBU_ACCEPT)
    assert tuple(args) == TYPED_ARGS
    assert [type(a) for a in args] == [type(a) for a in TYPED_ARGS]
    assert kwargs == {"k": WHEN}


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_celery_worker_request_from_fastq_envelope(app: Celery, serializer: str) -> None:
    eta = "2030-05-06T07:08:09.123456+00:00"
    expires = "2030-05-07T00:00:00+02:00"
    raw = _core.encode_task_envelope(
        {
            "task": "proj.add",
            "id": "task-1",
            "eta": eta,
            "expires": expires,
            "timelimit": [30, 20],
            "shadow": "adder",
        },
        (2, 3),
        {},
        serializer=serializer,
        routing_key="celery",
        priority=4,
        reply_to="oid-1",
    )
    request = _request(app, raw)
    assert request.id == "task-1"
    assert request.type == "proj.add"
    assert request.name == "adder"  # the shadow name
    assert request.args == [2, 3]
    assert request.kwargs == {}
    assert request.eta == datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    assert request.expires == datetime(2030, 5, 6, 22, 0, tzinfo=timezone.utc)
    assert request.time_limits == [30, 20]
    assert request.reply_to == "oid-1"
    assert request.correlation_id == "task-1"
    assert request.delivery_info == {
        "exchange": "",
        "routing_key": "celery",
        "priority": 4,
        "redelivered": False,
    }
    assert request.content_type == (JSON if serializer == "json" else MSGPACK)
    assert request.root_id == "task-1"
    assert request.parent_id is None


def test_celery_worker_runs_a_fastq_message_and_its_callback(
    app: Celery, published: list[tuple[str, bytes]]
) -> None:
    add = app.tasks["proj.add"]
    raw = _core.encode_task_envelope(
        {"task": "proj.add", "id": "task-2"},
        [2, 3],
        {},
        {"callbacks": [dict(add.s(100))]},
    )
    request = _request(app, raw)
    assert request.execute() == 5
    assert app.AsyncResult("task-2").get(timeout=1) == 5
    # Celery applied the callback: fastq reads the message it published.
    _, callback = _core.decode_task_envelope(last_envelope(published), ["json"])
    assert (callback.task, callback.args) == ("proj.add", (5, 100))
    assert callback.headers["parent_id"] == "task-2"
    assert callback.headers["root_id"] == "task-2"


def test_celery_worker_runs_a_fastq_chain(app: Celery, published: list[tuple[str, bytes]]) -> None:
    add = app.tasks["proj.add"]
    steps = [dict(add.s(1000)), dict(add.s(100))]  # reversed: add(100) runs next
    raw = _core.encode_task_envelope(
        {"task": "proj.add", "id": "task-3"}, [1, 2], {}, {"chain": steps}
    )
    assert _request(app, raw).execute() == 3
    _, step = _core.decode_task_envelope(last_envelope(published), ["json"])
    assert step.args == (3, 100)
    assert [s["args"] for s in step.embed["chain"]] == [[1000]]


def test_celery_worker_runs_typed_arguments_from_fastq(app: Celery) -> None:
    raw = _core.encode_task_envelope(
        {"task": "proj.echo", "id": "task-4"}, TYPED_ARGS, {"when": WHEN}
    )
    assert _request(app, raw).execute() == [list(TYPED_ARGS), {"when": WHEN}]


def test_fastq_envelope_reads_back_through_kombu_message(app: Celery) -> None:
    raw = _core.encode_task_envelope(
        {"task": "proj.add", "id": "task-5"}, [1], {"y": 2}, properties={"expiration": "1000"}
    )
    message = _kombu_message(raw)
    assert message.delivery_tag == json.loads(raw)["properties"]["delivery_tag"]
    assert message.content_type == JSON
    assert message.properties["expiration"] == "1000"
    assert message.decode() == [[1], {"y": 2}, EMPTY_EMBED]
    assert message.headers["task"] == "proj.add"
    assert message.headers["root_id"] == "task-5"
    assert set(message.headers) >= set(app.amqp.as_task_v2("i", "t").headers)


def test_fastq_headers_match_celery_defaults(app: Celery) -> None:
    celery_headers = app.amqp.as_task_v2("id-7", "proj.add", args=(1,), origin="o").headers
    fastq_headers, _ = _core.encode_task_message({"task": "proj.add", "id": "id-7"}, [1], {})
    assert list(fastq_headers)[:2] == ["task", "id"]
    assert set(fastq_headers) == set(celery_headers)
    skip = {"argsrepr", "kwargsrepr", "origin", "ignore_result"}  # the caller's to fill
    for key in set(celery_headers) - skip:
        assert fastq_headers[key] == wire(celery_headers[key]), key


def test_task_type_is_used_by_request(app: Celery) -> None:
    raw = _core.encode_task_envelope({"task": "proj.add", "id": "task-6"}, [1, 1], {})
    assert isinstance(_request(app, raw).task, Task)
