"""Beat in this process against real Redis: Celery's configuration forms, the messages it sends,
the fence between two leaders, catch-up after downtime, and a failed send tried again."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis
from fastq import App
from fastq.beat import Beat, StoredEntries, entries_from_conf
from fastq.beat.state import MemoryBeatState, RedisBeatState
from fastq.errors import ConfigurationError
from fastq.schedules import crontab, schedule, solar

from tests.beat.support import QUEUE, messages, sent


def _app(broker_url: str, **settings: object) -> App:
    return App("proj", broker=broker_url, set_as_current=False, **settings)


def _memory_state(lease: float = 10.0) -> MemoryBeatState:
    return MemoryBeatState(f"memory://{uuid.uuid4().hex}", lease)


def test_celerys_periodic_tasks_guide_runs_unchanged(broker_url: str) -> None:
    app = _app(broker_url)

    @app.on_after_configure.connect
    def setup_periodic_tasks(sender: App, **kwargs: object) -> None:
        # Celery's guide, as written there
        sender.add_periodic_task(10.0, test.s("hello"), name="add every 10")
        sender.add_periodic_task(30.0, test.s("world"), expires=10)
        sender.add_periodic_task(
            crontab(hour=7, minute=30, day_of_week=1), test.s("Happy Mondays!")
        )

    @app.task(name="proj.test")
    def test(arg: str) -> None:
        print(arg)

    finalized: list[object] = []
    app.on_after_finalize.connect(lambda sender, **kw: finalized.append(sender))
    app.conf.beat_schedule["from-conf"] = {
        "task": "proj.test",
        "schedule": timedelta(seconds=5),
        "args": ["x"],
    }
    entries = entries_from_conf(Beat(app, state=_memory_state()).app)
    assert finalized == [app]
    assert set(entries) == {
        "add every 10",
        "proj.test('world')",
        "proj.test('Happy Mondays!')",
        "from-conf",
    }
    assert entries["add every 10"].schedule == schedule(10.0)
    assert entries["proj.test('world')"].options == {"expires": 10}
    assert entries["proj.test('Happy Mondays!')"].schedule == crontab(30, 7, day_of_week=1)
    assert entries["from-conf"].args == ("x",)


def test_a_tick_is_sent_with_its_options_and_celerys_headers(
    broker_url: str, broker_redis: redis.Redis
) -> None:
    app = _app(broker_url)
    app.conf.beat_schedule = {
        "e": {
            "task": "proj.unregistered",  # sent by name: beat need not have the task
            "schedule": 0.2,
            "args": (1, 2),
            "kwargs": {"k": "v"},
            "options": {"queue": QUEUE, "priority": 3, "expires": 60},
        }
    }
    beat = Beat(app, state=_memory_state())
    beat.tick()
    time.sleep(0.25)
    beat.tick()
    [message] = messages(broker_redis)
    assert message["headers"]["task"] == "proj.unregistered"
    assert message["headers"]["periodic_task_name"] == "e"
    assert message["headers"]["celery_beat_task"] is True
    assert message["headers"]["expires"]
    assert message["properties"]["priority"] == 3
    assert sent(broker_redis) == [("e", sent(broker_redis)[0][1])]


def test_a_stale_leader_cannot_send_a_tick_the_new_leader_took(
    broker_url: str, broker_redis: redis.Redis
) -> None:
    lease = 0.5
    state_url = f"memory://{uuid.uuid4().hex}"
    app = _app(broker_url)
    app.conf.beat_schedule = {"e": {"task": "t", "schedule": 0.1, "options": {"queue": QUEUE}}}
    a = Beat(app, state=MemoryBeatState(state_url, lease))
    b = Beat(app, state=MemoryBeatState(state_url, lease))
    a.tick()
    b.tick()
    assert a.leading and not b.leading
    time.sleep(0.15)
    a.tick()
    assert len(sent(broker_redis)) == 1
    time.sleep(lease + 0.1)  # A is paused past its lease: B takes over and sends
    b.tick()
    assert b.leading and len(sent(broker_redis)) == 2
    a._renew_at = time.time() + 60  # A still believes it leads
    a.tick()  # its record is refused under B's lease: nothing sent
    assert not a.leading
    dues = [due for _, due in sent(broker_redis)]
    assert len(dues) == len(set(dues)) == 2


def test_after_downtime_each_entry_runs_once_or_is_skipped(
    broker_url: str, broker_redis: redis.Redis
) -> None:
    app = _app(broker_url)
    app.conf.beat_schedule = {
        "seconds": {"task": "t", "schedule": 1.0, "options": {"queue": QUEUE}},
        "minutely": {"task": "t", "schedule": crontab(), "options": {"queue": QUEUE}},
        "skipped": {"task": "t", "schedule": 1.0, "options": {"queue": QUEUE}, "catch_up": "skip"},
    }
    state = _memory_state()
    assert state.acquire("seed")
    now = time.time()
    for name, ago in (("seconds", 30), ("minutely", 300), ("skipped", 30)):
        assert state.record("seed", name, None, now - ago)
    state.release("seed")
    beat = Beat(app, state=state)
    for _ in range(3):
        beat.tick()
    assert sorted(name for name, _ in sent(broker_redis)) == ["minutely", "seconds"]
    stored = state.last_runs()
    assert all(abs(stored[n] - now) < 5 for n in ("seconds", "minutely", "skipped"))


def test_beat_cron_starting_deadline_drops_crontab_runs_missed_for_longer(
    broker_url: str, broker_redis: redis.Redis
) -> None:
    now = time.time()
    this_minute = int(now // 60) % 60
    app = _app(broker_url, beat_cron_starting_deadline=120)
    app.conf.beat_schedule = {  # hourly: one ran at most a minute ago, one ten minutes ago
        "fresh": {"task": "t", "schedule": crontab(this_minute), "options": {"queue": QUEUE}},
        "stale": {
            "task": "t",
            "schedule": crontab((this_minute - 10) % 60),
            "options": {"queue": QUEUE},
        },
    }
    state = _memory_state()
    assert state.acquire("seed")
    for name in ("fresh", "stale"):
        assert state.record("seed", name, None, now - 3000)
    state.release("seed")
    beat = Beat(app, state=state)
    beat.tick()
    beat.tick()
    assert [name for name, _ in sent(broker_redis)] == ["fresh"]
    skipped_to = datetime.fromtimestamp(state.last_runs()["stale"], timezone.utc)
    assert skipped_to.timestamp() > now - 3000  # moved on: it waits for its next time
    assert app.conf.beat_schedule["stale"]["schedule"].next_run_after(skipped_to).timestamp() > now


def test_a_failed_send_is_tried_again(broker_url: str, broker_redis: redis.Redis) -> None:
    app = _app(broker_url)
    app.conf.beat_schedule = {"e": {"task": "t", "schedule": 0.1, "options": {"queue": QUEUE}}}
    state = _memory_state()
    beat = Beat(app, state=state)
    beat.tick()
    last = state.last_runs()["e"]
    real_send, failures = beat.send, []

    def failing(entry: object, due: float) -> object:
        if not failures:
            failures.append(due)
            raise ConnectionError("broker down")
        return real_send(entry, due)  # type: ignore[arg-type]

    beat.send = failing  # type: ignore[method-assign]
    time.sleep(0.15)
    beat.tick()
    assert failures and state.last_runs()["e"] == last and not sent(broker_redis)
    beat.tick()
    assert [due.timestamp() for _, due in sent(broker_redis)] == pytest.approx(failures)


def test_state_lives_on_the_redis_broker_under_its_key_prefix(broker_url: str) -> None:
    app = _app(
        broker_url, broker_transport_options={"global_keyprefix": "p."}, beat_lease_timeout=3
    )
    app.conf.beat_schedule = {"e": {"task": "t", "schedule": 60}}
    beat = Beat(app)
    assert isinstance(beat.state, RedisBeatState) and beat.lease_timeout == 3
    beat.tick()
    client = redis.Redis.from_url(broker_url)
    assert client.get("p.fastq.beat.lease") == beat.token.encode()
    assert set(client.hgetall("p.fastq.beat.last_run")) == {b"e"}
    beat.release()
    assert client.get("p.fastq.beat.lease") is None
    client.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"beat_schedule": {"e": {"task": "t"}}}, "needs 'schedule'"),
        ({"beat_schedule": {"e": {"schedule": 1}}}, "needs 'task'"),
        ({"beat_schedule": {"e": {"task": "t", "schedule": 1, "every": 2}}}, "unknown key"),
        ({"beat_schedule": {"e": {"task": "t", "schedule": "1m"}}}, "a schedule must be"),
        ({"beat_scheduler": "redbeat.RedBeatScheduler"}, "not supported"),
        (
            {"beat_schedule": {"e": {"task": "t", "schedule": crontab(0, 0, "*", 30, 2)}}},
            r"beat_schedule\['e'\]: <crontab: 0 0 30 2 \* .*never runs",
        ),
        ({"broker_url": "amqp://guest@127.0.0.1//"}, "beat_state_url"),
    ],
)
def test_configuration_errors_say_what_is_wrong(settings: dict, message: str) -> None:
    app = App("proj", broker="memory://", set_as_current=False)
    app.conf.update(settings)
    with pytest.raises(ConfigurationError, match=message):
        Beat(app)


def test_solar_is_refused_with_the_alternative() -> None:
    with pytest.raises(ConfigurationError, match="crontab"):
        solar("sunset", -33.87, 151.21)


def test_entries_stored_at_run_time_are_picked_up_and_dropped_without_restart(
    broker_url: str, broker_redis: redis.Redis
) -> None:
    app = _app(broker_url)
    app.conf.beat_schedule = {"configured": {"task": "t", "schedule": 60}}
    state = _memory_state()
    beat = Beat(app, state=state)
    beat.tick()
    entries = StoredEntries(app, state=state)
    entries.add("added", "proj.report", 0.2, args=[1], options={"queue": QUEUE})
    weekly = crontab(minute={0, 30}, hour="9-17", day_of_week="mon-fri")
    entries.add("weekly", "proj.weekly", weekly)
    listed = entries.list()
    assert set(listed) == {"configured", "added", "weekly"}
    assert listed["weekly"].schedule == weekly and listed["weekly"].stored
    assert not listed["configured"].stored
    beat._renew_at = 0  # the next renewal reads the stored entries
    beat.tick()
    assert set(beat.entries) == {"configured", "added", "weekly"}
    time.sleep(0.25)
    beat.tick()
    assert [name for name, _ in sent(broker_redis)] == ["added"]
    assert messages(broker_redis)[0]["headers"]["task"] == "proj.report"
    assert entries.remove("added") and not entries.remove("added")
    beat._renew_at = 0
    beat.tick()
    assert set(beat.entries) == {"configured", "weekly"}
    assert set(state.last_runs()) == {"configured", "weekly"}
    with pytest.raises(ConfigurationError, match="beat_schedule"):
        entries.add("configured", "t", 1)
    with pytest.raises(TypeError):
        entries.add("bad", "t", 1, args=[object()])
    with pytest.raises(ConfigurationError, match="schedule must be"):
        entries.add("bad", "t", "hourly")
    assert "bad" not in entries.list()


def test_with_rabbitmq_state_goes_to_the_result_backend_or_beat_state_url(
    tmp_path: object,
) -> None:
    from fastq.beat.state import SQLiteBeatState

    amqp = "amqp://guest:guest@127.0.0.1:5672//"
    on_backend = Beat(
        App("p", broker=amqp, backend="redis://127.0.0.1:6379/0", set_as_current=False)
    )
    assert isinstance(on_backend.state, RedisBeatState)
    assert on_backend.state.url == "redis://127.0.0.1:6379/0"
    chosen = App(
        "p", broker=amqp, beat_state_url=f"sqlite:///{tmp_path}/beat.db", set_as_current=False
    )
    assert isinstance(Beat(chosen).state, SQLiteBeatState)
