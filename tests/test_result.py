"""``AsyncResult``, ``ResultSet`` and ``GroupResult`` as Celery documents them (``fastq.result``),
on the in-process result backend: results are stored by hand, as a worker would."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from fastq import App, AsyncResult, GroupResult, errors, states
from fastq._state import set_task_join_will_block
from fastq.result import ResultSet, allow_join_result

from tests.processes import celery_worker, fastq_worker


@pytest.fixture
def app() -> Iterator[App]:
    store = uuid.uuid4().hex  # a result store of its own
    application = App(
        "res", broker="memory://", backend=f"cache+memory://{store}", set_as_current=False
    )
    yield application
    application.close()


def done(app: App, task_id: str, value: object, children: list[object] | None = None) -> None:
    meta = app.backend.build_meta(task_id, value, states.SUCCESS)
    meta["children"] = children or []
    app.backend.store_many([(task_id, meta)])


def test_str_is_the_id_and_date_done_a_datetime(app: App) -> None:
    done(app, "a", 1)
    result = AsyncResult("a", app=app)
    assert str(result) == "a" and f"{result}" == "a"
    assert isinstance(result.date_done, datetime)
    assert result.date_done.tzinfo is not None
    assert abs((datetime.now(timezone.utc) - result.date_done).total_seconds()) < 60
    assert AsyncResult("never", app=app).date_done is None
    assert str(GroupResult("g", [result], app=app)) == "g"


def test_result_set_membership_join_and_callback(app: App) -> None:
    for i in range(3):
        done(app, f"t{i}", i * 10)
    rs = ResultSet([AsyncResult("t0", app=app)], app=app)
    rs.add(AsyncResult("t1", app=app))
    rs.add(AsyncResult("t1", app=app))  # already there
    rs.update([AsyncResult("t2", app=app), AsyncResult("t0", app=app)])
    assert [r.id for r in rs] == ["t0", "t1", "t2"] and len(rs) == 3
    assert rs.ready() and rs.successful() and not rs.failed() and rs.completed_count() == 3
    assert rs.join(timeout=1) == rs.join_native(timeout=1) == rs.get(timeout=1) == [0, 10, 20]
    seen: list[tuple[str, object]] = []
    assert rs.join(callback=lambda tid, value: seen.append((tid, value))) == []
    assert seen == [("t0", 0), ("t1", 10), ("t2", 20)]
    rs.remove("t1")
    rs.discard("t1")  # not there: no error
    with pytest.raises(KeyError):
        rs.remove("t1")
    rs.clear()
    assert len(rs) == 0 and rs.supports_native_join


def test_maybe_throw_raises_the_first_failure(app: App) -> None:
    done(app, "ok", 1)
    app.backend.mark_as_failure("bad", ValueError("boom"))
    rs = ResultSet([AsyncResult("ok", app=app), AsyncResult("bad", app=app)], app=app)
    with pytest.raises(ValueError, match="boom"):
        rs.maybe_throw()
    rs.maybe_throw(propagate=False)
    AsyncResult("ok", app=app).maybe_throw()


def test_collect_follows_the_children(app: App) -> None:
    # "a" sent a group g of b1, b2; b2 sent c.
    done(app, "c", 4)
    done(app, "b1", 1)
    done(app, "b2", 2, children=[[["c", None], None]])
    done(app, "a", None, children=[[["g", None], [[["b1", None], None], [["b2", None], None]]]])
    collected = [(str(node), value) for node, value in AsyncResult("a", app=app).collect()]
    assert collected == [("a", None), ("g", [1, 2]), ("b1", 1), ("b2", 2), ("c", 4)]


def test_collect_stops_at_a_result_not_ready_unless_intermediate(app: App) -> None:
    done(app, "a", None, children=[[["pending", None], None]])
    nodes = AsyncResult("a", app=app).iterdeps(intermediate=True)
    assert [str(n) for _, n in nodes] == ["a", "pending"]
    walk = AsyncResult("a", app=app).iterdeps()
    assert [str(n) for _, n in [next(walk), next(walk)]] == ["a", "pending"]
    with pytest.raises(errors.IncompleteStream):
        next(walk)


def test_get_in_a_pool_process_refuses_unless_allowed(app: App) -> None:
    done(app, "x", 5)
    result = AsyncResult("x", app=app)
    set_task_join_will_block(True)  # what a worker's pool process sets
    try:
        with pytest.raises(RuntimeError, match=r"never call result\.get"):
            result.get(timeout=1)
        with pytest.raises(RuntimeError, match=r"never call result\.get"):
            ResultSet([result], app=app).join(timeout=1)
        assert result.get(timeout=1, disable_sync_subtasks=False) == 5
        with allow_join_result():
            assert result.get(timeout=1) == 5
        with pytest.raises(RuntimeError):
            result.get(timeout=1)
    finally:
        set_task_join_will_block(False)


@pytest.mark.parametrize("flavour", ["fastq", "celery"])
def test_custom_states_reach_get_on_message(
    flavour: str, broker_url: str, backend_url: str
) -> None:
    """``update_state(state="PROGRESS")`` in a task, followed by a client's
    ``get(on_message=...)``, on a fastq worker and on a Celery worker alike."""
    client = App("client", broker=broker_url, backend=backend_url, set_as_current=False)
    env = {"FASTQ_BROKER_URL": broker_url, "FASTQ_RESULT_BACKEND": backend_url}
    start = fastq_worker if flavour == "fastq" else celery_worker
    seen: list[tuple[str, object]] = []
    with start("--pool", "solo", app=f"tests.apps.library_{flavour}", env=env):
        result = client.send_task("library.progress", (2, 0.7))
        value = result.get(timeout=20, on_message=lambda m: seen.append((m["status"], m["result"])))
        assert value == 2
        assert result.state == states.SUCCESS
    assert seen == [
        ("PROGRESS", {"done": 0, "of": 2}),
        ("PROGRESS", {"done": 1, "of": 2}),
        ("SUCCESS", 2),
    ]
    client.close()


def test_update_state_needs_a_task_and_a_state(app: App) -> None:
    @app.task(name="res.lonely")
    def lonely() -> None: ...

    with pytest.raises(RuntimeError, match="needs task_id"):
        lonely.update_state(state="PROGRESS")
    with pytest.raises(ValueError, match="needs a state"):
        lonely.update_state(task_id="t")
    lonely.update_state(task_id="t", state="PROGRESS", meta={"n": 1})
    result = AsyncResult("t", app=app)
    assert (result.state, result.info, result.ready()) == ("PROGRESS", {"n": 1}, False)
