"""Stamping (``sig.stamp``, ``StampingVisitor``): a stamped task, chain or group sent by one side
and run by the other's worker; each task records ``self.request.stamped_headers`` and
``self.request.stamps``, which must be the same whichever side sent or ran it."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.compat import apps
from tests.processes import celery_worker, fastq_worker, wait_until

#: (client side, worker side): each direction, and each side alone.
PAIRS = [("fastq", "celery"), ("celery", "fastq"), ("fastq", "fastq"), ("celery", "celery")]


@pytest.fixture(params=PAIRS, ids=lambda p: f"{p[0]}-to-{p[1]}")
def client(request: Any, broker_url: str, backend_url: str) -> Iterator[SimpleNamespace]:
    client_side, worker_side = request.param
    env = {
        "FASTQ_COMPAT_SIDE": worker_side,
        "FASTQ_BROKER_URL": broker_url,
        "FASTQ_RESULT_BACKEND": backend_url,
    }
    start = fastq_worker if worker_side == "fastq" else celery_worker
    with start("--pool", "solo", app="tests.compat.apps", env=env):
        tasks = apps.build(client_side, broker_url, backend_url)
        yield tasks
        tasks.app.close()


def _canvas(side: str) -> Any:
    if side == "celery":
        import celery.canvas as canvas
    else:
        import fastq.canvas as canvas  # type: ignore[no-redef]
    return canvas


def _stamps_seen(backend_url: str, count: int) -> list[list[Any]]:
    def seen() -> list[list[Any]]:
        return [c[2:] for c in apps.calls(backend_url) if c[0] == "stamped"]

    wait_until(lambda: len(seen()) >= count, timeout=15)
    return sorted(seen())


def test_a_stamped_signature(client: SimpleNamespace, backend_url: str) -> None:
    sig = client.stamped.s(1)
    sig.stamp(mark="blue", tries=2)
    assert sig.apply_async().get(timeout=15) == 2
    assert _stamps_seen(backend_url, 1) == [[1, ["mark", "tries"], {"mark": "blue", "tries": 2}]]


def test_a_visitor_stamps_every_task_of_a_chain(client: SimpleNamespace, backend_url: str) -> None:
    canvas = _canvas(client.side)

    class Visitor(canvas.StampingVisitor):  # type: ignore[misc, name-defined]
        def on_signature(self, actual_sig: Any, **headers: Any) -> dict[str, Any]:
            return {"visited": "sig"}

        def on_chain_start(self, chain: Any, **headers: Any) -> dict[str, Any]:
            return {"flow": "chain"}

    flow = canvas.chain(client.stamped.s(1), client.stamped.s(), client.stamped.s())
    flow.stamp(Visitor())
    assert flow.apply_async().get(timeout=20) == 4
    stamps = {"flow": "chain", "visited": "sig"}
    assert _stamps_seen(backend_url, 3) == [[x, ["flow", "visited"], stamps] for x in (1, 2, 3)]


def test_stamps_reach_a_group_and_its_callback(client: SimpleNamespace, backend_url: str) -> None:
    canvas = _canvas(client.side)

    class Visitor(canvas.StampingVisitor):  # type: ignore[misc, name-defined]
        def on_signature(self, actual_sig: Any, **headers: Any) -> dict[str, Any]:
            return {}

        def on_callback(self, callback: Any, **headers: Any) -> dict[str, Any]:
            return {"via": "callback"}

    first = client.stamped.s(10)
    first.link(client.stamped.s())
    flow = canvas.group(first, client.stamped.s(20))
    flow.stamp(Visitor(), batch="b1")
    assert flow.apply_async().get(timeout=20) == [11, 21]
    seen = _stamps_seen(backend_url, 3)
    assert seen == [
        [10, ["batch"], {"batch": "b1"}],
        [11, ["batch", "via"], {"batch": "b1", "via": "callback"}],
        [20, ["batch"], {"batch": "b1"}],
    ]
