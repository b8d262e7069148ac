"""Codec micro-benchmark: one typical task message through fastq and through Celery/kombu.

Both sides produce the bytes kombu's Redis transport LPUSHes (a JSON envelope with a base64 body)
and read them back into headers, args, kwargs and embed. Run against a release build:
``python -m pytest bench/test_codec_bench.py --benchmark-only``; each group holds one fastq and
one kombu figure, so the ratio is read off the ``Mean`` column.
"""

from __future__ import annotations

import base64
import os
import socket
from typing import Any
from uuid import uuid4

import pytest
from celery import Celery
from fastq import _core
from kombu import serialization
from kombu.utils import json as kombu_json

TASK = "proj.tasks.process_order"
TASK_ID = "4a6f8d2e-7c1b-4e8a-9f3d-2b5c6a7e8f90"
ARGS: tuple[Any, ...] = (
    42,
    "customer-8813@example.com",
    19.99,
    True,
    {"sku": "A-1002", "qty": 3},
)
KWARGS: dict[str, Any] = {"priority": "high", "retry_on": ["timeout"], "notify": None}
ACCEPT = ["json"]
KOMBU_ACCEPT = {"application/json"}  # kombu.serialization.loads takes MIME types
ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"
# Enough rounds for the slow kombu side too: the machine is shared, single rounds are noisy.
TIMING: dict[str, Any] = {"max_time": 2.0, "min_rounds": 200, "warmup": True}


@pytest.fixture(scope="module")
def app() -> Celery:
    return Celery("bench", broker="memory://", set_as_current=False)


def fastq_encode() -> bytes:
    # The headers a Celery client sends beyond task/id; fastq fills the remaining defaults.
    headers = {
        "task": TASK,
        "id": TASK_ID,
        "argsrepr": repr(ARGS),
        "kwargsrepr": repr(KWARGS),
        "origin": ORIGIN,
        "ignore_result": False,
    }
    return _core.encode_task_envelope(headers, ARGS, KWARGS, reply_to=TASK_ID)


def fastq_decode(data: bytes) -> tuple[dict[str, Any], tuple[Any, ...], dict[str, Any], Any]:
    _envelope, message = _core.decode_task_envelope(data, ACCEPT)
    return message.headers, message.args, message.kwargs, message.embed


def kombu_encode(app: Celery) -> bytes:
    """Celery's client path to the Redis list element, without the broker round trip."""
    headers, properties, body, _ = app.amqp.as_task_v2(
        TASK_ID, TASK, args=ARGS, kwargs=KWARGS, reply_to=TASK_ID, origin=ORIGIN
    )
    content_type, content_encoding, data = serialization.dumps(body, "json")
    # The virtual channel's base64 codec: str_to_bytes, b64encode, bytes_to_str.
    encoded = base64.b64encode(data.encode() if isinstance(data, str) else data).decode()
    properties.update(
        delivery_mode=2,
        delivery_info={"exchange": "", "routing_key": "celery"},
        priority=0,
        body_encoding="base64",
        delivery_tag=str(uuid4()),
    )
    envelope = {
        "body": encoded,
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers,
        "properties": properties,
    }
    return kombu_json.dumps(envelope).encode()


def kombu_decode(data: bytes) -> tuple[dict[str, Any], Any, Any, Any]:
    envelope = kombu_json.loads(data)
    body = base64.b64decode(envelope["body"])
    args, kwargs, embed = serialization.loads(
        body, envelope["content-type"], envelope["content-encoding"], accept=KOMBU_ACCEPT
    )
    return envelope["headers"], args, kwargs, embed


def test_both_paths_carry_the_same_message(app: Celery) -> None:
    for data in (fastq_encode(), kombu_encode(app)):
        for headers, args, kwargs, embed in (fastq_decode(data), kombu_decode(data)):
            assert headers["task"] == TASK
            assert headers["id"] == TASK_ID
            assert headers["argsrepr"] == repr(ARGS)
            assert list(args) == list(ARGS)
            assert kwargs == KWARGS
            assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@pytest.mark.benchmark(group="task envelope: encode + decode", **TIMING)
def test_roundtrip_fastq(benchmark: Any) -> None:
    headers, args, kwargs, _ = benchmark(lambda: fastq_decode(fastq_encode()))
    assert headers["task"] == TASK and args == ARGS and kwargs == KWARGS


@pytest.mark.benchmark(group="task envelope: encode + decode", **TIMING)
def test_roundtrip_kombu(benchmark: Any, app: Celery) -> None:
    headers, args, kwargs, _ = benchmark(lambda: kombu_decode(kombu_encode(app)))
    assert headers["task"] == TASK and args == list(ARGS) and kwargs == KWARGS


@pytest.mark.benchmark(group="task envelope: encode", **TIMING)
def test_encode_fastq(benchmark: Any) -> None:
    assert benchmark(fastq_encode).startswith(b"{")


@pytest.mark.benchmark(group="task envelope: encode", **TIMING)
def test_encode_kombu(benchmark: Any, app: Celery) -> None:
    assert benchmark(kombu_encode, app).startswith(b"{")


@pytest.mark.benchmark(group="task envelope: decode", **TIMING)
def test_decode_fastq(benchmark: Any, app: Celery) -> None:
    data = kombu_encode(app)
    assert benchmark(fastq_decode, data)[0]["task"] == TASK


@pytest.mark.benchmark(group="task envelope: decode", **TIMING)
def test_decode_kombu(benchmark: Any, app: Celery) -> None:
    data = kombu_encode(app)
    assert benchmark(kombu_decode, data)[0]["task"] == TASK
