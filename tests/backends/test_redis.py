"""The Redis result backend: Celery's keys and meta, the SUCCESS guard, the pub/sub wake-up."""

import json
import os
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from fastq import App, errors, states
from fastq.backends.base import exception_to_meta, meta_to_exception
from fastq.errors import BackendError, SecurityError, TaskError
from fastq.errors import TimeoutError as FastqTimeout
from fastq.result import AsyncResult


def test_meta_layout_is_celerys(app: App, backend_redis: redis.Redis) -> None:
    app.backend.mark_as_done("t1", {"answer": 42})
    raw = backend_redis.get("celery-task-meta-t1")
    assert raw is not None
    meta = json.loads(raw)
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == {"answer": 42}
    assert meta["task_id"] == "t1"
    assert meta["children"] == [] and meta["traceback"] is None
    assert meta["date_done"].endswith("+00:00")
    ttl = backend_redis.ttl("celery-task-meta-t1")
    assert 86000 < ttl <= 86400


def _published(pubsub: redis.client.PubSub, count: int) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + 5
    while len(got) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None and message["type"] == "message":
            got.append((message["channel"].decode(), message["data"]))
    return got


def _calls(stats: dict, command: str) -> int:
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_a_batch_of_new_results_is_one_script_call_that_sets_and_publishes_each(
    app: App, backend_redis: redis.Redis
) -> None:
    """A worker's batch of first states: one script call (one read for Redis), which SETs each
    with the TTL and PUBLISHes it, in order."""
    backend = app.backend
    metas = [(f"n{i}", backend.build_meta(f"n{i}", i, states.SUCCESS)) for i in range(3)]
    pubsub = backend_redis.pubsub()
    pubsub.subscribe(*(backend.key_for(task_id) for task_id, _ in metas))
    assert len(_published(pubsub, 0)) == 0 and pubsub.get_message(timeout=1)  # subscribed
    backend.store_many([("warm", backend.build_meta("warm", 0, states.SUCCESS))])  # loads it
    before = backend_redis.info("commandstats")
    backend.store_many(metas)
    published = _published(pubsub, 3)
    after = backend_redis.info("commandstats")
    assert _calls(after, "evalsha") - _calls(before, "evalsha") == 1
    assert _calls(after, "set") - _calls(before, "set") == 3
    assert _calls(after, "get") == _calls(before, "get")  # new keys: nothing read
    assert [channel for channel, _ in published] == [backend.key_for(t) for t, _ in metas]
    assert [json.loads(data)["result"] for _, data in published] == [0, 1, 2]
    assert 86000 < backend_redis.ttl(backend.key_for("n2")) <= 86400
    assert [AsyncResult(t, app=app).get(timeout=1) for t, _ in metas] == [0, 1, 2]
    pubsub.close()


@pytest.fixture(params=["rust", "redis-py"])
def either_store(request: pytest.FixtureRequest, backend_url: str) -> Iterator[App]:
    """An app whose backend stores a worker's results through the Rust store, or through
    redis-py (a URL option, which only redis-py's client takes)."""
    url = backend_url if request.param == "rust" else backend_url + "?health_check_interval=30"
    app = App("t", backend=url, set_as_current=False)
    assert (app.backend._rust_store is None) is (request.param == "redis-py")
    yield app
    app.close()


def test_keys_that_held_a_state_go_through_the_script_even_after_a_script_flush(
    either_store: App, backend_redis: redis.Redis
) -> None:
    """A key that already holds something (STARTED, a duplicate's SUCCESS) is stored by the script,
    which a server that lost its scripts (restarted, SCRIPT FLUSH) gets loaded again: STARTED is
    replaced, SUCCESS is kept, and only what was stored is published."""
    app = either_store
    backend = app.backend
    backend.store_many([("s1", backend.build_meta("s1", None, states.STARTED, None, None))])
    backend.store_many([("s2", backend.build_meta("s2", 7, states.SUCCESS, None, None))])
    backend_redis.script_flush()
    pubsub = backend_redis.pubsub()
    pubsub.subscribe(backend.key_for("s1"), backend.key_for("s2"), backend.key_for("s3"))
    for _ in range(3):
        assert pubsub.get_message(timeout=1)  # subscribed
    before = backend_redis.info("commandstats")
    backend.store_many(
        [
            ("s1", backend.build_meta("s1", 1, states.SUCCESS, None, None)),
            ("s2", backend.build_meta("s2", ValueError("dup"), states.FAILURE, None, None)),
            ("s3", backend.build_meta("s3", 3, states.SUCCESS, None, None)),
        ]
    )
    published = _published(pubsub, 2)
    assert _published(pubsub, 1) == []  # s2's FAILURE is neither stored nor published
    after = backend_redis.info("commandstats")
    assert _calls(after, "evalsha") - _calls(before, "evalsha") >= 2  # s1, s2 (+ NOSCRIPT)
    assert sorted(channel for channel, _ in published) == [
        backend.key_for("s1"),
        backend.key_for("s3"),
    ]
    results = [AsyncResult(t, app=app) for t in ("s1", "s2", "s3")]
    assert [r.get(timeout=1) for r in results] == [1, 7, 3]
    pubsub.close()


def test_a_result_stored_again_as_it_is_is_published(app: App, backend_redis: redis.Redis) -> None:
    """A batch sent again after its reply was lost finds its own SET done: it is published then
    (the first attempt may not have published it), not skipped as a duplicate of a SUCCESS."""
    backend = app.backend
    meta = backend.build_meta("a1", 5, states.SUCCESS, None, None)
    backend_redis.set(backend.key_for("a1"), backend.encode_meta(meta))
    pubsub = backend_redis.pubsub()
    pubsub.subscribe(backend.key_for("a1"))
    assert pubsub.get_message(timeout=1)
    backend.store_many([("a1", meta)])
    assert [json.loads(data)["result"] for _, data in _published(pubsub, 1)] == [5]
    pubsub.close()


def test_success_is_never_overwritten(app: App) -> None:
    app.backend.mark_as_done("t2", 1)
    app.backend.mark_as_failure("t2", ValueError("late duplicate"))
    assert AsyncResult("t2", app=app).get(timeout=1) == 1


def test_missing_key_is_pending(app: App) -> None:
    result = AsyncResult("never-sent", app=app)
    assert result.state == states.PENDING
    assert not result.ready()


def test_get_wakes_up_on_publish(app: App) -> None:
    result = AsyncResult("t3", app=app)

    def later() -> None:
        time.sleep(0.3)
        app.backend.mark_as_done("t3", "done")

    threading.Thread(target=later).start()
    started = time.monotonic()
    assert result.get(timeout=5) == "done"
    assert time.monotonic() - started < 2
    assert result.successful() and result.ready()


def test_get_is_woken_by_pub_sub_without_hiredis(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """The pure-Python parser, as installed without the ``hiredis`` extra: redis-py 8 refused
    the waiter's RESP2 connection (its maintenance notifications need RESP3 or hiredis), and
    every wait fell back to polling."""
    from redis._parsers import _RESP2Parser

    hub = app.backend.hub()
    hub._reader.connection_pool.connection_kwargs["parser_class"] = _RESP2Parser
    result = AsyncResult("t3-resp2", app=app)
    threading.Timer(0.3, lambda: app.backend.mark_as_done("t3-resp2", "done")).start()
    assert result.get(timeout=5) == "done"
    assert "failed while results are awaited" not in caplog.text


def test_get_times_out(app: App) -> None:
    with pytest.raises(FastqTimeout, match=r"not ready after 0\.2s"):
        AsyncResult("t4", app=app).get(timeout=0.2)


def test_failure_reraises_with_its_type(app: App) -> None:
    app.backend.mark_as_failure("t5", KeyError("missing"), traceback="Traceback...")
    result = AsyncResult("t5", app=app)
    with pytest.raises(KeyError, match="missing"):
        result.get(timeout=1)
    assert result.failed()
    assert isinstance(result.result, KeyError)
    assert result.traceback == "Traceback..."
    assert isinstance(result.get(propagate=False), KeyError)


def test_forget(app: App, backend_redis: redis.Redis) -> None:
    app.backend.mark_as_done("t6", 1)
    AsyncResult("t6", app=app).forget()
    assert backend_redis.get("celery-task-meta-t6") is None


def test_keyprefix_gets_a_separator(backend_url: str, backend_redis: redis.Redis) -> None:
    app = App(
        "x",
        backend=backend_url,
        result_backend_transport_options={"global_keyprefix": "pfx"},
        set_as_current=False,
    )
    app.backend.mark_as_done("t7", 1)
    assert backend_redis.exists("pfx_celery-task-meta-t7")


def test_exception_meta_is_celerys_format() -> None:
    meta = exception_to_meta(ValueError("bad", 3))
    assert meta == {"exc_type": "ValueError", "exc_message": ["bad", 3], "exc_module": "builtins"}
    rebuilt = meta_to_exception(meta)
    assert isinstance(rebuilt, ValueError) and rebuilt.args == ("bad", 3)


@pytest.mark.parametrize("module", ["celery.exceptions", "billiard.exceptions"])
@pytest.mark.parametrize("name", ["TimeLimitExceeded", "WorkerLostError"])
def test_celerys_worker_errors_become_fastqs(module: str, name: str) -> None:
    exc = meta_to_exception({"exc_type": name, "exc_message": ["gone"], "exc_module": module})
    assert type(exc) is getattr(errors, name) and exc.args == ("gone",)
    assert exception_to_meta(exc)["exc_module"] == "celery.exceptions"


def test_unimportable_exception_becomes_task_error() -> None:
    exc = meta_to_exception(
        {"exc_type": "Boom", "exc_message": ["x"], "exc_module": "no.such.module"}
    )
    assert isinstance(exc, TaskError)
    assert "no.such.module.Boom" in str(exc)


def test_non_exception_type_is_a_security_error() -> None:
    with pytest.raises(SecurityError, match=r"os\.system"):
        meta_to_exception({"exc_type": "system", "exc_message": ["id"], "exc_module": "os"})


def test_no_backend_configured_says_how(broker_url: str) -> None:
    app = App("x", broker=broker_url, set_as_current=False)
    with pytest.raises(BackendError, match="result_backend"):
        AsyncResult("x", app=app).get(timeout=1)


def test_dead_backend_is_a_clear_error() -> None:
    app = App("x", backend="redis://:secret@127.0.0.1:6390/0", set_as_current=False)
    with pytest.raises(BackendError) as info:
        app.backend.mark_as_done("t", 1)
    assert str(info.value).startswith("cannot store results in redis://:***@127.0.0.1:6390/0: ")
    assert "secret" not in str(info.value) and "broker" not in str(info.value)


def test_a_key_of_another_type_refuses_its_result_alone(
    either_store: App, backend_redis: redis.Redis
) -> None:
    """A foreign value where a result goes (here a list): Redis refuses that result for good,
    and only it. The batch's other results are stored and published; the error names the
    backend, the task and Redis's reason, on the Rust store and on redis-py's."""
    backend = either_store.backend
    backend_redis.rpush(backend.key_for("taken"), "not a result")
    backend.mark_as_started("late")  # a key that held something: the store script's path
    metas = [
        (task_id, backend.build_meta(task_id, task_id, states.SUCCESS))
        for task_id in ("first", "taken", "late")
    ]
    with pytest.raises(errors.ResultsRefused) as info:
        backend.store_many(metas)
    assert list(info.value.refused) == ["taken"]
    assert "WRONGTYPE" in info.value.refused["taken"]
    message = str(info.value)
    assert message.startswith(f"cannot store results in {backend.url}: ")
    assert "task taken: WRONGTYPE" in message and "broker" not in message
    assert [backend.get_meta(t)["result"] for t in ("first", "late")] == ["first", "late"]
    assert backend_redis.lrange(backend.key_for("taken"), 0, -1) == [b"not a result"]
    # One result alone takes the same way (redis-py's single script call).
    with pytest.raises(errors.ResultsRefused, match="task taken: WRONGTYPE"):
        backend.mark_as_done("taken", 1)


def test_a_wait_on_a_key_of_another_type_fails_at_once(
    app: App, backend_redis: redis.Redis
) -> None:
    """MGET reads a key of another type as missing: the wait looks at the key's type at its
    first poll and fails, as Celery's GET raises WRONGTYPE, instead of waiting out its timeout."""
    backend_redis.hset(app.backend.key_for("foreign"), "a", "b")
    started = time.monotonic()
    with pytest.raises(BackendError, match="holds a hash, not a task result") as info:
        AsyncResult("foreign", app=app).get(timeout=20)
    assert time.monotonic() - started < 2
    assert app.backend.key_for("foreign") in str(info.value)
    # A wait on a key that stays missing is not failed by the look.
    with pytest.raises(FastqTimeout):
        AsyncResult("missing", app=app).get(timeout=0.5)


async def _await(result: AsyncResult) -> object:
    return await result


def test_await_in_asyncio(app: App) -> None:
    import asyncio

    app.backend.mark_as_done("t8", [1, 2])
    assert asyncio.run(_await(AsyncResult("t8", app=app))) == [1, 2]


def test_an_unstorable_result_becomes_a_failure_that_says_why(app: App) -> None:
    app.backend.mark_as_done("t9", {1, 2, 3})  # a set has no JSON form
    result = AsyncResult("t9", app=app)
    with pytest.raises(Exception, match="cannot be stored with the json serializer"):
        result.get(timeout=1)
    assert result.state == states.FAILURE


def test_a_stored_result_is_returned_with_a_zero_timeout(app: App) -> None:
    app.backend.mark_as_done("t-zero", "ready")
    assert AsyncResult("t-zero", app=app).get(timeout=0) == "ready"


def test_many_threads_wait_at_once(app: App) -> None:
    # One subscription connection serves every waiting thread; none waits for another's result.
    ids = [f"t-many-{i}" for i in range(50)]
    got: dict[str, object] = {}
    threads = [
        threading.Thread(target=lambda i=i: got.update({i: AsyncResult(i, app=app).get(timeout=5)}))
        for i in ids
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    for i in reversed(ids):  # the last waiter's result first
        app.backend.mark_as_done(i, i)
    for thread in threads:
        thread.join(6)
    assert got == {i: i for i in ids}


def test_waiting_works_in_a_forked_child(app: App) -> None:
    # The parent's waiter thread and sockets do not exist in a child: it must start its own.
    import multiprocessing

    app.backend.mark_as_done("t-fork-parent", 1)
    assert AsyncResult("t-fork-parent", app=app).get(timeout=5) == 1

    def child() -> None:
        later = threading.Timer(0.2, app.backend.mark_as_done, ("t-fork-child", 2))
        later.start()
        ok = AsyncResult("t-fork-child", app=app).get(timeout=5) == 2
        later.join()
        os._exit(0 if ok else 1)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(10)
    assert process.exitcode == 0


def test_closing_the_app_ends_the_waits(app: App) -> None:
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            AsyncResult("t-closed", app=app).get(timeout=10)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    started = time.monotonic()
    app.close()
    waiter.join(5)
    assert time.monotonic() - started < 3
    assert isinstance(outcome[0], BackendError) and "closed while waiting" in str(outcome[0])


def test_awaiting_a_group_raises_its_first_failure_in_order(app: App) -> None:
    import asyncio

    from fastq.result import GroupResult

    app.backend.mark_as_done("g-ok", 1)
    app.backend.mark_as_failure("g-bad", KeyError("first"))
    app.backend.mark_as_failure("g-worse", ValueError("second"))
    nested = GroupResult("inner", [AsyncResult("g-bad", app=app)], app=app)
    group = GroupResult("outer", [AsyncResult("g-ok", app=app), nested], app=app)
    with pytest.raises(KeyError, match="first"):
        asyncio.run(_await(group))  # type: ignore[arg-type]
    later = GroupResult("later", [AsyncResult("g-worse", app=app), nested], app=app)
    with pytest.raises(ValueError, match="second"):
        asyncio.run(_await(later))  # type: ignore[arg-type]
    ok = GroupResult("ok", [AsyncResult("g-ok", app=app)], app=app)
    assert asyncio.run(_await(ok)) == [1]  # type: ignore[arg-type]


def test_celery_redis_connection_settings_reach_the_client(backend_url: str) -> None:
    from fastq.backends.redis import RedisBackend
    from fastq.config import Config

    plain = RedisBackend(Config(), backend_url).client.connection_pool
    assert plain.connection_kwargs.get("socket_timeout") is None  # fastq's: no read timeout
    conf = Config(
        redis_socket_timeout=7,
        redis_socket_connect_timeout=3,
        redis_socket_keepalive=True,
        redis_retry_on_timeout=True,
        redis_max_connections=4,
    )
    backend = RedisBackend(conf, backend_url)
    pool = backend.client.connection_pool
    kwargs = pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (7.0, 3.0)
    assert kwargs["socket_keepalive"] is True
    assert pool.max_connections == 4
    # A worker's stores then go through that client too, not the Rust one, which has none of
    # these settings; without them (and on plain TCP) they are Rust's.
    assert backend._rust_store is None
    assert RedisBackend(Config(), backend_url)._rust_store is not None
    assert RedisBackend(Config(), backend_url + "?health_check_interval=5")._rust_store is None
