"""``@app.task(pydantic=True)``: models validated on the worker, dumped on the client and in the
result, the same on a fastq worker and a Celery worker."""

from __future__ import annotations

import json

import pytest
import redis

from tests.compat.apps import Point
from tests.compat.test_then import client  # noqa: F401 - the fixture: each side's worker


def test_models_in_and_out(client) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    assert client.shift.delay(Point(x=1, y=2)).get(timeout=15) == {"x": 2, "y": 3}
    assert client.shift.delay({"x": 5, "y": 6}, by=2).get(timeout=15) == {"x": 7, "y": 8}


def test_an_invalid_argument_fails_the_task(client, backend_url: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    res = client.shift.delay({"x": "not a number", "y": 1})
    with pytest.raises(Exception):  # noqa: B017 - pydantic's error is not rebuilt on either side
        res.get(timeout=15)
    assert res.state == "FAILURE"
    stored = redis.Redis.from_url(backend_url).get(f"celery-task-meta-{res.id}")
    assert stored is not None
    assert json.loads(stored)["result"]["exc_type"] == "ValidationError"
