"""``Task`` behaviour that needs no worker, compared with Celery's where Celery defines it."""

from __future__ import annotations

from typing import Any

import celery
import pytest
from fastq import App


def _apps() -> list[Any]:
    fastq_app = App("typing", broker="memory://", set_as_current=False)
    celery_app = celery.Celery("typing", broker="memory://", set_as_current=False)
    return [fastq_app, celery_app]


@pytest.mark.parametrize("flavour", ["fastq", "celery"])
def test_wrong_arguments_raise_before_sending(flavour: str) -> None:
    app = _apps()[0 if flavour == "fastq" else 1]

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.bound", bind=True)
    def bound(self: Any, x: int) -> int:
        return x

    @app.task(name="t.loose", typing=False)
    def loose(x: int) -> int:
        return x

    # The wording differs (Celery calls a stub with the same parameters), the cause does not.
    with pytest.raises(TypeError, match=r"missing .*'y'"):
        add.delay(1)
    with pytest.raises(TypeError, match="positional argument"):
        bound.apply_async((1, 2))
    with pytest.raises(TypeError, match="keyword argument 'z'"):
        add.apply_async((1, 2), {"z": 3})
    with pytest.raises(TypeError):
        add.s(1).delay()  # still one short when sent
    if flavour == "fastq":  # sent: nothing checks it (memory:// has no worker here)
        assert loose.apply_async((1, 2, 3)).id
