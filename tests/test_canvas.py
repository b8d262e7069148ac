"""Canvas end to end on real Redis with fastq workers: chains, groups, chords, callbacks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import redis
from fastq import App, GroupResult, chain, chord, errors, group

from tests.apps import shared
from tests.processes import WorkerProcess, fastq_worker, wait_until

pytestmark = pytest.mark.usefixtures("runs")  # the tasks record into it: start it empty


@pytest.fixture
def worker(worker_env: dict[str, str]) -> Iterator[WorkerProcess]:
    with fastq_worker("--pool", "prefork", "--concurrency", "4", env=worker_env) as process:
        yield process
    assert "could not send" not in process.log(), process.log()


def test_chain_passes_each_result_on(task_client: App, worker: WorkerProcess) -> None:
    add, mul = task_client.tasks["interop.add"], task_client.tasks["interop.mul"]
    result = chain(add.s(1, 2), add.s(10), mul.s(2), add.si(100, 1)).apply_async()
    assert result.get(timeout=20) == 101
    assert result.parent is not None and result.parent.get(timeout=5) == 26
    assert (add.s(1, 1) | mul.s(5)).delay().get(timeout=20) == 10


def test_failing_chain_step_fails_the_rest_and_calls_errbacks(
    task_client: App, worker: WorkerProcess
) -> None:
    add, fail, errback = (task_client.tasks[f"interop.{n}"] for n in ("add", "fail", "errback"))
    result = chain(add.s(1, 2), fail.si("step two"), add.s(1)).apply_async(link_error=errback.s())
    # The last step never runs, but its result says why instead of staying PENDING forever.
    with pytest.raises(ValueError, match="step two"):
        result.get(timeout=20)
    assert result.parent is not None
    failed_id = result.parent.id
    wait_until(lambda: shared.errbacks() == [failed_id])


def test_link_callbacks_and_errbacks(
    task_client: App, worker: WorkerProcess, runs: redis.Redis
) -> None:
    add, fail = task_client.tasks["interop.add"], task_client.tasks["interop.fail"]
    errback, errback_request = (
        task_client.tasks["interop.errback"],
        task_client.tasks["interop.errback_request"],
    )
    record = task_client.tasks["interop.record"]
    # One callback is sent as a task, several as a group: both get the result first.
    assert add.apply_async((1, 2), link=record.s()).get(timeout=20) == 3
    assert add.apply_async((2, 2), link=[record.s(), record.s(0.01)]).get(timeout=20) == 4
    wait_until(lambda: runs.hgetall("runs") == {b"3": b"1", b"4": b"2"})
    failing = fail.apply_async(("bad",), link_error=[errback.s(), errback_request.s()])
    with pytest.raises(ValueError):
        failing.get(timeout=20)
    # Old style gets the id as a task; new style runs in the worker with (request, exc, tb).
    wait_until(lambda: len(shared.errbacks()) == 2)
    assert sorted(shared.errbacks()) == sorted(
        [failing.id, json.dumps([failing.id, "ValueError", "bad"])]
    )


def test_group_results_in_order(task_client: App, worker: WorkerProcess) -> None:
    add = task_client.tasks["interop.add"]
    result = group(add.s(i, i) for i in range(30)).apply_async()
    assert result.get(timeout=30) == [2 * i for i in range(30)]
    assert result.ready() and result.successful() and result.completed_count() == 30
    result.save()
    restored = GroupResult.restore(result.id, app=task_client)
    assert restored is not None and restored.get(timeout=5) == [2 * i for i in range(30)]


def test_chord_body_runs_once_with_every_result(
    task_client: App, worker: WorkerProcess, runs: redis.Redis
) -> None:
    add, tsum_once = task_client.tasks["interop.add"], task_client.tasks["interop.tsum_once"]
    # Many small header tasks on 4 processes: several finish at once, one must send the body.
    result = chord(add.s(i, i) for i in range(60))(tsum_once.s("body"))
    assert result.get(timeout=60) == sum(2 * i for i in range(60))
    assert isinstance(result.parent, GroupResult) and result.parent.ready()
    assert runs.hget("runs", "body") == b"1"


def test_failing_chord_part_fails_the_body(task_client: App, worker: WorkerProcess) -> None:
    add, fail = task_client.tasks["interop.add"], task_client.tasks["interop.fail"]
    tsum, errback = task_client.tasks["interop.tsum"], task_client.tasks["interop.errback"]
    result = chord([add.s(1, 1), fail.si("header"), add.s(2, 2)])(tsum.s().on_error(errback.s()))
    with pytest.raises(errors.ChordError, match=r"raised ValueError\('header'\)"):
        result.get(timeout=30)
    wait_until(lambda: shared.errbacks() == [result.id])


def test_expired_chord_part_ends_the_chord(task_client: App, worker: WorkerProcess) -> None:
    add, tsum = task_client.tasks["interop.add"], task_client.tasks["interop.tsum"]
    gone = add.si(2, 2).set(expires=datetime.now(timezone.utc) - timedelta(seconds=1))
    result = chord([add.s(1, 1), gone])(tsum.s())
    with pytest.raises(errors.ChordError, match="TaskRevokedError"):
        result.get(timeout=30)


def test_chains_in_a_chord_header(task_client: App, worker: WorkerProcess) -> None:
    add, tsum = task_client.tasks["interop.add"], task_client.tasks["interop.tsum"]
    # Each chain's last task is the chord part: (1 + 2) + 3 and 4 + 4.
    result = chord([add.s(1, 2) | add.s(3), add.s(4, 4)])(tsum.s())
    assert result.get(timeout=30) == 14


def test_chain_with_a_group_in_the_middle(task_client: App, worker: WorkerProcess) -> None:
    add, tsum = task_client.tasks["interop.add"], task_client.tasks["interop.tsum"]
    # add(1, 1) -> group(add(2, 1), add(2, 2)) -> tsum([3, 4]) -> add(7, 1)
    result = chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s(), add.s(1)).apply_async()
    assert result.get(timeout=30) == 8


def test_chord_in_a_chain(task_client: App, worker: WorkerProcess) -> None:
    add, tsum, mul = (
        task_client.tasks["interop.add"],
        task_client.tasks["interop.tsum"],
        task_client.tasks["interop.mul"],
    )
    workflow = add.s(1, 1) | chord([add.s(1), add.s(2)], tsum.s()) | mul.s(10)
    assert workflow.apply_async().get(timeout=30) == 70


# -- Task.replace --------------------------------------------------------------------------------
def test_replaced_task_gives_the_replacements_result(
    task_client: App, worker: WorkerProcess, runs: redis.Redis
) -> None:
    replace_with, record = (
        task_client.tasks["interop.replace_with"],
        task_client.tasks["interop.record"],
    )
    assert replace_with.delay(5, "task").get(timeout=20) == 6
    assert replace_with.delay(5, "chain").get(timeout=20) == 60
    assert replace_with.delay(5, "group").get(timeout=20) == [5, 6, 7]  # celery.accumulate
    # The replaced task's callbacks run once, on the replacement's result.
    assert replace_with.apply_async((1, "chain"), link=record.s()).get(timeout=20) == 20
    wait_until(lambda: runs.hget("runs", "20") == b"1")


def test_replaced_task_keeps_its_chain_and_errbacks(
    task_client: App, worker: WorkerProcess
) -> None:
    add, mul, replace_with, errback = (
        task_client.tasks[f"interop.{n}"] for n in ("add", "mul", "replace_with", "errback")
    )
    # add(1, 2) = 3 -> replaced by add(3, 1) | mul(10) = 40 -> mul(40, 2) = 80
    result = chain(add.s(1, 2), replace_with.s("chain"), mul.s(2)).apply_async()
    assert result.get(timeout=20) == 80
    assert result.parent is not None and result.parent.get(timeout=5) == 40
    # add(1, 1) = 2 -> a group -> [2, 3, 4] -> tsum: the rest of the chain follows the chord.
    tsum = task_client.tasks["interop.tsum"]
    assert chain(add.s(1, 1), replace_with.s("group"), tsum.s()).apply_async().get(timeout=20) == 9
    failing = chain(add.s(1, 1), replace_with.s("fail"), add.s(1)).apply_async(
        link_error=errback.s()
    )
    with pytest.raises(ValueError, match="replaced 2"):
        failing.get(timeout=20)
    assert failing.parent is not None
    replaced_id = failing.parent.id  # the replacement took its id, and its errback
    with pytest.raises(ValueError, match="replaced 2"):
        failing.parent.get(timeout=5)
    wait_until(lambda: shared.errbacks() == [replaced_id])


def test_replaced_tasks_in_a_chord_header(task_client: App, worker: WorkerProcess) -> None:
    add, replace_with, identity = (
        task_client.tasks[f"interop.{n}"] for n in ("add", "replace_with", "identity")
    )
    header = [replace_with.s(1, "task"), replace_with.s(2, "chain"), replace_with.s(3, "group")]
    result = chord([*header, add.s(1, 1)])(identity.s())
    assert result.get(timeout=30) == [2, 30, [3, 4, 5], 2]


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_replace_on_other_pools(pool: str, task_client: App, worker_env: dict[str, str]) -> None:
    add, mul, tsum, replace_with = (
        task_client.tasks[f"interop.{n}"] for n in ("add", "mul", "tsum", "replace_with")
    )
    with fastq_worker("--pool", pool, "--concurrency", "2", env=worker_env) as process:
        assert (add.s(1, 2) | replace_with.s("chain") | mul.s(2)).delay().get(timeout=20) == 80
        grouped = chain(add.s(1, 2), replace_with.s("group"), tsum.s()).apply_async()
        assert grouped.get(timeout=20) == 12  # tsum([3, 4, 5])
    assert "could not send" not in process.log(), process.log()


# A task whose child the supervisor killed (hard time limit, revoke with terminate) ends its
# workflow as a task that raised would: the supervisor sends the follow-ups the child would have.
def test_a_chain_step_killed_at_its_time_limit_fails_the_chain(
    task_client: App, worker: WorkerProcess
) -> None:
    add, record = task_client.tasks["interop.add"], task_client.tasks["interop.record"]
    errback, errback_request = (
        task_client.tasks["interop.errback"],
        task_client.tasks["interop.errback_request"],
    )
    slow = record.si("slow", 30).set(time_limit=1)
    result = chain(add.s(1, 2), slow, add.s(1)).apply_async(
        link_error=[errback.s(), errback_request.s()]
    )
    with pytest.raises(errors.TimeLimitExceeded):
        result.get(timeout=30)
    assert result.parent is not None
    killed = result.parent.id
    wait_until(lambda: len(shared.errbacks()) == 2)
    assert sorted(shared.errbacks()) == sorted(
        [killed, json.dumps([killed, "TimeLimitExceeded", "hard time limit exceeded"])]
    )


def test_a_chord_part_killed_at_its_time_limit_fails_the_body(
    task_client: App, worker: WorkerProcess
) -> None:
    add, record = task_client.tasks["interop.add"], task_client.tasks["interop.record"]
    tsum, errback = task_client.tasks["interop.tsum"], task_client.tasks["interop.errback"]
    slow = record.si("slow", 30).set(time_limit=1)
    result = chord([add.s(1, 1), slow])(tsum.s().on_error(errback.s()))
    with pytest.raises(errors.ChordError, match="TimeLimitExceeded"):
        result.get(timeout=30)
    wait_until(lambda: shared.errbacks() == [result.id])


def test_a_terminated_chord_part_ends_the_chord(
    task_client: App, worker: WorkerProcess, runs: redis.Redis
) -> None:
    add, record = task_client.tasks["interop.add"], task_client.tasks["interop.record"]
    tsum = task_client.tasks["interop.tsum"]
    result = chord([add.s(1, 1), record.si("long", 30)])(tsum.s())
    wait_until(lambda: runs.hexists("started", "long"), timeout=20)
    assert isinstance(result.parent, GroupResult)
    result.parent.results[1].revoke(terminate=True, signal="SIGKILL")
    with pytest.raises(errors.ChordError, match="TaskRevokedError"):
        result.get(timeout=30)
