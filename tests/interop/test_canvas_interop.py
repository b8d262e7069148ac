"""Canvas across fastq and real Celery: workflows started by one finish on the other's workers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import celery
import pytest
import redis
from celery.exceptions import ChordError as CeleryChordError
from fastq import App, chain, chord, errors, group

from tests.apps import shared
from tests.processes import celery_worker, fastq_worker, wait_until

pytestmark = pytest.mark.usefixtures("runs")  # the tasks record into it: start it empty


@pytest.fixture
def celery_client(broker_url: str, backend_url: str) -> Iterator[celery.Celery]:
    """A Celery client that only has the names, as a producer usually does."""
    app = celery.Celery("client", broker=broker_url, backend=backend_url, set_as_current=False)
    yield app
    app.close()


# -- started by Celery, run by fastq -------------------------------------------------------------
def test_celery_workflows_complete_on_fastq_workers(
    celery_client: celery.Celery, worker_env: dict[str, str], runs: redis.Redis
) -> None:
    sig = celery_client.signature
    with fastq_worker("--concurrency", "2", env=worker_env) as worker:
        steps = celery.chain(
            sig("interop.add", (1, 2)), sig("interop.add", (10,)), sig("interop.mul", (2,))
        )
        result = steps.apply_async()
        assert result.get(timeout=30) == 26
        assert result.parent.get(timeout=5) == 13
        header = [sig("interop.add", (i, i)) for i in range(20)]
        body = sig("interop.tsum_once", ("celery-chord",))
        assert celery.chord(header)(body).get(timeout=30) == sum(2 * i for i in range(20))
        assert runs.hget("runs", "celery-chord") == b"1"
        members = celery.group(sig("interop.add", (i, 1)) for i in range(5)).apply_async()
        assert members.get(timeout=30) == [1, 2, 3, 4, 5]
        # Celery upgrades group | task inside a chain to a chord the fastq worker then runs.
        mixed = celery.chain(
            sig("interop.add", (1, 1)),
            celery.group(sig("interop.add", (1,)), sig("interop.add", (2,))),
            sig("interop.tsum"),
        )
        assert mixed.apply_async().get(timeout=30) == 7
        failing = celery_client.send_task(
            "interop.fail",
            ("from celery",),
            link_error=[sig("interop.errback"), sig("interop.errback_request")],
        )
        with pytest.raises(ValueError, match="from celery"):
            failing.get(timeout=30)
        wait_until(lambda: len(shared.errbacks()) == 2)
        log = worker.log()
    assert sorted(shared.errbacks()) == sorted(
        [failing.id, json.dumps([failing.id, "ValueError", "from celery"])]
    )
    assert "could not send" not in log, log


def test_celery_chord_with_a_failing_part_on_fastq_workers(
    celery_client: celery.Celery, worker_env: dict[str, str]
) -> None:
    sig = celery_client.signature
    with fastq_worker("--concurrency", "2", env=worker_env):
        header = [sig("interop.add", (1, 1)), sig("interop.fail", ("part",))]
        body = sig("interop.tsum").on_error(sig("interop.errback"))
        result = celery.chord(header)(body)
        wait_until(lambda: shared.errbacks() == [result.id])
        # A fresh handle: Celery's get() on the original may raise the header's own error
        # first, as it checks the parents while it waits.
        with pytest.raises(CeleryChordError, match=r"raised ValueError\('part'\)"):
            celery_client.AsyncResult(result.id).get(timeout=30)


# -- started by fastq, run by Celery -------------------------------------------------------------
def test_fastq_chain_completes_on_celery_workers(
    task_client: App, worker_env: dict[str, str]
) -> None:
    add, mul, fail = (task_client.tasks[f"interop.{n}"] for n in ("add", "mul", "fail"))
    errback = task_client.tasks["interop.errback"]
    with celery_worker("-P", "solo", env=worker_env):
        result = chain(add.s(1, 2), add.s(10), mul.s(2), add.si(100, 1)).apply_async()
        assert result.get(timeout=30) == 101
        assert result.parent is not None and result.parent.get(timeout=5) == 26
        broken = chain(add.s(1, 2), fail.si("celery step"), add.s(1)).apply_async(
            link_error=errback.s()
        )
        with pytest.raises(ValueError, match="celery step"):
            broken.get(timeout=30)  # Celery fails the steps that will not run, like fastq
        assert broken.parent is not None
        failed_id = broken.parent.id
        wait_until(lambda: shared.errbacks() == [failed_id])


def test_fastq_chord_runs_on_celery_workers(
    task_client: App, worker_env: dict[str, str], runs: redis.Redis
) -> None:
    add, tsum_once = task_client.tasks["interop.add"], task_client.tasks["interop.tsum_once"]
    fail, tsum = task_client.tasks["interop.fail"], task_client.tasks["interop.tsum"]
    errback = task_client.tasks["interop.errback"]
    with celery_worker("-P", "threads", "-c", "4", env=worker_env):
        result = chord(add.s(i, i) for i in range(30))(tsum_once.s("fastq-chord"))
        assert result.get(timeout=60) == sum(2 * i for i in range(30))
        assert runs.hget("runs", "fastq-chord") == b"1"
        assert group(add.s(i, 1) for i in range(5)).apply_async().get(timeout=30) == [1, 2, 3, 4, 5]
        failing = chord([add.s(1, 1), fail.si("in celery")])(tsum.s().on_error(errback.s()))
        with pytest.raises(errors.ChordError, match=r"raised ValueError\('in celery'\)"):
            failing.get(timeout=30)
        wait_until(lambda: shared.errbacks() == [failing.id])


# -- both kinds of workers on one queue ----------------------------------------------------------
def test_mixed_workers_share_chains_and_chords(
    task_client: App, worker_env: dict[str, str], runs: redis.Redis
) -> None:
    add, tsum_once = task_client.tasks["interop.add"], task_client.tasks["interop.tsum_once"]
    with (
        celery_worker("-P", "threads", "-c", "2", env=worker_env) as celery_side,
        fastq_worker("--concurrency", "2", env=worker_env) as fastq_side,
    ):
        chains = [
            chain(*(add.s(i, 1) if j == 0 else add.s(1) for j in range(6))) for i in range(10)
        ]
        results = [c.apply_async() for c in chains]
        chords = [
            chord(add.s(i, j) for j in range(20))(tsum_once.s(f"mixed-{i}")) for i in range(5)
        ]
        assert [r.get(timeout=60) for r in results] == [i + 6 for i in range(10)]
        assert [c.get(timeout=60) for c in chords] == [20 * i + 190 for i in range(5)]
        log = fastq_side.log()
    counts = {k.decode(): int(v) for k, v in runs.hgetall("runs").items()}
    assert counts == {f"mixed-{i}": 1 for i in range(5)}, "a chord body ran twice or never"
    assert "Traceback" not in celery_side.log() and "could not send" not in log


# -- maps and Task.replace, both ways ------------------------------------------------------------
def test_celery_maps_run_on_fastq_workers(
    celery_client: celery.Celery, worker_env: dict[str, str]
) -> None:
    sig = celery_client.signature
    with fastq_worker("--concurrency", "2", env=worker_env) as worker:
        parts = celery.chunks(sig("interop.add"), [(1, 1), (2, 2), (3, 3)], 2, app=celery_client)
        assert parts.apply_async().get(timeout=30) == [[2, 4], [6]]
        sums = celery.xmap(sig("interop.tsum"), [[1, 2], [3]], app=celery_client)
        assert sums.apply_async().get(timeout=30) == [3, 3]
        pairs = celery.xstarmap(sig("interop.mul"), [(2, 3), (4, 5)], app=celery_client)
        assert pairs.apply_async().get(timeout=30) == [6, 20]
        log = worker.log()
    assert "could not send" not in log, log


def test_fastq_maps_run_on_celery_workers(task_client: App, worker_env: dict[str, str]) -> None:
    add, tsum = task_client.tasks["interop.add"], task_client.tasks["interop.tsum"]
    with celery_worker("-P", "threads", "-c", "2", env=worker_env):
        assert add.chunks([(i, i) for i in range(5)], 2).apply_async().get(timeout=30) == [
            [0, 2],
            [4, 6],
            [8],
        ]
        assert tsum.map([[1, 2], [3]]).apply_async().get(timeout=30) == [3, 3]
        assert add.starmap([(1, 2), (3, 4)]).apply_async().get(timeout=30) == [3, 7]


@pytest.mark.parametrize("kind", ["fastq", "celery"])
def test_replace_in_workflows_from_either_client(
    kind: str, celery_client: celery.Celery, task_client: App, worker_env: dict[str, str]
) -> None:
    """The same workflows, with steps that replace themselves, give the same results on fastq
    workers as on Celery's, whichever client sent them."""
    sig = celery_client.signature
    add, mul, replace_with, identity = (
        task_client.tasks[f"interop.{n}"] for n in ("add", "mul", "replace_with", "identity")
    )
    start = fastq_worker if kind == "fastq" else celery_worker
    with start("--concurrency", "2", env=worker_env) as worker:
        # Celery client: add(1, 2) = 3 -> add(3, 1) | mul(10) = 40 -> mul(40, 2) = 80
        steps = celery.chain(
            sig("interop.add", (1, 2)),
            sig("interop.replace_with", ("chain",)),
            sig("interop.mul", (2,)),
        )
        result = steps.apply_async()
        assert result.get(timeout=30) == 80
        assert result.parent.get(timeout=5) == 40  # the replaced task's id has the result
        grouped = celery.chain(
            sig("interop.add", (1, 1)),
            sig("interop.replace_with", ("group",)),
            sig("interop.tsum"),
        )
        assert grouped.apply_async().get(timeout=30) == 9  # tsum([2, 3, 4])
        header = [
            sig("interop.replace_with", (1, "task")),
            sig("interop.replace_with", (3, "group")),
        ]
        assert celery.chord(header)(sig("interop.identity")).get(timeout=30) == [2, [3, 4, 5]]
        # fastq client
        ours = chain(add.s(1, 2), replace_with.s("chain"), mul.s(2)).apply_async()
        assert ours.get(timeout=30) == 80
        assert ours.parent is not None and ours.parent.get(timeout=5) == 40
        parts = [replace_with.s(2, "chain"), replace_with.s(1, "group")]
        assert chord(parts)(identity.s()).get(timeout=30) == [30, [1, 2, 3]]
        log = worker.log()
    assert "could not send" not in log and "Traceback" not in log, log
