"""The RabbitMQ result backends: ``rpc://`` replies (Celery's layout) and the persistent
``rabbitmq://`` queues that survive a client restart. Real RabbitMQ on 127.0.0.1:5672; the
worker's side is played by a second App storing results for the first one's tasks."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from fastq import App, states
from fastq.backends.rabbitmq import QUEUE_PREFIX
from fastq.errors import TimeoutError as FastqTimeout
from fastq.task import Context

from tests.amqp_support import (
    AMQP_URL,
    admin,
    delete,
    list_queues,
    queue_state,
    requires_rabbitmq,
    unique,
    wait_until,
)

pytestmark = requires_rabbitmq


def make_app(backend: str) -> App:
    return App("t", broker=AMQP_URL, backend=backend, set_as_current=False, result_expires=60)


@pytest.fixture
def client() -> Iterator[App]:
    app = make_app("rpc://")
    yield app
    app.close()
    delete(app.oid)


@pytest.fixture
def worker_app() -> Iterator[App]:
    app = make_app("rpc://")
    yield app
    app.close()


def request_from(client: App, task_id: str) -> Context:
    return Context(id=task_id, reply_to=client.oid, correlation_id=task_id)


def sent(client: App) -> str:
    """A task id whose reply queue exists, as after ``send_task``."""
    task_id = str(uuid.uuid4())
    client.backend.on_task_sent(task_id)
    return task_id


def test_reply_is_celerys_rpc_message(client: App, worker_app: App) -> None:
    task_id = str(uuid.uuid4())
    with admin() as ch:  # the client's queue, not consumed, so the reply can be inspected
        ch.queue_declare(client.oid, durable=True, auto_delete=True, arguments={"x-expires": 60000})
        worker_app.backend.mark_as_done(task_id, {"x": 1}, request=request_from(client, task_id))
        got: list = []
        wait_until(
            lambda: bool(got.append(ch.basic_get(client.oid, no_ack=True)) or got[-1]), 5, "reply"
        )
        message = got[-1]
    assert message.properties["correlation_id"] == task_id
    assert message.properties["delivery_mode"] == 1
    assert message.properties["content_type"] == "application/json"
    meta = json.loads(message.body)
    assert meta["status"] == "SUCCESS" and meta["result"] == {"x": 1}
    assert meta["task_id"] == task_id


def test_result_persistent_makes_replies_persistent(client: App) -> None:
    task_id = str(uuid.uuid4())
    persistent = make_app("rpc://")
    persistent.conf.result_persistent = True
    try:
        with admin() as ch:
            ch.queue_declare(
                client.oid, durable=True, auto_delete=True, arguments={"x-expires": 60000}
            )
            persistent.backend.mark_as_done(task_id, 1, request=request_from(client, task_id))
            got: list = []
            wait_until(lambda: bool(got.append(ch.basic_get(client.oid)) or got[-1]), 5, "reply")
        assert got[-1].properties["delivery_mode"] == 2
    finally:
        persistent.close()


def test_reply_queue_outlives_a_dropped_connection(client: App) -> None:
    # Not auto_delete (unlike Celery's): replies sent while the client reconnects wait in it;
    # x-expires (result_expires here, at most REPLY_QUEUE_GRACE) removes it once the client is gone.
    sent(client)
    rows = list_queues("name", "durable", "auto_delete", "arguments")
    row = next(line for line in rows.splitlines() if line.startswith(client.oid))
    assert row.split("\t")[1:3] == ["true", "false"] and '"x-expires",60000' in row


def test_close_deletes_the_reply_queue() -> None:
    app = make_app("rpc://")
    sent(app)
    assert queue_state(app.oid)[0] == 0
    app.close()
    assert queue_state(app.oid)[0] == -1


def test_get_waits_for_the_reply(client: App, worker_app: App) -> None:
    task_id = sent(client)

    def later() -> None:
        time.sleep(0.3)
        request = request_from(client, task_id)
        worker_app.backend.mark_as_started(task_id, request=request, pid=1)
        worker_app.backend.mark_as_done(task_id, 42, request=request)

    threading.Thread(target=later).start()
    started = time.monotonic()
    assert client.AsyncResult(task_id).get(timeout=5) == 42
    assert time.monotonic() - started < 3


def test_replies_for_other_tasks_are_buffered(client: App, worker_app: App) -> None:
    first, second = sent(client), sent(client)
    worker_app.backend.mark_as_done(first, "one", request=request_from(client, first))
    worker_app.backend.mark_as_started(second, request=request_from(client, second))
    worker_app.backend.mark_as_done(second, "two", request=request_from(client, second))
    assert client.AsyncResult(second).get(timeout=5) == "two"
    assert client.AsyncResult(first).get(timeout=5) == "one"
    assert client.AsyncResult(first).state == states.SUCCESS


def test_started_then_failure(client: App, worker_app: App) -> None:
    task_id = sent(client)
    request = request_from(client, task_id)
    worker_app.backend.mark_as_started(task_id, request=request, pid=7)
    deadline = time.monotonic() + 5
    while client.AsyncResult(task_id).state != states.STARTED and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.AsyncResult(task_id).state == states.STARTED
    worker_app.backend.mark_as_failure(task_id, KeyError("k"), "Traceback...", request=request)
    with pytest.raises(KeyError, match="k"):
        client.AsyncResult(task_id).get(timeout=5)


def test_send_many_declares_the_reply_queue(client: App, worker_app: App) -> None:
    queue = unique("send_many")
    try:
        results = client.send_many([("x.y", (i,), None) for i in range(3)], queue=queue)
        for n, result in enumerate(results):  # replies sent before the client asks
            worker_app.backend.mark_as_done(result.id, n, request=request_from(client, result.id))
        assert [r.get(timeout=5) for r in results] == [0, 1, 2]
    finally:
        delete(queue)


def await_all(client: App, ids: list[str], store: Callable[[str, int], None]) -> int:
    """Awaits every id at once in one loop while ``store`` stores each result; returns how
    many threads the process gained at the most."""
    before = threading.active_count()
    peak = [before]

    async def main() -> list[int]:
        pending = asyncio.gather(*(client.AsyncResult(i) for i in ids))
        await asyncio.sleep(0.3)
        for n, task_id in enumerate(ids):
            store(task_id, n)
            peak[0] = max(peak[0], threading.active_count())
        return await asyncio.wait_for(pending, 10)

    assert asyncio.run(main()) == list(range(len(ids)))
    return peak[0] - before


def test_many_awaits_share_one_thread(client: App, worker_app: App) -> None:
    def store(task_id: str, n: int) -> None:
        worker_app.backend.mark_as_done(task_id, n, request=request_from(client, task_id))

    # The loop's executor runs one read at a time.
    assert await_all(client, [sent(client) for _ in range(300)], store) <= 1


def test_get_times_out_with_fastqs_error(client: App) -> None:
    task_id = sent(client)
    with pytest.raises(FastqTimeout, match=r"not ready after 0\.2s"):
        client.AsyncResult(task_id).get(timeout=0.2)


def test_a_result_without_reply_to_is_reported(
    worker_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    worker_app.backend.mark_as_done("lonely", 1, request=Context(id="lonely"))
    assert "no reply_to" in caplog.text


# -- rabbitmq:// ---------------------------------------------------------------------------------
def test_persistent_results_survive_a_client_restart() -> None:
    task_id = str(uuid.uuid4())
    first = make_app("rabbitmq://")
    worker = make_app("rabbitmq://")
    try:
        first.backend.on_task_sent(task_id)
        first.close()  # the client goes away before the result is stored
        worker.backend.mark_as_started(task_id, pid=1)
        worker.backend.mark_as_done(task_id, [1, 2])
        restarted = make_app("rabbitmq://")
        for _ in range(2):  # reading does not consume the result
            assert restarted.backend.get_meta(task_id)["status"] == states.SUCCESS
        assert restarted.AsyncResult(task_id).get(timeout=5) == [1, 2]
        assert make_app("rabbitmq://").AsyncResult(task_id).get(timeout=5) == [1, 2]
        assert queue_state(QUEUE_PREFIX + task_id)[0] == 1  # only the latest state is kept
        restarted.AsyncResult(task_id).forget()
        assert queue_state(QUEUE_PREFIX + task_id)[0] == -1
    finally:
        worker.close()
        delete(QUEUE_PREFIX + task_id)


def test_persistent_wait_wakes_up_and_unknown_ids_are_pending() -> None:
    task_id = str(uuid.uuid4())
    client = make_app("rabbitmq://")
    worker = make_app("rabbitmq://")
    try:
        assert client.AsyncResult("never-sent-" + task_id).state == states.PENDING
        assert queue_state(QUEUE_PREFIX + "never-sent-" + task_id)[0] == -1  # nothing created
        client.backend.on_task_sent(task_id)

        def later() -> None:
            time.sleep(0.3)
            worker.backend.mark_as_started(task_id, pid=1)
            time.sleep(0.1)
            worker.backend.mark_as_failure(task_id, ValueError("bad"))

        threading.Thread(target=later).start()
        with pytest.raises(ValueError, match="bad"):
            client.AsyncResult(task_id).get(timeout=5)
        assert client.backend.get_meta(task_id)["status"] == states.FAILURE
    finally:
        client.close()
        worker.close()
        delete(QUEUE_PREFIX + task_id)


def test_persistent_success_is_never_overwritten() -> None:
    done_id, fresh_id, failed_id = (str(uuid.uuid4()) for _ in range(3))
    worker = make_app("rabbitmq://")
    try:
        worker.backend.mark_as_started(done_id, pid=1)  # a first store of anything works
        assert worker.backend.get_meta(done_id)["status"] == states.STARTED
        worker.backend.mark_as_done(done_id, [1, 2])
        # A duplicate delivery of the finished task: started again, then fails or retries.
        worker.backend.mark_as_started(done_id, pid=2)
        worker.backend.mark_as_failure(done_id, ValueError("duplicate"))
        worker.backend.mark_as_retry(done_id, ValueError("duplicate"))
        worker.backend.store_many(  # in one batch, behind a SUCCESS of the same batch
            [
                (fresh_id, worker.backend.build_meta(fresh_id, 3, states.SUCCESS)),
                (fresh_id, worker.backend.build_meta(fresh_id, None, states.STARTED)),
            ]
        )
        meta = worker.backend.get_meta(done_id)
        assert (meta["status"], meta["result"]) == (states.SUCCESS, [1, 2])
        assert worker.AsyncResult(done_id).get(timeout=5) == [1, 2]
        assert worker.backend.get_meta(fresh_id)["status"] == states.SUCCESS
        assert queue_state(QUEUE_PREFIX + done_id)[0] == 1  # still the one message
        worker.backend.mark_as_done(done_id, "again")  # a SUCCESS may replace a SUCCESS
        assert worker.backend.get_meta(done_id)["result"] == "again"

        worker.backend.mark_as_failure(failed_id, ValueError("first"))  # first store: FAILURE
        assert worker.backend.get_meta(failed_id)["status"] == states.FAILURE
        worker.backend.mark_as_done(failed_id, 7)  # a retry that succeeded replaces it
        assert worker.backend.get_meta(failed_id)["result"] == 7
    finally:
        worker.close()
        delete(*(QUEUE_PREFIX + task_id for task_id in (done_id, fresh_id, failed_id)))


def test_persistent_awaits_share_one_thread() -> None:
    client, worker = make_app("rabbitmq://"), make_app("rabbitmq://")
    ids = [str(uuid.uuid4()) for _ in range(30)]
    try:
        assert await_all(client, ids, worker.backend.mark_as_done) <= 1
    finally:
        client.close()
        worker.close()
        delete(*(QUEUE_PREFIX + i for i in ids))


def test_a_reply_that_could_not_be_sent_keeps_its_route_for_the_retry() -> None:
    """The worker keeps a result the broker refused and stores it again later: the retry must
    still know the reply queue, or the client's get() waits for a reply that is never sent."""
    from fastq.errors import FastqError

    port = _closed_port()
    app = App(
        "w", broker=f"amqp://guest:guest@127.0.0.1:{port}//", backend="rpc://", set_as_current=False
    )
    try:
        backend = app.backend
        request = Context(id="t1", reply_to="client-oid", correlation_id="t1")
        meta = backend.build_meta("t1", 3, states.SUCCESS, None, request)
        with pytest.raises(FastqError):
            backend.store_many([("t1", meta)])
        assert backend._routes["t1"] == ("client-oid", "t1")  # type: ignore[attr-defined]
    finally:
        app.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_wait_on_an_unreachable_backend_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    """A get() with no timeout would otherwise wait in silence: the first failed connect is
    logged, naming the backend, and only once per outage."""
    app = App(
        "c",
        broker=f"amqp://guest:guest@127.0.0.1:{_closed_port()}//",
        backend="rabbitmq://",
        set_as_current=False,
    )
    try:
        with caplog.at_level("WARNING", logger="fastq"), pytest.raises(FastqTimeout):
            app.backend.wait_for("t1", timeout=1.5)
        lines = [r for r in caplog.records if "cannot reach the result backend" in r.message]
        assert len(lines) == 1, [r.message for r in caplog.records]
        assert "127.0.0.1" in lines[0].message
    finally:
        app.close()
