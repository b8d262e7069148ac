"""Celery's example projects (``examples/tutorial``, ``examples/app``, ``examples/next-steps`` in
Celery's repository), in the same shapes, run on fastq with only the import and the command
changed, on Redis and on RabbitMQ, and give what they give on Celery.

Each project is written out below in its Celery form; the fastq run replaces ``from celery
import`` by ``from fastq import`` and ``celery`` by ``fastq`` in the command, nothing else. The
broker URL is pointed at this test's own Redis database or RabbitMQ vhost.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.amqp_support import requires_rabbitmq
from tests.conftest import BACKEND_DB, BROKER_DB, REDIS_HOST
from tests.faults.rabbit import Vhost
from tests.processes import BIN, WorkerProcess

TUTORIAL = {
    "tasks.py": """
from celery import Celery

app = Celery('tasks', backend=BACKEND, broker=BROKER)


@app.task()
def add(x, y):
    return x + y
""",
}
TUTORIAL_CLIENT = """
from tasks import add
result = add.delay(4, 4)
print(json.dumps([result.get(timeout=20), result.ready(), result.successful(), result.state]))
"""

APP = {
    "myapp.py": """
from time import sleep

from celery import Celery

app = Celery('myapp', broker=BROKER, backend=BACKEND, task_acks_late=True)


@app.task
def add(x, y):
    sleep(0.5)
    return x + y


if __name__ == '__main__':
    app.start()
""",
}
APP_CLIENT = """
from myapp import add
print(json.dumps(add.delay(16, 16).get(timeout=20)))
"""

NEXT_STEPS = {
    "proj/__init__.py": "",
    "proj/celery.py": """
from celery import Celery

app = Celery('proj', broker=BROKER, backend=BACKEND, include=['proj.tasks'])
app.conf.update(result_expires=3600)

if __name__ == '__main__':
    app.start()
""",
    "proj/tasks.py": """
from .celery import app


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)
""",
}
NEXT_STEPS_CLIENT = """
from celery import chain, chord, group
from proj.tasks import add, mul, xsum

steps = {
    "delay": lambda: (lambda r: [r.get(timeout=20), isinstance(r.id, str), r.state])(
        add.delay(2, 2)
    ),
    "apply_async": lambda: add.apply_async((2, 2), countdown=1).get(timeout=20),
    "signature": lambda: add.s(2, 2).delay().get(timeout=20),
    "partial": lambda: add.s(2).delay(8).get(timeout=20),
    "group": lambda: group(add.s(i, i) for i in range(10))().get(timeout=20),
    "chain": lambda: chain(add.s(4, 4) | mul.s(8))().get(timeout=20),
    "chain_pipe": lambda: (add.s(4, 4) | mul.s(8) | mul.s(10))().get(timeout=20),
    "chord": lambda: chord((add.s(i, i) for i in range(10)), xsum.s())().get(timeout=20),
    "starmap": lambda: add.starmap([(1, 1), (2, 2)]).delay().get(timeout=20),
    "map": lambda: xsum.map([[1, 2], [3]]).delay().get(timeout=20),
    "chunks": lambda: add.chunks(zip(range(10), range(10)), 5).delay().get(timeout=20),
}
out = {}
for name, step in steps.items():
    try:
        out[name] = step()
    except NotImplementedError:  # Celery's chord on rpc://; fastq's error is one too
        out[name] = ["raised", "NotImplementedError"]
    except Exception as exc:
        out[name] = ["raised", type(exc).__name__]
print(json.dumps(out))
"""

PROJECTS: dict[str, tuple[dict[str, str], list[str], str]] = {
    "tutorial": (TUTORIAL, ["-A", "tasks", "worker", "--loglevel=INFO"], TUTORIAL_CLIENT),
    # Its docstring's `python myapp.py worker -l INFO` runs fastq's worker through app.start();
    # Celery 5.7's fails there ("No such command 'myapp.py'"), so Celery's side runs the other
    # command the docstring gives.
    "app": (APP, ["-A", "myapp", "worker", "-l", "INFO"], APP_CLIENT),
    "next-steps": (NEXT_STEPS, ["-A", "proj", "worker", "-l", "INFO"], NEXT_STEPS_CLIENT),
}


@pytest.fixture(params=["redis", pytest.param("amqp", marks=requires_rabbitmq)])
def urls(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(broker, result backend) as the examples use them: rpc:// results over RabbitMQ."""
    if request.param == "redis":
        for db in (BROKER_DB, BACKEND_DB):
            redis.Redis.from_url(f"{REDIS_HOST}/{db}").flushdb()
        yield f"{REDIS_HOST}/{BROKER_DB}", f"{REDIS_HOST}/{BACKEND_DB}"
    else:
        vhost = Vhost()
        try:
            yield vhost.url(), "rpc://"
        finally:
            vhost.delete()


def _write(project: dict[str, str], root: Path, flavour: str, urls: tuple[str, str]) -> None:
    for name, text in project.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if flavour == "fastq":
            text = text.replace("from celery import", "from fastq import")
        broker, backend = urls
        path.write_text(f"BROKER, BACKEND = {broker!r}, {backend!r}\n" + text if text else "")


def _run(name: str, flavour: str, urls: tuple[str, str], tmp_path: Path) -> object:
    project, command, client = PROJECTS[name]
    root = tmp_path / flavour
    _write(project, root, flavour, urls)
    if name == "app" and flavour == "fastq":
        argv = [sys.executable, "myapp.py", "worker", "-l", "INFO"]
    else:
        argv = [str(BIN / flavour), *command]
    if flavour == "celery":  # keep the test quiet and fast; not part of the example
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = WorkerProcess(argv, {"PYTHONPATH": str(root)}, cwd=root)
    try:
        worker.wait_for_log("ready", timeout=60)
        code = "import json\n" + client
        if flavour == "fastq":
            code = code.replace("from celery import", "from fastq import")
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=root, env={"PYTHONPATH": str(root), "PATH": str(BIN)},
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert done.returncode == 0, (done.stderr, worker.log())
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        worker.stop()


@pytest.mark.parametrize("name", list(PROJECTS))
def test_example_runs_alike(name: str, urls: tuple[str, str], tmp_path: Path) -> None:
    celery = _run(name, "celery", urls, tmp_path)
    fastq = _run(name, "fastq", urls, tmp_path)
    assert fastq == celery
