"""Celery's remote control (the pidbox) across fastq and Celery, on Redis and on RabbitMQ:
Celery's own CLI (``celery inspect``/``celery control``, run as a subprocess) and
``app.control`` reach a fastq worker, and fastq's ``app.control`` reaches a real Celery
worker."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import redis
from celery import Celery
from fastq import App
from fastq.errors import SoftTimeLimitExceeded, TimeLimitExceeded
from fastq.urls import redact

from tests.amqp_support import AMQP_URL, requires_rabbitmq
from tests.processes import BIN, ROOT, WorkerProcess, celery_worker, fastq_worker, wait_until
from tests.test_control import serve

pytestmark = pytest.mark.usefixtures("runs")


@pytest.fixture(params=["redis", pytest.param("amqp", marks=requires_rabbitmq)])
def transport(request: pytest.FixtureRequest, broker_url: str) -> str:
    """The broker the pidbox runs on: the test's Redis database, or RabbitMQ
    (FASTQ_TEST_AMQP_URL, a vhost of the test run's own)."""
    return AMQP_URL if request.param == "amqp" else broker_url


@pytest.fixture
def env(transport: str, backend_url: str) -> dict[str, str]:
    return {"FASTQ_BROKER_URL": transport, "FASTQ_RESULT_BACKEND": backend_url}


@pytest.fixture
def celery_client(transport: str, backend_url: str) -> Iterator[Celery]:
    app = Celery("client", broker=transport, backend=backend_url, set_as_current=False)
    yield app
    app.close()


@pytest.fixture
def fastq_client(transport: str, backend_url: str) -> Iterator[App]:
    app = App("client", broker=transport, backend=backend_url, set_as_current=False)
    yield app
    app.close()


def hostname(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}@pidbox"


def until_it_answers(client: App, node: str) -> None:
    """Waits until ``node`` answers a ping. A Celery worker logs "ready" before its event loop
    subscribes to the pidbox's fanout (on Redis, a pub/sub channel that keeps nothing), so a
    broadcast sent at once can reach no one."""
    wait_until(lambda: client.control.inspect([node], timeout=0.5).ping() is not None, 30)


def celery_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "celery"), "-A", "tests.apps.celery_app", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def inspect(env: dict[str, str], command: str, node: str, *args: str) -> Any:
    """``celery inspect <command> -d node --json``: the node's reply."""
    done = celery_cli(env, "inspect", command, *args, "-d", node, "-t", "5", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)[node]


def control(env: dict[str, str], *args: str) -> dict[str, Any]:
    """``celery control ... --json`` (a list of ``{node: reply}``), flattened."""
    done = celery_cli(env, "control", *args, "-t", "5", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return {node: reply for one in json.loads(done.stdout) for node, reply in one.items()}


def test_celery_inspect_sees_a_fastq_worker(env: dict[str, str]) -> None:
    node = hostname("fastq")
    with fastq_worker("-n", node, "--pool", "prefork", "--concurrency", "2", env=env) as w:
        assert inspect(env, "ping", node) == {"ok": "pong"}
        registered = inspect(env, "registered", node)
        assert "interop.add" in registered and "interop.record" in registered
        assert inspect(env, "active", node) == []
        stats = inspect(env, "stats", node)
        assert stats["pool"]["max-concurrency"] == 2 and len(stats["pool"]["processes"]) == 2
        assert stats["pid"] == w.pid
        [queue] = inspect(env, "active_queues", node)
        assert queue["name"] == "celery" and queue["exchange"]["name"] == "celery"
        assert inspect(env, "conf", node)["broker_url"] == redact(env["FASTQ_BROKER_URL"])
        assert inspect(env, "revoked", node) == []
        assert inspect(env, "query_task", node, "nope") == {}
        # Refused with Celery's error shape and the reason, not ignored.
        assert "autoscaler" in control(env, "autoscale", "2", "1", "-d", node)[node]["error"]


def test_celery_sees_what_a_fastq_worker_runs(
    env: dict[str, str], celery_client: Celery, runs: redis.Redis
) -> None:
    node = hostname("fastq")
    with fastq_worker("-n", node, "--pool", "prefork", "--concurrency", "1", env=env):
        long = celery_client.send_task("interop.record", ("long", 3.0))
        wait_until(lambda: runs.hexists("started", "long"), timeout=20)
        inspector = celery_client.control.inspect(destination=[node], timeout=5)
        [active] = inspector.active()[node]
        assert active["id"] == long.id and active["name"] == "interop.record"
        assert inspector.query_task(long.id)[node][long.id][0] == "active"
        long.get(timeout=20)


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo", "asyncio"])
def test_celery_inspect_reserved_and_scheduled_on_a_fastq_worker(
    transport: str,
    env: dict[str, str],
    celery_client: Celery,
    fastq_client: App,
    runs: redis.Redis,
    pool: str,
) -> None:
    node = hostname("fastq")
    # Until it is handled, "later" (a 60 s countdown) is held in the fetched batch behind
    # "long"; the asyncio pool handles a batch at once, and on Redis hands it to the broker.
    held_eta = pool != "asyncio" or not transport.startswith("redis")

    def ask(method: str, *args: str) -> Any:
        """Celery's CLI on the prefork pool; Celery's API (the same messages, quicker) else."""
        if pool == "prefork":
            return inspect(env, method, node, *args)
        inspector = celery_client.control.inspect([node], timeout=5)
        return getattr(inspector, method)(*args)[node]

    # Celery's fixed window of 4: an adaptive one would shrink to one message after "first" (a
    # long task) and hold nothing to list.
    args = ("-n", node, "--pool", pool, "--concurrency", "1", "--prefetch-multiplier", "4")
    try:
        with fastq_worker(*args, env=env):
            first = celery_client.send_task("interop.record", ("first", 1.5))
            wait_until(lambda: runs.hexists("started", "first"), timeout=20)
            # Sent while "first" runs: the consumer fetches all three once it ends, and holds
            # the other two while "long" runs (prefork: in its child).
            seconds = 8.0 if pool == "prefork" else 4.0  # the CLI takes a second or two a call
            long = celery_client.send_task("interop.record", ("long", seconds))
            waiting = celery_client.send_task("interop.record", ("waiting",))
            later = celery_client.send_task("interop.record", ("later",), countdown=60)
            due = time.time() + 60
            wait_until(lambda: runs.hexists("started", "long"), timeout=20)
            [reserved] = ask("reserved")
            assert reserved == {
                "id": waiting.id,
                "name": "interop.record",
                "args": "('waiting',)",
                "kwargs": "{}",
                "type": "interop.record",
                "hostname": node,
                "time_start": None,
                "acknowledged": False,
                "delivery_info": reserved["delivery_info"],
                "worker_pid": None,
            }
            info = reserved["delivery_info"]
            assert info["routing_key"] == "celery" and info["redelivered"] is False
            assert set(info) == {"exchange", "routing_key", "priority", "redelivered"}
            listed = ask("scheduled") if held_eta else []
            if held_eta:
                [scheduled] = listed
                assert scheduled["request"]["id"] == later.id and set(scheduled) == {
                    "eta",
                    "priority",
                    "request",
                }
                assert abs(datetime.fromisoformat(scheduled["eta"]).timestamp() - due) < 5
            else:
                assert listed == []
            states = ask("query_task", long.id, waiting.id, later.id)
            assert {task_id: state for task_id, (state, _) in states.items()} == {
                long.id: "active",
                waiting.id: "reserved",
                **({later.id: "scheduled"} if held_eta else {}),
            }
            # fastq's app.control sees the same.
            mine = fastq_client.control.inspect([node], timeout=5)
            assert [r["id"] for r in mine.reserved()[node]] == [waiting.id]
            expected = [later.id] if held_eta else []
            seen = [s["request"]["id"] for s in mine.scheduled()[node]]
            assert seen == expected
            assert runs.hget("runs", "long") is None  # all of it while "long" still ran
            assert first.get(timeout=20) == "first" and long.get(timeout=20) == "long"
            assert waiting.get(timeout=20) == "waiting"
            mine = fastq_client.control.inspect([node], timeout=5)
            wait_until(lambda: mine.reserved() == {node: []}, timeout=10)
            if transport.startswith("redis"):
                # Due in more than 2 s: handed to the broker's schedule (fastq.delayed), held
                # by no worker, so no worker lists it.
                wait_until(lambda: mine.scheduled() == {node: []}, timeout=10)
                assert redis.Redis.from_url(transport).zcard("fastq.delayed") == 1
            else:  # RabbitMQ: held by the worker, unacknowledged, until it is due
                time.sleep(1)
                wait_until(lambda: [s["request"]["id"] for s in ask("scheduled")] == [later.id], 10)
            assert mine.active() == {node: []}
    finally:
        celery_client.control.purge()  # RabbitMQ: "later" went back to the queue


def test_celery_revoke_skips_a_task_on_a_fastq_worker(
    env: dict[str, str], celery_client: Celery, runs: redis.Redis
) -> None:
    node = hostname("fastq")
    with fastq_worker("-n", node, "--pool", "prefork", "--concurrency", "1", env=env):
        busy = celery_client.send_task("interop.record", ("busy", 2.0))
        wait_until(lambda: runs.hexists("started", "busy"), timeout=20)
        skipped = celery_client.send_task("interop.record", ("skipped",))
        [reply] = celery_client.control.revoke(skipped.id, destination=[node], reply=True)
        assert reply == {node: {"ok": f"tasks {skipped.id} flagged as revoked"}}
        assert busy.get(timeout=20) == "busy"
        after = celery_client.send_task("interop.record", ("after",))
        assert after.get(timeout=20) == "after"  # the queue went past the revoked one
        assert not runs.hexists("runs", "skipped")
        assert skipped.state == "REVOKED"
        assert inspect(env, "revoked", node) == [skipped.id]


def test_celery_control_shutdown_stops_a_fastq_worker_warm(
    env: dict[str, str], celery_client: Celery, runs: redis.Redis
) -> None:
    node = hostname("fastq")
    with fastq_worker("-n", node, "--pool", "prefork", "--concurrency", "1", env=env) as w:
        running = celery_client.send_task("interop.record", ("running", 2.0))
        wait_until(lambda: runs.hexists("started", "running"), timeout=20)
        assert "shutting down" in control(env, "shutdown", "-d", node)[node]["ok"]
        assert w.proc.wait(30) == 0
        assert running.get(timeout=5) == "running"  # the running task finished first
        assert "Got shutdown from remote" in w.log()


def test_fastq_shutdown_stops_a_threads_worker(env: dict[str, str], fastq_client: App) -> None:
    node = hostname("fastq")
    with fastq_worker("-n", node, "--pool", "threads", "--concurrency", "2", env=env) as w:
        assert fastq_client.control.shutdown([node]) is None  # Celery's: no reply asked
        assert w.proc.wait(30) == 0


def test_fastq_control_reaches_a_celery_worker_and_both_answer_celery(
    env: dict[str, str], fastq_client: App
) -> None:
    celery_node, fastq_node = hostname("celery"), hostname("fastq")
    with (
        celery_worker("-P", "solo", "-n", celery_node, env=env),
        fastq_worker("-n", fastq_node, "--pool", "threads", env=env),
    ):
        until_it_answers(fastq_client, celery_node)
        inspector = fastq_client.control.inspect([celery_node], timeout=5)
        assert inspector.ping() == {celery_node: {"ok": "pong"}}
        assert "interop.add" in inspector.registered()[celery_node]
        assert inspector.stats()[celery_node]["pool"]["max-concurrency"] == 1
        both = fastq_client.control.inspect([celery_node, fastq_node], timeout=5).ping()
        assert both == {celery_node: {"ok": "pong"}, fastq_node: {"ok": "pong"}}
        [revoked] = fastq_client.control.revoke("some-id", [celery_node], reply=True)
        assert revoked == {celery_node: {"ok": "tasks {'some-id'} flagged as revoked"}}
        # Celery's CLI sees both nodes of the mixed fleet.
        done = celery_cli(env, "inspect", "ping", "-t", "3", "--json")
        replies = json.loads(done.stdout)
        assert replies[celery_node] == replies[fastq_node] == {"ok": "pong"}
        # One rate_limit from Celery's CLI reaches both, and both act on it.
        limited = control(
            env, "rate_limit", "interop.add", "5/s", "-d", f"{celery_node},{fastq_node}"
        )
        assert limited == {
            celery_node: {"ok": "new rate limit set successfully"},
            fastq_node: {"ok": "new rate limit set successfully"},
        }
        registered = fastq_client.control.inspect([celery_node, fastq_node], timeout=5).registered()
        assert registered is not None
        assert "interop.add [rate_limit=5/s]" in registered[fastq_node]
        assert "interop.add [rate_limit=5/s]" in registered[celery_node]


def test_celery_client_and_fastq_worker_share_a_global_keyprefix(broker_url: str) -> None:
    """kombu prefixes the pidbox's channel and binding keys with ``global_keyprefix``; so does
    fastq (a worker's control server in this process, a Celery client beside it)."""
    options = {"global_keyprefix": f"{uuid.uuid4().hex[:6]}:"}
    app = App("ctl", broker=broker_url, broker_transport_options=options, set_as_current=False)
    client = Celery("client", broker=broker_url, set_as_current=False)
    client.conf.broker_transport_options = options
    unprefixed = Celery("other", broker=broker_url, set_as_current=False)
    stop = serve(app, "prefixed@pidbox")
    try:
        assert client.control.inspect(["prefixed@pidbox"], timeout=5).ping() == {
            "prefixed@pidbox": {"ok": "pong"}
        }
        assert unprefixed.control.inspect(["prefixed@pidbox"], timeout=0.5).ping() is None
        binding = f"{options['global_keyprefix']}_kombu.binding.celery.pidbox"
        members = redis.Redis.from_url(broker_url).smembers(binding)
        assert b"\x06\x16\x06\x16prefixed@pidbox.celery.pidbox" in members
    finally:
        stop()
        app.close()
        client.close()
        unprefixed.close()


def test_a_celery_worker_learns_a_fastq_workers_revoked_ids_at_mingle(
    env: dict[str, str], fastq_client: App
) -> None:
    fastq_node, celery_node = hostname("fastq"), hostname("celery")
    with fastq_worker("-n", fastq_node, "--pool", "threads", env=env):
        fastq_client.control.revoke("revoked-before", [fastq_node], reply=True, timeout=5)
        argv = [str(BIN / "celery"), "-A", "tests.apps.celery_app", "worker", "-P", "solo"]
        argv += ["-n", celery_node, "--without-gossip", "--without-heartbeat", "-l", "INFO"]
        with WorkerProcess(argv, env) as cw:  # with mingle: it says hello to the fleet
            cw.wait_for_log("ready", timeout=60)
            until_it_answers(fastq_client, celery_node)
            revoked = fastq_client.control.inspect([celery_node], timeout=5).revoked()
            assert revoked == {celery_node: ["revoked-before"]}


def test_a_worker_skips_what_it_cannot_read_on_the_pidbox(broker_url: str) -> None:
    options = {"global_keyprefix": f"{uuid.uuid4().hex[:6]}:"}
    app = App("ctl", broker=broker_url, broker_transport_options=options, set_as_current=False)
    stop = serve(app, "sturdy@pidbox")
    try:
        topic = f"{options['global_keyprefix']}/{broker_url.rsplit('/', 1)[1]}.celery.pidbox"
        client = redis.Redis.from_url(broker_url)
        for junk in (b"not json", b'{"body": "!!", "content-type": "application/json"}', b"[]"):
            client.publish(topic, junk)
        client.publish(topic, json.dumps({"content-type": "application/x-yaml", "body": "x"}))
        replies = app.control.ping(["sturdy@pidbox"], timeout=5)
        assert replies == [{"sturdy@pidbox": {"ok": "pong"}}]
    finally:
        stop()
        app.close()


# -- task settings changed at run time -----------------------------------------------------------
def drain(client: App, count: int) -> float:
    """Seconds ``count`` ``interop.add`` tasks take from sending to their last result."""
    started = time.monotonic()
    results = [client.send_task("interop.add", (i, 1)) for i in range(count)]
    assert [r.get(timeout=60) for r in results] == [i + 1 for i in range(count)]
    return time.monotonic() - started


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_rate_limit_changes_a_running_fastq_workers_throughput(
    env: dict[str, str], fastq_client: App, pool: str
) -> None:
    node = hostname("fastq")
    with fastq_worker("-n", node, "--pool", pool, "--concurrency", "1", env=env):
        # Celery's CLI sets it (a prefork child learns it from the supervisor) ...
        limited = control(env, "rate_limit", "interop.add", "2/s", "-d", node)
        assert limited == {node: {"ok": "new rate limit set successfully"}}
        assert "interop.add [rate_limit=2/s]" in inspect(env, "registered", node)
        # ... and 2/s (a burst of 2, then one every half second) holds 7 tasks >= 2.5 s.
        assert drain(fastq_client, 7) >= 2.4
        # app.control lifts it: the same tasks no longer wait for tokens.
        [lifted] = fastq_client.control.rate_limit("interop.add", "0", [node], reply=True)
        assert lifted == {node: {"ok": "rate limit disabled successfully"}}
        assert drain(fastq_client, 7) < 2.0
        assert fastq_client.control.rate_limit("nope", "1/s", [node], reply=True) == [
            {node: {"error": "unknown task"}}
        ]
        [bad] = fastq_client.control.rate_limit("interop.add", "fast", [node], reply=True)
        assert "Invalid rate limit string" in bad[node]["error"]


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_time_limit_set_at_run_time_stops_a_long_task(
    env: dict[str, str], fastq_client: App, runs: redis.Redis, pool: str
) -> None:
    node = hostname("fastq")
    with fastq_worker("-n", node, "--pool", pool, "--concurrency", "1", env=env) as w:
        done = control(env, "time_limit", "interop.record", "1", "30", "-d", node)  # soft, hard
        assert done == {node: {"ok": "time limits set successfully"}}
        started = time.monotonic()
        with pytest.raises(SoftTimeLimitExceeded):
            fastq_client.send_task("interop.record", ("soft", 20.0)).get(timeout=30)
        assert time.monotonic() - started < 10
        # A hard limit alone: the task is killed (prefork: its child; solo: the task's thread).
        fastq_client.control.time_limit("interop.record", None, 1, [node], reply=True)
        started = time.monotonic()
        with pytest.raises(TimeLimitExceeded):
            fastq_client.send_task("interop.record", ("hard", 20.0)).get(timeout=30)
        assert time.monotonic() - started < 10
        assert not runs.hexists("runs", "soft") and not runs.hexists("runs", "hard")
        # Lifted again (None: no limit), a task longer than the old limit finishes.
        [lifted] = fastq_client.control.time_limit("interop.record", None, None, [node], reply=True)
        assert lifted == {node: {"ok": "time limits set successfully"}}
        assert fastq_client.send_task("interop.record", ("slow", 3.0)).get(timeout=30) == "slow"
        assert "new time limits for tasks of type interop.record" in w.log()


def started_together(client: App, runs: redis.Redis, count: int, label: str) -> int:
    """Sends ``count`` 3-second tasks at once; how many of them were running together, 1.5 s
    after the first started."""
    results = [client.send_task("interop.record", (f"{label}{i}", 3.0)) for i in range(count)]
    wait_until(lambda: runs.hlen("started") > 0, 30)
    time.sleep(1.5)
    together = sum(runs.hexists("started", f"{label}{i}") for i in range(count))
    for r in results:
        r.get(timeout=60)
    return together


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_pool_grow_and_shrink_change_how_many_tasks_run_at_once(
    env: dict[str, str], fastq_client: App, runs: redis.Redis, pool: str
) -> None:
    node = hostname("fastq")
    # A multiplier of 1: each consumer holds only the task it runs. With more, one consumer
    # may fetch two of the three tasks and run them in turn while a new one idles.
    args = ("--pool", pool, "--concurrency", "1", "--prefetch-multiplier", "1")
    with fastq_worker("-n", node, *args, env=env):
        assert control(env, "pool_grow", "2", "-d", node) == {node: {"ok": "pool will grow"}}
        stats = inspect(env, "stats", node)
        assert stats["pool"]["max-concurrency"] == 3
        if pool == "prefork":
            wait_until(lambda: len(inspect(env, "stats", node)["pool"]["processes"]) == 3, 20)
        assert started_together(fastq_client, runs, 3, "grown") == 3
        runs.delete("started")
        [shrunk] = fastq_client.control.pool_shrink(2, [node], reply=True)
        assert shrunk == {node: {"ok": "pool will shrink"}}
        if pool == "prefork":
            wait_until(lambda: len(inspect(env, "stats", node)["pool"]["processes"]) == 1, 20)
        assert started_together(fastq_client, runs, 3, "shrunk") == 1
        [refused] = fastq_client.control.pool_shrink(1, [node], reply=True)
        assert "cannot shrink a pool of 1" in refused[node]["error"]


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_add_and_cancel_consumer_change_the_queues_a_fastq_worker_takes(
    env: dict[str, str], fastq_client: App, pool: str
) -> None:
    node, extra = hostname("fastq"), f"extra-{uuid.uuid4().hex[:6]}"
    with fastq_worker("-n", node, "--pool", pool, "--concurrency", "2", env=env):
        waiting = fastq_client.send_task("interop.add", (1, 2), queue=extra)
        time.sleep(1.5)
        assert waiting.state == "PENDING"  # nobody consumes the queue yet
        added = control(env, "add_consumer", extra, "-d", node)
        assert added == {node: {"ok": f"add consumer {extra}"}}
        assert waiting.get(timeout=30) == 3
        names = [q["name"] for q in inspect(env, "active_queues", node)]
        assert names == ["celery", extra]
        # Still consuming its first queue, and the new one for later tasks too.
        assert fastq_client.send_task("interop.add", (2, 2)).get(timeout=30) == 4
        assert fastq_client.send_task("interop.add", (3, 2), queue=extra).get(timeout=30) == 5
        [cancelled] = fastq_client.control.cancel_consumer(extra, [node], reply=True)
        assert cancelled == {node: {"ok": f"no longer consuming from {extra}"}}
        time.sleep(2.5)  # each consumer switches before its next fetch (within ~1 s)
        left = fastq_client.send_task("interop.add", (4, 2), queue=extra)
        time.sleep(3)
        assert left.state == "PENDING"
        assert [q["name"] for q in inspect(env, "active_queues", node)] == ["celery"]
        [last] = fastq_client.control.cancel_consumer("celery", [node], reply=True)
        assert "only queue" in last[node]["error"]
        assert fastq_client.send_task("interop.add", (5, 2)).get(timeout=30) == 7
