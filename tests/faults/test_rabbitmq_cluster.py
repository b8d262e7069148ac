"""A 3-node RabbitMQ cluster of the module's own (``scripts/rabbitmq_cluster.sh``) with the default
queue a quorum queue, and a node SIGKILLed in the middle of an ``acks_late`` drain while tasks
are being published: the node the worker is connected to, then (separately) the node leading
the queue. The worker and the client are given the three nodes as Celery's URL list
(``amqp://n1;amqp://n2;amqp://n3``) and fail over on their own; the run ledger counts how often
each task ran. Every publish either returned (then the task ran) or raised and was sent again.

The cluster starts once for the module (~20 s); a killed node is booted again before the next
test, and every node is killed when the module ends, whatever happened."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastq import App
from kombu import Queue

from tests.faults import ledger
from tests.faults.conftest import report, worker_env
from tests.faults.rabbit_cluster import RabbitCluster, cluster_available
from tests.faults.test_amqp_faults import Publisher, starts, wait_for_progress, works
from tests.processes import fastq_worker, wait_until

pytestmark = pytest.mark.xdist_group("rabbitmq-cluster")

SENT = 1000
CHILDREN = 2
PREFETCH = 4
QUEUE = "celery"
NODES = (1, 2, 3)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    reason = cluster_available()
    if reason is not None:
        pytest.skip(reason)
    nodes = RabbitCluster(len(NODES))
    try:
        nodes.start()
    except (RuntimeError, OSError) as exc:
        nodes.close()
        pytest.skip(f"a 3-node RabbitMQ cluster could not start on this machine: {exc}")
    try:
        yield nodes
    finally:
        nodes.close()


@pytest.fixture
def whole(cluster: RabbitCluster) -> RabbitCluster:
    """The cluster with every node up (one a previous test killed is booted again)."""
    for node in sorted(cluster.down):
        cluster.restart(node)
    return cluster


def quorum_client(url: str, publish_retry: bool = True) -> App:
    """A client of the quorum queue; without ``publish_retry`` a publish cut by the node's
    death raises (the caller sends it again) rather than being sent again through the next
    node by fastq itself."""
    return App(
        "cluster-client",
        broker=url,
        task_queues=[Queue(QUEUE, queue_arguments={"x-queue-type": "quorum"})],
        task_publish_retry=publish_retry,
        set_as_current=False,
    )


def first(node: int) -> list[int]:
    """The three nodes, ``node`` first: the order a client tries them."""
    return [node, *(n for n in NODES if n != node)]


def drain_through_a_kill(
    cluster: RabbitCluster,
    ledger_path: str,
    *,
    leader: int,
    worker_on: int,
    victim: int,
    publish_retry: bool,
) -> tuple[ledger.Tally, dict[str, object]]:
    """Publishes ``SENT`` tasks through ``victim`` (first in the client's list) while a worker
    connected to ``worker_on`` drains them with ``acks_late``; kills ``victim`` mid-way."""
    vhost = cluster.add_vhost()
    cluster.declare_quorum(leader, vhost, QUEUE)
    assert cluster.leader(vhost, QUEUE) == leader
    env = {
        **worker_env(cluster.urls(first(worker_on), vhost), "", ledger_path, acks_late=True),
        "FASTQ_FAULT_QUORUM": "1",
    }
    facts: dict[str, object] = {}
    with fastq_worker(
        "--concurrency", str(CHILDREN), app="tests.faults.app", env=env
    ) as worker:  # fmt: skip
        # The worker's connections: its children's consumers and its remote control.
        assert {node for node, _ in cluster.connections(vhost)} == {worker_on}
        publisher = Publisher(
            cluster.urls(first(victim), vhost),
            SENT,
            make_app=lambda url: quorum_client(url, publish_retry),
        )
        publisher.start()
        wait_until(
            lambda: len(publisher.confirmed) >= 300 and ledger.ended(ledger_path) >= 150,
            timeout=60,
        )
        cluster.kill(victim)
        facts["confirmed_at_kill"] = len(publisher.confirmed)
        baseline = starts(ledger_path)
        facts["recovered"] = wait_for_progress(
            ledger_path, baseline + CHILDREN * PREFETCH, 30, works(worker)
        )
        publisher.join(timeout=60)
        assert publisher.error is None, publisher.error
        assert not publisher.is_alive(), (len(publisher.confirmed), publisher.failures[-3:])
        facts["publish_failures"] = len(publisher.failures)
        try:  # a task lost would never end: the tally says which
            wait_until(lambda: ledger.ended(ledger_path) >= SENT, timeout=60)
            # Copies of tasks already run (a publish sent twice) and the last late acks.
            wait_until(lambda: cluster.depth(vhost, QUEUE) == (0, 0), timeout=20)
        except AssertionError:
            pass
        facts["leader_after"] = cluster.leader(vhost, QUEUE)
        facts["log"] = worker.log()
        facts["depth"] = cluster.depth(vhost, QUEUE)
    return ledger.tally(ledger_path, SENT), facts


def check(tally: ledger.Tally, facts: dict[str, object]) -> None:
    log = str(facts["log"])
    assert "guest:guest" not in log
    assert facts["recovered"] is not None, f"the worker did not run tasks again:\n{log}"
    assert tally.never == 0, (tally, facts["depth"], log[-3000:])
    assert tally.started_not_ended == 0, tally
    # Only what a child held unacknowledged (its window) or what a publish sent again after
    # its confirm was lost may run twice.
    assert tally.twice_or_more <= CHILDREN * PREFETCH + 50, tally
    assert facts["depth"] == (0, 0), facts["depth"]


def describe(facts: dict[str, object]) -> str:
    recovered = facts["recovered"]
    took = "never" if not isinstance(recovered, float) else f"{recovered:.2f}s"
    return (
        f"{facts['confirmed_at_kill']} publishes returned before the kill, "
        f"{facts['publish_failures']} publish call(s) raised (sent again); tasks ran again "
        f"{took} after the kill; leader afterwards: node {facts['leader_after']}"
    )


def test_the_workers_node_killed_mid_drain(whole: RabbitCluster, ledger_path: str) -> None:
    """Node 1, which the worker (and the client) are connected to, SIGKILLed mid-drain; the
    queue's leader is on node 2. The worker reconnects to node 2 on its own; what its children
    held unacknowledged on node 1 is returned to the queue and runs again. The client sends
    a batch cut by the kill again through node 2 itself (``task_publish_retry``)."""
    tally, facts = drain_through_a_kill(
        whole, ledger_path, leader=2, worker_on=1, victim=1, publish_retry=True
    )
    report(f"RabbitMQ cluster, the worker's node SIGKILLed mid-drain (acks_late, quorum); "
           f"{describe(facts)}", tally)  # fmt: skip
    check(tally, facts)
    assert "lost the connection" in str(facts["log"])


def test_the_queue_leaders_node_killed_mid_drain(whole: RabbitCluster, ledger_path: str) -> None:
    """Node 2, leading the quorum queue (and the client's node), SIGKILLed mid-drain while the
    worker is connected to node 1: a new leader is elected among nodes 1 and 3 and the drain
    goes on. The client's publishes cut by the kill raise (``task_publish_retry`` off), and are
    sent again by the caller."""
    tally, facts = drain_through_a_kill(
        whole, ledger_path, leader=2, worker_on=1, victim=2, publish_retry=False
    )
    report(f"RabbitMQ cluster, the quorum queue leader's node SIGKILLed mid-drain (acks_late); "
           f"{describe(facts)}", tally)  # fmt: skip
    check(tally, facts)
    assert facts["leader_after"] in (1, 3), facts["leader_after"]


def test_a_client_starts_with_its_first_node_down(whole: RabbitCluster) -> None:
    """The first URL of the list refuses connections: the publisher and the py-amqp admin
    connection go on to the next at once, as kombu does, and a task sent is queued."""
    vhost = whole.add_vhost()
    whole.declare_quorum(2, vhost, QUEUE)
    whole.kill(3)
    client = quorum_client(whole.urls([3, 1, 2], vhost))
    try:
        started = time.monotonic()
        client.send_task("faults.work", (0,))
        assert time.monotonic() - started < 5
        # (Read through py-amqp, past node 3 too: rabbitmqctl's counts of a quorum queue lag.)
        assert client.broker.queue_length(QUEUE) == 1
    finally:
        client.close()
