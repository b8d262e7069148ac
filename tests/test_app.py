"""App and Task: registration, names, and the message ``send_task`` publishes."""

from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from fastq import App, Task, _core
from fastq.errors import BrokerConnectionError, ConfigurationError, NotRegistered


def test_task_names_default_to_module_and_function(app: App) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="custom.name")
    def other() -> None: ...

    assert add.name == f"{__name__}.test_task_names_default_to_module_and_function.<locals>.add"
    assert add(2, 3) == 5
    assert app.get_task("custom.name") is other
    with pytest.raises(NotRegistered, match="nope"):
        app.get_task("nope")


def test_unknown_task_option_is_refused(app: App) -> None:
    with pytest.raises(ConfigurationError, match="acks_lat"):
        app.task(acks_lat=True)


def _pop(client: redis.Redis, key: str = "celery") -> tuple[_core.Envelope, _core.TaskMessage]:
    raw = client.rpop(key)
    assert raw is not None, f"nothing on {key!r}"
    return _core.decode_task_envelope(raw, ["json", "msgpack"])


def test_delay_publishes_a_celery_v2_message(app: App, broker_redis: redis.Redis) -> None:
    @app.task(name="proj.add")
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(2, y=3)
    env, msg = _pop(broker_redis)
    assert msg.id == result.id
    assert msg.task == "proj.add"
    assert msg.args == (2,) and msg.kwargs == {"y": 3}
    assert msg.headers["root_id"] == result.id
    assert msg.headers["argsrepr"] == "(2,)"
    assert msg.headers["origin"].startswith("gen")
    assert env.properties["correlation_id"] == result.id
    assert env.properties["reply_to"] == app.oid
    assert env.routing_key == "celery" and env.exchange == ""


def test_apply_async_options(app: App, broker_redis: redis.Redis) -> None:
    @app.task(name="proj.mul", queue="math")
    def mul(x: int, y: int) -> int:
        return x * y

    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    mul.apply_async((2, 3), eta=eta, expires=60, priority=5, serializer="msgpack")
    env, msg = _pop(broker_redis, "math\x06\x163")  # priority 5 -> kombu step 3
    assert env.content_type == "application/x-msgpack"
    assert msg.headers["eta"] == "2030-01-02T03:04:05+00:00"
    assert msg.headers["expires"] is not None
    assert env.properties["expiration"] == "60000"
    assert env.priority == 5

    app.send_task("proj.mul", (1, 1), countdown=10, queue="other", task_id="fixed-id")
    _, msg = _pop(broker_redis, "other")
    assert msg.id == "fixed-id"
    sent = datetime.fromisoformat(msg.headers["eta"])
    assert 5 < (sent - datetime.now(timezone.utc)).total_seconds() <= 10


def test_celery_only_send_options(app: App, broker_redis: redis.Redis) -> None:
    # route_name: routed as another task would be (Celery's maps); replaced_task_nesting: a header.
    app.conf.task_routes = {"proj.add": {"queue": "adds"}}
    app.send_task("celery.map", route_name="proj.add", replaced_task_nesting=2)
    _, message = _pop(broker_redis, "adds")
    assert message.task == "celery.map" and message.headers["replaced_task_nesting"] == 2
    app.send_task("proj.add")
    assert _pop(broker_redis, "adds")[1].headers["replaced_task_nesting"] == 0


def test_send_many_is_one_pipeline(app: App, broker_redis: redis.Redis) -> None:
    results = app.send_many([("proj.add", (i, i), None) for i in range(50)])
    assert len({r.id for r in results}) == 50
    assert broker_redis.llen("celery") == 50


def test_unknown_send_option_is_refused(app: App) -> None:
    with pytest.raises(ConfigurationError, match="cowntdown"):
        app.send_task("x", cowntdown=5)


def test_unsupported_broker_scheme() -> None:
    app = App("x", broker="kafka://localhost", set_as_current=False)
    with pytest.raises(ConfigurationError, match="kafka"):
        app.send_task("x")


def test_delay_survives_a_dropped_connection() -> None:
    from tests.faults.redis_server import RedisServer

    # A server of its own: killing every client of the shared one would cut other sessions.
    with RedisServer() as server:
        app = App("drop", broker=server.url(), set_as_current=False)

        @app.task(name="proj.noop")
        def noop() -> None: ...

        noop.delay()
        noop.delay()  # the second goes through the connection the broker keeps for this thread
        admin = server.client()
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        noop.delay()  # a connection the server dropped is replaced once, as Celery retries
        assert admin.llen("celery") == 3
        app.close()


def test_delay_to_a_dead_broker_is_a_clear_error() -> None:
    app = App("x", broker="redis://:secret@127.0.0.1:6390/0", set_as_current=False)
    with pytest.raises(BrokerConnectionError) as info:
        app.send_task("proj.noop")
    assert "127.0.0.1:6390" in str(info.value) and "secret" not in str(info.value)


def test_current_app_stands_for_the_last_app_created(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastq import _state, current_app

    monkeypatch.setattr(_state, "_current", None)  # restored after the test
    app = App("current", broker="memory://")
    assert current_app() is app
    assert current_app.tasks is app.tasks
    assert App("other", set_as_current=False) and current_app() is app


def test_the_declared_send_options_are_those_build_message_takes() -> None:
    import inspect

    from fastq.canvas import SEND_OPTIONS

    parameters = inspect.signature(App.build_message).parameters.values()
    assert SEND_OPTIONS == {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def test_a_forked_child_has_a_client_id_of_its_own() -> None:
    """The client id names the rpc:// reply queue: a child sharing its parent's would drain the
    parent's replies, and delete the queue when it closes."""
    import os

    app = App("fork", broker="memory://", set_as_current=False)
    parent_oid = app.oid
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its id and leave at once
        os.write(write_fd, app.oid.encode())
        os._exit(0)
    os.close(write_fd)
    child_oid = os.read(read_fd, 100).decode()
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert child_oid and child_oid != parent_oid
    assert app.oid == parent_oid


def test_argsrepr_and_kwargsrepr_keep_secrets_out_of_the_headers() -> None:
    app = App("repr", broker="memory://", set_as_current=False)
    message = app.build_message("t", ("s3cret",), {"token": "abc"}, argsrepr="(<hidden>,)",
                                kwargsrepr="{'token': '***'}")  # fmt: skip
    assert (message.headers["argsrepr"], message.headers["kwargsrepr"]) == (
        "(<hidden>,)",
        "{'token': '***'}",
    )
    plain = app.build_message("t", ("x",), {})
    assert (plain.headers["argsrepr"], plain.headers["kwargsrepr"]) == ("('x',)", "{}")


# -- task_annotations -----------------------------------------------------------------------------
class SlowDown:
    """An annotation object, as Celery's docs have them."""

    def annotate(self, task: Any) -> dict[str, Any] | None:
        if task.name.startswith("ann.slow"):
            return {"rate_limit": "10/s", "max_retries": 7}
        return None


def _wrap(method: Any) -> Any:  # an '@' annotation wraps a method
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        return ("wrapped", method(self, *args, **kwargs))

    return wrapped


def _named(self: Any) -> str:
    return f"named {self.name}"


ANNOTATIONS: list[Any] = [
    {"ann.add": {"rate_limit": "2/s", "default_retry_delay": 5, "acks_late": True}},
    SlowDown(),
    {"*": {"time_limit": 30, "describe": _named}},
    {"ann.add": {"max_retries": 99}, "*": {"soft_time_limit": 1}},  # later ones: never reached
]


def _annotated(kind: str, annotations: Any) -> dict[str, dict[str, Any]]:
    """What ``annotations`` make of three tasks, on fastq's App or Celery's."""
    if kind == "fastq":
        app: Any = App("ann", set_as_current=False)
    else:
        import celery

        app = celery.Celery("ann", set_as_current=False)
    app.conf.task_annotations = annotations

    @app.task(name="ann.add", max_retries=2)
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="ann.slow")
    def slow() -> None: ...

    @app.task(name="ann.other", rate_limit="1/m")
    def other() -> None: ...

    seen = {}
    for task in (add, slow, other):
        attrs = ("rate_limit", "max_retries", "default_retry_delay", "acks_late", "time_limit")
        seen[task.name] = {a: getattr(task, a) for a in attrs}
        seen[task.name]["acks_late"] = bool(task.acks_late)  # fastq: None is "the setting's"
        seen[task.name]["describe"] = task.describe()
        seen[task.name]["soft_time_limit"] = task.soft_time_limit
    return seen


def test_task_annotations_set_task_attributes_as_in_celery() -> None:
    fastq_seen = _annotated("fastq", ANNOTATIONS)
    assert fastq_seen == _annotated("celery", ANNOTATIONS)
    assert fastq_seen["ann.add"]["rate_limit"] == "2/s"  # over nothing
    assert fastq_seen["ann.add"]["max_retries"] == 2  # the decorator's: no annotation for it
    assert fastq_seen["ann.slow"]["max_retries"] == 7  # the object's annotate()
    assert fastq_seen["ann.other"]["time_limit"] == 30  # '*'
    assert fastq_seen["ann.other"]["describe"] == "named ann.other"  # a function: a method


def test_task_annotations_given_after_the_tasks_and_by_name() -> None:
    app = App("ann", set_as_current=False)

    @app.task(name="ann.add")
    def add(x: int, y: int) -> int:
        return x + y

    old_style = {"CELERY_ANNOTATIONS": {"ann.add": {"rate_limit": "1/s"}}}
    app.config_from_object(type("S", (), old_style))
    assert add.rate_limit == "1/s"
    app.conf.task_annotations = ["tests.test_app.SlowDown", {"ann.add": {"max_retries": 1}}]
    assert add.max_retries == 1


def test_an_around_annotation_wraps_the_method_once() -> None:
    app = App("ann", set_as_current=False)
    app.conf.task_annotations = {"ann.x": {"@describe": _wrap, "@__call__": _wrap}}

    @app.task(name="ann.x", base=Described)
    def x() -> str:
        return "called"

    assert x.describe() == ("wrapped", "plain")
    assert x() == ("wrapped", "called")
    app.conf.task_annotations = {"ann.x": {"@describe": _wrap}}  # applied again
    assert x.describe() == ("wrapped", "plain")
    assert Described.describe(x) == "plain"  # the class of other tasks is not changed


class Described(Task):
    def describe(self) -> str:
        return "plain"


# -- timezone / enable_utc ------------------------------------------------------------------------
def _celery_times(**settings: Any) -> tuple[str, str, str]:
    import celery

    capp = celery.Celery("tz", backend="cache+memory://", set_as_current=False, **settings)
    message = capp.amqp.as_task_v2("an-id", "tz.t", countdown=60, expires=120)
    meta = capp.backend._get_result_meta(1, "SUCCESS", None, None)
    return message.headers["eta"], message.headers["expires"], meta["date_done"]


def _fastq_times(**settings: Any) -> tuple[str, str, str]:
    app = App("tz", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.update(settings)
    message = app.build_message("tz.t", countdown=60, expires=120)
    meta = app.backend.build_meta("an-id", 1, "SUCCESS")
    return message.headers["eta"], message.headers["expires"], meta["date_done"]


@pytest.mark.parametrize(
    "settings",
    [{}, {"timezone": "Asia/Tokyo"}, {"timezone": "America/Caracas", "enable_utc": True}],
    ids=["utc", "tokyo", "caracas"],
)
def test_times_are_in_the_app_timezone_as_in_celery(settings: dict[str, Any]) -> None:
    fastq_times = _fastq_times(**settings)
    celery_times = _celery_times(**settings)
    for ours, theirs in zip(fastq_times, celery_times, strict=True):
        assert ours[-6:] == theirs[-6:], (ours, theirs)  # the same offset
        gap = datetime.fromisoformat(ours) - datetime.fromisoformat(theirs)
        assert abs(gap.total_seconds()) < 5  # and the same instant


def test_without_utc_the_local_timezone_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        eta, _, date_done = _fastq_times(enable_utc=False)
        assert eta.endswith("+05:30")
        assert date_done.endswith("+05:30")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_task_inherit_parent_priority() -> None:
    from fastq.task import Context

    app = App("p", broker="memory://", task_default_priority=1, set_as_current=False)
    app.push_request(Context(id="parent", delivery_info={"priority": 7}))
    try:
        assert app.build_message("child").priority == 1  # off by default, as in Celery
        app.conf.task_inherit_parent_priority = True
        assert app.build_message("child").priority == 7
        assert app.build_message("child", priority=3).priority == 3  # an explicit one wins
    finally:
        app.pop_request()
    assert app.build_message("child").priority == 1  # not sent from a task


def test_send_many_copies_of_one_message_per_task_are_what_build_message_makes() -> None:
    """``send_many`` without options builds one message per task name and copies it for the
    other calls: each copy must be exactly the message ``build_message`` makes for its call."""
    app = App("copies", broker="memory://copies", set_as_current=False)
    calls = [
        ("t.add", (1, 2), None),
        ("t.add", [3, 4], {"x": "y" * 2000}),
        ("t.mul", (), {"n": 1}),
        ("t.add", None, None),
    ]
    messages = app._plain_messages(calls)
    assert len({m.id for m in messages}) == len(calls)
    for message, (name, args, kwargs) in zip(messages, calls, strict=True):
        expected = app.build_message(name, args, kwargs, task_id=message.id)
        assert message == expected
        assert message.headers is not expected.headers
    # Nothing is shared between two copies that a later change to one would show in the other.
    first, second = messages[0], messages[1]
    assert first.headers["timelimit"] is not second.headers["timelimit"]
    assert first.headers["stamps"] is not second.headers["stamps"]
    assert first.embed is not second.embed and first.properties is not second.properties


def test_send_many_builds_each_message_when_a_router_function_may_read_the_arguments() -> None:
    seen: list[tuple[object, ...]] = []

    def route(name: str, args: tuple[object, ...], kwargs: object, options: object, **kw: object):
        seen.append(tuple(args))
        return {"queue": f"q{args[0]}"}

    app = App("routed", broker="memory://routed", set_as_current=False, task_routes=(route,))
    app.send_many([("t.add", (1,), None), ("t.add", (2,), None)])
    assert seen == [(1,), (2,)]
    assert app.broker.queue_length("q1") == 1 and app.broker.queue_length("q2") == 1
