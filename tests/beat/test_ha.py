"""Beat processes on real Redis: two at once send each tick once; the leader SIGKILLed, the other
takes over within the lease and sends every tick once; a restart continues from the stored
state; after downtime each entry runs once; a real worker runs what beat sends (-B too)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import redis

from tests.beat.support import beat_process, messages, sent
from tests.processes import BIN, WorkerProcess, wait_until

LEASE = 2.0
LEASE_KEY = "fastq.beat.lease"


def _env(broker_url: str, **extra: str) -> dict[str, str]:
    return {"FASTQ_BROKER_URL": broker_url, "BEAT_LEASE": str(LEASE), "BEAT_EVERY": "1", **extra}


def _holder(client: redis.Redis) -> str:
    value = client.get(LEASE_KEY)
    return value.decode() if value else ""


def _leader_pid(client: redis.Redis) -> int:
    wait_until(lambda: bool(_holder(client)), timeout=20)
    return int(_holder(client).split(":")[1])  # host:pid:random


def _assert_every_tick_once(dues: list[datetime]) -> None:
    assert len(dues) == len(set(dues)), f"a tick was sent twice: {dues}"
    steps = {b - a for a, b in itertools.pairwise(dues)}
    assert steps == {timedelta(seconds=1)}, f"a tick was lost: {dues}"


def _run_for(seconds: float, check: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check is not None:
            check()
        time.sleep(0.1)


def test_two_beats_send_each_tick_exactly_once(broker_url: str, broker_redis: redis.Redis) -> None:
    with beat_process(_env(broker_url)) as a, beat_process(_env(broker_url)) as b:
        _leader_pid(broker_redis)
        started = time.monotonic()
        _run_for(12)
        a.stop()
        b.stop()
        window = time.monotonic() - started
    dues = [due for name, due in sent(broker_redis)]
    assert window - 1.5 <= len(dues) <= window + 1, (window, dues)
    assert 11 <= len(dues) <= 13
    _assert_every_tick_once(dues)
    # Every send is logged by the process that made it: none left the queue out.
    assert a.log().count("sending due task") + b.log().count("sending due task") == len(dues)


def test_the_leader_killed_the_other_takes_over_within_the_lease(
    broker_url: str, broker_redis: redis.Redis
) -> None:
    with beat_process(_env(broker_url)) as a, beat_process(_env(broker_url)) as b:
        leader = _leader_pid(broker_redis)
        first, second = (a, b) if leader == a.pid else (b, a)
        second.wait_for_log("beat ")  # started, following
        _run_for(2.5)
        before = len(sent(broker_redis))
        os.kill(first.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: _holder(broker_redis).split(":")[1:2] == [str(second.pid)], 10)
        takeover = time.monotonic() - killed
        _run_for(2.5)
        second.stop()
        first.proc.wait()
    assert before >= 1
    assert takeover <= LEASE + 1.0, takeover  # the lease, plus the follower's poll
    _assert_every_tick_once([due for _, due in sent(broker_redis)])
    assert len(sent(broker_redis)) >= before + 3


def test_a_restarted_beat_continues_from_the_stored_state(
    broker_url: str, broker_redis: redis.Redis
) -> None:
    with beat_process(_env(broker_url)) as first:
        _leader_pid(broker_redis)
        _run_for(2.5)
        first.stop()  # a clean stop gives the lease up
    assert not _holder(broker_redis)
    stopped_with = len(sent(broker_redis))
    with beat_process(_env(broker_url)) as second:
        second.wait_for_log("leads")
        _run_for(2.5)
        second.stop()
    dues = [due for _, due in sent(broker_redis)]
    assert stopped_with >= 1 and len(dues) >= stopped_with + 2
    _assert_every_tick_once(dues)


def test_after_30_s_of_downtime_each_entry_runs_once(
    broker_url: str, broker_redis: redis.Redis
) -> None:
    if 60 - time.time() % 60 < 8:  # the crontab entry would rightly run again at the minute
        time.sleep(60 - time.time() % 60 + 0.5)
    now = time.time()
    # What a beat stopped 30 s ago left (the 1 minute entry: 5 minutes ago).
    broker_redis.hset(
        "fastq.beat.last_run", mapping={"every": repr(now - 30), "minutely": repr(now - 300)}
    )
    env = _env(broker_url, BEAT_EVERY="5", BEAT_CRONTAB="1")
    with beat_process(env) as beat:
        wait_until(lambda: len(messages(broker_redis)) >= 2, timeout=20)
        _run_for(1.5)
        beat.stop()
    assert sorted(name for name, _ in sent(broker_redis)) == ["every", "minutely"]
    stored = {k.decode(): float(v) for k, v in broker_redis.hgetall("fastq.beat.last_run").items()}
    assert stored["every"] > now and stored["minutely"] > now  # caught up: runs from now on


def _ledger_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_worker_runs_what_beat_sends_and_worker_b_embeds_beat(
    broker_url: str, broker_redis: redis.Redis, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    env = _env(broker_url, BEAT_LEDGER=str(ledger))
    worker_argv = [str(BIN / "fastq"), "-A", "tests.beat.proj", "worker", "-c", "2"]
    with beat_process(env) as beat, WorkerProcess(worker_argv, env=env) as worker:
        wait_until(lambda: _ledger_lines(ledger) >= 2, timeout=20)
        beat.stop()
        worker.stop()
    assert set(ledger.read_text().split()) == {"hello"}
    ledger.unlink()
    broker_redis.delete(LEASE_KEY)
    with WorkerProcess([*worker_argv, "-B"], env=env) as embedded:
        wait_until(lambda: _ledger_lines(ledger) >= 2, timeout=20)
        embedded.stop()
    assert "leads" in embedded.log() and set(ledger.read_text().split()) == {"hello"}


def test_two_beats_on_the_embedded_sqlite_broker_send_each_tick_once(tmp_path: Path) -> None:
    from fastq import App

    url = f"sqlite:///{tmp_path}/fastq.db"
    env = {**_env(url), "FASTQ_BROKER_URL": url}
    with beat_process(env) as a, beat_process(env) as b:
        wait_until(lambda: "leads" in a.log() + b.log(), timeout=20)
        started = time.monotonic()
        _run_for(4)
        a.stop()
        b.stop()
        window = time.monotonic() - started
    app = App("check", broker=url, set_as_current=False)
    assert window - 1.5 <= app.broker.queue_length("beat-q") <= window + 1
    with sqlite3.connect(tmp_path / "fastq.db") as db:
        rows = db.execute("SELECT headers FROM fastq_messages WHERE queue = 'beat-q'").fetchall()
    dues = sorted(datetime.fromisoformat(json.loads(h)["fastq_beat_due"]) for (h,) in rows)
    assert len(dues) == app.broker.queue_length("beat-q")
    _assert_every_tick_once(dues)
    listed = subprocess.run(
        [str(BIN / "fastq"), "-A", "tests.beat.proj", "beat", "list"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    leader, entry = listed.stdout.splitlines()
    assert leader == "leader: (none)"  # both stopped cleanly
    shown = json.loads(entry)
    assert shown["name"] == "every" and shown["task"] == "beatproj.tick"
    last, upcoming = (datetime.fromisoformat(shown[k]) for k in ("last_run", "next_run"))
    assert upcoming - last == timedelta(seconds=1)
    app.close()


def test_fastq_beat_add_and_remove_edit_a_running_beat(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fastq.db"
    env = {**os.environ, **_env(url), "FASTQ_BROKER_URL": url, "BEAT_EVERY": "3600"}

    def fastq_beat(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "fastq"), "-A", "tests.beat.proj", "beat", *args],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    def pings() -> list[dict]:
        with sqlite3.connect(tmp_path / "fastq.db") as db:
            try:
                rows = db.execute("SELECT headers FROM fastq_messages").fetchall()
            except sqlite3.OperationalError:  # no message yet: the broker's tables come with it
                return []
        return [h for (text,) in rows if (h := json.loads(text))["periodic_task_name"] == "ping"]

    with beat_process(env) as beat:
        beat.wait_for_log("leads")
        added = fastq_beat("add", "ping", "beatproj.tick", "--every", "1", "--args", '["p"]')
        assert added.returncode == 0, added.stderr
        # Picked up at the next renewal (a third of the lease), first run one period later.
        wait_until(lambda: len(pings()) >= 1, timeout=LEASE / 3 + 5)
        listed = [json.loads(line) for line in fastq_beat("list").stdout.splitlines()[1:]]
        assert {e["name"]: e["stored"] for e in listed} == {"every": False, "ping": True}
        assert fastq_beat("remove", "ping").returncode == 0
        time.sleep(LEASE / 3 + 0.5)
        stopped_at = len(pings())
        _run_for(1.5)
        beat.stop()
    assert len(pings()) == stopped_at
    assert "entry 'ping' removed" in beat.log()
    assert fastq_beat("remove", "ping").returncode == 1
    refused = fastq_beat("add", "x", "beatproj.tick")
    assert refused.returncode == 2 and "--every" in refused.stderr
