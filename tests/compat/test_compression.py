"""Message compression as kombu does it (``apply_async(compression=...)``, ``task_compression``,
``Task.compression``): a fastq client's compressed task run by a Celery worker, a Celery
client's run by a fastq worker, on Redis and RabbitMQ; unknown methods refused, never dropped."""

from __future__ import annotations

import base64
import bz2
import json
import lzma
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastq import App
from fastq.errors import EncodeError
from kombu import compression as kombu_compression

from tests.amqp_support import AMQP_URL, delete, requires_rabbitmq, unique
from tests.compat import apps
from tests.processes import celery_worker, fastq_worker

#: kombu's name -> (its MIME type, the Python decoder of the bytes).
METHODS = {
    "zlib": ("application/x-gzip", zlib.decompress),
    "bzip2": ("application/x-bz2", bz2.decompress),
    "lzma": ("application/x-lzma", lzma.decompress),
}
#: (client side, worker side): each direction across the two.
DIRECTIONS = [("fastq", "celery"), ("celery", "fastq")]


@pytest.fixture(params=["redis", pytest.param("amqp", marks=requires_rabbitmq)])
def broker(request: Any, broker_url: str) -> Iterator[str]:
    if request.param == "redis":
        yield broker_url
    else:
        yield AMQP_URL


@pytest.fixture
def queue() -> Iterator[str]:
    name = unique("compress")
    yield name
    if AMQP_URL:
        delete(name)


def _worker(side: str, broker: str, backend: str, queue: str) -> Any:
    env = {"FASTQ_COMPAT_SIDE": side, "FASTQ_BROKER_URL": broker, "FASTQ_RESULT_BACKEND": backend}
    start = fastq_worker if side == "fastq" else celery_worker
    return start("--pool", "solo", "-Q", queue, app="tests.compat.apps", env=env)


@pytest.mark.parametrize(("client_side", "worker_side"), DIRECTIONS)
def test_compressed_tasks_run_on_the_other_side(
    client_side: str, worker_side: str, broker: str, backend_url: str, queue: str
) -> None:
    with _worker(worker_side, broker, backend_url, queue):
        client = apps.build(client_side, broker, backend_url)
        try:
            for n, method in enumerate(METHODS):
                res = client.double.apply_async((n,), queue=queue, compression=method)
                assert res.get(timeout=20) == 2 * n, method
            client.app.conf.task_compression = "bzip2"
            assert client.double.apply_async((50,), queue=queue).get(timeout=20) == 100
        finally:
            client.app.close()


def _sent_envelope(broker_url: str, queue: str) -> dict[str, Any]:
    client = redis.Redis.from_url(broker_url)
    try:
        raw = client.rpop(queue)
    finally:
        client.close()
    assert raw is not None
    return json.loads(raw)  # type: ignore[no-any-return]


@pytest.mark.parametrize("method", list(METHODS))
def test_the_wire_is_kombus(method: str, broker_url: str, backend_url: str) -> None:
    app = App("wire", broker=broker_url, backend=backend_url, set_as_current=False)
    try:
        app.send_task("compat.double", (7,), queue="wire", compression=method)
        envelope = _sent_envelope(broker_url, "wire")
    finally:
        app.close()
    mime, decompress = METHODS[method]
    assert envelope["headers"]["compression"] == mime
    body = base64.b64decode(envelope["body"])
    assert json.loads(decompress(body))[0] == [7]
    assert kombu_compression.decompress(body, mime) == decompress(body)


def test_task_compression_setting_and_task_option(broker_url: str, backend_url: str) -> None:
    app = App("wire", broker=broker_url, backend=backend_url, set_as_current=False)

    @app.task(name="wire.packed", compression="lzma", queue="wire")
    def packed(x: int) -> int:
        return x

    @app.task(name="wire.plain", queue="wire")
    def plain(x: int) -> int:
        return x

    try:
        packed.delay(1)
        assert _sent_envelope(broker_url, "wire")["headers"]["compression"] == "application/x-lzma"
        plain.delay(1)
        assert "compression" not in _sent_envelope(broker_url, "wire")["headers"]
        app.conf.task_compression = "gzip"
        plain.delay(1)
        assert _sent_envelope(broker_url, "wire")["headers"]["compression"] == "application/x-gzip"
        packed.apply_async((1,), compression="bzip2")  # the call wins over the task
        assert _sent_envelope(broker_url, "wire")["headers"]["compression"] == "application/x-bz2"
    finally:
        app.close()


def test_an_unknown_compression_is_refused_before_sending(
    broker_url: str, backend_url: str
) -> None:
    app = App("wire", broker=broker_url, backend=backend_url, set_as_current=False)
    try:
        with pytest.raises(EncodeError, match=r'unknown compression "snappy".*zlib'):
            app.send_task("compat.double", (1,), queue="wire", compression="snappy")
        client = redis.Redis.from_url(broker_url)
        assert client.llen("wire") == 0
        client.close()
    finally:
        app.close()


@pytest.fixture
def odd_compression() -> Iterator[str]:
    """A method kombu knows in this process only (as brotli or zstd when installed)."""
    mime = "application/x-fastq-test"
    kombu_compression.register(zlib.compress, zlib.decompress, mime, aliases=["fastqtest"])
    yield mime
    for table in (kombu_compression._encoders, kombu_compression._decoders):
        table.pop(mime, None)
    kombu_compression._aliases.pop("fastqtest", None)


def test_a_worker_fails_a_task_of_an_unknown_compression(
    broker: str, backend_url: str, queue: str, odd_compression: str
) -> None:
    with _worker("fastq", broker, backend_url, queue) as worker:
        client = apps.build("celery", broker, backend_url)
        try:
            res = client.double.apply_async((1,), queue=queue, compression="fastqtest")
            with pytest.raises(Exception, match="unknown compression") as raised:
                res.get(timeout=20)
            assert res.state == "FAILURE"
            assert type(raised.value).__name__ == "InvalidMessage"
            # and the worker goes on with the next task
            assert client.double.apply_async((2,), queue=queue).get(timeout=20) == 4
        finally:
            client.app.close()
        assert f'unknown compression "{odd_compression}"' in worker.log()
