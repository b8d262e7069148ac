"""Celery's events as fastq sends them on Redis, read off the wire: kombu's channel names and
envelope, Celery's fields, the batching, ``enable_events``/``disable_events``/``heartbeat`` at
run time, and a client's ``task-sent``."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from fastq import App

from tests.processes import fastq_worker, wait_until

pytestmark = pytest.mark.usefixtures("runs")

COMMON = {"type", "hostname", "timestamp", "utcoffset", "pid", "clock"}


class Wire:
    """Everything PUBLISHed on the broker database's ``celeryev`` channels, as Celery's
    receivers subscribe to them (``/<db>.celeryev/*``)."""

    def __init__(self, broker_url: str) -> None:
        self.client = redis.Redis.from_url(broker_url)  # kept: its pool holds the subscription
        self.db = int(self.client.connection_pool.connection_kwargs.get("db") or 0)
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe(f"/{self.db}.celeryev/*")
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message and message["type"] == "pmessage":
                self.messages.append((message["channel"].decode(), json.loads(message["data"])))

    def events(self, hostname: str | None = None) -> list[dict[str, Any]]:
        """The events in the messages (a ``task.multi`` list counts as the events it holds)."""
        out = []
        for _, envelope in list(self.messages):
            body = json.loads(base64.b64decode(envelope["body"]))
            out.extend(body if isinstance(body, list) else [body])
        return [e for e in out if hostname is None or e["hostname"] == hostname]

    def types(self, hostname: str, task_id: str | None = None) -> list[str]:
        return [
            e["type"] for e in self.events(hostname) if task_id is None or e.get("uuid") == task_id
        ]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def wire(broker_url: str) -> Iterator[Wire]:
    w = Wire(broker_url)
    yield w
    w.close()


def node() -> str:
    return f"fastq-{uuid.uuid4().hex[:8]}@events"


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_worker_sends_celerys_events_on_kombus_channels(
    pool: str, wire: Wire, worker_env: dict[str, str], task_client: App
) -> None:
    name = node()
    with fastq_worker("-n", name, "-E", "--pool", pool, "-c", "2", env=worker_env) as worker:
        ok = task_client.send_task("interop.add", (2, 3))
        failed = task_client.send_task("interop.fail", ("boom",))
        assert ok.get(timeout=20) == 5
        with pytest.raises(ValueError):
            failed.get(timeout=20)
        wait_until(lambda: "task-failed" in wire.types(name, failed.id), timeout=10)
        wait_until(lambda: "worker-heartbeat" in wire.types(name), timeout=10)
    wait_until(lambda: "worker-offline" in wire.types(name), timeout=10)
    assert wire.types(name, ok.id) == ["task-received", "task-started", "task-succeeded"]
    assert wire.types(name, failed.id) == ["task-received", "task-started", "task-failed"]
    channels = {channel for channel, envelope in wire.messages if envelope["headers"] == {
        "hostname": name}}  # fmt: skip
    prefix = f"/{wire.db}.celeryev/"
    assert {
        f"{prefix}worker.online",
        f"{prefix}worker.heartbeat",
        f"{prefix}task.multi",
    } <= channels
    _, envelope = wire.messages[0]
    assert envelope["content-type"] == "application/json"
    assert envelope["properties"]["delivery_info"]["exchange"] == "celeryev"
    assert envelope["properties"]["body_encoding"] == "base64"

    events = {(e["type"], e.get("uuid")): e for e in wire.events(name)}
    for event in events.values():
        assert COMMON <= set(event) and event["pid"] == worker.pid  # the main process, as Celery
    received = events["task-received", ok.id]
    assert received["name"] == "interop.add" and received["args"] == "(2, 3)"
    assert received["root_id"] == ok.id and received["retries"] == 0
    succeeded = events["task-succeeded", ok.id]
    assert succeeded["result"] == "5" and 0 <= succeeded["runtime"] < 5
    failure = events["task-failed", failed.id]
    assert (
        failure["exception"] == "ValueError('boom')" and "ValueError: boom" in failure["traceback"]
    )
    online = events["worker-online", None]
    assert online["freq"] == 2.0 and online["sw_ident"] == "fastq" and len(online["loadavg"]) == 3
    beats = [e for e in wire.events(name) if e["type"] == "worker-heartbeat"]
    assert beats[-1]["processed"] == 2 and beats[-1]["active"] == 0
    clocks = [e["clock"] for e in wire.events(name)]
    assert clocks == sorted(clocks) and len(set(clocks)) == len(clocks)


def test_events_are_turned_on_and_off_by_remote_control(
    wire: Wire, worker_env: dict[str, str], task_client: App, broker_url: str
) -> None:
    name = node()
    celery = Celery("control", broker=broker_url)
    try:
        with fastq_worker("-n", name, "--pool", "prefork", "-c", "2", env=worker_env):
            wait_until(lambda: "worker-online" in wire.types(name), timeout=10)
            before = task_client.send_task("interop.add", (1, 1))
            assert before.get(timeout=20) == 2
            [reply] = celery.control.enable_events(destination=[name], reply=True, timeout=5)
            assert reply == {name: {"ok": "task events enabled"}}
            [reply] = celery.control.enable_events(destination=[name], reply=True, timeout=5)
            assert reply == {name: {"ok": "task events already enabled"}}
            during = [task_client.send_task("interop.add", (i, i)) for i in range(4)]
            assert [r.get(timeout=20) for r in during] == [0, 2, 4, 6]  # both children
            for result in during:
                wait_until(lambda r=result: "task-succeeded" in wire.types(name, r.id), 10)
            [reply] = celery.control.disable_events(destination=[name], reply=True, timeout=5)
            assert reply == {name: {"ok": "task events disabled"}}
            after = task_client.send_task("interop.add", (3, 3))
            assert after.get(timeout=20) == 6
            beats = wire.types(name).count("worker-heartbeat")
            celery.control.heartbeat(destination=[name])
            wait_until(lambda: wire.types(name).count("worker-heartbeat") > beats, timeout=5)
            time.sleep(0.5)
        assert wire.types(name, before.id) == []
        assert wire.types(name, after.id) == []
    finally:
        celery.close()


def test_without_heartbeat_a_worker_sends_no_worker_events(
    wire: Wire, worker_env: dict[str, str], task_client: App
) -> None:
    name = node()
    with fastq_worker("-n", name, "-E", "--without-heartbeat", "-P", "solo", env=worker_env):
        result = task_client.send_task("interop.add", (1, 2))
        assert result.get(timeout=20) == 3
        wait_until(lambda: "task-succeeded" in wire.types(name, result.id), timeout=10)
        time.sleep(2.5)  # past a heartbeat's interval
    assert not [t for t in wire.types(name) if t.startswith("worker-")]


def test_a_client_sends_task_sent_with_task_send_sent_event(
    wire: Wire, broker_url: str, backend_url: str
) -> None:
    app = App("sender", broker=broker_url, backend=backend_url, set_as_current=False)
    app.conf.task_send_sent_event = True
    try:
        result = app.send_task("interop.add", (4, 5), queue="events_nobody")
        [sent] = app.send_many([("interop.add", (1, 2), None)], queue="events_nobody")
        wait_until(lambda: len([e for e in wire.events() if e["type"] == "task-sent"]) == 2, 10)
    finally:
        app.broker.purge("events_nobody")
        app.close()
    events = {e["uuid"]: e for e in wire.events() if e["type"] == "task-sent"}
    event = events[result.id]
    assert COMMON <= set(event) and event["hostname"].startswith("gen")
    assert event["name"] == "interop.add" and event["args"] == "(4, 5)"
    assert event["queue"] == "events_nobody" and event["routing_key"] == "events_nobody"
    assert sent.id in events
    channels = {channel for channel, _ in wire.messages}
    assert channels == {f"/{wire.db}.celeryev/task.sent"}


def test_the_supervisor_sends_the_event_of_a_task_whose_process_it_killed(
    wire: Wire, worker_env: dict[str, str], task_client: App, runs: redis.Redis, broker_url: str
) -> None:
    name = node()
    celery = Celery("control", broker=broker_url)
    try:
        with fastq_worker("-n", name, "-E", "-P", "prefork", "-c", "1", env=worker_env):
            long = task_client.send_task("interop.record", ("long", 30.0))
            wait_until(lambda: runs.hexists("started", "long"), timeout=20)
            celery.control.revoke(long.id, terminate=True, signal="SIGKILL", destination=[name])
            wait_until(lambda: "task-revoked" in wire.types(name, long.id), timeout=20)
    finally:
        celery.close()
    assert wire.types(name, long.id) == ["task-received", "task-started", "task-revoked"]
    [revoked] = [e for e in wire.events(name) if e["type"] == "task-revoked"]
    assert revoked["terminated"] is True and revoked["signum"] == 9
