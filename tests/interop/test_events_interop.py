"""Celery's events from fastq workers, read by Celery's own tools: ``celery events --dump`` and
Flower (both real, as subprocesses), on Redis and RabbitMQ, next to a Celery worker."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from celery import Celery

from tests.amqp_support import AMQP_URL, requires_rabbitmq
from tests.processes import BIN, WorkerProcess, fastq_worker, wait_until

pytestmark = pytest.mark.usefixtures("runs")


@pytest.fixture(params=["redis", pytest.param("amqp", marks=requires_rabbitmq)])
def env(request: pytest.FixtureRequest, broker_url: str, backend_url: str) -> dict[str, str]:
    broker = broker_url if request.param == "redis" else AMQP_URL
    return {"FASTQ_BROKER_URL": broker, "FASTQ_RESULT_BACKEND": backend_url}


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[Celery]:
    app = Celery(
        "events-client", broker=env["FASTQ_BROKER_URL"], backend=env["FASTQ_RESULT_BACKEND"]
    )
    yield app
    app.close()


def node(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}@events"


def celery_tool(env: dict[str, str], *args: str) -> WorkerProcess:
    """Celery's CLI as a subprocess (``celery events``, ``celery flower``), its output kept."""
    argv = [str(BIN / "celery"), "-A", "tests.apps.celery_app", *args]
    return WorkerProcess(argv, {"FLOWER_UNAUTHENTICATED_API": "true", **env})


def stop(proc: WorkerProcess) -> str:
    proc.proc.terminate()
    try:
        proc.proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.proc.kill()
        proc.proc.wait()
    return proc.log()


def test_celery_events_dump_shows_a_fastq_workers_task_events(
    env: dict[str, str], client: Celery
) -> None:
    dump = celery_tool(env, "events", "--dump")
    try:
        dump.wait_for_log("starting capture", timeout=60)
        time.sleep(4)  # its queue bound: no broker keeps events for a listener not there yet
        name = node("fastq")
        with fastq_worker("-n", name, "-E", "--pool", "prefork", "-c", "1", env=env):
            ok = client.send_task("interop.add", (2, 3))
            failed = client.send_task("interop.fail", ("boom",))
            assert ok.get(timeout=20) == 5
            with pytest.raises(Exception, match="boom"):
                failed.get(timeout=20)
            time.sleep(3)  # a heartbeat, and the last batch published
        time.sleep(1)
    finally:
        out = stop(dump)
    mine = [line for line in out.splitlines() if line.startswith(name)]
    text = "\n".join(mine)
    # The dumper's words for worker-online, worker-heartbeat and worker-offline.
    for kind in ("] started:", "] heartbeat:", "] shutdown:"):
        assert kind in text, out
    assert "sw_ident=fastq" in text and "processed=2" in text
    for kind in ("task received", "task started", "task succeeded"):
        assert any(kind in line and ok.id in line for line in mine), out
    assert any("task failed" in line and failed.id in line and "boom" in line for line in mine)
    received = next(line for line in mine if "task received" in line and ok.id in line)
    assert "interop.add" in received and "(2, 3)" in received
    succeeded = next(line for line in mine if "task succeeded" in line and ok.id in line)
    assert "result=5" in succeeded and "runtime=" in succeeded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def flower(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = celery_tool(
        env, "flower", f"--port={port}", "--address=127.0.0.1", "--inspect_timeout=3000"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url) or proc.proc.poll() is not None, timeout=60)
        assert proc.proc.poll() is None, proc.log()
        yield url
    finally:
        stop(proc)


def _answers(url: str) -> bool:
    try:
        get(url + "/healthcheck")
        return True
    except OSError:
        return False


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=15) as response:
        body = response.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def test_flower_lists_a_fastq_worker_and_its_tasks_next_to_a_celery_worker(
    env: dict[str, str], client: Celery
) -> None:
    fastq_name, celery_name = node("fastq"), node("celery")
    with flower(env) as url:
        time.sleep(2)
        celery_argv = [str(BIN / "celery"), "-A", "tests.apps.celery_app", "worker", "-E",
                       "-n", celery_name, "-Q", "celery_only", "-c", "1", "-l", "INFO"]  # fmt: skip
        with (
            fastq_worker("-n", fastq_name, "-E", "--pool", "prefork", "-c", "2", env=env),
            WorkerProcess(celery_argv, env) as celery_worker,
        ):
            celery_worker.wait_for_log("ready", timeout=60)
            result = client.send_task("interop.add", (20, 22))
            on_celery = client.send_task("interop.add", (1, 1), queue="celery_only")
            assert result.get(timeout=20) == 42 and on_celery.get(timeout=20) == 2

            def alive() -> dict[str, bool]:
                return dict(get(url + "/api/workers?status=1"))

            wait_until(lambda: alive().get(fastq_name) and alive().get(celery_name), timeout=20)

            def state(task_id: str) -> str | None:
                tasks = get(url + "/api/tasks")
                return (tasks.get(task_id) or {}).get("state")

            wait_until(lambda: state(result.id) == "SUCCESS", timeout=20)
            wait_until(lambda: state(on_celery.id) == "SUCCESS", timeout=20)
            task = get(url + f"/api/task/info/{result.id}")
            assert task["worker"] == fastq_name and task["name"] == "interop.add"
            assert task["result"] == "42" and task["runtime"] >= 0
            workers = get(url + "/api/workers?refresh=1")  # pidbox inspect, both brokers
            assert fastq_name in workers and celery_name in workers
            assert workers[fastq_name]["stats"]["pid"]


def post(url: str) -> Any:
    """A POST as Flower's buttons send them (no body; the arguments in the query)."""
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=15) as response:
        return json.loads(response.read())


def test_flowers_revoke_and_rate_limit_buttons_act_on_a_fastq_worker(
    env: dict[str, str], client: Celery, runs: redis.Redis
) -> None:
    name = node("fastq")
    with flower(env) as url:
        with fastq_worker("-n", name, "-E", "--pool", "prefork", "-c", "1", env=env):
            # Flower's rate-limit button needs the worker in its inspected list: its worker
            # page's refresh, which also asks for the task lists (reserved, scheduled ...).
            def inspected() -> bool:
                info = get(f"{url}/api/workers?refresh=1&workername={name}").get(name) or {}
                return isinstance(info.get("reserved"), list) and "registered" in info

            wait_until(inspected, timeout=30)
            # The task page's "Terminate": revoke with terminate (SIGTERM).
            long = client.send_task("interop.record", ("long", 60.0))
            wait_until(lambda: runs.hexists("started", "long"), timeout=20)
            started = time.monotonic()
            reply = post(f"{url}/api/task/revoke/{long.id}?terminate=true")
            assert reply == {"message": f"Revoked '{long.id}'"}
            wait_until(lambda: long.state == "REVOKED", timeout=20)
            assert time.monotonic() - started < 20 and not runs.hexists("runs", "long")

            def state(task_id: str) -> str | None:
                return (get(url + "/api/tasks").get(task_id) or {}).get("state")

            wait_until(lambda: state(long.id) == "REVOKED", timeout=20)  # from fastq's event
            # The worker page's rate limit: 1/s for interop.record on this worker.
            reply = post(
                f"{url}/api/task/rate-limit/interop.record?workername={name}&ratelimit=1/s"
            )
            assert reply == {"message": "new rate limit set successfully"}
            registered = client.control.inspect([name], timeout=5).registered()[name]
            assert "interop.record [rate_limit=1/s]" in registered
            # A token a second (a burst of one): three tasks take two seconds at least.
            started = time.monotonic()
            results = [client.send_task("interop.record", (f"limited{i}",)) for i in range(3)]
            assert [r.get(timeout=30) for r in results] == ["limited0", "limited1", "limited2"]
            assert time.monotonic() - started >= 1.8
