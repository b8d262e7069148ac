"""Workers on one SQLite file, as real processes: exactly-once runs, kills, damaged rows.

Tasks append ``<token> <pid>`` to a file opened with O_APPEND (one ``write`` per line, so
concurrent processes never interleave), and the tests count the lines.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastq import App

from tests.processes import WorkerProcess, children_of, fastq_worker, wait_until

APP = "tests.apps.embedded_app"


class Site:
    """One SQLite file, the runs file, and the environment workers get."""

    def __init__(self, tmp: Path) -> None:
        self.url = f"sqlite:///{tmp}/fastq.db"
        self.db_path = tmp / "fastq.db"
        self.runs = tmp / "runs.txt"
        self.runs.touch()
        self.env = {"FASTQ_BROKER_URL": self.url, "FASTQ_TEST_RUNS_FILE": str(self.runs)}
        self.client = App("client", broker=self.url, set_as_current=False)

    def worker(self, *args: str, **env: str) -> WorkerProcess:
        return fastq_worker(*args, app=APP, env={**self.env, **env})

    def lines(self) -> list[tuple[str, int]]:
        return [
            (token, int(pid))
            for token, pid in (line.split() for line in self.runs.read_text().splitlines())
        ]

    def count(self, sql: str) -> int:
        with sqlite3.connect(self.db_path) as conn:
            return int(conn.execute(sql).fetchone()[0])


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.client.close()


def test_two_prefork_workers_run_2000_tasks_exactly_once(site: Site) -> None:
    tokens = [f"t{i}" for i in range(2000)]
    with site.worker("--pool", "prefork", "--concurrency", "2", "-n", "one@test") as one:
        with site.worker("--pool", "prefork", "--concurrency", "2", "-n", "two@test") as two:
            results = site.client.send_many([("embedded.record", (t,), None) for t in tokens])
            wait_until(lambda: len(site.lines()) >= len(tokens))
            assert [r.get(timeout=10) for r in results[::100]] == tokens[::100]
            time.sleep(0.3)  # a duplicate would show up now
    runs = collections.Counter(token for token, _ in site.lines())
    assert sorted(runs) == sorted(tokens)
    assert set(runs.values()) == {1}, [t for t, n in runs.items() if n > 1]
    pids = {pid for _, pid in site.lines()}
    assert len(pids) >= 3, "both workers and their children took part"
    assert site.count("SELECT count(*) FROM fastq_messages") == 0
    assert "single-machine broker" in one.log() and "single-machine broker" in two.log()


def test_sigkill_of_a_child_loses_nothing(site: Site) -> None:
    """The killed child's running task (acks_late) and the tasks it had claimed come back at once
    through restore_consumer; only tasks of its last, unacknowledged batch may run twice."""
    tokens = [f"t{i}" for i in range(300)]
    calls = [("embedded.record", (t,), None) for t in tokens]
    calls.insert(150, ("embedded.victim", ("victim", 60.0), None))
    with site.worker("--pool", "prefork", "--concurrency", "2", "-n", "one@test") as one:
        with site.worker("--pool", "prefork", "--concurrency", "2", "-n", "two@test") as two:
            victim = site.client.send_many(calls)[150]
            wait_until(lambda: any(t == "start-victim" for t, _ in site.lines()))
            victim_pid = next(pid for t, pid in site.lines() if t == "start-victim")
            owner = one if victim_pid in children_of(one.pid) else two
            assert victim_pid in children_of(owner.pid)
            os.kill(victim_pid, signal.SIGKILL)
            wait_until(lambda: {t for t, _ in site.lines()} >= {*tokens, "victim"}, 60)
            assert victim.get(timeout=10) == "victim"
            time.sleep(0.3)
            assert "died with signal SIGKILL" in owner.log()
            assert "returned" in owner.log() and "held by child" in owner.log()
    runs = collections.Counter(t for t, _ in site.lines())
    assert runs["victim"] == 1 and runs["start-victim"] == 2
    twice = {t for t, n in runs.items() if n > 1 and t != "start-victim"}
    killed_ran = {t for t, pid in site.lines() if pid == victim_pid}
    assert twice <= killed_ran, twice - killed_ran
    assert site.count("SELECT count(*) FROM fastq_messages") == 0


def test_a_whole_worker_killed_comes_back_after_the_lease(site: Site) -> None:
    """No supervisor is left to restore anything: the lease (visibility timeout) runs out."""
    victim = site.client.send_task("embedded.victim", ("victim", 60.0))
    site.client.send_many([("embedded.record", (f"t{i}",), None) for i in range(3)])
    lease = {"FASTQ_TEST_VISIBILITY_TIMEOUT": "1.5"}
    first = site.worker("--pool", "prefork", "--concurrency", "1", "-n", "one@test", **lease)
    try:
        wait_until(lambda: any(t == "start-victim" for t, _ in site.lines()))
        children = children_of(first.pid)
        os.kill(first.pid, signal.SIGKILL)  # the supervisor first: nobody restores
        for child in children:
            os.kill(child, signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.stop()
    held = site.count("SELECT count(*) FROM fastq_messages WHERE consumer IS NOT NULL")
    assert held >= 1
    started = time.monotonic()
    with site.worker("--pool", "prefork", "--concurrency", "1", "-n", "two@test", **lease) as two:
        assert victim.get(timeout=30) == "victim"
        assert time.monotonic() - started < 15
        wait_until(lambda: {"t0", "t1", "t2"} <= {t for t, _ in site.lines()})
        assert "held it past the visibility timeout" in two.log()
    assert site.count("SELECT count(*) FROM fastq_messages") == 0


def test_damaged_rows_are_logged_and_failed_and_the_rest_run(site: Site) -> None:
    site.client.send_task("embedded.add", (1, 1), task_id="before")
    headers = json.dumps({"task": "embedded.add", "id": "bad-body", "lang": "py"})
    columns = (
        "queue, priority, visible_at, task_id, task_name, content_type, content_encoding, "
        "headers, properties, body"
    )
    with sqlite3.connect(site.db_path) as conn:
        for task_id, heads, content_type, body in [
            ("bad-headers", "{oops", "application/json", b"[[1, 2], {}, {}]"),
            ("bad-body", headers, "application/json", b"[[1, 2], {"),
            (
                "pickled",
                headers.replace("bad-body", "pickled"),
                "application/x-python-serialize",
                b"\x80\x04.",
            ),
            (
                "unknown",
                headers.replace("embedded.add", "no.such.task").replace("bad-body", "unknown"),
                "application/json",
                b"[[], {}, {}]",
            ),
        ]:
            conn.execute(
                f"INSERT INTO fastq_messages ({columns}) VALUES "
                "('celery', 0, 0, ?, 'embedded.add', ?, 'utf-8', ?, '{}', ?)",
                (task_id, content_type, heads, body),
            )
    site.client.send_task("embedded.add", (2, 2), task_id="after")
    with site.worker("--pool", "prefork", "--concurrency", "2") as worker:
        assert site.client.AsyncResult("before").get(timeout=20) == 2
        assert site.client.AsyncResult("after").get(timeout=20) == 4
        for task_id in ("bad-headers", "bad-body", "pickled", "unknown"):
            result = site.client.AsyncResult(task_id)
            wait_until(lambda r=result: r.state == "FAILURE", 10)  # type: ignore[misc]
        log = worker.log()
    assert "damaged row" in log and "bad-headers" in log
    assert "cannot decode application/json body" in log
    assert "refusing content of type application/x-python-serialize" in log
    assert "unregistered task 'no.such.task'" in log
    with pytest.raises(Exception, match="pickle"):
        site.client.AsyncResult("pickled").get(timeout=1)
    assert site.count("SELECT count(*) FROM fastq_messages") == 0
