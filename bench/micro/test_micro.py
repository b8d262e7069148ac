"""Micro-benchmarks of the per-message hot functions, fastq's Rust against kombu/Celery's Python:
``pytest bench/micro --benchmark-only`` (``bench/run_all.py`` puts the table into RESULTS.md).

Each group holds the two sides of one job on the same input, so pytest-benchmark's table
compares them directly. No Redis, no worker: only the CPU cost of each step.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

pytest.importorskip("pytest_benchmark")
kombu_serialization = pytest.importorskip("kombu.serialization")
kombu_json = pytest.importorskip("kombu.utils.json")
celery = pytest.importorskip("celery")

from fastq import App, _core  # noqa: E402
from fastq.backends.redis import RedisBackend  # noqa: E402

TASK = "proj.tasks.add"
ARGS = (2, 3)
KWARGS = {"user": "ada", "tags": ["a", "b"], "n": 1.5}
ACCEPT = ["json"]

fastq_app = App("micro", broker="redis://127.0.0.1:6379/6", set_as_current=False)
celery_app = celery.Celery("micro", broker="redis://127.0.0.1:6379/6", set_as_current=False)


# -- building a task message and its Redis envelope (the client's job) -----------------------------
def fastq_encode() -> bytes:
    """``send_task``'s work before the LPUSH: headers, routing, body and envelope."""
    return fastq_app.broker._encode(fastq_app.build_message(TASK, ARGS, KWARGS))  # type: ignore[attr-defined]


def celery_encode() -> bytes:
    """What Celery's ``apply_async`` and kombu's Redis channel do to the same message."""
    task_id = str(uuid.uuid4())
    msg = celery_app.amqp.as_task_v2(task_id, TASK, ARGS, KWARGS)
    content_type, encoding, body = kombu_serialization.dumps(msg.body, "json")
    body_bytes = body if isinstance(body, bytes) else body.encode(encoding)
    envelope: dict[str, Any] = {
        "body": base64.b64encode(body_bytes).decode(),
        "content-encoding": encoding,
        "content-type": content_type,
        "headers": msg.headers,
        "properties": {
            **msg.properties,
            "body_encoding": "base64",
            "delivery_info": {"exchange": "", "routing_key": "celery"},
            "delivery_mode": 2,
            "priority": 0,
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return kombu_json.dumps(envelope).encode()


@pytest.mark.benchmark(group="encode task + Redis envelope")
def test_encode_fastq(benchmark: Any) -> None:
    assert benchmark(fastq_encode)


@pytest.mark.benchmark(group="encode task + Redis envelope")
def test_encode_celery(benchmark: Any) -> None:
    assert benchmark(celery_encode)


# -- decoding a delivered message (the worker's job) -----------------------------------------------
RAW = fastq_encode()
KOMBU_ACCEPT = kombu_serialization.prepare_accept_content(ACCEPT)


def kombu_decode(raw: bytes) -> tuple[Any, ...]:
    envelope = kombu_json.loads(raw)
    body = base64.b64decode(envelope["body"])
    args, kwargs, embed = kombu_serialization.loads(
        body, envelope["content-type"], envelope["content-encoding"], accept=KOMBU_ACCEPT
    )
    return envelope["headers"]["task"], args, kwargs, embed


@pytest.mark.benchmark(group="decode Redis envelope + task body")
def test_decode_fastq(benchmark: Any) -> None:
    _envelope, message = benchmark(_core.decode_task_envelope, RAW, ACCEPT)
    assert message.task == TASK and tuple(message.args) == ARGS


@pytest.mark.benchmark(group="decode Redis envelope + task body")
def test_decode_kombu(benchmark: Any) -> None:
    task, args, _kwargs, _embed = benchmark(kombu_decode, RAW)
    assert task == TASK and tuple(args) == ARGS


# -- encoding a result meta (the worker's job, per task with results on) ---------------------------
META = {
    "status": "SUCCESS",
    "result": {"total": 5, "items": [1, 2, 3], "name": "ada"},
    "traceback": None,
    "children": [],
    "date_done": "2024-01-01T00:00:00.000000+00:00",
    "task_id": "d6c1a7c5-6a4f-4f44-9d43-7d2b1c8c2f11",
}


@pytest.mark.benchmark(group="encode result meta")
def test_meta_fastq(benchmark: Any) -> None:
    backend = RedisBackend(fastq_app, "redis://127.0.0.1:6379/7")  # connects lazily: no I/O
    assert benchmark(backend.encode_meta, META)


@pytest.mark.benchmark(group="encode result meta")
def test_meta_celery(benchmark: Any) -> None:
    backend = celery_app.backend.__class__(app=celery_app, url="redis://127.0.0.1:6379/7")
    assert benchmark(backend.encode, META)


# -- the JSON codec alone --------------------------------------------------------------------------
BODY = [list(ARGS), KWARGS, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


@pytest.mark.benchmark(group="json dumps (kombu type markers)")
def test_dumps_fastq(benchmark: Any) -> None:
    assert benchmark(_core.dumps, BODY, "json")


@pytest.mark.benchmark(group="json dumps (kombu type markers)")
def test_dumps_kombu(benchmark: Any) -> None:
    assert benchmark(kombu_json.dumps, BODY)
