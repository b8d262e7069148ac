"""A reusable module of ``@shared_task``s, ``current_task`` and a task logger
(``tests.apps.library``) runs the same on a fastq worker and on a Celery worker: same results,
same task log lines."""

from __future__ import annotations

import re

import pytest
from fastq import App

from tests.processes import celery_worker, fastq_worker


@pytest.mark.parametrize("flavour", ["fastq", "celery"])
def test_shared_tasks_run_alike(flavour: str, app: App, worker_env: dict[str, str]) -> None:
    start = fastq_worker if flavour == "fastq" else celery_worker
    with start("--pool", "solo", app=f"tests.apps.library_{flavour}", env=worker_env) as worker:
        result = app.send_task("tests.apps.library.whoami", ("hi",))
        assert result.get(timeout=20) == ["tests.apps.library.whoami", result.id, "hi"]
        bound = app.send_task("library.add", (2, 3))
        assert bound.get(timeout=20) == [bound.id, 5]
        line = f"tests.apps.library.whoami[{result.id}]: library says hi"
        worker.wait_for_log(line)
        # Celery's task log format: "[time: LEVEL/process] name[id]: message".
        assert re.search(r"\] " + re.escape(line), worker.log())
        # One INFO line when a task arrives and one when it succeeds, worded as Celery's.
        worker.wait_for_log(f"Task library.add[{bound.id}] succeeded in ")
        assert f"Task tests.apps.library.whoami[{result.id}] received" in worker.log()
        assert re.search(
            rf"Task library\.add\[{bound.id}\] succeeded in [0-9.e-]+s: \['{bound.id}', 5\]",
            worker.log(),
        )
