"""``--cpu-affinity``: each prefork child pinned to a CPU of its own."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from fastq import App
from fastq.errors import ConfigurationError
from fastq.worker.affinity import allowed_cpus, child_cpu

from tests.processes import fastq_worker, wait_until

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="pinning a process needs Linux"
)


def test_children_take_the_allowed_cpus_in_turn() -> None:
    assert [child_cpu(i, [2, 5, 7]) for i in range(5)] == [2, 5, 7, 2, 5]
    assert allowed_cpus() == sorted(os.sched_getaffinity(0))


@pytest.mark.parametrize("how", ["setting", "option"])
def test_a_pool_without_children_refuses_it(how: str) -> None:
    from fastq.worker import run_worker

    app = App("pinned", broker="memory://", set_as_current=False)
    if how == "setting":
        app.conf.worker_cpu_affinity = True
    option = {"cpu_affinity": True} if how == "option" else {}
    with pytest.raises(ConfigurationError, match="needs --pool prefork, not threads"):
        run_worker(app, pool="threads", **option)


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def cpus_of(pid: int) -> set[int]:
    return os.sched_getaffinity(pid)


def test_each_child_runs_on_its_own_cpu_and_a_replacement_on_the_same(
    worker_env: dict[str, str], broker_url: str, backend_url: str
) -> None:
    cpus = allowed_cpus()
    expected = {child_cpu(i, cpus) for i in range(2)}
    args = ("--pool", "prefork", "--concurrency", "2", "--cpu-affinity")
    with fastq_worker(*args, env=worker_env) as worker:
        assert "children pinned to CPUs" in worker.log()
        wait_until(lambda: len(children(worker.pid)) == 2)
        first = children(worker.pid)
        # A child pins itself first thing after the fork: the fork is seen a moment before.
        wait_until(lambda: all(len(cpus_of(pid)) == 1 for pid in first), timeout=20)
        assert set().union(*(cpus_of(pid) for pid in first)) == expected
        assert cpus_of(worker.pid) == set(cpus)  # the supervisor is not pinned
        with App("client", broker=broker_url, backend=backend_url, set_as_current=False) as app:
            assert app.send_task("interop.add", (2, 3)).get(timeout=20) == 5
            victim = next(iter(first))
            lost = cpus_of(victim)
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: len(children(worker.pid) - first) == 1, timeout=20)
            (replacement,) = children(worker.pid) - first
            wait_until(lambda: cpus_of(replacement) == lost, timeout=20)
            assert app.send_task("interop.add", (4, 5)).get(timeout=20) == 9


def test_a_cpu_it_may_not_use_is_logged_and_the_process_runs_unpinned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fastq.worker.affinity import pin

    before = os.sched_getaffinity(0)
    pin(1_000_000)  # no such CPU
    assert os.sched_getaffinity(0) == before
    assert "could not pin pool process" in caplog.text and "runs unpinned" in caplog.text
