"""The SQLite broker: claims, leases, priorities, ETA, rejects, damaged rows, concurrency."""

from __future__ import annotations

import json
import logging
import multiprocessing
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastq import App
from fastq.brokers.sqlite import SQLiteBroker, SQLiteConsumer
from fastq.errors import BrokerConnectionError, ConfigurationError
from fastq.sqlitedb import path_from_url


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/fastq.db"  # an absolute path: four slashes


@pytest.fixture
def app(url: str) -> Iterator[App]:
    application = App("t", broker=url, set_as_current=False)
    yield application
    application.close()


def broker_of(app: App) -> SQLiteBroker:
    assert isinstance(app.broker, SQLiteBroker)
    return app.broker


def consumer(
    app: App, name: str = "c1", prefetch: int = 4, queues: list[str] | None = None
) -> SQLiteConsumer:
    c = app.broker.consumer(
        queues or ["celery"], prefetch=prefetch, consumer_id=name, accept=["json"]
    )
    assert isinstance(c, SQLiteConsumer)
    return c


def ids(deliveries: list) -> list[str]:  # type: ignore[type-arg]
    return [d.task_id for d in deliveries]


def test_url_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert path_from_url("sqlite:///fastq.db") == str(tmp_path / "fastq.db")
    assert path_from_url("sqlite:///sub/q.db") == str(tmp_path / "sub" / "q.db")
    assert path_from_url("sqlite:////var/x.db") == "/var/x.db"
    with pytest.raises(ConfigurationError, match="names no file"):
        path_from_url("sqlite:///:memory:")
    with pytest.raises(ConfigurationError, match="not a SQLite URL"):
        path_from_url("sqlite://relative.db")


def test_publish_claim_ack(app: App) -> None:
    sent = [app.send_task("proj.add", (i, i), {"z": 1}, priority=2) for i in range(3)]
    assert app.broker.queue_length("celery") == 3
    c = consumer(app)
    deliveries = c.fetch(1.0)
    assert ids(deliveries) == [r.id for r in sent]
    first = deliveries[0]
    assert first.message is not None and first.error is None
    assert first.message.task == "proj.add"
    assert first.message.args == (0, 0) and first.message.kwargs == {"z": 1}
    assert first.message.headers["argsrepr"] == "(0, 0)"
    assert first.priority == 2 and not first.redelivered
    assert first.content_type == "application/json"
    assert first.correlation_id == sent[0].id and first.reply_to == app.oid
    assert first.properties["delivery_info"] == {"exchange": "", "routing_key": "celery"}
    assert c.in_flight == 3 and app.broker.queue_length("celery") == 0
    c.ack([d.delivery_tag for d in deliveries])
    assert c.in_flight == 0
    rows = broker_of(app).db.execute("count", "SELECT count(*) FROM fastq_messages")
    assert rows[0][0] == 0


def test_headers_keep_their_types(app: App) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    app.send_task("t", headers={"when": when}, expires=when)
    [delivery] = consumer(app).fetch(1.0)
    assert delivery.message is not None
    assert delivery.message.headers["when"] == when
    assert delivery.message.headers["expires"] == when.isoformat()


def test_one_claim_takes_at_most_the_free_window(app: App) -> None:
    app.send_many([("proj.add", (i, i), None) for i in range(10)])
    c = consumer(app, prefetch=4)
    assert len(c.fetch(1.0)) == 4
    started = time.monotonic()
    assert c.fetch(0.2) == []  # window full: waits, claims nothing
    assert time.monotonic() - started >= 0.19
    c.ack([next(iter(c._held))])
    assert len(c.fetch(1.0)) == 1
    assert c.in_flight == 4


def test_lower_priority_number_first_then_fifo(app: App) -> None:
    for name, priority in [("a", 5), ("b", 0), ("c", 9), ("d", 0), ("e", 5)]:
        app.send_task("t", task_id=name, priority=priority)
    assert ids(consumer(app, prefetch=10).fetch(1.0)) == ["b", "d", "a", "e", "c"]


def test_several_queues_are_merged_by_priority(app: App) -> None:
    app.send_task("t", task_id="low-q1", queue="q1", priority=7)
    app.send_task("t", task_id="high-q2", queue="q2", priority=1)
    app.send_task("t", task_id="high-q1", queue="q1", priority=1)
    app.send_task("t", task_id="other", queue="q3")
    c = consumer(app, prefetch=10, queues=["q1", "q2"])
    assert ids(c.fetch(1.0)) == ["high-q2", "high-q1", "low-q1"]


def test_eta_messages_stay_out_of_the_queue_until_due(app: App) -> None:
    app.send_task("t", task_id="later", countdown=0.4)
    app.send_task("t", task_id="now")
    assert app.broker.queue_length("celery") == 1
    c = consumer(app, prefetch=1)
    [now] = c.fetch(1.0)  # the ETA task holds no prefetch slot
    assert now.task_id == "now"
    c.ack([now.delivery_tag])
    assert c.fetch(0.1) == []
    started = time.monotonic()
    assert ids(c.fetch(2.0)) == ["later"]
    assert 0.15 < time.monotonic() - started < 1.0


def test_move_due(app: App) -> None:
    app.send_many([("t", (), None)] * 3, countdown=0.05)
    time.sleep(0.1)
    assert app.broker.move_due() == 3
    assert app.broker.move_due() == 0
    assert app.broker.queue_length("celery") == 3


def test_an_expired_lease_is_claimed_again(url: str, caplog: pytest.LogCaptureFixture) -> None:
    app = App("t", broker=url, broker_transport_options={"visibility_timeout": 0.3})
    app.send_task("proj.slow", task_id="held")
    a, b = consumer(app, "worker-a"), consumer(app, "worker-b")
    assert ids(a.fetch(1.0)) == ["held"]
    assert b.fetch(0.1) == []
    time.sleep(0.3)
    with caplog.at_level(logging.WARNING, logger="fastq.broker"):
        again = b.fetch(1.0)
    assert ids(again) == ["held"] and again[0].redelivered
    assert "worker-a held it past the visibility timeout" in caplog.text
    app.close()


def test_restore_consumer_returns_a_dead_consumers_messages_at_once(app: App) -> None:
    app.send_many([("t", (i,), None) for i in range(5)])
    dead = consumer(app, "dead", prefetch=3)
    taken = ids(dead.fetch(1.0))
    assert app.broker.restore_consumer("dead") == 3
    assert app.broker.restore_consumer("dead") == 0
    again = consumer(app, "alive", prefetch=10).fetch(1.0)
    assert ids(again)[:3] == taken  # they keep their place at the head
    assert [d.redelivered for d in again] == [True] * 3 + [False] * 2


def test_restore_unacked_on_shutdown(app: App) -> None:
    app.send_many([("t", (i,), None) for i in range(3)])
    c = consumer(app)
    assert len(c.fetch(1.0)) == 3
    assert c.restore_unacked() == 3 and c.in_flight == 0
    assert app.broker.queue_length("celery") == 3


def test_reject_requeues_at_the_back_or_drops(app: App) -> None:
    for name in ("a", "b", "c"):
        app.send_task("t", task_id=name)
    c = consumer(app, prefetch=1)
    [a] = c.fetch(1.0)
    c.reject(a.delivery_tag, requeue=True)
    [b] = c.fetch(1.0)
    c.reject(b.delivery_tag, requeue=False)
    rest = consumer(app, "other", prefetch=10).fetch(1.0)
    assert ids(rest) == ["c", "a"] and rest[1].redelivered


def test_damaged_rows_give_clear_errors_and_the_rest_proceed(app: App) -> None:
    app.send_task("t", task_id="first")
    db = broker_of(app).db
    headers = json.dumps({"task": "t", "id": "x"})
    columns = (
        "queue, priority, visible_at, task_id, task_name, content_type, content_encoding, "
        "headers, properties, body"
    )
    for task_id, heads, body in [
        ("bad-headers", "{not json", b"[[], {}, {}]"),
        ("bad-body", headers, b"{not json"),
        ("bad-shape", headers, b'{"a": 1}'),
    ]:
        db.execute(
            "insert",
            f"INSERT INTO fastq_messages ({columns}) VALUES "
            "('celery', 0, 0, ?, 't', 'application/json', 'utf-8', ?, '{}', ?)",
            (task_id, heads, body),
        )
    app.send_task("t", task_id="last")
    got = {d.task_id: d for d in consumer(app, prefetch=10).fetch(1.0)}
    assert list(got) == ["first", "bad-headers", "bad-body", "bad-shape", "last"]
    assert got["first"].message is not None and got["last"].message is not None
    assert got["bad-headers"].error_kind == "DecodeError"
    assert "damaged row" in (got["bad-headers"].error or "")
    assert got["bad-body"].error_kind == "DecodeError"
    assert "cannot decode application/json body" in (got["bad-body"].error or "")
    assert got["bad-shape"].error_kind == "InvalidMessage"
    assert "[args, kwargs, embed]" in (got["bad-shape"].error or "")
    assert all(d.message is None for d in list(got.values())[1:4])


def test_purge_and_queue_length(app: App) -> None:
    app.send_many([("t", (), None)] * 4)
    app.send_task("t", countdown=60)
    app.send_task("t", queue="other")
    c = consumer(app, prefetch=1)
    c.fetch(1.0)
    assert app.broker.queue_length("celery") == 3
    assert app.broker.purge("celery") == 4  # 3 waiting + 1 scheduled; the held one stays
    assert app.broker.queue_length("celery") == 0
    assert app.broker.queue_length("other") == 1


def _claim_all(url: str, name: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    app = App("t", broker=url, set_as_current=False)
    c = consumer(app, name, prefetch=7)
    tags: list[str] = []
    while batch := c.fetch(0.3):
        tags += [d.delivery_tag for d in batch]
        c.ack([d.delivery_tag for d in batch])
    out.put(tags)


def test_concurrent_processes_never_claim_the_same_message(app: App, url: str) -> None:
    app.send_many([("t", (i,), None) for i in range(600)])
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    app.close()  # nothing open across the fork
    procs = [ctx.Process(target=_claim_all, args=(url, f"p{i}", out)) for i in range(4)]
    for p in procs:
        p.start()
    claimed = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    every = [tag for tags in claimed for tag in tags]
    assert len(every) == 600 and len(set(every)) == 600
    assert sum(1 for tags in claimed if tags) >= 2  # they really competed


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    app = App("t", broker=f"sqlite:///{tmp_path}/nope/fastq.db", set_as_current=False)
    with pytest.raises(BrokerConnectionError, match=r"directory .*nope does not exist"):
        app.send_task("t")


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    app = App("t", broker=f"sqlite:///{tmp_path}/junk.db", set_as_current=False)
    with pytest.raises(BrokerConnectionError, match="not a fastq SQLite database"):
        app.send_task("t")


def test_the_default_broker_is_sqlite_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FASTQ_BROKER_URL", raising=False)
    monkeypatch.delenv("FASTQ_RESULT_BACKEND", raising=False)
    app = App("t", set_as_current=False)
    broker = broker_of(app)
    assert broker.db.path == str(tmp_path / "fastq.db")
    assert "single-machine broker" in (broker.startup_note() or "")
    app.send_task("t")
    assert sqlite3.connect(tmp_path / "fastq.db").execute(
        "SELECT count(*) FROM fastq_messages"
    ).fetchone() == (1,)
    app.close()
