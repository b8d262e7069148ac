"""The prefork supervisor's crash-loop brake: a child that exits cleanly (as at
``--max-tasks-per-child``) is replaced at once however short its life; only a child that dies
fast is replaced after a growing pause."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import sys
from fastq.worker.supervisor import Supervisor

path, code = sys.argv[1], int(sys.argv[2])

def child_main(index, consumer_id, reporter, revoked_fd):
    with open(path, "a") as f:
        f.write("spawned\\n")
    return code

sys.exit(Supervisor(1, child_main, lambda cid: 0, lambda i, g: f"c{i}.{g}").run())
"""


def _spawns_in(tmp_path: Path, exit_code: int, seconds: float) -> int:
    path = tmp_path / f"spawns-{exit_code}.txt"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(path), str(exit_code)])
    try:
        time.sleep(seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize("exit_code", [0, 1], ids=["clean-exit", "crash"])
def test_only_a_crash_is_braked(tmp_path: Path, exit_code: int) -> None:
    spawns = _spawns_in(tmp_path, exit_code, 1.5)
    if exit_code == 0:
        assert spawns >= 20, spawns  # a child at its task limit is replaced without a pause
    else:
        assert 2 <= spawns <= 8, spawns  # 0.2 + 0.4 + 0.8 s of pauses: a crash loop is braked


STOPPED_SCRIPT = """
import os, time
from fastq.worker.supervisor import Supervisor

def child_main(index, consumer_id, reporter, revoked_fd):
    time.sleep(20)
    return 0

supervisor = Supervisor(1, child_main, lambda cid: 0, lambda i, g: f"c{i}.{g}")
supervisor.stopping = True  # a stop that came after the decision to replace a child
supervisor._spawn(0)
[pid] = list(supervisor.children)
_, status = os.waitpid(pid, 0)
print(os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1)
"""


def test_a_child_started_while_the_worker_stops_is_stopped() -> None:
    """A stop signal that lands between the supervisor's decision to replace an exited child
    and the new child's start reached only the children there were: the new one ran on, and
    the warm stop waited for it for ever (seen in CI with ``--max-memory-per-child``)."""
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_SCRIPT], capture_output=True, text=True, timeout=15
    )
    assert done.stdout.strip() == str(int(signal.SIGTERM)), done.stdout + done.stderr
