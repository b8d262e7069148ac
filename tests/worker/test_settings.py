"""Settings a worker honours, given as a Celery 3 project gives them (old upper-case names in a
settings module, ``tests.apps.old_settings``), on a fastq worker and on a Celery worker alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastq import App
from fastq.errors import WorkerLostError

from tests.processes import BIN, WorkerProcess, celery_worker, fastq_worker

WORKERS: dict[str, Callable[..., WorkerProcess]] = {
    "fastq": lambda env: fastq_worker("--pool", "solo", app="tests.apps.config_app", env=env),
    "celery": lambda env: celery_worker(
        "--pool", "solo", app="tests.apps.celery_config_app", env=env
    ),
}


@pytest.fixture
def client(broker_url: str, backend_url: str) -> Iterator[App]:
    app = App("client", broker=broker_url, backend=backend_url, set_as_current=False)
    yield app
    app.close()


@pytest.mark.parametrize("kind", list(WORKERS))
def test_old_names_annotations_and_timezone_take_effect(
    kind: str, client: App, worker_env: dict[str, str], backend_redis: redis.Redis
) -> None:
    with WORKERS[kind](worker_env):
        results = [client.send_task("cfg.limited", (i,)) for i in range(6)]
        times = sorted(r.get(timeout=30) for r in results)
        date_done = client.backend.get_meta(results[0].id)["date_done"]
    # Reached at all: the worker read BROKER_URL / CELERY_RESULT_BACKEND (not its default).
    # CELERY_ANNOTATIONS' rate_limit "2/s": six tasks need 2 s and more (Celery: 2.5 s,
    # fastq's token bucket lets the first two through at once).
    assert times[-1] - times[0] >= 1.8, times
    assert str(date_done).endswith("+09:00"), date_done  # CELERY_TIMEZONE


@pytest.mark.parametrize("kind", list(WORKERS))
def test_worker_disable_rate_limits(kind: str, client: App, worker_env: dict[str, str]) -> None:
    with WORKERS[kind]({**worker_env, "FASTQ_TEST_NO_RATE_LIMITS": "1"}):
        results = [client.send_task("cfg.limited", (i,)) for i in range(6)]
        times = sorted(r.get(timeout=30) for r in results)
    assert times[-1] - times[0] < 1.0, times  # the annotation's "2/s" would need 2 s


@pytest.mark.parametrize("kind", list(WORKERS))
@pytest.mark.parametrize("hijack", [False, True], ids=["kept", "hijacked"])
def test_worker_hijack_root_logger(kind: str, hijack: bool, worker_env: dict[str, str]) -> None:
    env = {**worker_env, "FASTQ_TEST_HIJACK": "1" if hijack else ""}
    with WORKERS[kind](env) as worker:
        pass
    lines = [line for line in worker.log().splitlines() if "ready" in line]
    assert lines, worker.log()
    # The user's handler (its format starts with USERLOG) logs the worker's lines unless the
    # worker took the root logger over.
    assert any(line.startswith("USERLOG") for line in lines) is not hijack, worker.log()


PREFORK: dict[str, Callable[..., WorkerProcess]] = {
    "fastq": lambda env: fastq_worker("-c", "1", app="tests.apps.config_app", env=env),
    "celery": lambda env: celery_worker(
        "--pool", "prefork", "-c", "1", app="tests.apps.celery_config_app", env=env
    ),
}


@pytest.mark.parametrize("kind", list(PREFORK))
@pytest.mark.parametrize("reject", ["0", "1"], ids=["fails", "requeued"])
def test_task_reject_on_worker_lost(
    kind: str, reject: str, client: App, worker_env: dict[str, str], tmp_path: Path
) -> None:
    """A late-acknowledged task whose child dies: ``task_reject_on_worker_lost=True`` gives it
    back to its queue and it runs again; ``False`` fails it with WorkerLostError, once."""
    marker = tmp_path / "runs"
    with PREFORK[kind]({**worker_env, "FASTQ_TEST_REJECT": reject}):
        result = client.send_task("cfg.dies_once", (str(marker),))
        if reject == "1":
            assert result.get(timeout=60) == 2
        else:
            with pytest.raises(WorkerLostError):
                result.get(timeout=60)
            time.sleep(1)  # nothing runs it again
    assert marker.read_text() == ("2" if reject == "1" else "1")


GIVING_UP: dict[str, list[str]] = {
    "fastq-prefork": [str(BIN / "fastq"), "-A", "tests.apps.config_app", "worker", "-c", "2"],
    "fastq-solo": [str(BIN / "fastq"), "-A", "tests.apps.config_app", "worker", "-P", "solo"],
    "celery": [str(BIN / "celery"), "-A", "tests.apps.celery_config_app", "worker", "-P", "solo"],
}


@pytest.mark.parametrize("kind", list(GIVING_UP))
@pytest.mark.parametrize(
    ("settings", "why"),
    [
        ({"FASTQ_TEST_RETRY_ON_STARTUP": "0"}, "broker_connection_retry_on_startup is off"),
        ({"FASTQ_TEST_MAX_RETRIES": "2"}, "broker_connection_max_retries (2) reached"),
    ],
    ids=["no-retry-on-startup", "max-retries"],
)
def test_a_worker_that_may_not_reconnect_stops(
    kind: str, settings: dict[str, str], why: str, worker_env: dict[str, str]
) -> None:
    env = {**worker_env, **settings, "FASTQ_BROKER_URL": "redis://127.0.0.1:1/0"}  # nobody there
    worker = WorkerProcess([*GIVING_UP[kind], "--loglevel", "INFO"], env)
    try:
        code = worker.proc.wait(timeout=60)
    finally:
        worker.stop()
    assert code != 0, worker.log()
    if kind != "celery":
        assert why in worker.log()


@pytest.mark.parametrize("kind", list(PREFORK))
@pytest.mark.parametrize("redirect", ["1", "0"], ids=["logged", "printed"])
def test_worker_redirect_stdouts(
    kind: str, redirect: str, client: App, worker_env: dict[str, str]
) -> None:
    """A task's print() goes to the log (here the app's USERLOG handler), or straight out."""
    env = {**worker_env, "FASTQ_TEST_REDIRECT": redirect}
    with PREFORK[kind](env) as worker:
        client.send_task("cfg.shout", ("PRINTED-BY-A-TASK",)).get(timeout=30)
    lines = [line for line in worker.log().splitlines() if "PRINTED-BY-A-TASK" in line]
    expected = "USERLOG PRINTED-BY-A-TASK" if redirect == "1" else "PRINTED-BY-A-TASK"
    assert lines == [expected], worker.log()


@pytest.mark.parametrize("kind", list(PREFORK))
def test_worker_max_memory_per_child(kind: str, client: App, worker_env: dict[str, str]) -> None:
    """CELERYD_MAX_MEMORY_PER_CHILD = 1 (KiB): every child is over it after its first task, and
    replaced."""
    with PREFORK[kind]({**worker_env, "FASTQ_TEST_MAX_MEMORY": "1"}):
        pids = [client.send_task("cfg.pid").get(timeout=30) for _ in range(3)]
    assert len(set(pids)) == 3, pids


@pytest.mark.parametrize("kind", list(WORKERS))
@pytest.mark.parametrize("enabled", ["1", "0"], ids=["answers", "silent"])
def test_worker_enable_remote_control(
    kind: str, enabled: str, client: App, worker_env: dict[str, str]
) -> None:
    import celery

    celery_client = celery.Celery(broker=worker_env["FASTQ_BROKER_URL"], set_as_current=False)
    with WORKERS[kind]({**worker_env, "FASTQ_TEST_REMOTE_CONTROL": enabled}):
        client.send_task("cfg.pid").get(timeout=30)  # the worker is up and consuming
        # Each asked with its own client: fastq's remote control is not Celery's yet.
        ping = client.control.ping if kind == "fastq" else celery_client.control.ping
        replies = ping(timeout=2.0)
    assert bool(replies) is (enabled == "1"), replies
