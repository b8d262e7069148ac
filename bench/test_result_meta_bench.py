"""Result meta micro-benchmark: the document a worker stores per task (results on) and a client
reads back in ``get()``, through fastq's backend and through Celery's, on the same meta.

``python -m pytest bench/test_result_meta_bench.py --benchmark-only`` (``bench/run_all.py`` puts
the table into RESULTS.md). The task message codec has its own benchmark,
``bench/test_codec_bench.py``. No Redis I/O: both backends connect lazily and are only asked to
encode and decode.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from fastq import App
from fastq.backends.redis import RedisBackend

META: dict[str, Any] = {
    "status": "SUCCESS",
    "result": {"total": 5, "items": [1, 2, 3], "name": "ada", "ratio": 0.25},
    "traceback": None,
    "children": [],
    "date_done": "2024-01-01T00:00:00.000000+00:00",
    "task_id": "d6c1a7c5-6a4f-4f44-9d43-7d2b1c8c2f11",
}
URL = "redis://127.0.0.1:6379/7"
TIMING: dict[str, Any] = {"max_time": 1.0, "min_rounds": 200, "warmup": True}


@pytest.fixture(scope="module")
def fastq_backend() -> RedisBackend:
    return RedisBackend(App("micro", set_as_current=False), URL)


@pytest.fixture(scope="module")
def celery_backend() -> Any:
    app = Celery("micro", broker="memory://", backend=URL, set_as_current=False)
    return app.backend


@pytest.mark.benchmark(group="encode result meta", **TIMING)
def test_encode_fastq(benchmark: Any, fastq_backend: RedisBackend) -> None:
    assert benchmark(fastq_backend.encode_meta, META)


@pytest.mark.benchmark(group="encode result meta", **TIMING)
def test_encode_celery(benchmark: Any, celery_backend: Any) -> None:
    assert benchmark(celery_backend.encode, META)


@pytest.mark.benchmark(group="decode result meta", **TIMING)
def test_decode_fastq(benchmark: Any, fastq_backend: RedisBackend) -> None:
    data = fastq_backend.encode_meta(META)
    assert benchmark(fastq_backend.decode_meta, data) == META


@pytest.mark.benchmark(group="decode result meta", **TIMING)
def test_decode_celery(benchmark: Any, celery_backend: Any) -> None:
    data = celery_backend.encode(META)
    assert benchmark(celery_backend.decode, data) == META
