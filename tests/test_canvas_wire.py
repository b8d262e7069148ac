"""Canvas messages on the wire: fastq builds what Celery builds for the same workflow.

Each test sends a workflow with fastq and the same workflow with real Celery to Redis, reads the
raw envelopes back with ``_core``, and compares them with ids replaced by their order of first
appearance (``<0>``, ``<1>``...), so the structure and which id goes where must match exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import celery
import pytest
import redis
from celery._state import _task_stack
from celery.exceptions import Ignore as CeleryIgnore
from fastq import App, GroupResult, _core, chain, chord, errors, group, signature, xmap
from fastq.canvas import Signature
from fastq.task import Context

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HEADERS = ("task", "id", "group", "group_index", "root_id", "parent_id", "replaced_task_nesting")


@pytest.fixture
def fastq_app(broker_url: str, backend_url: str) -> Iterator[App]:
    app = App("wire", broker=broker_url, backend=backend_url, set_as_current=False)
    for name, fun in TASKS.items():
        app.task(name=name)(fun)
    app.task(name="t.replace", bind=True)(replace)
    yield app
    app.close()


@pytest.fixture
def celery_app(broker_url: str, backend_url: str) -> Iterator[celery.Celery]:
    app = celery.Celery("wire", broker=broker_url, backend=backend_url, set_as_current=False)
    for name, fun in TASKS.items():
        app.task(name=name)(fun)
    app.task(name="t.replace", bind=True)(replace)
    yield app
    app.close()


def add(x: int, y: int) -> int:
    return x + y


def tsum(values: list[int]) -> int:
    return sum(values)


def errback(task_id: str) -> str:
    return task_id


TASKS: dict[str, Callable[..., Any]] = {"t.add": add, "t.tsum": tsum, "t.errback": errback}


def replace(task: Any, x: int, how: str) -> Any:
    """``t.replace`` (bound) in both apps: replaces itself with a task, a chain or a group."""
    add = task.app.tasks["t.add"]
    if how == "task":
        return task.replace(add.s(x, 1))
    if how == "chain":
        return task.replace(add.s(x, 1) | add.s(10))
    canvas_group = celery.group if isinstance(task.app, celery.Celery) else group
    return task.replace(canvas_group(add.s(x, i) for i in range(2)))


def sent(client: redis.Redis) -> list[dict[str, Any]]:
    """The messages in the ``celery`` queue, oldest first, as headers + body, then cleared."""
    messages = []
    for raw in reversed(client.lrange("celery", 0, -1)):
        _, message = _core.decode_task_envelope(raw, ["json"])
        headers = {k: message.headers.get(k) for k in HEADERS}
        messages.append({"headers": headers, "body": [message.args, message.kwargs, message.embed]})
    client.delete("celery")
    return messages


def normalized(value: Any, reply_to: set[str]) -> Any:
    """Ids become ``<n>`` in order of first appearance; reply_to (the client's id) ``<client>``."""
    names: dict[str, str] = {}

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        if isinstance(v, str) and v in reply_to:
            return "<client>"
        if isinstance(v, str) and UUID.match(v):
            return names.setdefault(v, f"<{len(names)}>")
        return v

    return walk(json.loads(json.dumps(value)))


def both(
    fastq_app: App,
    celery_app: celery.Celery,
    broker_redis: redis.Redis,
    build: Callable[[Any, Any], Any],
) -> tuple[Any, Any]:
    """Runs ``build(tasks, canvas)`` with each library; returns both normalized message lists."""
    import celery.canvas as celery_canvas
    from fastq import canvas as fastq_canvas

    build(fastq_app.tasks, fastq_canvas)
    ours = sent(broker_redis)
    build(celery_app.tasks, celery_canvas)
    theirs = sent(broker_redis)
    clients = {fastq_app.oid, celery_app.thread_oid}
    return normalized(ours, clients), normalized(theirs, clients)


def test_signature_dict_is_celerys(fastq_app: App, celery_app: celery.Celery) -> None:
    ours = fastq_app.tasks["t.add"].s(2).set(countdown=3, queue="q")
    theirs = celery_app.tasks["t.add"].s(2).set(countdown=3, queue="q")
    assert json.loads(json.dumps(ours)) == json.loads(json.dumps(theirs))
    assert dict(fastq_app.tasks["t.add"].si(1, 2)) == {**celery_app.tasks["t.add"].si(1, 2)}
    rebuilt = signature(json.loads(json.dumps(theirs)), app=fastq_app)
    assert type(rebuilt) is Signature and rebuilt == ours
    assert rebuilt.options == {"countdown": 3, "queue": "q"}


@pytest.mark.parametrize(
    "kind",
    [
        "chain",
        "chain_with_links",
        "group",
        "chord",
        "chord_with_errback",
        "group_of_chains",
        "nested_chain_with_links",
        "link",
    ],
)
def test_messages_match_celery(
    kind: str, fastq_app: App, celery_app: celery.Celery, broker_redis: redis.Redis
) -> None:
    def build(tasks: Any, canvas: Any) -> Any:
        add, tsum, errback = tasks["t.add"], tasks["t.tsum"], tasks["t.errback"]
        if kind == "chain":
            return canvas.chain(add.s(1, 2), add.s(10), add.si(5, 5)).apply_async()
        if kind == "chain_with_links":
            return canvas.chain(add.s(1, 2), add.s(3)).apply_async(
                link_error=errback.s(), link=add.s(100)
            )
        if kind == "group":
            return canvas.group(add.s(i, i) for i in range(3)).apply_async()
        if kind == "chord":
            return canvas.chord([add.s(1, 1), add.s(2, 2)])(tsum.s())
        if kind == "chord_with_errback":
            return canvas.chord([add.s(1, 1)])(tsum.s().on_error(errback.s()))
        if kind == "group_of_chains":
            return canvas.group(add.s(1, 2) | add.s(3), add.s(4, 4)).apply_async()
        if kind == "nested_chain_with_links":  # its link goes to its last step, errback to all
            inner = (add.s(1, 2) | add.s(3)).on_error(errback.s())
            inner.link(add.s(1000))
            return canvas.chain(inner, add.s(4)).apply_async()
        return add.apply_async((1, 2), link=add.s(10), link_error=errback.s())

    ours, theirs = both(fastq_app, celery_app, broker_redis, build)
    assert ours == theirs


def test_chain_of_group_then_task_becomes_a_chord(
    fastq_app: App, celery_app: celery.Celery, broker_redis: redis.Redis
) -> None:
    def build(tasks: Any, canvas: Any) -> Any:
        add, tsum = tasks["t.add"], tasks["t.tsum"]
        return canvas.chain(add.s(1, 2), canvas.group(add.s(1), add.s(2)), tsum.s()).apply_async()

    ours, theirs = both(fastq_app, celery_app, broker_redis, build)
    (first,) = ours
    (celery_first,) = theirs
    (step,) = first["body"][2]["chain"]
    (celery_step,) = celery_first["body"][2]["chain"]
    # Celery also writes "root_id": null and "parent_id": null into the header group's options;
    # they carry nothing, and fastq leaves them out.
    celery_step["kwargs"]["header"]["options"] = {
        k: v for k, v in celery_step["kwargs"]["header"]["options"].items() if v is not None
    }
    assert first["headers"] == celery_first["headers"]
    assert step == celery_step
    assert step["subtask_type"] == "chord" and step["kwargs"]["header"]["subtask_type"] == "group"


def test_chord_sets_its_size_before_sending(
    fastq_app: App, broker_redis: redis.Redis, backend_redis: redis.Redis
) -> None:
    add, tsum = fastq_app.tasks["t.add"], fastq_app.tasks["t.tsum"]
    result = chord(add.s(i, i) for i in range(5))(tsum.s())
    assert isinstance(result.parent, GroupResult)
    key = f"celery-taskset-meta-{result.parent.id}.s"
    assert backend_redis.get(key) == b"5"
    assert 86000 < backend_redis.ttl(key) <= 86400
    assert [m["headers"]["group_index"] for m in sent(broker_redis)] == [0, 1, 2, 3, 4]


def test_chain_results_link_to_their_parents(fastq_app: App, broker_redis: redis.Redis) -> None:
    add = fastq_app.tasks["t.add"]
    result = (add.s(1, 2) | add.s(3) | add.s(4)).apply_async(task_id="last")
    (message,) = sent(broker_redis)
    chain_ids = [step["options"]["task_id"] for step in message["body"][2]["chain"]]
    assert result.id == "last" == chain_ids[0]  # the chain is reversed: the last task first
    assert result.parent is not None and result.parent.id == chain_ids[1]
    assert result.parent.parent is not None
    assert result.parent.parent.id == message["headers"]["id"]


def test_chain_link_error_goes_to_every_step(fastq_app: App, broker_redis: redis.Redis) -> None:
    add, errback = fastq_app.tasks["t.add"], fastq_app.tasks["t.errback"]
    chain(add.s(1, 2), add.s(3)).apply_async(link_error=errback.s(), link=add.s(100))
    (message,) = sent(broker_redis)
    embed = message["body"][2]
    on_error = json.loads(json.dumps(errback.s()))
    assert embed["errbacks"] == [on_error]
    (step,) = embed["chain"]
    assert step["options"]["link_error"] == [on_error]
    assert step["options"]["link"] == [json.loads(json.dumps(add.s(100)))]  # the last task's


def test_signature_rebuilds_workflows_from_their_dicts(fastq_app: App) -> None:
    add, tsum = fastq_app.tasks["t.add"], fastq_app.tasks["t.tsum"]
    wire = json.loads(json.dumps(chord([add.s(1, 1), add.s(2, 2)], tsum.s())))
    rebuilt = signature(wire, app=fastq_app)
    assert isinstance(rebuilt, chord)
    assert [t.args for t in rebuilt.tasks] == [(1, 1), (2, 2)] and rebuilt.body.task == "t.tsum"
    as_chain = signature(json.loads(json.dumps(add.s(1, 1) | add.s(2))), app=fastq_app)
    assert isinstance(as_chain, chain) and [t.args for t in as_chain.tasks] == [(1, 1), (2,)]
    as_group = signature(json.loads(json.dumps(group(add.s(1, 1), add.s(2, 2)))), app=fastq_app)
    assert isinstance(as_group, group) and len(as_group) == 2


def test_partial_arguments_and_immutability(fastq_app: App) -> None:
    add = fastq_app.tasks["t.add"]
    assert add.s(2).clone((1,)).args == (1, 2)
    assert add.si(2, 2).clone((1,)).args == (2, 2)
    assert add.s(2)(1) == 3  # calling a signature runs the task here
    assert add.s(x=1).clone(kwargs={"y": 2}).kwargs == {"x": 1, "y": 2}
    frozen = add.s(1, 1).set(group_id="g1")
    assert frozen.clone(group_id="g2").options["group_id"] == "g1"  # immutable option


def test_operators_build_chains_and_chords(fastq_app: App) -> None:
    add, tsum = fastq_app.tasks["t.add"], fastq_app.tasks["t.tsum"]
    assert isinstance(add.s(1, 1) | add.s(2), chain)
    assert len((add.s(1, 1) | add.s(2) | add.s(3)).tasks) == 3
    built = group(add.s(1, 1), add.s(2, 2)) | tsum.s()
    assert isinstance(built, chord) and built.body.task == "t.tsum"


def test_group_refuses_link(fastq_app: App) -> None:
    add = fastq_app.tasks["t.add"]
    with pytest.raises(TypeError, match="chord"):
        group(add.s(1, 1)).apply_async(link=add.s(1))


def test_chord_without_a_group_backend_says_so(broker_url: str) -> None:
    app = App("nobackend", broker=broker_url, set_as_current=False)
    app.conf.result_backend = None  # even when FASTQ_RESULT_BACKEND is set
    add = app.task(name="t.add")(TASKS["t.add"])
    with pytest.raises(Exception, match="redis://"):
        chord([add.s(1, 1)])(add.s(1))
    app.close()


def test_a_group_is_sent_all_or_nothing(fastq_app: App, broker_redis: redis.Redis) -> None:
    add = fastq_app.tasks["t.add"]
    # The tasks go out in one pipelined batch: one that cannot be encoded stops them all.
    with pytest.raises(errors.EncodeError):
        group(add.s(1, 1), add.s(object(), 1)).apply_async()
    assert broker_redis.llen("celery") == 0
    group(add.s(1, 1), add.s(2, 2)).apply_async()
    assert broker_redis.llen("celery") == 2


def test_map_signatures_are_celerys(fastq_app: App, celery_app: celery.Celery) -> None:
    builds: list[Callable[[Any], Any]] = [
        lambda add: add.map([1, 2]),
        lambda add: add.starmap([(1, 2), (3, 4)]),
        lambda add: add.chunks([(1, 2), (3, 4), (5, 6)], 2),
        lambda add: add.chunks(iter([(1, 2), (3, 4), (5, 6)]), 2).group(),
        lambda add: add.map([1]).set(queue="q"),
    ]
    for build in builds:
        ours = json.loads(json.dumps(build(fastq_app.tasks["t.add"])))
        assert ours == json.loads(json.dumps(build(celery_app.tasks["t.add"])))
    assert xmap(fastq_app.tasks["t.add"].s(), [1]) == fastq_app.tasks["t.add"].map([1])
    # Celery's dict is a plain signature of its built-in task: rebuilt, it sends the same.
    wire = json.loads(json.dumps(celery_app.tasks["t.add"].chunks([(1, 2)], 1)))
    rebuilt = signature(wire, app=fastq_app)
    assert type(rebuilt) is Signature and json.loads(json.dumps(rebuilt)) == wire
    with pytest.raises(ValueError, match="positive"):
        fastq_app.tasks["t.add"].chunks([(1, 2)], 0)


@pytest.mark.parametrize("kind", ["map", "starmap", "chunks", "chunks_by_name"])
def test_map_messages_match_celery(
    kind: str, fastq_app: App, celery_app: celery.Celery, broker_redis: redis.Redis
) -> None:
    def build(tasks: Any, canvas: Any) -> Any:
        add, tsum = tasks["t.add"], tasks["t.tsum"]
        if kind == "map":
            return tsum.map([[1, 2], [3]]).apply_async()
        if kind == "starmap":
            return add.starmap([(1, 2), (3, 4)]).delay()
        if kind == "chunks":
            return add.chunks([(i, i) for i in range(5)], 2).apply_async()
        # A chunks signature sent as a task (in a chain, a callback...): celery.chunks runs it.
        wire = json.loads(json.dumps(add.chunks([(1, 1)], 1)))
        return canvas.signature(wire, app=add.app).apply_async()

    ours, theirs = both(fastq_app, celery_app, broker_redis, build)
    assert ours == theirs
    assert {m["headers"]["task"] for m in ours} == {
        "map": {"celery.map"},
        "starmap": {"celery.starmap"},
        "chunks": {"celery.starmap"},
        "chunks_by_name": {"celery.chunks"},
    }[kind]


def test_maps_are_routed_as_their_task(fastq_app: App, broker_redis: redis.Redis) -> None:
    # Celery's route_name: a map goes where its task would. (Celery 5.7 loses it on the way to
    # the parts of chunks, which land in the default queue; fastq routes them as the map.)
    fastq_app.conf.task_routes = {"t.add": {"queue": "adds"}}
    fastq_app.tasks["t.add"].map([1]).apply_async()
    fastq_app.tasks["t.add"].chunks([(1, 1), (2, 2)], 1).apply_async()
    assert broker_redis.llen("adds") == 3 and broker_redis.llen("celery") == 0


def replaced_request(tasks: Any, where: str, **fields: Any) -> dict[str, Any]:
    """The request of a ``t.replace`` run, with callbacks and errbacks, in a chain or a chord."""
    add = tasks["t.add"]
    request = {
        "id": "replaced",
        "task": "t.replace",
        "root_id": "root",
        "parent_id": "parent",
        "callbacks": [add.s(7)],
        "errbacks": [add.si(0, 0)],
        "reply_to": None,
        **fields,
    }
    if where == "in_chain":
        request["chain"] = [add.s(100).set(task_id="next")]
    elif where == "in_chord":
        request.update(group="the-chord", group_index=2, chord=tasks["t.tsum"].s().set(task_id="b"))
    return json.loads(json.dumps(request))  # as a worker gets it from a message


def replace_with_fastq(app: App, how: str, where: str, **fields: Any) -> None:
    task = app.tasks["t.replace"]
    request = Context(**replaced_request(app.tasks, where, **fields), called_directly=False)
    task.push_request(request)
    app.push_request(request)
    try:
        with pytest.raises(errors.Ignore):
            task.run(1, how)  # bound, as in Celery
    finally:
        app.pop_request()
        task.pop_request()


@pytest.mark.parametrize(
    ("how", "where"),
    [
        (how, where)
        for how in ("task", "chain", "group")
        for where in ("alone", "in_chain", "in_chord")
        # Left out: a group replacing a step of a chain. Celery sends the rest of the chain as
        # the chord body's tail (a chain body), fastq in the body's ``chain`` option, as for
        # any chord in a chain; both kinds of workers run either form.
        if (how, where) != ("group", "in_chain")
    ],
)
def test_replace_sends_what_celery_sends(
    how: str, where: str, fastq_app: App, celery_app: celery.Celery, broker_redis: redis.Redis
) -> None:
    replace_with_fastq(fastq_app, how, where)
    ours = sent(broker_redis)
    task = celery_app.tasks["t.replace"]
    task.push_request(**replaced_request(celery_app.tasks, where), called_directly=False)
    _task_stack.push(task)  # Celery's current worker task: the parent of what it sends
    try:
        with pytest.raises(CeleryIgnore):
            task.run(1, how)
    finally:
        _task_stack.pop()
        task.pop_request()
    theirs = sent(broker_redis)
    clients = {fastq_app.oid, celery_app.thread_oid}
    assert normalized(ours, clients) == normalized(theirs, clients)
    first = ours[0]["headers"]
    assert first["replaced_task_nesting"] == 1 and first["parent_id"] == "replaced"
    if how == "task":  # the replacement is the replaced task, for whoever waits on it
        assert first["id"] == "replaced"


def test_replacement_answers_the_replaced_tasks_caller(
    fastq_app: App, broker_redis: redis.Redis
) -> None:
    # With rpc:// the result goes to reply_to: the caller's, not the worker's that replaced.
    replace_with_fastq(fastq_app, "chain", "alone", reply_to="caller", replaced_task_nesting=1)
    last_step = {}
    for raw in broker_redis.lrange("celery", 0, -1):
        envelope, message = _core.decode_task_envelope(raw, ["json"])
        assert envelope.properties["reply_to"] == fastq_app.oid  # the first step's: not waited on
        assert message.headers["replaced_task_nesting"] == 2
        (last_step,) = message.embed["chain"]
    assert last_step["options"]["task_id"] == "replaced"
    assert last_step["options"]["reply_to"] == "caller"
    assert last_step["options"]["replaced_task_nesting"] == 2


def test_replace_refuses_what_celery_refuses(fastq_app: App) -> None:
    task = fastq_app.tasks["t.replace"]
    with pytest.raises(RuntimeError, match="worker"):
        task(1, "task")  # called directly: nothing to replace
    request = Context(id="r", task="t.replace", called_directly=False)
    task.push_request(request)
    try:
        add = fastq_app.tasks["t.add"]
        with pytest.raises(ValueError, match="empty chain"):
            task.replace(chain())
        with pytest.raises(ValueError, match="part of a chord"):
            task.replace(add.s(1, 1).set(chord=add.s()))
    finally:
        task.pop_request()
