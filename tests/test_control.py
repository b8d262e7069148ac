"""Remote control: broadcast and replies on the memory, SQLite and Redis (Celery's pidbox)
channels, and the worker's answers in Celery's shapes (ping, registered, active, stats, revoked,
query_task, refusals)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastq import App
from fastq.control_channel import ControlCommand
from fastq.errors import ConfigurationError, DecodeError
from fastq.worker.active import ActiveTasks
from fastq.worker.control_server import ControlServer, PoolInfo

from tests.conftest import BROKER_DB, REDIS_HOST


def serve(app: App, hostname: str, active_tasks: ActiveTasks | None = None) -> Callable[[], None]:
    """A worker's control server in a thread, subscribed before this returns; returns its stop."""
    server = ControlServer(
        app,
        hostname,
        active_tasks or ActiveTasks(),
        PoolInfo("threads", 2, 4, lambda: [os.getpid()]),
    )
    server.poll(0)  # opens the subscription
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    thread.start()

    def stopper() -> None:
        stop.set()
        thread.join(5)

    return stopper


@pytest.fixture(params=["memory", "sqlite", "redis"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    options = {}
    if request.param == "memory":
        url = f"memory://{uuid.uuid4().hex}"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/fastq.db"
    else:
        url = f"{REDIS_HOST}/{BROKER_DB}"
        try:
            redis.Redis.from_url(url).ping()
        except redis.RedisError:
            pytest.skip(f"no Redis on {REDIS_HOST}")
        # A prefix of its own, so concurrent test runs never hear each other's commands.
        options = {"broker_transport_options": {"global_keyprefix": f"{uuid.uuid4().hex}:"}}
    application = App("ctl", broker=url, set_as_current=False, **options)

    @application.task(name="ctl.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield application
    application.close()


def test_inspect_gets_one_reply_per_worker(app: App) -> None:
    active_tasks = ActiveTasks()
    active_tasks.started(0, 1234, "task-1", "ctl.add", "7")
    active_tasks.started(1, 1235, "task-2", "ctl.add", "8")
    active_tasks.finished(1)
    stops = [serve(app, "w1@host", active_tasks), serve(app, "w2@host")]
    try:
        pong = {"ok": "pong"}
        assert sorted(app.control.ping(timeout=0.5), key=str) == [
            {"w1@host": pong},
            {"w2@host": pong},
        ]
        inspect = app.control.inspect(timeout=0.5)
        assert inspect.ping() == {"w1@host": pong, "w2@host": pong}
        assert inspect.registered()["w2@host"] == ["ctl.add"]
        [active] = inspect.active()["w1@host"]
        assert active["id"] == "task-1" and active["name"] == "ctl.add"
        assert active["worker_pid"] == 1234 and active["hostname"] == "w1@host"
        query = app.control.inspect(["w1@host"], timeout=5).query_task("task-1", "nope")
        assert query["w1@host"]["task-1"][0] == "active"
        stats = inspect.stats()["w1@host"]
        assert stats["total"] == {"ctl.add": 1}
        assert stats["pool"]["max-concurrency"] == 2 and stats["pool"]["processes"]
        assert stats["broker"]["transport"] == app.broker.url.split("://")[0]
    finally:
        for stop in stops:
            stop()


def test_reserved_and_scheduled_in_celerys_shapes(app: App) -> None:
    active_tasks = ActiveTasks()
    eta = "2030-01-01T00:00:00+00:00"
    reserved = ["r-1", "ctl.add", "celery", "celery", 0, False, None, "(1, 2)", "{}"]
    scheduled = ["s-1", "ctl.add", "", "celery", 3, True, eta, None, None]
    active_tasks.held(0, [reserved, scheduled])
    stop = serve(app, "w1@host", active_tasks)
    try:
        inspect = app.control.inspect(["w1@host"], timeout=5)
        request = {
            "id": "r-1",
            "name": "ctl.add",
            "args": "(1, 2)",
            "kwargs": "{}",
            "type": "ctl.add",
            "hostname": "w1@host",
            "time_start": None,
            "acknowledged": False,
            "delivery_info": {
                "exchange": "celery",
                "routing_key": "celery",
                "priority": 0,
                "redelivered": False,
            },
            "worker_pid": None,
        }
        assert inspect.reserved() == {"w1@host": [request]}
        [held] = inspect.scheduled()["w1@host"]
        assert held["eta"] == eta and held["priority"] == 3
        assert held["request"]["id"] == "s-1" and held["request"]["delivery_info"]["priority"] == 3
        query = inspect.query_task("r-1", "s-1", "nope")["w1@host"]
        assert query == {"r-1": ["reserved", request], "s-1": ["scheduled", held["request"]]}
        # A start takes it out of what its consumer holds.
        active_tasks.started(0, 1234, "r-1", "ctl.add", "7")
        assert inspect.reserved() == {"w1@host": []}
        assert inspect.query_task("r-1")["w1@host"]["r-1"][0] == "active"
        active_tasks.gone(0)  # the process died: what it held went back to the broker
        assert inspect.scheduled() == {"w1@host": []}
    finally:
        stop()


def test_destination_and_limit(app: App) -> None:
    stops = [serve(app, "w1@host"), serve(app, "w2@host")]
    try:
        replies = app.control.broadcast("ping", destination=["w2@host"], reply=True, timeout=5)
        assert replies == [{"w2@host": {"ok": "pong"}}]  # returned as soon as the one reply came
        assert app.control.broadcast("ping") is None  # Celery's default: no reply wanted
        one = app.control.inspect("w2@host", timeout=5)  # one name: its reply alone
        assert one.ping() == {"ok": "pong"}
        glob = app.control.inspect(timeout=0.5, pattern="w1@*", matcher="glob")
        assert glob.ping() == {"w1@host": {"ok": "pong"}}
        [unknown] = app.control.broadcast("nope", destination=["w1@host"], reply=True, timeout=5)
        assert "unknown control command 'nope'" in unknown["w1@host"]["error"]
        [refused] = app.control.broadcast(
            "autoscale", {"max": 2, "min": 1}, ["w1@host"], reply=True, timeout=5
        )
        assert "autoscaler" in refused["w1@host"]["error"]
        # shutdown with no way to stop (an in-process server) is refused, not ignored
        [kept] = app.control.shutdown(["w1@host"], reply=True, timeout=5)
        assert "cannot be shut down" in kept["w1@host"]["error"]
        assert app.control.revoke(["t1", "t2"], ["w1@host"]) is None
        [revoked] = app.control.revoke("t3", ["w1@host"], reply=True, timeout=5)
        assert revoked == {"w1@host": {"ok": "tasks t3 flagged as revoked"}}
        assert sorted(app.control.inspect(["w1@host"], timeout=5).revoked()["w1@host"]) == [
            "t1",
            "t2",
            "t3",
        ]
    finally:
        for stop in stops:
            stop()


def test_no_worker_no_reply(app: App) -> None:
    assert app.control.inspect(timeout=0.2).ping() is None
    assert app.control.ping(timeout=0.2) == []


def test_commands_round_trip_and_bad_ones_are_refused() -> None:
    command = ControlCommand("active", {"x": 1}, destination=["a"])
    assert ControlCommand.decode(command.encode()) == command
    assert command.addressed_to("a") and not command.addressed_to("b")
    with pytest.raises(DecodeError, match="malformed control command"):
        ControlCommand.decode(b'{"no": "method"}')


def test_a_broker_without_a_channel_says_so() -> None:
    from fastq.brokers.base import Broker

    class Bare(Broker):
        def publish(self, message): ...  # type: ignore[no-untyped-def]
        def consumer(self, queues, *, prefetch, consumer_id, accept): ...  # type: ignore[no-untyped-def]
        def restore_consumer(self, consumer_id): ...  # type: ignore[no-untyped-def]
        def purge(self, queue): ...  # type: ignore[no-untyped-def]
        def queue_length(self, queue): ...  # type: ignore[no-untyped-def]

    with pytest.raises(ConfigurationError, match="no remote-control channel"):
        Bare("amqp://x", App("t", set_as_current=False).conf).control_channel()


def test_replies_survive_a_dropped_connection(app: App) -> None:
    """The replies wait in a list on Redis: a connection the server drops while the client
    collects (a CLIENT KILL, a failover) costs a reconnection, not the replies."""
    if not app.broker.url.startswith("redis"):
        pytest.skip("a Redis connection")
    stop = serve(app, "w1@host")
    client: redis.Redis = app.broker.client  # type: ignore[attr-defined]
    victim = client.client_id()

    def kill() -> None:
        time.sleep(0.5)
        with redis.Redis.from_url(app.broker.url) as other:
            other.client_kill_filter(_id=victim)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        replies = app.control.broadcast(
            "ping", destination=["w1@host", "nobody@host"], reply=True, timeout=1.5
        )
        assert replies == [{"w1@host": {"ok": "pong"}}]
    finally:
        killer.join()
        stop()
