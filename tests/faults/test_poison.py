"""Poison messages: a message whose headers, properties or embed carry any value (wrong type,
unparsable date, bad time limit) never kills a worker child; it is refused with a stored FAILURE
where it has an id. A task that still kills its child each time it runs (``acks_late``, so it
comes back) is quarantined after ``QUARANTINE_AFTER`` deaths instead of coming back forever."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from fastq import App, _core, states
from fastq.worker.supervisor import QUARANTINE_AFTER
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.conftest import worker_env
from tests.faults.redis_server import RedisServer
from tests.processes import WorkerProcess, fastq_worker

#: One xdist worker runs the module, so its module-scoped worker starts once.
pytestmark = pytest.mark.xdist_group("poison")

QUEUE = "celery"


class Pool:
    """One long-lived worker on a Redis of its own, and a client that publishes raw envelopes."""

    def __init__(self, server: RedisServer, worker: WorkerProcess, client: App) -> None:
        self.server = server
        self.worker = worker
        self.client = client
        self.redis = server.client(0)
        self.seq = 0

    def envelope(
        self, name: str = "faults.work", kwargs: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """A valid message as fastq sends it, as the JSON envelope on the Redis list."""
        self.seq += 1
        message = self.client.build_message(name, (self.seq,), kwargs)
        m = message
        raw = _core.encode_task_envelope(
            m.headers,
            m.args,
            m.kwargs,
            m.embed,
            serializer=m.serializer,
            exchange=m.exchange,
            routing_key=m.routing_key or m.queue,
            priority=m.priority or 0,
            delivery_mode=m.delivery_mode,
            reply_to=m.reply_to,
            properties=m.properties or None,
        )
        return message.id, json.loads(raw)

    def push(self, envelope: dict[str, Any]) -> None:
        self.redis.lpush(QUEUE, json.dumps(envelope))

    def states_of(self, ids: list[str]) -> list[str]:
        return [m["status"] for m in self.client.backend.get_many(ids)]

    def wait_ready(self, ids: list[str], timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        found = self.states_of(ids)
        while time.monotonic() < deadline and not all(s in states.READY_STATES for s in found):
            time.sleep(0.01)
            found = self.states_of(ids)
        return found

    def deaths(self) -> int:
        """Children that died, other than those killed for running past a hard time limit."""
        log = self.worker.log()
        return log.count(" died with ") - log.count("ran past its hard time limit")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    ledger_path = str(tmp_path_factory.mktemp("poison") / "ledger.txt")
    with RedisServer() as server:
        # acks_late: a poison message would come back to the next child
        env = worker_env(server.url(0), server.url(1), ledger_path, acks_late=True)
        client = App("client", broker=server.url(0), backend=server.url(1), set_as_current=False)
        worker = fastq_worker("--concurrency", "2", app="tests.faults.app", env=env)
        try:
            yield Pool(server, worker, client)
        finally:
            worker.stop()
            client.close()


def _body(envelope: dict[str, Any]) -> list[Any]:
    return json.loads(base64.b64decode(envelope["body"]))


def _set_body(envelope: dict[str, Any], body: list[Any]) -> None:
    envelope["body"] = base64.b64encode(json.dumps(body).encode()).decode()


# -- the examples from the issue -------------------------------------------------------------------
BAD = [
    ("headers", "eta", "not-a-date"),
    ("headers", "eta", 12345),
    ("headers", "expires", "not-a-date"),
    ("headers", "expires", 12345),
    ("headers", "timelimit", ["a", "b"]),
    ("headers", "timelimit", "soon"),
    ("headers", "retries", "three"),
    ("headers", "retries", -1),
    ("headers", "group", 5),
    ("headers", "group_index", "first"),
    ("headers", "root_id", ["x"]),
    ("headers", "parent_id", {"a": 1}),
    ("embed", "callbacks", "not a list"),
    ("embed", "errbacks", [1, 2]),
    ("embed", "chain", {"task": "x"}),
    ("embed", "chord", 5),
]


@pytest.mark.parametrize(("where", "key", "value"), BAD, ids=[f"{k}={v!r}" for _, k, v in BAD])
def test_a_bad_field_is_refused_with_a_failure(
    pool: Pool, where: str, key: str, value: Any
) -> None:
    deaths = pool.deaths()
    task_id, envelope = pool.envelope()
    if where == "headers":
        envelope["headers"][key] = value
    else:
        body = _body(envelope)
        body[2][key] = value
        _set_body(envelope, body)
    good_id, good = pool.envelope()
    pool.push(envelope)
    pool.push(good)
    bad_state, good_state = pool.wait_ready([task_id, good_id], timeout=10)
    assert good_state == states.SUCCESS
    assert bad_state == states.FAILURE
    meta = pool.client.backend.get_meta(task_id)
    assert meta["result"]["exc_type"] == "InvalidMessage", meta
    assert key in meta["result"]["exc_message"][0], meta
    assert "refused task 'faults.work'" in pool.worker.log()
    assert pool.deaths() == deaths, pool.worker.log()[-3000:]


# -- any value in any field ------------------------------------------------------------------------
HEADERS = [
    "id", "task", "lang", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
    "replaced_task_nesting", "stamped_headers", "stamps", "countdown",
]  # fmt: skip
PROPERTIES = [
    "correlation_id", "reply_to", "delivery_mode", "delivery_info", "priority", "body_encoding",
    "delivery_tag",
]  # fmt: skip
EMBED = ["callbacks", "errbacks", "chain", "chord"]
BODY = ["args", "kwargs", "embed"]

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        ["not-a-date", "2020-01-01T00:00:00", "2020-01-01T00:00:00+00:00", "", "Z", "-1", "null"]
    )
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELD = st.sampled_from(
    [("headers", k) for k in HEADERS]
    + [("properties", k) for k in PROPERTIES]
    + [("embed", k) for k in EMBED]
    + [("body", k) for k in BODY]
)


def _future_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)) > datetime.now(timezone.utc)


def _expect_result(where: str, key: str, value: Any) -> bool:
    """Whether a stored state must follow under the message's own id."""
    if where == "headers" and key == "id":
        return False  # the message's id itself was replaced
    if where == "headers" and key == "ignore_result" and value:
        return False  # a result not to be stored, if the value is taken
    if where == "headers" and key == "eta" and _future_date(value):
        return False  # runs later
    return True


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(field=FIELD, value=JSON)
def test_any_value_in_any_field_never_kills_a_child(
    pool: Pool, field: tuple[str, str], value: Any
) -> None:
    where, key = field
    deaths = pool.deaths()
    task_id, envelope = pool.envelope()
    if where in ("headers", "properties"):
        envelope[where][key] = value
    else:
        body = _body(envelope)
        if where == "body":
            body[BODY.index(key)] = value
        else:
            body[2][key] = value
        _set_body(envelope, body)
    good_id, good = pool.envelope()
    pool.push(envelope)
    pool.push(good)
    # The good task runs: the worker is up and consuming after the bad one.
    assert pool.wait_ready([good_id], timeout=10) == [states.SUCCESS], pool.worker.log()[-3000:]
    if _expect_result(where, key, value):
        found = pool.wait_ready([task_id], timeout=10)
        assert found[0] in states.READY_STATES, (field, value, pool.worker.log()[-3000:])
    assert pool.worker.proc.poll() is None
    assert pool.deaths() == deaths, (field, value, pool.worker.log()[-3000:])


# -- a task that kills its child every time -------------------------------------------------------
def test_a_task_that_kills_every_child_is_quarantined(pool: Pool) -> None:
    task_id, envelope = pool.envelope("faults.crash", kwargs={"times": 1000})
    good_ids = []
    pool.push(envelope)
    for _ in range(20):
        good_id, good = pool.envelope()
        good_ids.append(good_id)
        pool.push(good)
    found = pool.wait_ready([task_id, *good_ids], timeout=30)
    log = pool.worker.log()
    assert found == [states.FAILURE] + [states.SUCCESS] * 20, log[-3000:]
    meta = pool.client.backend.get_meta(task_id)
    assert meta["result"]["exc_type"] == "WorkerLostError"
    assert "quarantined" in meta["result"]["exc_message"][0]
    assert f"killed {QUARANTINE_AFTER} worker children; quarantined" in log
    kept = pool.redis.lrange("fastq.quarantine", 0, -1)
    assert any(task_id.encode() in raw for raw in kept), kept
    time.sleep(1.0)  # nothing brings it back
    assert pool.states_of([task_id]) == [states.FAILURE]
    assert pool.redis.llen(QUEUE) == 0


def test_an_unexpected_error_before_the_run_is_refused_not_fatal(pool: Pool) -> None:
    deaths = pool.deaths()
    task_id, envelope = pool.envelope("faults.misconfigured")
    good_id, good = pool.envelope()
    pool.push(envelope)
    pool.push(good)
    assert pool.wait_ready([task_id, good_id], timeout=10) == [states.FAILURE, states.SUCCESS]
    meta = pool.client.backend.get_meta(task_id)
    assert "ValueError" in meta["result"]["exc_message"][0], meta
    assert "could not be handled; refused" in pool.worker.log()
    assert pool.deaths() == deaths
