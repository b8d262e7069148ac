"""Real Celery on either side of Redis: clients, workers, and both workers on one queue."""

from __future__ import annotations

import math

import pytest
import redis
from celery import Celery
from fastq import App

from tests.processes import celery_worker, fastq_worker

pytestmark = pytest.mark.usefixtures("runs")


def test_celery_client_to_fastq_worker(celery_client: Celery) -> None:
    with fastq_worker("--concurrency", "2"):
        result = celery_client.send_task("interop.add", (20, 22))
        assert result.get(timeout=20) == 42
        assert result.state == "SUCCESS"
        # Python's json writes NaN/Infinity as bare tokens; fastq reads and writes them back.
        assert math.isnan(celery_client.send_task("interop.add", (math.nan, 1.0)).get(timeout=20))
        assert celery_client.send_task("interop.add", (-math.inf, 1.0)).get(timeout=20) == -math.inf
        failing = celery_client.send_task("interop.fail", ("from fastq",))
        with pytest.raises(ValueError, match="from fastq"):
            failing.get(timeout=20)
        unknown = celery_client.send_task("interop.nope", ())
        with pytest.raises(Exception) as info:
            unknown.get(timeout=20)
        assert type(info.value).__name__ == "NotRegistered"


def test_fastq_client_to_celery_worker(fastq_client: App) -> None:
    with celery_worker("-P", "solo"):
        result = fastq_client.send_task("interop.add", (1, 2))
        assert result.get(timeout=30) == 3
        assert math.isnan(fastq_client.send_task("interop.add", (math.nan, 1.0)).get(timeout=30))
        assert fastq_client.send_task("interop.add", (math.inf, 1.0)).get(timeout=30) == math.inf
        failing = fastq_client.send_task("interop.fail", ("from celery",))
        with pytest.raises(ValueError, match="from celery"):
            failing.get(timeout=30)
        delayed = fastq_client.send_task("interop.add", (2, 2), countdown=1)
        assert delayed.get(timeout=30) == 4


def test_celery_and_fastq_workers_share_a_queue(
    fastq_client: App, celery_client: Celery, runs: redis.Redis
) -> None:
    tokens = [f"job{i}" for i in range(300)]
    with celery_worker("-P", "threads", "-c", "2") as cw, fastq_worker("--concurrency", "2") as fw:
        results = [
            (fastq_client if i % 2 else celery_client).send_task("interop.record", (token,))
            for i, token in enumerate(tokens)
        ]
        for r in results:
            r.get(timeout=60)
        counts = {k.decode(): int(v) for k, v in runs.hgetall("runs").items()}
        pids = {int(v) for v in runs.hvals("started")}
    assert counts == dict.fromkeys(tokens, 1), "a task ran twice or never"
    assert len(pids) >= 2, "one worker did all the work"
    assert "error" not in fw.log().lower() and "Traceback" not in cw.log()
