"""Celery's project layouts and command-line forms work unchanged: ``-A proj`` finds
``proj/celery.py``, ``-A`` goes before or after the command, ``python proj.py worker`` runs a
worker through ``app.start()``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastq import App
from fastq.cli import find_app

from tests.processes import BIN, WorkerProcess

CELERY_PY = """
from fastq import App

app = App("proj", broker="sqlite:///{db}", include=["proj.tasks"])
"""
TASKS_PY = """
from proj.celery import app

@app.task(name="proj.add")
def add(x, y):
    return x + y
"""
SCRIPT_PY = """
from fastq import App

app = App("script", broker="sqlite:///{db}")

@app.task(name="script.mul")
def mul(x, y):
    return x * y

if __name__ == "__main__":
    app.start()
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """Celery's "proj" layout: a package whose app lives in proj/celery.py."""
    package = tmp_path / "proj"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "celery.py").write_text(CELERY_PY.format(db=tmp_path / "fastq.db"))
    (package / "tasks.py").write_text(TASKS_PY)
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


def test_a_package_name_finds_its_celery_module(project: Path) -> None:
    app = find_app("proj")
    assert app.main == "proj"
    assert find_app("proj.celery") is app
    assert find_app("proj.celery:app") is app
    assert find_app("proj.celery.app") is app


def test_a_missing_module_inside_the_project_is_not_hidden(project: Path) -> None:
    (project / "proj" / "celery.py").write_text("import not_installed_anywhere\n")
    with pytest.raises(ModuleNotFoundError, match="not_installed_anywhere"):
        find_app("proj")


def _start(argv: list[str], cwd: Path) -> WorkerProcess:
    worker = WorkerProcess(argv, {"PYTHONPATH": str(cwd)}, cwd=cwd)
    worker.wait_for_log("ready")
    return worker


@pytest.mark.parametrize("a_first", [True, False], ids=["-A-before", "-A-after"])
def test_worker_with_app_before_or_after_the_command(project: Path, a_first: bool) -> None:
    app_args, worker_args = ["-A", "proj"], ["worker", "--pool", "solo"]
    argv = [*app_args, *worker_args] if a_first else [*worker_args, *app_args]
    with _start([str(BIN / "fastq"), *argv], project):
        client = App("client", broker=f"sqlite:///{project / 'fastq.db'}", set_as_current=False)
        assert client.send_task("proj.add", (2, 3)).get(timeout=20) == 5
        client.close()


def test_python_script_worker_through_app_start(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT_PY.format(db=tmp_path / "fastq.db"))
    argv = [sys.executable, str(script), "worker", "--pool", "solo", "-l", "info"]
    with _start(argv, tmp_path) as worker:
        client = App("client", broker=f"sqlite:///{tmp_path / 'fastq.db'}", set_as_current=False)
        assert client.send_task("script.mul", (6, 7)).get(timeout=20) == 42
        client.close()
        assert "script.mul" in worker.log()


def test_worker_main_needs_the_worker_command() -> None:
    app = App("wm", broker="memory://", set_as_current=False)
    with pytest.raises(ValueError, match="needs the worker command"):
        app.worker_main(["-l", "info"])


def test_workdir_and_config_options(tmp_path: Path) -> None:
    (tmp_path / "settings_for_cli.py").write_text(f"broker_url = 'sqlite:///{tmp_path}/c.db'\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [str(BIN / "fastq"), "--workdir", str(tmp_path), "--config", "settings_for_cli",
         "call", "nothing.registered", "1"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c.db").exists()
