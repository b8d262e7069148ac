"""One module per system, each with the same interface (read by ``driver.py``):

- ``DIST``: the distribution whose version is reported;
- ``CONFIG``: the worker configuration, in words (it goes into the results table);
- ``BATCH``: the batch enqueue API's name, or None when the system has none;
- ``RESULTS``: whether the system can store results;
- ``STORED``: where stored results can be counted (``{"how": "dbsize"|"scan"|"hlen", ...}``),
  so the harness knows when a results-on drain has really ended;
- ``worker_argv(results) -> list[list[str]]``: the command(s) starting 2 worker processes;
- ``enqueue(n) -> seconds``: n tasks sent one at a time;
- ``enqueue_batch(n) -> seconds``: n tasks sent through ``BATCH`` (only where there is one);
- ``latency(n) -> [ms]``: n tasks sent one at a time, each result awaited (results on).

Every task runs ``counting.task_done()`` and nothing else. Settings from the harness:
``PEERS_BROKER`` (Redis URL, database 0), ``PEERS_BACKEND`` (database 2, for systems that keep
results apart), ``PEERS_RESULTS`` (``1`` when results are on), ``PEERS_QUEUE``.
"""

from __future__ import annotations

import os
import sys

BROKER = os.environ.get("PEERS_BROKER", "redis://127.0.0.1:6379/0")
BACKEND = os.environ.get("PEERS_BACKEND", "redis://127.0.0.1:6379/2")
RESULTS_ON = os.environ.get("PEERS_RESULTS") == "1"
QUEUE = os.environ.get("PEERS_QUEUE", "bench")
#: This interpreter (the peer's virtualenv); worker commands start with it.
PYTHON = sys.executable
#: Tasks awaited before the timed latency samples (connections, imports, first fetch).
WARMUP = 10


def script(name: str, args: str) -> list[str]:
    """The command line of this virtualenv's console script ``name`` with ``args`` (words)."""
    return [PYTHON, os.path.join(os.path.dirname(PYTHON), name), *args.split()]
