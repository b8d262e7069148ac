"""``fastq worker --metrics-port``: Prometheus metrics scraped from a real worker during and after a
real drain, prefork (children's figures added up by the supervisor), threads and asyncio."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from fastq import App
from prometheus_client.parser import text_string_to_metric_families

from tests.amqp_support import AMQP_URL, requires_rabbitmq
from tests.processes import BIN, ROOT, fastq_worker

APP = "tests.apps.observed_app"
SLOW, FAILING = 60, 20
SLOW_SECONDS = 0.04


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, labels): value}`` of the endpoint, read with prometheus_client's parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def tasks(samples: dict, name: str, outcome: str) -> float:
    return samples.get(("fastq_tasks_total", (("outcome", outcome), ("task", name))), 0.0)


def histogram_count(samples: dict, metric: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == f"{metric}_count")


@pytest.fixture
def client(request: pytest.FixtureRequest, broker_url: str, backend_url: str) -> Iterator[App]:
    """The client app on the case's broker: Redis, or RabbitMQ (FASTQ_TEST_AMQP_URL)."""
    params = getattr(request.node, "callspec", None)
    url = AMQP_URL if params and params.params.get("broker") == "amqp" else broker_url
    app = App("observed", broker=url, backend=backend_url, set_as_current=False)
    if url == AMQP_URL:
        app.broker.purge("celery")  # what an earlier run left in the vhost
    yield app
    app.close()


@pytest.mark.parametrize(
    ("pool", "broker"),
    [
        ("prefork", "redis"),
        ("threads", "redis"),
        ("asyncio", "redis"),
        pytest.param("prefork", "amqp", marks=requires_rabbitmq),
    ],
)
def test_metrics_count_what_a_drain_ran(
    pool: str, broker: str, client: App, backend_url: str
) -> None:
    broker_url = client.broker_url or ""
    results = [client.send_task("observed.slow", [SLOW_SECONDS]) for _ in range(SLOW)]
    results += [client.send_task("observed.fail", ["no"]) for _ in range(FAILING)]
    port = _free_port()
    env = {"FASTQ_BROKER_URL": broker_url, "FASTQ_RESULT_BACKEND": backend_url}
    # Children replaced on the way: their figures must survive them.
    limit = ["--max-tasks-per-child", "15"] if pool == "prefork" else []
    with fastq_worker(
        "-P", pool, "-c", "2", "--prefetch-multiplier", "2", "--metrics-port", str(port), *limit,
        app=APP, env=env,
    ) as worker:  # fmt: skip
        during = []
        deadline = time.monotonic() + 120  # a loaded 2-core machine
        while not all(r.ready() for r in results) and time.monotonic() < deadline:
            try:
                during.append(scrape(port))
            except OSError:  # the endpoint starts with the pool
                pass
            time.sleep(0.1)
        done = sum(r.ready() for r in results)
        assert done == len(results), f"{done} ran; last scrape {during[-1:]}\n{worker.log()}"
        # During the drain: some tasks counted, not all yet, a queue waiting, messages held.
        busy = [s for s in during if 0 < tasks(s, "observed.slow", "succeeded") < SLOW]
        assert busy, "no scrape saw the drain under way"
        assert any(s.get(("fastq_queue_depth", (("queue", "celery"),)), 0) > 0 for s in during)
        assert any(s[("fastq_worker_prefetched_messages", ())] > 0 for s in busy)
        assert all(s[("fastq_worker_prefetch_capacity", ())] == 4 for s in during)

        # After it: every task counted once (a loop hands its counts over within ~1.5 s).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = scrape(port)
            if (
                tasks(after, "observed.slow", "succeeded") == SLOW
                and tasks(after, "observed.fail", "failed") == FAILING
                and after.get(("fastq_queue_depth", (("queue", "celery"),))) == 0
                and after[("fastq_worker_prefetched_messages", ())] == 0
            ):
                break
            time.sleep(0.2)
        time.sleep(1.5)  # nothing counted twice later
        after = scrape(port)
        assert tasks(after, "observed.slow", "succeeded") == SLOW
        assert tasks(after, "observed.fail", "failed") == FAILING
        assert tasks(after, "observed.slow", "failed") == 0
        assert histogram_count(after, "fastq_task_runtime_seconds") == SLOW + FAILING
        assert histogram_count(after, "fastq_task_wait_seconds") == SLOW + FAILING
        runtime = after[("fastq_task_runtime_seconds_sum", (("task", "observed.slow"),))]
        assert SLOW * SLOW_SECONDS <= runtime < SLOW * SLOW_SECONDS + 5
        slow_le = after[
            ("fastq_task_runtime_seconds_bucket", (("le", "0.025"), ("task", "observed.slow")))
        ]
        assert slow_le == 0  # each slept 0.04 s
        assert after[("fastq_queue_depth", (("queue", "celery"),))] == 0
        assert after[("fastq_worker_prefetched_messages", ())] == 0
        assert after[("fastq_broker_reconnects_total", ())] == 0
        restarts = after[("fastq_worker_child_restarts_total", ())]
        replaced = worker.log().count("exited; starting a new one")
        assert restarts == replaced
        assert restarts >= (4 if pool == "prefork" else 0)  # 80 tasks, 15 a child, 2 live


def test_metrics_port_without_prometheus_client_names_the_extra(broker_url: str) -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from fastq.cli import main\n"
        f"sys.exit(main(['-A', '{APP}', 'worker', '--metrics-port', '9', '-P', 'solo']))"
    )
    done = subprocess.run(
        [str(BIN / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"FASTQ_BROKER_URL": broker_url, "PATH": str(BIN)},
    )
    assert done.returncode != 0
    assert "pip install 'fastq-worker[metrics]'" in done.stderr, done.stderr
    assert "prometheus_client" in done.stderr


def test_a_task_skipped_before_it_ran_counts_apart(client: App, backend_url: str) -> None:
    """An expired task counts as ``expired``, with no runtime; the same task run after it counts
    as ``succeeded`` and in the histograms."""
    expired = client.send_task("observed.add", [1, 1], expires=0.01)
    time.sleep(0.1)
    ran = [client.send_task("observed.add", [i, i]) for i in range(3)]
    port = _free_port()
    env = {"FASTQ_BROKER_URL": client.broker_url, "FASTQ_RESULT_BACKEND": backend_url}
    with fastq_worker("-P", "solo", "--metrics-port", str(port), app=APP, env=env):
        assert [r.get(timeout=30) for r in ran] == [0, 2, 4]
        assert expired.state == "REVOKED"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            samples = scrape(port)
            if tasks(samples, "observed.add", "succeeded") == 3:
                break
            time.sleep(0.2)
    assert tasks(samples, "observed.add", "succeeded") == 3
    assert tasks(samples, "observed.add", "expired") == 1
    assert histogram_count(samples, "fastq_task_runtime_seconds") == 3


def test_a_broker_outage_counts_reconnects(backend_url: str) -> None:
    """The broker (a redis-server of this test's own) restarts under a prefork worker: each
    child's consumer counts reaching it again, and tasks sent after it run and are counted."""
    from tests.faults.redis_server import RedisServer

    with RedisServer() as server:
        client = App("observed", broker=server.url(), backend=backend_url, set_as_current=False)
        port = _free_port()
        env = {"FASTQ_BROKER_URL": server.url(), "FASTQ_RESULT_BACKEND": backend_url}
        with fastq_worker(
            "-P", "prefork", "-c", "2", "--metrics-port", str(port), app=APP, env=env
        ):
            assert client.send_task("observed.add", [1, 2]).get(timeout=30) == 3
            server.restart(down_for=1.0)
            results = [client.send_task("observed.add", [i, 1]) for i in range(4)]
            assert [r.get(timeout=60) for r in results] == [1, 2, 3, 4]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                samples = scrape(port)
                reconnects = samples[("fastq_broker_reconnects_total", ())]
                if reconnects >= 2 and tasks(samples, "observed.add", "succeeded") >= 5:
                    break
                time.sleep(0.2)
            assert samples[("fastq_broker_reconnects_total", ())] == 2  # one per child
            assert tasks(samples, "observed.add", "succeeded") == 5
        client.close()
