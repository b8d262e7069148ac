"""A prefork child SIGKILLed mid-drain (by its own task, as the OOM killer would): every task it
had finished keeps its stored result, the one it was running fails with ``WorkerLostError``
(early ack) or runs again (``acks_late``), and no other task runs twice."""

from __future__ import annotations

import time

import pytest
from fastq import App, states

from tests.faults import ledger
from tests.faults.conftest import report, worker_env
from tests.faults.redis_server import RedisServer
from tests.processes import fastq_worker

SENT = 200
CRASH_AT = (40, 95, 150)


def _states(client: App, ids: list[str]) -> list[str]:
    return [meta["status"] for meta in client.backend.get_many(ids)]


def _settle(client: App, ids: list[str], timeout: float) -> list[str]:
    """The stored states once none is pending any more, or as they are after ``timeout``."""
    deadline = time.monotonic() + timeout
    found = _states(client, ids)
    while time.monotonic() < deadline and not all(s in states.READY_STATES for s in found):
        time.sleep(0.1)
        found = _states(client, ids)
    return found


@pytest.mark.parametrize("acks_late", [False, True], ids=["early-ack", "acks-late"])
def test_child_killed_mid_drain(own_redis: RedisServer, ledger_path: str, acks_late: bool) -> None:
    env = worker_env(own_redis.url(0), own_redis.url(1), ledger_path, acks_late)
    client = App("client", broker=own_redis.url(0), backend=own_redis.url(1), set_as_current=False)
    try:
        calls = [
            ("faults.crash" if i in CRASH_AT else "faults.work", (i,), None) for i in range(SENT)
        ]
        ids = [r.id for r in client.send_many(calls)]
        with fastq_worker("--concurrency", "2", app="tests.faults.app", env=env) as worker:
            found = _settle(client, ids, timeout=25)
            log = worker.log()
        tally = ledger.tally(ledger_path, SENT)
        report(
            f"child SIGKILLed 3x mid-drain (Redis, {'acks_late' if acks_late else 'early ack'})",
            tally,
        )
        pending = [i for i, s in enumerate(found) if s not in states.READY_STATES]
        assert not pending, f"tasks left without a result: {pending}\n{log[-3000:]}"
        starts, ends = ledger.read(ledger_path)
        twice = sorted(s for s in range(SENT) if ends[s] > 1)
        assert not twice, f"finished tasks ran again: {twice}"
        others = [s for s in range(SENT) if s not in CRASH_AT]
        assert all(found[s] == states.SUCCESS and ends[s] == 1 for s in others)
        if acks_late:  # the running one came back and ran to its end, once
            assert all(found[s] == states.SUCCESS and starts[s] == 2 for s in CRASH_AT)
            assert (tally.once, tally.never) == (SENT, 0)
        else:  # acked before it ran: it failed, as in Celery
            assert all(found[s] == states.FAILURE for s in CRASH_AT)
            metas = client.backend.get_many([ids[s] for s in CRASH_AT])
            assert all(m["result"]["exc_type"] == "WorkerLostError" for m in metas)
            assert (tally.once, tally.never) == (SENT - len(CRASH_AT), len(CRASH_AT))
    finally:
        client.close()
