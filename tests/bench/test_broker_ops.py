"""The scaling measurements (``bench/broker_ops.py``, ``bench/rabbitmq_scaling.py``) on small N:
commands per task counted on a real redis-server of their own, the claim script read from the
Rust source, the worker's URL rotation. No test here asserts a speed."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fastq.bench.apps import settings_from_env
from fastq.bench.apps.fastq_app import make_app

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import broker_ops  # noqa: E402
import rabbitmq_scaling  # noqa: E402


def free_port_pair() -> int:
    """A port p with p and p + 1 free on loopback (the script uses both)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def test_claim_script_is_read_from_the_rust_source() -> None:
    script = broker_ops.claim_script()
    assert "redis.pcall('RPOP'" in script and "redis.call('HSET'" in script
    parts = broker_ops.claim_parts()
    assert "= fields(raw)" in script and "= fields(raw)" not in parts["without the tag parse"]
    assert "redis.call('HSET'" not in parts["without the record"]
    assert "= fields(raw)" not in parts["pop only (neither)"]
    assert "redis.call('HSET'" not in parts["pop only (neither)"]


def test_worker_i_connects_first_to_node_i() -> None:
    urls = ["amqp://a//", "amqp://b//", "amqp://c//"]
    assert rabbitmq_scaling.rotated(urls, 0) == "amqp://a//;amqp://b//;amqp://c//"
    assert rabbitmq_scaling.rotated(urls, 1) == "amqp://b//;amqp://c//;amqp://a//"
    assert rabbitmq_scaling.rotated(urls, 4) == rabbitmq_scaling.rotated(urls, 1)


def test_bench_app_takes_the_queue_type_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FASTQ_BENCH_QUEUE_TYPE", "quorum")
    settings = settings_from_env()
    assert settings["queue_type"] == "quorum"
    app, _ = make_app(**{**settings, "broker": "amqp://guest:guest@127.0.0.1:1//"})
    try:
        assert app.conf.task_default_queue_type == "quorum"
    finally:
        app.close()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_redis_commands_per_task(tmp_path: Path) -> None:
    out = tmp_path / "ops.json"
    port = free_port_pair()
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench/broker_ops.py"), "redis", "--port", str(port),
         "--tasks", "400", "--rounds", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    figures = {name: runs[0] for name, runs in json.loads(out.read_text()).items()}

    batch = figures["`send_many` (1000 a call), results off"]
    assert batch["commands"] == {"lpush": 1.0}
    assert figures["`.delay()`, results off"]["commands"] == {"lpush": 1.0}

    early = figures["drain, results off, early ack"]["commands"]
    # Claims of up to 4 (the window), a few smaller at the ends; the supervisor acks the
    # children's early acks in batches, one transaction (MULTI HDEL ZREM SREM EXEC) for several.
    assert 0.25 <= early["evalsha"] < 0.4
    assert 0 < early["exec"] == early["multi"] == early["hdel"] < 1.0
    # An RPOP per message, and one finding the queue empty now and then (idle polls, the end).
    assert 1.0 <= early["rpop"] < 1.1 and "setex" not in early

    late = figures["drain, results off, acks_late"]["commands"]
    # The child acks after the tasks ran, several tags a transaction.
    assert 1.0 <= late["rpop"] < 1.1 and 0.2 <= late["exec"] < 0.5

    results = figures["drain, results on, early ack"]["commands"]
    # A new result is SET NX then PUBLISHed, by one store script call per batch (as many as
    # the claims: the window is 4 a child), which reads nothing for a new key.
    assert results["set"] - early.get("set", 0) == pytest.approx(1.0) and results["publish"] >= 1.0
    assert "setex" not in results and results.get("get", 0) < 0.05
    assert 0.5 <= results["evalsha"] < 0.8
    assert results["evalsha"] == pytest.approx(2 * early["evalsha"], rel=0.25)
    for runs in figures.values():
        assert runs["server_cpu_us_per_task"] > 0
    # Its redis-servers are gone.
    for p in (port, port + 1):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", p)) != 0
