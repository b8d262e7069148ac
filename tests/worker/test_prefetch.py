"""The adaptive prefetch window: its sizing, and a real worker on Redis that claims big batches of
short tasks, one long task at a time, and keeps a multiplier that is set."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from fastq import App
from fastq.config import Config
from fastq.worker.prefetch import MAX_WINDOW, START, AdaptiveWindow

from tests.processes import fastq_worker, wait_until

pytestmark = pytest.mark.usefixtures("runs")


def test_short_tasks_grow_the_window_to_its_largest() -> None:
    window = AdaptiveWindow()
    assert window.size == START
    assert window.observe(4, 4 * 0.0002) == MAX_WINDOW  # 0.2 ms a task: 250 fit in 50 ms


def test_a_long_task_shrinks_it_at_once_and_short_ones_grow_it_back() -> None:
    window = AdaptiveWindow()
    window.observe(128, 128 * 0.0002)
    assert window.observe(1, 2.0) == 1  # one 2 s task: the mean is ~1 s
    # Each batch as big as the window allows: the mean halves with each, so the window is back
    # at its largest after a few hundred short tasks (~60 ms of them).
    sizes = [window.observe(window.size, window.size * 0.0002) for _ in range(14)]
    assert sizes == sorted(sizes) and sizes[-1] == MAX_WINDOW
    assert sum(sizes[: sizes.index(MAX_WINDOW)]) < 400


def test_the_window_holds_about_the_target_of_work() -> None:
    window = AdaptiveWindow(target=0.05)
    for _ in range(10):
        size = window.observe(10, 10 * 0.005)  # 5 ms a task
    assert size == 10


def test_nothing_handled_changes_nothing() -> None:
    window = AdaptiveWindow(start=7)
    assert window.observe(0, 1.0) == 7 and window.mean is None


def test_a_setting_given_its_default_value_counts_as_set() -> None:
    conf = Config()
    assert not conf.is_set("worker_prefetch_multiplier")
    conf.worker_prefetch_multiplier = 4
    assert conf.is_set("worker_prefetch_multiplier")
    del conf["worker_prefetch_multiplier"]
    assert not conf.is_set("worker_prefetch_multiplier")
    assert Config(CELERYD_PREFETCH_MULTIPLIER=4).is_set("worker_prefetch_multiplier")


@pytest.mark.parametrize("how", ["setting", "option"])
def test_celerys_unlimited_multiplier_is_refused_with_what_to_do(how: str) -> None:
    from fastq.errors import ConfigurationError
    from fastq.worker import run_worker

    app = App("zero", broker="memory://", set_as_current=False)
    if how == "setting":
        app.conf.worker_prefetch_multiplier = 0
    option = {"prefetch_multiplier": 0} if how == "option" else {}
    with pytest.raises(ConfigurationError, match=r"no unlimited prefetch.*leave it unset"):
        run_worker(app, pool="solo", **option)


# -- a worker on Redis ----------------------------------------------------------------------------
@pytest.fixture
def client_app(broker_url: str, backend_url: str) -> Iterator[App]:
    app = App("client", broker=broker_url, backend=backend_url, set_as_current=False)
    yield app
    app.close()


class Holding:
    """The most messages the worker held unacknowledged at once (kombu's ``unacked`` hash),
    polled from a thread."""

    def __init__(self, broker: redis.Redis) -> None:
        self.broker = broker
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Holding:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, int(self.broker.hlen("unacked")))
            time.sleep(0.002)


def send_adds(app: App, n: int) -> None:
    app.send_many([("interop.add", (i, 1), None) for i in range(n)])


def queued(broker: redis.Redis) -> int:
    return int(broker.llen("celery"))


def test_a_worker_left_at_the_default_claims_short_tasks_in_big_batches_and_long_ones_singly(
    worker_env: dict[str, str], client_app: App, broker_redis: redis.Redis
) -> None:
    send_adds(client_app, 3000)
    with fastq_worker("--pool", "solo", env=worker_env) as worker:
        assert f"prefetch adaptive ({START} to start, 1-{MAX_WINDOW})" in worker.log()
        with Holding(broker_redis) as short:
            wait_until(lambda: queued(broker_redis) == 0 and broker_redis.hlen("unacked") == 0)
        # Celery's fixed default holds 4 at most; these take well under a millisecond each.
        assert short.most > 32, short.most
        # The next batch: 0.3 s tasks. The first fetch still claims them all (what the window
        # was), after which the window is one message: the worker holds only what it runs.
        slow = [client_app.send_task("interop.record", (f"a{i}", 0.3)) for i in range(2)]
        for result in slow:
            result.get(timeout=20)
        slow = [client_app.send_task("interop.record", (f"b{i}", 0.3)) for i in range(6)]
        with Holding(broker_redis) as long:
            wait_until(lambda: queued(broker_redis) <= 4, timeout=20)
            for result in slow:
                result.get(timeout=20)
        # Early acks: the running task is acked as it starts, so nothing else is held.
        assert long.most <= 1, long.most


def test_a_multiplier_that_is_set_stays_the_window(
    worker_env: dict[str, str], client_app: App, broker_redis: redis.Redis
) -> None:
    send_adds(client_app, 1500)
    with fastq_worker("--pool", "solo", "--prefetch-multiplier", "4", env=worker_env) as worker:
        assert "prefetch 4," in worker.log()
        with Holding(broker_redis) as held:
            wait_until(lambda: queued(broker_redis) == 0 and broker_redis.hlen("unacked") == 0)
    assert 0 < held.most <= 4, held.most


def test_a_child_near_its_max_tasks_claims_no_more_than_it_will_run(
    worker_env: dict[str, str], client_app: App, broker_redis: redis.Redis
) -> None:
    send_adds(client_app, 300)
    args = ("--pool", "prefork", "--concurrency", "1", "--max-tasks-per-child", "5")
    with fastq_worker(*args, env=worker_env):
        with Holding(broker_redis) as held:
            wait_until(lambda: queued(broker_redis) == 0 and broker_redis.hlen("unacked") == 0)
    # Each child runs 5 and is replaced: a bigger claim would only go back to the queue.
    assert 0 < held.most <= 5, held.most
