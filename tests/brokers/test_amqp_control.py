"""Remote control on RabbitMQ (Celery's pidbox): ping/inspect/revoke reaching a live ``fastq
worker`` over ``amqp://``, ``fastq inspect`` on the command line, and a listener that reconnects
after losing its connection. Real RabbitMQ (FASTQ_TEST_AMQP_URL); each worker has its own queue
and hostname, and every command names it (other test runs may share the broker)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import pytest
import redis
from fastq import App, states
from fastq.backends.rabbitmq import QUEUE_PREFIX
from fastq.brokers.amqp_control import AmqpControlListener
from fastq.errors import TaskRevokedError
from fastq.worker.active import ActiveTasks
from fastq.worker.control_server import ControlServer, PoolInfo

from tests.amqp_support import AMQP_URL, delete, rabbitmqctl, requires_rabbitmq, unique
from tests.processes import BIN, ROOT, WorkerProcess, fastq_worker, wait_until

APP = "tests.apps.semantics_app"

pytestmark = [requires_rabbitmq, pytest.mark.usefixtures("runs")]


@pytest.fixture
def queue() -> Iterator[str]:
    name = unique("control")
    yield name
    delete(name)


@pytest.fixture
def hostname() -> str:
    return f"ctl-{uuid.uuid4().hex[:8]}@test"


@pytest.fixture
def env() -> dict[str, str]:
    return {"FASTQ_BROKER_URL": AMQP_URL, "FASTQ_RESULT_BACKEND": "rpc://"}


@pytest.fixture
def client() -> Iterator[App]:
    app = App("client", broker=AMQP_URL, backend="rpc://", set_as_current=False)
    yield app
    app.close()
    delete(app.oid)


def start_worker(env: dict[str, str], queue: str, hostname: str, *args: str) -> WorkerProcess:
    return fastq_worker("-Q", queue, "--hostname", hostname, *args, app=APP, env=env)


def test_ping_and_inspect_reach_a_live_worker(
    client: App, env: dict[str, str], queue: str, hostname: str
) -> None:
    with start_worker(env, queue, hostname, "--pool", "prefork", "--concurrency", "1"):
        started = time.monotonic()
        assert client.control.ping([hostname], timeout=10) == [{hostname: {"ok": "pong"}}]
        assert time.monotonic() - started < 5  # returned on the one reply it waited for
        assert any(hostname in r for r in client.control.ping(timeout=1))  # to every worker
        assert "sem.stamp" in client.control.inspect([hostname]).registered()[hostname]
        stats = client.control.inspect([hostname]).stats()[hostname]
        assert stats["broker"] == {"transport": "amqp", "reach": "network"}
        assert stats["pool"]["implementation"] == "prefork"
        assert client.control.inspect([hostname]).active() == {hostname: []}
    assert client.control.ping([hostname], timeout=0.5) == []


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_revoked_countdown_task_never_runs(
    client: App,
    env: dict[str, str],
    queue: str,
    hostname: str,
    runs: redis.Redis,
    pool: str,
) -> None:
    with start_worker(env, queue, hostname, "--pool", pool, "--concurrency", "2"):
        doomed = client.send_task("sem.stamp", ("doomed",), countdown=3, queue=queue)
        kept = client.send_task("sem.stamp", ("kept",), countdown=3, queue=queue)
        doomed.revoke()
        assert kept.get(timeout=30)
        with pytest.raises(TaskRevokedError, match="revoked"):
            doomed.get(timeout=30)
        assert doomed.state == states.REVOKED
    assert not runs.hexists("runs", "doomed")


@pytest.mark.parametrize("backend", ["rpc://", "rabbitmq://"])
def test_terminate_kills_the_running_task_and_the_child_is_replaced(
    env: dict[str, str], queue: str, hostname: str, runs: redis.Redis, backend: str
) -> None:
    # The supervisor records the REVOKED state of the child it killed; on rpc:// it replies to
    # the client's queue, which the child named in its start report.
    env = {**env, "FASTQ_RESULT_BACKEND": backend}
    client = App("client", broker=AMQP_URL, backend=backend, set_as_current=False)
    ids: list[str] = []
    try:
        with start_worker(env, queue, hostname, "--pool", "prefork", "--concurrency", "1") as w:
            long = client.send_task("sem.sleep", ("long", 30), queue=queue)
            ids.append(long.id)
            wait_until(lambda: runs.hexists("started", "long"), timeout=20)
            child = int(runs.hget("started", "long") or 0)
            client.control.revoke(long.id, terminate=True, signal="SIGKILL")
            started = time.monotonic()
            with pytest.raises(TaskRevokedError, match="terminated"):
                long.get(timeout=20)
            assert time.monotonic() - started < 10
            after = client.send_task("sem.pid", queue=queue)
            ids.append(after.id)
            assert after.get(timeout=20) != child  # a new child ran the next task
            assert "terminating task" in w.log()
            assert "has no reply_to" not in w.log()
            assert client.control.ping([hostname], timeout=10) == [{hostname: {"ok": "pong"}}]
        assert not runs.hexists("runs", "long")
    finally:
        client.close()
        if backend == "rpc://":
            delete(client.oid)
        else:
            delete(*(QUEUE_PREFIX + task_id for task_id in ids))


def test_fastq_inspect_on_the_command_line(env: dict[str, str], queue: str, hostname: str) -> None:
    with start_worker(env, queue, hostname, "--pool", "threads", "--concurrency", "1"):
        done = subprocess.run(
            [str(BIN / "fastq"), "-A", APP, "inspect", "ping", "-d", hostname, "--timeout", "10"],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {hostname: {"ok": "pong"}}


# -- the listener on its own ---------------------------------------------------------------------
def close_connection(name: str) -> None:
    """Has RabbitMQ close the connection whose ``connection_name`` is ``name`` (no other)."""
    rows = rabbitmqctl("list_connections", "pid", "client_properties").splitlines()
    [pid] = [row.split("\t")[0] for row in rows if f'"connection_name","{name}"' in row]
    rabbitmqctl("close_connection", pid, "fastq test: control connection loss")


@pytest.fixture
def served(hostname: str) -> Iterator[tuple[App, ControlServer]]:
    """A worker's control server on amqp:// in a thread (as the threads pool runs it)."""
    app = App("ctl", broker=AMQP_URL, set_as_current=False)
    server = ControlServer(
        app, hostname, ActiveTasks(), PoolInfo("threads", 1, 1, lambda: [os.getpid()])
    )
    server.poll(0)  # listening before the test sends anything
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    thread.start()
    yield app, server
    stop.set()
    thread.join(10)
    app.close()


def listener_of(server: ControlServer) -> AmqpControlListener:
    listener = server._listener
    assert isinstance(listener, AmqpControlListener)
    return listener


@pytest.mark.parametrize("how", ["broker closes it", "socket dies"])
def test_a_listener_reconnects_after_losing_its_connection(
    served: tuple[App, ControlServer],
    client: App,
    hostname: str,
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, server = served
    listener = listener_of(server)
    assert client.control.ping([hostname], timeout=5) == [{hostname: {"ok": "pong"}}]
    first = listener.name
    if how == "broker closes it":
        close_connection(first)
    else:
        conn = listener._connection
        assert conn is not None and conn.sock is not None
        conn.sock.shutdown(socket.SHUT_RDWR)
    wait_until(lambda: listener.name != first, timeout=20)
    assert listener_of(server) is listener  # the same listener, on a new connection
    assert client.control.ping([hostname], timeout=5) == [{hostname: {"ok": "pong"}}]
    assert "remote control lost its connection" in caplog.text
    assert "remote control: reconnected" in caplog.text


def test_a_listener_retries_while_the_broker_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("ctl", broker=AMQP_URL, set_as_current=False)
    listener = app.broker.control_channel().listen()
    assert isinstance(listener, AmqpControlListener)
    try:
        good = app.broker.servers
        # Point reconnection at a port where nothing listens, then break the connection.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        nowhere = dataclasses.replace(good.params[0], port=port)
        app.broker.servers = dataclasses.replace(good, params=(nowhere,))
        close_connection(listener.name)
        started = time.monotonic()
        for _ in range(5):
            assert listener.fetch(0.2) == []  # never raises: logs and waits its timeout
        assert time.monotonic() - started >= 0.5
        assert "cannot listen for control commands" in caplog.text
        app.broker.servers = good
        wait_until(lambda: listener._connection is not None or bool(listener.fetch(0.2)), 20)
    finally:
        listener.close()
        app.close()


def test_heartbeats_keep_an_idle_listener_connected(caplog: pytest.LogCaptureFixture) -> None:
    # 2 s: RabbitMQ warns that 1 s heartbeats give false positives on a loaded machine.
    app = App("ctl", broker=AMQP_URL, set_as_current=False, broker_heartbeat=2)
    listener = app.broker.control_channel().listen()
    assert isinstance(listener, AmqpControlListener)
    try:
        first = listener.name
        deadline = time.monotonic() + 6  # 3 heartbeat intervals of fetching and nothing else
        while time.monotonic() < deadline:
            assert listener.fetch(0.5) == []
        assert listener.name == first
        assert "lost its connection" not in caplog.text
        time.sleep(7)  # a stalled reader: RabbitMQ gives up on it after two missed beats
        wait_until(lambda: bool(listener.fetch(0.2)) or listener.name != first, timeout=20)
        assert "remote control: reconnected" in caplog.text
    finally:
        listener.close()
        app.close()


def test_a_worker_declares_celerys_node_queue(
    served: tuple[App, ControlServer], hostname: str
) -> None:
    """The node queue is Celery 5.7's, so a Celery client's commands reach it and a Celery
    worker's would be declared the same (RabbitMQ refuses a redeclaration with other flags)."""
    vhost = unquote(urlsplit(AMQP_URL).path[1:]) or "/"
    rows = rabbitmqctl(
        "list_queues", "-p", vhost, "name", "durable", "auto_delete", "exclusive", "arguments"
    )
    [row] = [r for r in rows.splitlines() if r.startswith(f"{hostname}.celery.pidbox\t")]
    _, durable, auto_delete, exclusive, arguments = row.split("\t")
    assert (durable, auto_delete, exclusive) == ("false", "true", "true")
    assert '"x-expires",10000' in arguments and '"x-message-ttl",300000' in arguments
