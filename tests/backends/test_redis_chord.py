"""Groups and the chord counter in the Redis result backend, in Celery's key layout."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import celery
import pytest
import redis
from celery.result import GroupResult as CeleryGroupResult
from fastq import App, AsyncResult, GroupResult, errors, states
from fastq.backends.base import ChordJoin


@pytest.fixture
def celery_app(broker_url: str, backend_url: str) -> Iterator[celery.Celery]:
    app = celery.Celery("c", broker=broker_url, backend=backend_url, set_as_current=False)
    yield app
    app.close()


def test_group_save_and_restore_both_ways(app: App, celery_app: celery.Celery) -> None:
    ours = GroupResult("g1", [AsyncResult("a", app), AsyncResult("b", app)], app=app).save()
    theirs = CeleryGroupResult.restore("g1", app=celery_app)
    assert theirs is not None and [r.id for r in theirs.results] == ["a", "b"]
    CeleryGroupResult("g2", [celery_app.AsyncResult("c")], app=celery_app).save()
    restored = GroupResult.restore("g2", app=app)
    assert restored is not None and restored.id == "g2"
    assert [r.id for r in restored.results] == ["c"]
    assert GroupResult.restore("missing", app=app) is None
    ours.delete()
    assert GroupResult.restore("g1", app=app) is None


def test_nested_results_keep_their_shape(app: App) -> None:
    parent = AsyncResult("p", app)
    inner = GroupResult("inner", [AsyncResult("x", app, parent=parent)], app=app)
    GroupResult("outer", [inner, AsyncResult("y", app)], app=app).save()
    restored = GroupResult.restore("outer", app=app)
    assert restored is not None
    first = restored.results[0]
    assert isinstance(first, GroupResult) and first.id == "inner"
    leaf = first.results[0]
    assert leaf.id == "x" and leaf.parent is not None and leaf.parent.id == "p"


def test_group_state_and_values(app: App) -> None:
    backend = app.backend
    group = GroupResult("g", [AsyncResult(t, app) for t in ("a", "b", "c")], app=app)
    assert not group.ready() and group.completed_count() == 0
    backend.mark_as_done("a", 1)
    backend.mark_as_failure("b", ValueError("no"))
    assert group.completed_count() == 1 and group.failed() and group.waiting()
    backend.mark_as_done("c", 3)
    assert group.ready() and not group.successful()
    assert group.get(timeout=1, propagate=False)[0] == 1
    with pytest.raises(ValueError, match="no"):
        group.get(timeout=1)


def test_group_get_times_out_as_a_whole(app: App) -> None:
    group = GroupResult("g", [AsyncResult("never", app)], app=app)
    with pytest.raises(errors.TimeoutError):
        group.get(timeout=0.2)


def finish(app: App, gid: str, parts: list[tuple[str, int, str, object]]) -> list[ChordJoin]:
    joins = []
    for task_id, index, state, value in parts:
        join = app.backend.chord_part_return(gid, task_id, index, state, value)
        if join is not None:
            joins.append(join)
    return joins


def test_only_the_last_part_gets_the_results_in_header_order(
    app: App, backend_redis: redis.Redis
) -> None:
    app.backend.set_chord_size("c1", 3)
    # Parts finish out of order; the body must get them in header order.
    joins = finish(app, "c1", [("t2", 2, "SUCCESS", 30), ("t0", 0, "SUCCESS", 10)])
    assert joins == []
    assert backend_redis.zcard("celery-taskset-meta-c1.j") == 2
    (join,) = finish(app, "c1", [("t1", 1, "SUCCESS", 20)])
    assert join.values() == [10, 20, 30]
    # Celery's part format: [1, tid, state, result]
    stored = [json.loads(v) for v in backend_redis.zrange("celery-taskset-meta-c1.j", 0, -1)]
    assert stored[0] == [1, "t0", "SUCCESS", 10]
    app.backend.chord_done(join)
    assert backend_redis.get("celery-taskset-meta-c1.c") == b"done"
    assert not backend_redis.exists("celery-taskset-meta-c1.j", "celery-taskset-meta-c1.s")
    # A duplicate delivery of a part after the body was sent does nothing.
    assert finish(app, "c1", [("t1", 1, "SUCCESS", 20)]) == []
    assert not backend_redis.exists("celery-taskset-meta-c1.j")


def test_a_duplicate_part_is_counted_once(app: App) -> None:
    app.backend.set_chord_size("c2", 2)
    assert finish(app, "c2", [("t0", 0, "SUCCESS", 1), ("t0", 0, "SUCCESS", 1)]) == []
    (join,) = finish(app, "c2", [("t1", 1, "SUCCESS", 2)])
    assert join.values() == [1, 2]


def test_a_claimed_chord_is_not_sent_again_by_a_late_copy_of_its_last_part(app: App) -> None:
    app.backend.set_chord_size("c5", 1)
    (join,) = finish(app, "c5", [("t0", 0, "SUCCESS", 1)])
    # Redelivered while the first worker is still sending the body: the claim turns it away.
    assert finish(app, "c5", [("t0", 0, "SUCCESS", 1)]) == []
    app.backend.chord_done(join)
    assert finish(app, "c5", [("t0", 0, "SUCCESS", 1)]) == []


def test_a_failed_part_fails_the_chord_with_celerys_message(app: App) -> None:
    app.backend.set_chord_size("c3", 2)
    (join,) = finish(
        app, "c3", [("t0", 0, "SUCCESS", 1), ("t1", 1, states.FAILURE, ValueError("boom"))]
    )
    with pytest.raises(errors.ChordError) as info:
        join.values()
    assert str(info.value) == "Dependency t1 raised ValueError('boom')"
    assert isinstance(info.value.__cause__, ValueError)


def test_racing_workers_send_the_body_once(app: App, backend_url: str) -> None:
    size = 200
    app.backend.set_chord_size("race", size)
    joins: list[ChordJoin] = []
    barrier = threading.Barrier(8)

    def worker(offset: int) -> None:
        # Each thread has its own app (its own connections), like separate worker processes.
        other = App("w", backend=backend_url, set_as_current=False)
        barrier.wait()
        joins.extend(
            finish(other, "race", [(f"t{i}", i, "SUCCESS", i) for i in range(offset, size, 8)])
        )
        other.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(joins) == 1
    assert joins[0].values() == list(range(size))


def test_unordered_chords_use_a_list(broker_url: str, backend_url: str) -> None:
    app = App(
        "u",
        broker=broker_url,
        backend=backend_url,
        set_as_current=False,
        result_backend_transport_options={"result_chord_ordered": False},
    )
    app.backend.set_chord_size("c4", 2)
    finish(app, "c4", [("t1", 1, "SUCCESS", "b")])
    assert redis.Redis.from_url(backend_url).type("celery-taskset-meta-c4.j") == b"list"
    (join,) = finish(app, "c4", [("t0", 0, "SUCCESS", "a")])
    assert join.values() == ["b", "a"]  # arrival order, as Celery's list layout gives
    app.close()


def test_celery_completes_a_chord_fastq_counts(app: App, celery_app: celery.Celery) -> None:
    """A Celery 5 worker returning the last part finds fastq's counter and sees it complete."""
    from celery.app.task import Context
    from celery.canvas import Signature as CelerySignature

    app.backend.set_chord_size("mixed", 2)
    assert finish(app, "mixed", [("t0", 0, "SUCCESS", 5)]) == []
    sent = []
    body = {"task": "t.body", "args": [], "kwargs": {}, "options": {}, "immutable": False}
    request = Context(id="t1", group="mixed", group_index=1, chord=body)

    # Celery sends the body with ``callback.delay(results)``: catch it instead of publishing.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CelerySignature, "delay", lambda self, *args, **kw: sent.append(args))
        celery_app.backend.on_chord_part_return(request, "SUCCESS", 6)
    assert sent == [([5, 6],)]
