"""Results never hang: ``get()`` returns a stored result within a second even when its wake-up
is lost (a worker that died between SET and PUBLISH, a PUBLISH before the SUBSCRIBE took effect,
a dropped connection, a restarted server), and ``await result`` holds no thread per waiter.

Every test runs on a redis-server of its own (``own_redis``) or a RabbitMQ vhost of its own."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from fastq import App
from fastq.canvas import chord, group, signature
from fastq.result import AsyncResult, GroupResult
from fastq.task import Context

from tests.amqp_support import requires_rabbitmq
from tests.faults.conftest import worker_env
from tests.faults.rabbit import Vhost, own_vhost  # noqa: F401
from tests.faults.redis_server import RedisServer, client_kill_all
from tests.processes import celery_worker, fastq_worker

BACKEND_DB = 1


def success_meta(task_id: str, value: Any) -> bytes:
    """A SUCCESS meta as Celery's and fastq's workers store it."""
    return json.dumps(
        {
            "status": "SUCCESS",
            "result": value,
            "traceback": None,
            "children": [],
            "date_done": datetime.now(timezone.utc).isoformat(),
            "task_id": task_id,
        }
    ).encode()


def set_without_publish(server: RedisServer, results: dict[str, Any]) -> None:
    """What a worker that died between SET and PUBLISH leaves: the key, and no wake-up."""
    client = server.client(BACKEND_DB)
    try:
        with client.pipeline(transaction=False) as pipe:
            for task_id, value in results.items():
                pipe.set(f"celery-task-meta-{task_id}", success_meta(task_id, value))
            pipe.execute()
    finally:
        client.close()


@pytest.fixture
def client(own_redis: RedisServer) -> Iterator[App]:
    app = App(
        "client", broker=own_redis.url(0), backend=own_redis.url(BACKEND_DB), set_as_current=False
    )
    yield app
    app.close()


@pytest.fixture
def env(own_redis: RedisServer, ledger_path: str) -> dict[str, str]:
    """Points a ``tests.faults.app`` worker at the test's own Redis."""
    return worker_env(own_redis.url(0), own_redis.url(BACKEND_DB), ledger_path)


class Waiting:
    """``calls`` run each in a thread of its own; what each returned (or raised) and when."""

    def __init__(self, calls: list[Callable[[], Any]]) -> None:
        self.outcomes: list[Any] = [None] * len(calls)
        self.done_at: list[float | None] = [None] * len(calls)
        self.threads = [
            threading.Thread(target=self._run, args=(i, call), daemon=True)
            for i, call in enumerate(calls)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, index: int, call: Callable[[], Any]) -> None:
        try:
            self.outcomes[index] = call()
        except BaseException as exc:
            self.outcomes[index] = exc
        self.done_at[index] = time.monotonic()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def subscribers(server: RedisServer, keys: list[str]) -> int:
    """How many of ``keys`` have a subscriber on their channel."""
    client = server.client(BACKEND_DB)
    try:
        counts = client.pubsub_numsub(*keys) if keys else []
        return sum(1 for _, n in counts if n)
    finally:
        client.close()


def settle(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- a result stored with no PUBLISH -------------------------------------------------------------
def test_get_returns_a_result_stored_without_publish(own_redis: RedisServer, client: App) -> None:
    task_id = str(uuid.uuid4())
    waiting = Waiting([lambda: client.AsyncResult(task_id).get(timeout=10)])
    settle(lambda: subscribers(own_redis, [f"celery-task-meta-{task_id}"]) == 1, 5)
    time.sleep(0.2)
    stored = time.monotonic()
    set_without_publish(own_redis, {task_id: 42})
    waiting.join(10)
    assert waiting.outcomes == [42]
    took = waiting.done_at[0] - stored  # type: ignore[operator]
    print(f"get() returned {took:.3f}s after the SET (no PUBLISH)")
    assert took < 1.0


def test_group_join_returns_results_stored_without_publish(
    own_redis: RedisServer, client: App
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(20)]
    result = GroupResult(str(uuid.uuid4()), [AsyncResult(i, app=client) for i in ids], app=client)
    waiting = Waiting([lambda: result.join(timeout=10)])
    time.sleep(0.3)
    stored = time.monotonic()
    set_without_publish(own_redis, {task_id: n for n, task_id in enumerate(ids)})
    waiting.join(10)
    assert waiting.outcomes == [list(range(20))]
    assert waiting.done_at[0] - stored < 1.0  # type: ignore[operator]


def test_chord_result_stored_without_publish(own_redis: RedisServer, client: App) -> None:
    # No worker: the test stores what the workers would, the body's result with no PUBLISH.
    header = [signature("faults.work", args=(i,), app=client) for i in range(3)]
    res = chord(header)(signature("faults.work", app=client))
    assert isinstance(res.parent, GroupResult)
    waiting = Waiting([lambda: res.get(timeout=10)])
    time.sleep(0.3)
    stored = time.monotonic()
    set_without_publish(own_redis, {r.id: i for i, r in enumerate(res.parent.results)})
    set_without_publish(own_redis, {res.id: [0, 1, 2]})
    waiting.join(10)
    assert waiting.outcomes == [[0, 1, 2]]
    assert waiting.done_at[0] - stored < 1.0  # type: ignore[operator]
    assert res.parent.join(timeout=1) == [0, 1, 2]


def test_group_and_chord_through_a_real_worker(client: App, env: dict[str, str]) -> None:
    with fastq_worker("--concurrency", "2", app="tests.faults.app", env=env):
        grouped = group(signature("faults.work", args=(i,), app=client) for i in range(10))()
        assert grouped.get(timeout=20) == list(range(10))
        header = [signature("faults.work", args=(i,), app=client) for i in range(5)]
        res = chord(header)(signature("faults.work", app=client))
        assert res.get(timeout=20) == [0, 1, 2, 3, 4]


# -- dropped connections and a restarted server, 200 waiters -------------------------------------
WAITERS = 200


def wait_for_all(client: App, ids: list[str]) -> Waiting:
    return Waiting([lambda i=i: client.AsyncResult(i).get(timeout=30) for i in ids])  # type: ignore[misc]


def check_all_returned(waiting: Waiting, ids: list[str], since: float, within: float) -> None:
    waiting.join(within + 5)
    errors = [o for o in waiting.outcomes if isinstance(o, BaseException)]
    assert not errors, f"{len(errors)} of {len(ids)} waiters failed, e.g. {errors[0]!r}"
    assert waiting.outcomes == list(range(len(ids)))
    slowest = max(t for t in waiting.done_at if t is not None) - since
    print(f"all {len(ids)} waiters returned, the last {slowest:.3f}s after the results were stored")
    assert slowest < within


def test_client_kill_while_200_wait(own_redis: RedisServer, client: App) -> None:
    ids = [str(uuid.uuid4()) for _ in range(WAITERS)]
    keys = [f"celery-task-meta-{i}" for i in ids]
    waiting = wait_for_all(client, ids)
    # All 200 wait at once (one process, one subscription connection), not one after another.
    assert settle(lambda: subscribers(own_redis, keys) == WAITERS, 5), subscribers(own_redis, keys)
    assert client_kill_all(own_redis) >= 1
    # Stored at once with PUBLISH (lost while the waiters' connection is down) and the second
    # half with no PUBLISH at all.
    writer = App("w", broker=own_redis.url(0), backend=own_redis.url(BACKEND_DB))
    try:
        stored = time.monotonic()
        writer.backend.store_many(
            (i, writer.backend.build_meta(i, n, "SUCCESS")) for n, i in enumerate(ids[:100])
        )
        set_without_publish(own_redis, {i: n + 100 for n, i in enumerate(ids[100:])})
        check_all_returned(waiting, ids, stored, within=3.0)
    finally:
        writer.close()


def test_server_restart_while_200_wait(own_redis: RedisServer, client: App) -> None:
    ids = [str(uuid.uuid4()) for _ in range(WAITERS)]
    keys = [f"celery-task-meta-{i}" for i in ids]
    waiting = wait_for_all(client, ids)
    # All 200 wait at once (one process, one subscription connection), not one after another.
    assert settle(lambda: subscribers(own_redis, keys) == WAITERS, 5), subscribers(own_redis, keys)
    # A quarter stored before the crash (kept by the AOF), the rest after the restart.
    set_without_publish(own_redis, {i: n for n, i in enumerate(ids[:50])})
    own_redis.restart(down_for=2.0)
    writer = App("w", broker=own_redis.url(0), backend=own_redis.url(BACKEND_DB))
    try:
        stored = time.monotonic()
        writer.backend.store_many(
            (i, writer.backend.build_meta(i, n + 50, "SUCCESS")) for n, i in enumerate(ids[50:])
        )
        check_all_returned(waiting, ids, stored, within=3.0)
    finally:
        writer.close()


def test_200_waiters_on_a_celery_worker(own_redis: RedisServer, client: App) -> None:
    # The observed case: a fastq client, a Celery worker (which stores with SET then PUBLISH on
    # the key's channel), 200 gets at once; every one returns.
    results = [client.send_task("interop.add", (i, 0)) for i in range(WAITERS)]
    waiting = Waiting([lambda r=r: r.get(timeout=30) for r in results])  # type: ignore[misc]
    keys = [f"celery-task-meta-{r.id}" for r in results]
    assert settle(lambda: subscribers(own_redis, keys) == WAITERS, 5)
    env = {"FASTQ_BROKER_URL": own_redis.url(0), "FASTQ_RESULT_BACKEND": own_redis.url(BACKEND_DB)}
    with celery_worker("-P", "threads", "-c", "4", env=env):
        waiting.join(30)
    assert waiting.outcomes == list(range(WAITERS))


def test_timeout_names_an_unreachable_backend(own_redis: RedisServer, client: App) -> None:
    own_redis.kill()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"not ready after 0\.5s \(the result backend .* fails"):
        client.AsyncResult(str(uuid.uuid4())).get(timeout=0.5)
    assert time.monotonic() - started < 2.0


# -- 1 000 awaits in one event loop --------------------------------------------------------------
def test_1000_awaits_share_one_thread_and_one_subscription(
    own_redis: RedisServer, client: App, env: dict[str, str]
) -> None:
    results = client.send_many([("faults.work", (i,), None) for i in range(1000)])
    before = threading.active_count()
    peak = {"threads": before, "subscribed_connections": 0}
    admin = own_redis.client(BACKEND_DB)

    async def watch(stop: asyncio.Event) -> None:
        while not stop.is_set():
            peak["threads"] = max(peak["threads"], threading.active_count())
            subs = [
                c
                for c in admin.client_list()
                if int(c.get("sub", 0)) > 0 and c.get("db") == str(BACKEND_DB)
            ]
            if len(subs) > 1:
                print(subs)
            peak["subscribed_connections"] = max(peak["subscribed_connections"], len(subs))
            await asyncio.sleep(0.05)

    async def main() -> list[Any]:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(stop))
        try:
            return await asyncio.wait_for(asyncio.gather(*results), 35)
        finally:
            stop.set()
            await watcher

    worker = fastq_worker("--concurrency", "2", app="tests.faults.app", env=env)
    try:
        values = asyncio.run(main())
    finally:
        worker.stop()
        admin.close()
    assert values == list(range(1000))
    print(f"threads before {before}, at most {peak['threads']} while 1000 awaits waited; {peak}")
    assert peak["threads"] <= before + 1  # the one results thread
    assert peak["subscribed_connections"] <= 1


def test_awaiting_a_group(own_redis: RedisServer, client: App) -> None:
    ids = [str(uuid.uuid4()) for _ in range(50)]
    result = GroupResult(str(uuid.uuid4()), [AsyncResult(i, app=client) for i in ids], app=client)

    async def main() -> list[Any]:
        pending = asyncio.ensure_future(result)
        await asyncio.sleep(0.2)
        set_without_publish(own_redis, {task_id: n for n, task_id in enumerate(ids)})
        return await asyncio.wait_for(pending, 5)

    assert asyncio.run(main()) == list(range(50))


def test_redis_error_kinds_are_not_swallowed(own_redis: RedisServer, client: App) -> None:
    # An undecodable stored result is an error for the caller, not an endless wait.
    task_id = str(uuid.uuid4())
    raw = redis.Redis(host="127.0.0.1", port=own_redis.port, db=BACKEND_DB)
    raw.set(f"celery-task-meta-{task_id}", b"\x00not a meta")
    raw.close()
    with pytest.raises(Exception) as caught:
        client.AsyncResult(task_id).get(timeout=5)
    assert not isinstance(caught.value, TimeoutError)


# -- rpc:// and rabbitmq:// across a dropped connection ------------------------------------------
def amqp_apps(vhost: Vhost, backend: str) -> tuple[App, App]:
    url = vhost.url()
    client = App("c", broker=url, backend=backend, set_as_current=False, result_expires=60)
    worker = App("w", broker=url, backend=backend, set_as_current=False, result_expires=60)
    return client, worker


def reply(worker: App, client: App, task_id: str, value: Any) -> None:
    """What a worker stores for ``client``'s task (rpc:// replies to its ``reply_to``)."""
    request = Context(id=task_id, reply_to=client.oid, correlation_id=task_id)
    worker.backend.mark_as_done(task_id, value, request=request)


@requires_rabbitmq
@pytest.mark.parametrize("backend", ["rpc://", "rabbitmq://"])
def test_result_stored_while_the_client_is_disconnected(
    own_vhost: Vhost,  # noqa: F811
    backend: str,
) -> None:
    client, worker = amqp_apps(own_vhost, backend)
    try:
        task_id = str(uuid.uuid4())
        client.backend.on_task_sent(task_id)  # the reply queue exists and is consumed
        assert own_vhost.close_connections("fastq test: connection loss") == 1
        time.sleep(0.3)
        reply(worker, client, task_id, 42)  # before the client notices and reconnects
        assert client.AsyncResult(task_id).get(timeout=10) == 42
    finally:
        client.close()
        worker.close()


@requires_rabbitmq
@pytest.mark.parametrize("backend", ["rpc://", "rabbitmq://"])
def test_get_survives_a_dropped_connection_while_it_waits(
    own_vhost: Vhost,  # noqa: F811
    backend: str,
) -> None:
    client, worker = amqp_apps(own_vhost, backend)
    try:
        ids = [str(uuid.uuid4()) for _ in range(5)]
        for task_id in ids:
            client.backend.on_task_sent(task_id)
        waiting = Waiting([lambda i=i: client.AsyncResult(i).get(timeout=20) for i in ids])  # type: ignore[misc]
        time.sleep(0.5)
        assert own_vhost.close_connections("fastq test: connection loss") == 1
        reply(worker, client, ids[0], 0)  # while the client may still be reconnecting
        time.sleep(0.5)
        stored = time.monotonic()
        for n, task_id in enumerate(ids[1:], 1):
            reply(worker, client, task_id, n)
        waiting.join(20)
        assert waiting.outcomes == list(range(5))
        assert max(t for t in waiting.done_at if t is not None) - stored < 3
    finally:
        client.close()
        worker.close()


#: How long a wait across a closed connection lasts: past a rabbitmqctl call on a busy machine.
LOST_WAIT = 12


@requires_rabbitmq
def test_rpc_timeout_names_the_lost_connection(own_vhost: Vhost) -> None:  # noqa: F811
    # What rpc:// cannot know: whether a reply was lost with a restarted broker. A wait that
    # saw its connection drop and no reply says so when it times out.
    client, worker = amqp_apps(own_vhost, "rpc://")
    try:
        task_id = str(uuid.uuid4())
        client.backend.on_task_sent(task_id)
        # Each rabbitmqctl call starts an Erlang VM (seconds on a loaded machine): the
        # connection is looked up before the wait starts, and the wait outlasts the close.
        assert len(own_vhost.connections()) == 1
        began = time.monotonic()
        waiting = Waiting([lambda: client.AsyncResult(task_id).get(timeout=LOST_WAIT)])
        time.sleep(0.5)
        own_vhost.close_all("fastq test: connection loss")
        assert time.monotonic() - began < LOST_WAIT - 1, "the close came after the wait ended"
        waiting.join(LOST_WAIT + 10)
        (outcome,) = waiting.outcomes
        assert isinstance(outcome, TimeoutError)
        assert "was lost meanwhile" in str(outcome) and "CONNECTION_FORCED" in str(outcome)
    finally:
        client.close()
        worker.close()
