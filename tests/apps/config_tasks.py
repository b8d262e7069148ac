"""The tasks of ``config_app`` and ``celery_config_app``, registered on either kind of app."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any


def limited(index: int) -> float:
    """Rate-limited by ``CELERY_ANNOTATIONS``: when it ran."""
    return time.time()


def dies_once(marker: str) -> int:
    """Kills its worker child the first time it runs (late-acknowledged); says which run it is."""
    path = Path(marker)
    runs = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(runs))
    if runs == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return runs


def shout(text: str) -> None:
    """Prints (``worker_redirect_stdouts`` sends it to the log)."""
    print(text)


def pid() -> int:
    """The pool process that ran it."""
    return os.getpid()


def register(app: Any) -> Any:
    app.task(name="cfg.limited")(limited)
    app.task(name="cfg.pid")(pid)
    app.task(name="cfg.shout")(shout)
    app.task(name="cfg.dies_once", acks_late=True)(dies_once)
    return app
