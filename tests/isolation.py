"""One Redis server and one RabbitMQ vhost per pytest-xdist worker.

Under ``pytest -n N`` the workers run tests at the same time, and the tests' fixed names (Redis
databases 8/9/10, queues such as ``celery``) would collide. Each worker process therefore starts
a ``redis-server`` of its own on a free loopback port and adds a vhost of its own on the shared
RabbitMQ, then points the environment the tests and their worker subprocesses read
(FASTQ_TEST_REDIS, FASTQ_TEST_RUNS, FASTQ_TEST_AMQP_URL) at them. Both go away when the worker
exits. A run without xdist keeps the environment as given.

``tests/conftest.py`` calls :func:`isolate_xdist_worker` before it reads those variables, and
modules that read them at import are imported after it (test modules, ``tests.amqp_support``).
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import redis

#: The database of the runs side channel (tests/apps/shared.py), on whichever server.
RUNS_DB = 10
_PR_SET_PDEATHSIG = 1
#: What :func:`cleanup` undoes, last made first undone.
_CLEANUPS: list[Callable[[], None]] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(tries: int = 5) -> str:
    """A redis-server without persistence on a free port, SIGKILLed when this process exits;
    returns its URL (no database). Retries on the rare port taken between probe and bind."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (scripts/services.sh installs it)")
    workdir = tempfile.mkdtemp(prefix="fastq-test-redis-")
    for _ in range(tries):
        port = _free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
                "--save", "", "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
        log = open(os.path.join(workdir, f"redis-{port}.log"), "ab")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    _CLEANUPS.append(functools.partial(_stop, proc, workdir))
                    return f"redis://127.0.0.1:{port}"
            except redis.RedisError:
                time.sleep(0.02)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"could not start a redis-server of this test worker (logs in {workdir})")


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test worker dies, however it dies (Linux)."""
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _stop(proc: subprocess.Popen[bytes], workdir: str) -> None:
    proc.kill()
    proc.wait()
    shutil.rmtree(workdir, ignore_errors=True)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def _add_vhost(base_url: str, name: str) -> str | None:
    """Adds vhost ``name`` (guest may use it) on the RabbitMQ of ``base_url`` and returns that
    URL with the vhost; None when RabbitMQ or rabbitmqctl is not there (its tests skip)."""
    if shutil.which("rabbitmqctl") is None:
        return None
    try:
        _rabbitmqctl("add_vhost", name)
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    _CLEANUPS.append(functools.partial(_delete_vhost, name))
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}/{name}"


def _delete_vhost(name: str) -> None:
    try:
        _rabbitmqctl("delete_vhost", name)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        pass


def isolate_xdist_worker() -> None:
    """In a pytest-xdist worker: its own Redis server and RabbitMQ vhost, in the environment.
    Does nothing in a run without xdist, or when called again."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or os.environ.get("FASTQ_TEST_ISOLATED") == worker:
        return
    host = _start_redis()
    # Not FASTQ_BROKER_URL / FASTQ_RESULT_BACKEND: App reads those as its defaults, and tests
    # of apps made without a broker or backend would get this server's. The test apps
    # (tests/apps) default to FASTQ_TEST_REDIS's databases instead.
    os.environ.update(
        FASTQ_TEST_REDIS=host, FASTQ_TEST_RUNS=f"{host}/{RUNS_DB}", FASTQ_TEST_ISOLATED=worker
    )
    base = os.environ.get("FASTQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    amqp_url = _add_vhost(base, f"fastq_test_{worker}_{os.getpid()}")
    if amqp_url is not None:
        os.environ["FASTQ_TEST_AMQP_URL"] = amqp_url


def cleanup() -> None:
    """Stops this worker's Redis server and deletes its vhost (pytest_unconfigure, or at exit)."""
    while _CLEANUPS:
        _CLEANUPS.pop()()


atexit.register(cleanup)
