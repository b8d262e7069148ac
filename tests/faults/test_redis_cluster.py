"""Redis Cluster for the broker and the result backend (fastq only): a cluster of the test's own
started by scripts/redis_cluster.sh (tests/faults/redis_cluster.py). A fastq worker
(``--concurrency 2``, ``acks_late``) drains ``SENT`` tasks spread over two queues whose slots are
on different masters, undisturbed, while one queue's slot is migrated to another master key by
key, or while a master is SIGKILLed and its replica promoted; every task's runs are counted
(tests/faults/ledger.py) and every result is read back with ``get()`` across the cluster."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fastq import App, _core
from fastq.errors import ConfigurationError

from tests.faults import ledger
from tests.faults.conftest import report, worker_env
from tests.faults.redis_cluster import RedisCluster, missing
from tests.processes import fastq_worker, wait_until

pytestmark = [
    pytest.mark.xdist_group("redis-cluster"),
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
]

SENT = 2000
TASK_SECONDS = 0.002
DRAIN_BOUND = 45.0
#: What a child holds besides the tasks that end: its prefetch window (4) and the running task.
HELD_PER_CHILD = 4 + 1
CANDIDATES = [f"q{i}" for i in range(64)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    """One cluster for the module (3 masters, a replica each): the master-kill test, which
    leaves it one master short, runs last."""
    with RedisCluster(3, replicas=1) as c:
        yield c


def _queues(c: RedisCluster, prefix: str) -> list[str]:
    """Two queue names whose slots are on different masters."""
    chosen: list[str] = []
    owners: set[int] = set()
    for name in (f"{prefix}{q}" for q in CANDIDATES):
        owner = c.owner(c.slot(f"{{{name}}}"))
        if owner not in owners:
            chosen.append(name)
            owners.add(owner)
        if len(chosen) == 2:
            return chosen
    raise AssertionError("no two queues on different masters")


def _client(c: RedisCluster) -> App:
    return App("client", broker=c.url(), backend=c.url(), set_as_current=False)


def _drain(
    c: RedisCluster,
    ledger_path: str,
    label: str,
    fault: Callable[[list[str]], str] | None = None,
) -> None:
    queues = _queues(c, label.split()[0])
    client = _client(c)
    try:
        results = []
        for q, part in ((queues[0], range(0, SENT, 2)), (queues[1], range(1, SENT, 2))):
            calls = [("faults.work", (i, TASK_SECONDS), None) for i in part]
            results += client.send_many(calls, queue=q)
        env = worker_env(c.url(), c.url(), ledger_path, acks_late=True, visibility_timeout=3600)
        # The fixed window HELD_PER_CHILD counts with (the adaptive one follows the tasks).
        args = ("--concurrency", "2", "--prefetch-multiplier", "4", "-Q", ",".join(queues))
        with fastq_worker(*args, app="tests.faults.app", env=env) as worker:
            started = time.monotonic()
            note = ""
            window = 0
            if fault is not None:
                wait_until(lambda: ledger.ended(ledger_path) >= SENT // 5, timeout=20)
                ended_before = ledger.runs_ended(ledger_path)
                note = fault(queues)
                window = ledger.runs_ended(ledger_path) - ended_before
            ledger.wait_drained(ledger_path, SENT, DRAIN_BOUND, started, worker.log)
            elapsed = time.monotonic() - started
            by_id = {r.id: r for r in results}
            values = sorted(r.get(timeout=10) for r in by_id.values())
            assert values == list(range(SENT))
            time.sleep(0.5)  # a duplicate run would show now
        tally = ledger.tally(ledger_path, SENT)
        report(f"{label} (acks_late, 2 queues on 2 masters, {elapsed:.1f}s){note}", tally)
        assert tally.never == 0, tally
        if fault is None:
            assert tally.once == SENT, tally
        else:
            assert tally.twice_or_more <= window + 2 * HELD_PER_CHILD, (tally, window)
        r = c.client()
        for q in queues:
            assert r.hlen(f"{{{q}}}unacked") == 0, q
            assert r.llen(f"{{{q}}}") == 0, q
    finally:
        client.close()


def test_drain_over_two_masters(cluster: RedisCluster, ledger_path: str) -> None:
    _drain(cluster, ledger_path, "plain drain")


def test_slot_migrated_mid_drain(cluster: RedisCluster, ledger_path: str) -> None:
    def reshard(queues: list[str]) -> str:
        # Round the masters and back, key by key with pauses, each time while the worker holds
        # messages of the queue (its `unacked` in the slot): the clients meet MOVED, ASK and
        # TRYAGAIN (keys split between two nodes) while they claim and ack.
        slot = cluster.slot(f"{{{queues[0]}}}")
        home = cluster.owner(slot)
        began = time.monotonic()
        moved: list[str] = []
        for target in [p for p in cluster.master_ports() if p != home] + [home]:
            cluster.migrate(slot, target, pause=0.1, when="}unacked")
            assert cluster.owner(slot) == target
            moved += [str(k) for k in cluster.migrated_keys]
        # The queue's keys by kind (result keys that happen to share the slot: "other").
        kinds = sorted(
            {k.partition("}")[2].split(".")[0] or "list" if "}" in k else "other" for k in moved}
        )
        return (
            f", slot {slot} of {queues[0]} migrated 3 times ({len(moved)} keys: "
            f"{', '.join(kinds)}; {time.monotonic() - began:.2f}s)"
        )

    _drain(cluster, ledger_path, "resharding mid-drain", reshard)


def test_chord_and_group_results_on_the_cluster(cluster: RedisCluster, ledger_path: str) -> None:
    client = _client(cluster)
    try:
        env = worker_env(cluster.url(), cluster.url(), ledger_path)
        with fastq_worker("--concurrency", "2", app="tests.faults.app", env=env):
            results = client.send_many([("faults.work", (i,), None) for i in range(30)])
            began = time.monotonic()
            assert [r.get(timeout=10) for r in results] == list(range(30))
            latency = (time.monotonic() - began) / 30
            later = client.send_task("faults.work", (30,), countdown=1)
            assert later.get(timeout=10) == 30
        # get() is woken by pub/sub, not by polling: far below the 0.5 s poll interval.
        assert latency < 0.25, latency
    finally:
        client.close()


def test_what_a_cluster_refuses(cluster: RedisCluster) -> None:
    app = _client(cluster)
    with pytest.raises(ConfigurationError, match="Celery"):
        app.broker.control_channel()
    with pytest.raises(ValueError, match="brace"):
        _core.RedisConsumer(cluster.url(), ["a{b}"], accept=["json"], prefetch=1, consumer_id="c")
    bad = App("x", broker=cluster.url(), set_as_current=False)
    bad.conf.broker_transport_options = {"global_keyprefix": "{p}"}
    with pytest.raises(ConfigurationError, match="brace"):
        bad.broker  # noqa: B018


def test_master_killed_mid_drain(cluster: RedisCluster, ledger_path: str) -> None:
    def kill(queues: list[str]) -> str:
        slot = cluster.slot(f"{{{queues[0]}}}")
        victim = cluster.owner(slot)
        began = time.monotonic()
        cluster.kill(victim)
        wait_until(lambda: _promoted(cluster, slot, victim), timeout=20)
        took = time.monotonic() - began
        return f", master of {queues[0]} SIGKILLed, replica serving after {took:.2f}s"

    _drain(cluster, ledger_path, "master-kill mid-drain", kill)


def _promoted(c: RedisCluster, slot: int, old: int) -> bool:
    try:
        return c.owner(slot) != old
    except Exception:
        return False
