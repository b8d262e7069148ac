"""The client side of one peer, run with that peer's own Python (its virtualenv):

    <venv>/bin/python bench/peers/driver.py NAME ACTION [N]

ACTION is ``info`` (what the adapter is), ``enqueue`` (N tasks one at a time), ``batch`` (N tasks
through the system's batch API) or ``latency`` (N tasks sent one at a time, each result awaited).
It prints one JSON object on its last line of standard output; the harness reads nothing else.
Settings come from the environment the harness sets (``PEERS_*``, see ``adapters/__init__.py``).
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from importlib import metadata


def main(argv: list[str]) -> int:
    name, action = argv[0], argv[1]
    n = int(argv[2]) if len(argv) > 2 else 0
    try:
        adapter = importlib.import_module(f"adapters.{name}")
        if action == "info":
            out: dict[str, object] = {
                "version": metadata.version(adapter.DIST),
                "python": sys.version.split()[0],
                "config": adapter.CONFIG,
                "batch": adapter.BATCH,
                "results": adapter.RESULTS,
                "stored": adapter.STORED,
                "workers": [adapter.worker_argv(results) for results in (False, True)],
            }
        elif action == "enqueue":
            out = {"seconds": adapter.enqueue(n)}
        elif action == "batch":
            out = {"seconds": adapter.enqueue_batch(n)}
        elif action == "latency":
            out = {"ms": adapter.latency(n)}
        else:
            raise SystemExit(f"unknown action {action!r}")
    except Exception as exc:
        traceback.print_exc()
        out = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out), flush=True)
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    raise SystemExit(main(sys.argv[1:]))
