"""``fastq.stamping``: the same canvas stamped by fastq and by Celery (in this process, nothing
sent) ends with the same stamps on every signature: chords, append_stamps, restamping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import celery.canvas
import fastq.canvas
import pytest
from celery import Celery
from fastq import App

SIDES = {"fastq": fastq.canvas, "celery": celery.canvas}


def _stamps(sig: Any) -> dict[str, Any]:
    options = sig["options"]  # a signature, or its dict form
    names = sorted(options.get("stamped_headers") or [])
    return {"stamped_headers": names, **{n: options.get(n) for n in names}}


def _visitor(canvas: Any) -> Any:
    class Visitor(canvas.StampingVisitor):  # type: ignore[misc, name-defined]
        def on_signature(self, actual_sig: Any, **headers: Any) -> dict[str, Any]:
            return {"on_sig": actual_sig.task}

        def on_chord_body(self, sig: Any, **header: Any) -> dict[str, Any]:
            return {"part": "body"}

        def on_group_start(self, group: Any, **headers: Any) -> dict[str, Any]:
            return {"part": "header"}

        def on_errback(self, errback: Any, **header: Any) -> dict[str, Any]:
            return {"err": True}

    return Visitor()


def _stamped_chord(side: str, append: bool) -> list[dict[str, Any]]:
    canvas = SIDES[side]
    app: Any = (
        Celery("s", set_as_current=False)
        if side == "celery"
        else App("s", broker="memory://", set_as_current=False)
    )
    first = canvas.signature("t.a", (1,), app=app)
    first.link_error(canvas.signature("t.err", app=app))
    flow = canvas.chord(
        [first, canvas.signature("t.b", (2,), app=app)], canvas.signature("t.c", app=app)
    )
    flow.stamp(_visitor(canvas), append_stamps=append, run="r1")
    flow.stamp(append_stamps=append, run="r2")  # restamped
    header = list(getattr(flow.tasks, "tasks", flow.tasks))  # Celery makes it a group
    err = header[0]["options"]["link_error"][0]
    return [_stamps(s) for s in (*header, err, flow.body)]


@pytest.mark.parametrize("append", [False, True])
def test_a_chord_is_stamped_as_celery_stamps_it(append: bool) -> None:
    assert _stamped_chord("fastq", append) == _stamped_chord("celery", append)


@pytest.fixture
def app() -> Iterator[App]:
    app = App("s", broker="memory://", set_as_current=False)
    yield app
    app.close()


def test_stamps_go_in_the_headers(app: App) -> None:
    sig = fastq.canvas.signature("t.a", (1,), app=app).stamp(mark=1)
    message = app.build_message("t.a", (1,), **fastq.stamping.sending_options(dict(sig.options)))
    assert message.headers["stamped_headers"] == ["mark"]
    assert message.headers["stamps"] == {"mark": 1}
