"""Redis Sentinel for the broker and the result backend: a master, a replica and three sentinels
of the test's own (tests/faults/sentinel_set.py). A fastq worker (``--concurrency 2``,
``acks_late``) drains ``SENT`` tasks while the master fails over (``SENTINEL FAILOVER``) or is
SIGKILLed; every task's runs are counted, the workers and the client must find the new master on
their own within a few seconds, and every result is read back with ``get()``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from fastq import App
from fastq.errors import ConfigurationError

from tests.faults import ledger
from tests.faults.conftest import report, worker_env
from tests.faults.sentinel_set import MASTER_NAME, SentinelSet
from tests.processes import fastq_worker, wait_until

pytestmark = pytest.mark.xdist_group("redis-sentinel")

SENT = 1000
#: Each task sleeps this long: with 2 children the drain lasts ~5 s, so the fault lands mid-drain.
TASK_SECONDS = 0.01
OPTIONS = {"master_name": MASTER_NAME}
#: From the sentinels naming the new master to every consumer of the worker connected to it.
FOLLOW_BOUND = 3.0
#: The whole drain, the failover included (far below the one-hour visibility timeout).
DRAIN_BOUND = 40.0
#: What a child holds besides the tasks that end: its prefetch window (4) and the running task.
HELD_PER_CHILD = 4 + 1


MASTER_PASSWORD = "master-secret"
SENTINEL_PASSWORD = "sentinel-secret"
#: The shared set-up's options: the sentinels' own password apart from the master's (in the URL).
SECURED = {**OPTIONS, "sentinel_kwargs": {"password": SENTINEL_PASSWORD}}


@pytest.fixture(scope="module")
def shared_set() -> Iterator[SentinelSet]:
    """One set-up for the tests that do not break it, with passwords on the data nodes and,
    another, on the sentinels."""
    with SentinelSet(password=MASTER_PASSWORD, sentinel_password=SENTINEL_PASSWORD) as s:
        yield s


@pytest.fixture
def own_set() -> Iterator[SentinelSet]:
    with SentinelSet() as s:
        yield s


def _options(s: SentinelSet) -> dict[str, object]:
    return dict(SECURED if s.sentinel_password else OPTIONS)


def _client(s: SentinelSet) -> App:
    app = App("client", broker=s.url(0), backend=s.url(1), set_as_current=False)
    app.conf.broker_transport_options = _options(s)
    app.conf.result_backend_transport_options = _options(s)
    return app


def _env(s: SentinelSet, ledger_path: str, acks_late: bool = True) -> dict[str, str]:
    return worker_env(
        s.url(0),
        s.url(1),
        ledger_path,
        acks_late,
        visibility_timeout=3600,
        transport_options=_options(s),
    )


def test_master_name_is_required() -> None:
    app = App("x", broker="sentinel://127.0.0.1:1;sentinel://127.0.0.1:2", set_as_current=False)
    with pytest.raises(ConfigurationError, match="master_name"):
        app.broker  # noqa: B018
    app = App("x", backend="sentinel://127.0.0.1:1/1", set_as_current=False)
    with pytest.raises(ConfigurationError, match=r"result_backend_transport_options.*master_name"):
        app.backend  # noqa: B018


def test_tasks_and_results_through_sentinel(shared_set: SentinelSet, ledger_path: str) -> None:
    client = _client(shared_set)
    try:
        with fastq_worker(
            "--concurrency", "2", app="tests.faults.app", env=_env(shared_set, ledger_path)
        ):
            results = client.send_many([("faults.work", (i,), None) for i in range(50)])
            assert [r.get(timeout=20) for r in results] == list(range(50))
            one = client.send_task("faults.work", (50,))
            assert one.get(timeout=10) == 50
            # ETA (deferred in the worker, moved back when due) and remote control.
            later = client.send_task("faults.work", (51,), countdown=1)
            assert later.get(timeout=10) == 51
            assert client.control.ping(timeout=2.0), "no worker answered ping"
        # On the master, in Celery's keys: results in db 1, queue lists and bindings in db 0.
        master = shared_set.client(1)
        assert master.exists(f"celery-task-meta-{one.id}")
        assert shared_set.client(0).exists("_kombu.binding.celery")
    finally:
        client.close()
    tally = ledger.tally(ledger_path, 52)
    assert tally.once == 52, tally


def test_celery_client_to_fastq_worker(shared_set: SentinelSet, ledger_path: str) -> None:
    """Celery's own Sentinel transport and backend, configured the same way."""
    celery = pytest.importorskip("celery")
    app = celery.Celery("sentinel-interop", broker=shared_set.url(0), backend=shared_set.url(1))
    app.conf.broker_transport_options = _options(shared_set)
    app.conf.result_backend_transport_options = _options(shared_set)
    try:
        with fastq_worker(
            "--concurrency", "2", app="tests.faults.app", env=_env(shared_set, ledger_path)
        ):
            results = [app.send_task("faults.work", (i,)) for i in range(20)]
            assert [r.get(timeout=20) for r in results] == list(range(20))
    finally:
        app.close()
    assert ledger.tally(ledger_path, 20).once == 20


def _consumers_on(s: SentinelSet, port: int) -> int:
    """How many of the worker's consumer connections the node on ``port`` has."""
    try:
        clients = s.data[port].client().client_list()
    except redis.RedisError:
        return 0
    return sum(1 for c in clients if c["name"].startswith("fastq-consumer:"))


def _drain_through(
    s: SentinelSet,
    ledger_path: str,
    fault: Callable[[], int],
    label: str,
    note: Callable[[], str] = lambda: "",
) -> None:
    client = _client(s)
    try:
        results = client.send_many([("faults.work", (i, TASK_SECONDS), None) for i in range(SENT)])
        # The fixed window HELD_PER_CHILD counts with (the adaptive one would follow the
        # tasks' times).
        args = ("--concurrency", "2", "--prefetch-multiplier", "4")
        with fastq_worker(*args, app="tests.faults.app", env=_env(s, ledger_path)) as worker:
            started = time.monotonic()
            wait_until(lambda: ledger.ended(ledger_path) >= 250, timeout=20)
            ended_before = ledger.runs_ended(ledger_path)
            fault_at = time.monotonic()
            old = fault()
            switched = s.wait_for_new_master(old)
            new = s.master_port()
            # Both children's consumers reconnect to the new master by themselves.
            wait_until(lambda: _consumers_on(s, new) >= 2, timeout=FOLLOW_BOUND + 5)
            followed = time.monotonic() - switched
            since_fault = time.monotonic() - fault_at
            # Runs that ended between the fault and the consumers' move: their claims or acks
            # may have gone to a master whose writes are then lost.
            window = ledger.runs_ended(ledger_path) - ended_before
            ledger.wait_drained(ledger_path, SENT, DRAIN_BOUND, started, worker.log)
            # The client found the new master too: a task sent now runs and its result returns.
            after = client.send_task("faults.work", (SENT,))
            assert after.get(timeout=10) == SENT
            # Every result, those stored around the failover included.
            values = [r.get(timeout=10) for r in results]
            assert values == list(range(SENT))
            time.sleep(0.5)  # a duplicate run would show now
        tally = ledger.tally(ledger_path, SENT)
        extra = note()
        report(
            f"{label} (acks_late{', replica ' + extra if extra else ''}): consumers on the new "
            f"master {since_fault:.2f}s after the fault ({followed:.2f}s after every sentinel "
            f"named it), {window} runs ended in between",
            tally,
        )
        assert tally.never == 0, tally
        # At least once, and twice only for what ran, or was held, while the workers wrote to
        # a master that was no longer the master (its writes lost when it was demoted): a task
        # claimed there is still queued on the new master, one acked there is still unacked.
        assert tally.twice_or_more <= window + 2 * HELD_PER_CHILD, (tally, window)
        assert followed <= FOLLOW_BOUND, followed
        _assert_nothing_held(s)
    finally:
        client.close()
    return None


def _assert_nothing_held(s: SentinelSet) -> None:
    r = s.client(0)
    assert r.hlen("unacked") == 0, r.hkeys("unacked")[:10]
    assert r.llen("celery") == 0


def test_sentinel_failover_mid_drain(own_set: SentinelSet, ledger_path: str) -> None:
    _drain_through(own_set, ledger_path, own_set.failover, "SENTINEL FAILOVER mid-drain")


def test_master_killed_mid_drain(own_set: SentinelSet, ledger_path: str) -> None:
    behind: list[int] = []

    def kill() -> int:
        # How far the replica is behind (bytes of the replication stream) as the master dies:
        # with Redis's asynchronous replication that much is lost by Redis itself.
        old = own_set.master_port()
        replica = next(n for port, n in own_set.data.items() if port != old)
        written = own_set.data[old].client().info("replication")["master_repl_offset"]
        received = replica.client().info("replication")["slave_repl_offset"]
        own_set.data[old].kill()
        behind.append(int(written) - int(received))
        return old

    _drain_through(
        own_set, ledger_path, kill, "master SIGKILLed mid-drain", lambda: f"{behind[0]} B behind"
    )


def test_beat_keeps_its_state_on_sentinel(shared_set: SentinelSet) -> None:
    from fastq.beat.state import RedisBeatState, state_for

    app = _client(shared_set)
    state = state_for(app.conf, shared_set.url(0), shared_set.url(1))
    assert isinstance(state, RedisBeatState)
    assert state.acquire("beat-1")
    assert not state.acquire("beat-2"), "a second beat got the lease"
    assert shared_set.client(0).exists(state.lease_key)
