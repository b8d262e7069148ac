"""``examples/django`` (Celery's Django guide, with fastq's import) runs on a fastq worker, and with
the import changed back to Celery's, on a Celery worker, with the same results: settings from
Django's settings under the CELERY_ namespace, tasks found by ``autodiscover_tasks()``,
``@shared_task`` using the ORM."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import BACKEND_DB, BROKER_DB, REDIS_HOST
from tests.processes import BIN, ROOT, WorkerProcess

pytest.importorskip("django")

EXAMPLE = ROOT / "examples" / "django"
CLIENT = """
import json
from demoapp.models import Widget
from demoapp.tasks import add, rename_widget, xsum
from proj.celery import debug_task

widget = Widget.objects.create(name="before")
out = {
    "add": add.delay(2, 3).get(timeout=20),
    "xsum": xsum.delay([1, 2, 3]).get(timeout=20),
    "rename": rename_widget.delay(widget.id, "after").get(timeout=20),
    "stored": Widget.objects.get(id=widget.id).name,
    "debug_sent": isinstance(debug_task.delay().id, str),
}
print(json.dumps(out))
"""


def _run(flavour: str, tmp_path: Path) -> object:
    root = tmp_path / flavour
    shutil.copytree(EXAMPLE, root)
    if flavour == "celery":
        for path in root.rglob("*.py"):
            path.write_text(path.read_text().replace("from fastq import", "from celery import"))
    for db in (BROKER_DB, BACKEND_DB):
        redis.Redis.from_url(f"{REDIS_HOST}/{db}").flushdb()
    env = {
        "PATH": str(BIN),
        "PYTHONPATH": str(root),
        "EXAMPLE_DB": str(root / "db.sqlite3"),
        "CELERY_BROKER_URL": f"{REDIS_HOST}/{BROKER_DB}",
        "CELERY_RESULT_BACKEND": f"{REDIS_HOST}/{BACKEND_DB}",
    }
    manage = [sys.executable, "manage.py"]
    migrate = subprocess.run([*manage, "migrate", "-v", "0"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    argv = [str(BIN / flavour), "-A", "proj", "worker", "--pool", "solo", "-l", "INFO"]
    if flavour == "celery":
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    with WorkerProcess(argv, env, cwd=root) as worker:
        worker.wait_for_log("ready", timeout=60)
        done = subprocess.run([*manage, "shell", "-c", CLIENT], cwd=root, env=env,
                              capture_output=True, text=True, timeout=90)  # fmt: skip
        assert done.returncode == 0, (done.stderr, worker.log())
        assert "demoapp.tasks.add" in worker.log()
        return json.loads(done.stdout.strip().splitlines()[-1])


def test_django_example_runs_alike(tmp_path: Path) -> None:
    expected = {"add": 5, "xsum": 6, "rename": "after", "stored": "after", "debug_sent": True}
    assert _run("celery", tmp_path) == expected
    assert _run("fastq", tmp_path) == expected
