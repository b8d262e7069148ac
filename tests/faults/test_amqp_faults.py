"""RabbitMQ under faults, both ack modes: connections closed by the broker mid-drain (a vhost of
the test's own on the shared RabbitMQ), and a node of the test's own SIGKILLed mid-publish and
mid-drain, then started again on its data. The run ledger counts how often each task ran.

``FASTQ_FAULT_CONFIRM_PUBLISH=0`` runs the node-kill test with publisher confirms off (the
default before fastq turned them on): it then fails, showing the returned publishes lost."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastq import App
from fastq.errors import BrokerError

from tests.faults import ledger
from tests.faults.conftest import report, worker_env
from tests.faults.rabbit import RabbitNode, Vhost, own_rabbit, own_vhost  # noqa: F401
from tests.processes import WorkerProcess, fastq_worker, wait_until

#: These drains of up to 2 000 tasks on RabbitMQ judge progress by time: they run one after
#: another on one xdist worker rather than side by side (seen stalling when two ran at once).
pytestmark = pytest.mark.xdist_group("amqp-faults")

PREFETCH = 4  # worker_prefetch_multiplier's default: each child's window
CHILDREN = 2
MODES = [pytest.param(False, id="early-ack"), pytest.param(True, id="acks-late")]


def client_app(url: str) -> App:
    options: dict[str, Any] = {}
    confirm = os.environ.get("FASTQ_FAULT_CONFIRM_PUBLISH")
    if confirm is not None:
        options["broker_transport_options"] = {"confirm_publish": confirm == "1"}
    return App("fault-client", broker=url, set_as_current=False, **options)


def starts(path: str) -> int:
    return sum(ledger.read(path)[0].values())


def wait_for_progress(
    path: str, beyond: int, timeout: float, alive: Callable[[], bool]
) -> float | None:
    """Seconds until more than ``beyond`` task starts are in the ledger, or None."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if starts(path) > beyond:
            return time.monotonic() - began
        if not alive():
            return None
        time.sleep(0.02)
    return None


def works(worker: WorkerProcess) -> Callable[[], bool]:
    return lambda: worker.proc.poll() is None


@pytest.mark.parametrize("acks_late", MODES)
def test_connections_closed_mid_drain(
    own_vhost: Vhost,  # noqa: F811
    ledger_path: str,
    acks_late: bool,
) -> None:
    """Every connection of the vhost closed twice by the broker while a worker drains: it
    consumes again on its own within 2 s, each child with its full window, and loses nothing.
    With early ack only a task whose ack was in flight may run again; with late acks only the
    tasks a child had fetched and not yet acked (its window)."""
    # Each close costs two rabbitmqctl calls (seconds on a busy machine) while the drain goes
    # on at ~200 tasks/s: the second close leaves ~1 200 tasks, so the drain cannot end first.
    sent = 2000
    url = own_vhost.url()
    client = client_app(url)
    try:
        client.send_many([("faults.work", (i, 0.01), None) for i in range(sent)])
    finally:
        client.close()
    recoveries = []
    mode = "acks_late" if acks_late else "early ack"
    with fastq_worker(
        "--concurrency", str(CHILDREN), app="tests.faults.app",
        env=worker_env(url, "", ledger_path, acks_late),
    ) as worker:  # fmt: skip
        for at in (300, 800):
            wait_until(lambda at=at: ledger.ended(ledger_path) >= at, timeout=60)
            closed = own_vhost.close_connections("fastq fault test")
            cut = time.monotonic()
            baseline = starts(ledger_path)
            left = sent - ledger.ended(ledger_path)
            assert left > 4 * CHILDREN * PREFETCH, f"the drain nearly ended first: {left} left"
            # Tasks a child had already fetched may still start; past a whole window each,
            # the worker is consuming again.
            took = wait_for_progress(ledger_path, baseline + CHILDREN * PREFETCH, 10, works(worker))
            assert took is not None, f"no progress after the close:\n{worker.log()}"
            recoveries.append(took)
            assert closed >= CHILDREN, own_vhost.connections()
            assert time.monotonic() - cut < 10
        # Both children consume again with their full window.
        consumers = [c for c in own_vhost.consumers() if c["queue"] == "celery"]
        assert len(consumers) == CHILDREN, consumers
        assert all(c["prefetch"] == str(PREFETCH) for c in consumers), consumers
        wait_until(lambda: ledger.ended(ledger_path) >= sent, timeout=90)
        log = worker.log()
    tally = ledger.tally(ledger_path, sent)
    report(
        f"RabbitMQ, connections closed twice mid-drain ({mode}); "
        f"consuming again after {', '.join(f'{r:.2f}s' for r in recoveries)}",
        tally,
    )
    assert "guest:guest" not in log
    assert tally.never == 0, tally
    assert all(r < 2.0 for r in recoveries), recoveries
    # Per close, each child may run again at most what it held: its window.
    assert tally.twice_or_more <= 2 * CHILDREN * PREFETCH, tally
    assert tally.started_not_ended == 0, tally


class Publisher(threading.Thread):
    """Publishes ``total`` tasks in small paced batches; a batch that raised is sent again
    until it returns. ``confirmed`` holds the seqs whose call returned."""

    def __init__(
        self,
        url: str,
        total: int,
        batch: int = 10,
        pause: float = 0.03,
        make_app: Callable[[str], App] = client_app,
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.total, self.batch, self.pause = url, total, batch, pause
        self.make_app = make_app
        self.confirmed: list[int] = []
        self.failures: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        client = self.make_app(self.url)
        deadline = time.monotonic() + 120
        try:
            for start in range(0, self.total, self.batch):
                seqs = range(start, min(start + self.batch, self.total))
                while True:
                    try:
                        client.send_many([("faults.work", (s, 0.005), None) for s in seqs])
                        break
                    except BrokerError as exc:  # the node is down: try again
                        self.failures.append(str(exc))
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
                self.confirmed.extend(seqs)
                time.sleep(self.pause)
        except BaseException as exc:
            self.error = exc
        finally:
            client.close()


@pytest.mark.parametrize("acks_late", MODES)
def test_node_killed_mid_publish_and_mid_drain(
    own_rabbit: RabbitNode,  # noqa: F811
    ledger_path: str,
    acks_late: bool,
) -> None:
    """The node SIGKILLed while tasks are being published and drained, then started again on
    its data: every publish that returned ran (publisher confirms), every queued task ran
    (durable queue, persistent messages), and the worker consumes again on its own."""
    sent = 1500
    url = own_rabbit.url()
    mode = "acks_late" if acks_late else "early ack"
    with fastq_worker(
        "--concurrency", str(CHILDREN), app="tests.faults.app",
        env=worker_env(url, "", ledger_path, acks_late),
    ) as worker:  # fmt: skip
        publisher = Publisher(url, sent)
        publisher.start()
        wait_until(
            lambda: len(publisher.confirmed) >= 400 and ledger.ended(ledger_path) >= 150,
            timeout=60,
        )
        own_rabbit.kill()
        confirmed_at_kill = len(publisher.confirmed)
        time.sleep(1.0)
        own_rabbit.start()
        baseline = starts(ledger_path)
        recovered = wait_for_progress(
            ledger_path, baseline + CHILDREN * PREFETCH, 30, works(worker)
        )
        publisher.join(timeout=90)
        assert publisher.error is None, publisher.error
        assert not publisher.is_alive()
        # Every task whose publish returned runs; a lost one never ends, hence the timeout.
        try:
            wait_until(lambda: ledger.ended(ledger_path) >= sent, timeout=60)
        except AssertionError:
            pass
        log = worker.log()
    tally = ledger.tally(ledger_path, sent)
    report(
        f"RabbitMQ node SIGKILLed mid-publish and mid-drain ({mode}); "
        f"{confirmed_at_kill} publishes returned before the kill, "
        f"{len(publisher.failures)} publish call(s) failed while it was down; "
        f"consuming again {recovered if recovered is None else f'{recovered:.2f}s'} "
        "after the node answered",
        tally,
    )
    assert "guest:guest" not in log
    assert recovered is not None, f"the worker did not consume again:\n{log}"
    # The worker retries at least every second (WorkerLoop.run's capped backoff): 2 s from the
    # node answering, plus the ledger's polling.
    assert recovered < 2.5, recovered
    assert tally.never == 0, tally
    assert tally.started_not_ended == 0, tally


def test_a_broker_blocking_publishers_fails_the_publish_in_time(
    own_rabbit: RabbitNode,  # noqa: F811
) -> None:
    """A memory alarm makes RabbitMQ stop reading publishers' sockets: with confirms, a
    publish raises after ``publish_timeout`` without progress, saying why, instead of hanging.
    The connection stays (other threads' calls on it are not cut and resent): once the alarm
    clears, the timed-out call's messages are queued, once, and publishing works again."""
    client = App(
        "fault-client",
        broker=own_rabbit.url(),
        broker_transport_options={"publish_timeout": 2},
        set_as_current=False,
    )
    try:
        client.send_task("faults.work", (0,))  # connected and declared before the alarm
        own_rabbit.ctl("set_vm_memory_high_watermark", "0.000001")
        started = time.monotonic()
        with pytest.raises(BrokerError, match=r"publish_timeout.*blocking publishers"):
            client.send_many([("faults.work", (i,), None) for i in range(1, 50)])
        took = time.monotonic() - started
        assert took < 10, took
        publisher = client.broker.publisher
        assert publisher.connected
        own_rabbit.ctl("set_vm_memory_high_watermark", "0.4")
        wait_until(lambda: _depth(own_rabbit, client.conf.task_default_queue) == 50, timeout=30)
        assert _publishes(client) and client.broker.publisher is publisher
        wait_until(lambda: _depth(own_rabbit, client.conf.task_default_queue) == 51, timeout=10)
        # One connection, the one it had before the alarm.
        listed = own_rabbit.ctl("list_connections", "client_properties")
        assert listed.count("fastq publisher") == 1 and publisher.connection_name in listed
    finally:
        client.close()


def _depth(node: RabbitNode, queue: str) -> int:
    for row in node.ctl("list_queues", "name", "messages").splitlines():
        name, _, count = row.partition("\t")
        if name == queue:
            return int(count)
    return 0


def _publishes(client: App) -> bool:
    try:
        client.send_task("faults.work", (99,))
        return True
    except BrokerError:
        return False
