"""Helpers for the tests that need the local RabbitMQ: throwaway queues, worker subprocesses.

Plain functions and context managers (no conftest fixtures) so the RabbitMQ tests stay
self-contained. Every queue and exchange they create is named ``fastq_test_*`` and deleted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import amqp
import pytest

AMQP_URL = os.environ.get("FASTQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
#: Where AMQP_URL points, for the checks and set-up done with py-amqp.
AMQP_HOST = f"{urlsplit(AMQP_URL).hostname or '127.0.0.1'}:{urlsplit(AMQP_URL).port or 5672}"
#: The vhost AMQP_URL names (``amqp://host//`` is ``/``): set-up, checks and listings use it.
AMQP_VHOST = unquote(urlsplit(AMQP_URL).path[1:]) or "/"
#: The node ``rabbitmqctl`` talks to (its default when unset); set it with FASTQ_TEST_AMQP_URL
#: when the tests run against a second local node.
RABBITMQ_NODE = os.environ.get("FASTQ_TEST_RABBITMQ_NODE")
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _rabbitmq_answers() -> bool:
    try:
        host, port = AMQP_HOST.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


requires_rabbitmq = pytest.mark.skipif(
    not _rabbitmq_answers(),
    reason=f"RabbitMQ is not answering on {AMQP_HOST} (start it: bash scripts/services.sh)",
)


def unique(purpose: str) -> str:
    return f"fastq_test_{purpose}_{uuid.uuid4().hex[:8]}"


@contextmanager
def admin() -> Iterator[Any]:
    """A py-amqp channel for test set-up and checks."""
    conn = amqp.Connection(AMQP_HOST, userid="guest", password="guest", virtual_host=AMQP_VHOST)
    conn.connect()
    try:
        yield conn.channel()
    finally:
        try:
            conn.close()
        except Exception:
            pass


def delete(*names: str) -> None:
    """Deletes queues and exchanges of these names (missing ones are fine)."""
    for name in names:
        for kind in ("queue", "exchange"):
            try:
                with admin() as ch:
                    if kind == "queue":
                        ch.queue_delete(name)
                    else:
                        ch.exchange_delete(name)
            except amqp.exceptions.NotFound:
                pass


def queue_state(name: str) -> tuple[int, int]:
    """(ready messages, consumers), or (-1, 0) when the queue does not exist."""
    try:
        with admin() as ch:
            ok = ch.queue_declare(name, passive=True)
            return int(ok.message_count), int(ok.consumer_count)
    except amqp.exceptions.NotFound:
        return -1, 0


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def wait_for_progress(count: Callable[[], int], target: int, stall: float, what: str) -> None:
    """Waits until ``count()`` reaches ``target``, failing only when it stops moving for
    ``stall`` seconds: a slow machine is not a stuck worker."""
    last, moved = count(), time.monotonic()
    while last < target:
        time.sleep(0.1)
        now = count()
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall:
            raise AssertionError(f"no progress for {stall}s waiting for {what} ({last}/{target})")


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *(["-n", RABBITMQ_NODE] if RABBITMQ_NODE else []), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


def list_queues(*columns: str) -> str:
    """``rabbitmqctl list_queues`` of AMQP_URL's vhost."""
    return rabbitmqctl("list_queues", "-p", AMQP_VHOST, *columns)


def close_connection(connection_name: str, reason: str = "fastq test: connection loss") -> int:
    """Has the broker close the connections named ``connection_name`` (a client property), and
    only those: the server is shared. Returns how many it closed."""
    closed = 0
    for row in rabbitmqctl("list_connections", "pid", "client_properties").splitlines():
        pid, _, properties = row.partition("\t")
        if f'{{"connection_name","{connection_name}"}}' in properties:
            rabbitmqctl("close_connection", pid, reason)
            closed += 1
    return closed


@contextmanager
def worker(
    kind: str,
    queue: str,
    log: Path,
    *args: str,
    consumers: int = 1,
    **env: str,
) -> Iterator[subprocess.Popen[bytes]]:
    """A ``fastq`` or ``celery`` worker on ``queue`` (its app from ``tests/interop``), running
    until the block ends; waits until it consumes. Its output goes to ``log``."""
    environ = {
        **os.environ,
        "FASTQ_TEST_AMQP_URL": AMQP_URL,
        "FASTQ_TEST_QUEUE": queue,
        "PYTHONPATH": str(ROOT),
        **env,
    }
    if kind == "fastq":
        cmd = [str(BIN / "fastq"), "-A", "tests.interop.amqp_fastq_app", "worker", "-l", "INFO"]
    else:
        cmd = [
            str(BIN / "celery"),
            "-A",
            "tests.interop.amqp_celery_app",
            "worker",
            "-P",
            "solo",
            "-l",
            "INFO",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
        ]
    out = open(log, "wb")
    proc = subprocess.Popen([*cmd, *args], cwd=ROOT, env=environ, stdout=out, stderr=out)
    try:
        wait_until(
            lambda: proc.poll() is not None or queue_state(queue)[1] >= consumers,
            30,
            f"{kind} worker consuming {queue}",
        )
        assert proc.poll() is None, f"{kind} worker exited: {log.read_text()[-2000:]}"
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.close()


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(p) for p in text)
    return found
