"""A worker started without ``-Q`` consumes every queue of ``task_queues`` (as Celery's), and
routes through the queues' exchanges reach it."""

from __future__ import annotations

from pathlib import Path

from fastq import App

from tests.processes import BIN, WorkerProcess

APP = """
from fastq import App

app = App("queues", broker={broker!r}, backend={backend!r},
          task_queues=[{{"name": "alpha"}}, {{"name": "beta", "routing_key": "b.#"}}],
          task_routes={{"q.to_beta": {{"queue": "beta"}}}})

@app.task(name="q.where")
def where(tag):
    return tag

@app.task(name="q.to_beta")
def to_beta():
    return "beta"
"""


def test_without_q_every_task_queue_is_consumed(
    tmp_path: Path, broker_url: str, backend_url: str
) -> None:
    (tmp_path / "qapp.py").write_text(APP.format(broker=broker_url, backend=backend_url))
    argv = [str(BIN / "fastq"), "-A", "qapp", "worker", "--pool", "solo"]
    with WorkerProcess(argv, {"PYTHONPATH": str(tmp_path)}, cwd=tmp_path) as worker:
        worker.wait_for_log("ready")
        assert "queues alpha,beta" in worker.log()
        client = App("client", broker=broker_url, backend=backend_url, set_as_current=False)
        client.conf.task_routes = {"q.to_beta": {"queue": "beta"}}
        assert client.send_task("q.where", ("a",), queue="alpha").get(timeout=20) == "a"
        assert client.send_task("q.where", ("b",), queue="beta").get(timeout=20) == "b"
        assert client.send_task("q.to_beta").get(timeout=20) == "beta"
        client.close()
