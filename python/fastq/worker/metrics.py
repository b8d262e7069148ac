"""Prometheus metrics of a worker (``--metrics-port``; the ``fastq-worker[metrics]`` extra).

Each consumer loop counts into a ``TaskStats`` of its own (plain dicts: one loop owns it, no lock)
and hands what it counted to the worker's main process every ``FLUSH_EVERY`` seconds at most: a
prefork child down its report pipe (an ``M`` line, ``worker/reports.py``), a thread of the
threads or solo pool straight into the main process's ``WorkerMetrics``. So the children's figures
add up in one place, with no shared files (``prometheus_client``'s multiprocess mode) and no
write per task. The main process serves them over HTTP and reads each consumed queue's depth from
the broker every ``DEPTH_EVERY`` seconds. ``prometheus_client`` is imported only by ``serve``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from fastq import states
from fastq.errors import ConfigurationError

log = logging.getLogger("fastq.worker")

#: Upper bounds (seconds) of the runtime and wait histograms' buckets; ``+Inf`` is implied.
BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
#: How often (seconds) a loop hands its counts over while it has some, at most.
FLUSH_EVERY = 0.5
#: How often (seconds) the main process reads the depth of the consumed queues.
DEPTH_EVERY = 2.0
#: A task's outcome label, by the state its run ended in (None: nothing stored, Ignore).
OUTCOMES = {
    states.SUCCESS: "succeeded",
    states.FAILURE: "failed",
    states.RETRY: "retried",
    states.REVOKED: "revoked",
    states.REJECTED: "rejected",
    None: "ignored",
}
EXTRA = "pip install 'fastq-worker[metrics]'"


def _histogram() -> list[float]:
    """Counts per bucket (the last one past every bound), then the sum."""
    return [0] * (len(BUCKETS) + 1) + [0.0]


class TaskStats:
    """What one consumer loop counted since it last handed its counts over."""

    def __init__(self, sink: Callable[[dict[str, Any]], None]) -> None:
        #: Takes a hand-over (``take``'s shape): the report pipe or the main process's store.
        self.sink = sink
        self.tasks: dict[str, dict[str, int]] = {}
        self.runtime: dict[str, list[float]] = {}
        self.wait: dict[str, list[float]] = {}
        self.reconnects = 0
        #: Messages the loop's consumer holds now (its prefetch window in use).
        self.prefetched = 0
        self._sent_prefetched = 0
        self._dirty = False
        self._next_flush = 0.0

    def ran(self, name: str, state: str | None, runtime: float, wait: float) -> None:
        """A task ran: ``state`` its outcome, ``wait`` from its message's receipt to its start."""
        outcomes = self.tasks.get(name)
        if outcomes is None or name not in self.runtime:
            outcomes = self.tasks.setdefault(name, {})
            self.runtime[name], self.wait[name] = _histogram(), _histogram()
        outcome = OUTCOMES.get(state) or str(state).lower()
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        counts = self.runtime[name]
        counts[bisect_left(BUCKETS, runtime)] += 1
        counts[-1] += runtime
        counts = self.wait[name]
        counts[bisect_left(BUCKETS, wait)] += 1
        counts[-1] += wait
        self._dirty = True

    def skipped(self, name: str, outcome: str) -> None:
        """A task that did not run (revoked or expired before it started)."""
        outcomes = self.tasks.setdefault(name, {})
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        self._dirty = True

    def reconnected(self) -> None:
        self.reconnects += 1
        self._dirty = True

    def tick(self, prefetched: int, final: bool = False) -> None:
        """Between batches: hands the counts over when there are new ones (or the window in use
        changed) and ``FLUSH_EVERY`` has passed since the last hand-over; ``final`` at once."""
        self.prefetched = prefetched
        if not self._dirty and prefetched == self._sent_prefetched:
            return
        now = time.monotonic()
        if now < self._next_flush and not final:
            return
        self._next_flush = now + FLUSH_EVERY
        self.sink(self.take())

    def take(self) -> dict[str, Any]:
        """The counts since the last hand-over (then reset), and the window in use now."""
        taken = {
            "tasks": self.tasks,
            "runtime": self.runtime,
            "wait": self.wait,
            "reconnects": self.reconnects,
            "prefetched": self.prefetched,
        }
        self.tasks, self.runtime, self.wait, self.reconnects = {}, {}, {}, 0
        self._sent_prefetched = self.prefetched
        self._dirty = False
        return taken


def encode(taken: dict[str, Any]) -> str:
    """A hand-over as one line of the report pipe (no newline in JSON's compact form)."""
    return json.dumps(taken, separators=(",", ":"))


def decode(line: bytes) -> dict[str, Any] | None:
    try:
        taken = json.loads(line)
    except ValueError:
        return None
    return taken if isinstance(taken, dict) else None


class WorkerMetrics:
    """The main process's figures: every loop's hand-overs added up, the queues' depths, and
    what the supervisor sees itself (child restarts, tasks lost with their child)."""

    def __init__(self, hostname: str, queues: list[str], capacity: int) -> None:
        self.hostname = hostname
        self.queues = queues
        #: Messages all consumers may hold at once (prefetch x consumers).
        self.capacity = capacity
        self._lock = threading.Lock()
        self.tasks: dict[tuple[str, str], int] = {}
        self.runtime: dict[str, list[float]] = {}
        self.wait: dict[str, list[float]] = {}
        self.reconnects = 0
        #: Pool processes started again (the supervisor counts them).
        self.restarts: Callable[[], int] = lambda: 0
        #: Per consumer (child or thread index): the messages it holds, as last handed over.
        self.prefetched: dict[int, int] = {}
        self.depths: dict[str, int] = {}

    def merge(self, source: int, taken: dict[str, Any] | None) -> None:
        """Adds one loop's hand-over; ``None``: that consumer is gone (it holds nothing now)."""
        with self._lock:
            if taken is None:
                self.prefetched[source] = 0
                return
            for name, outcomes in taken.get("tasks", {}).items():
                for outcome, count in outcomes.items():
                    key = (name, outcome)
                    self.tasks[key] = self.tasks.get(key, 0) + int(count)
            for mine, theirs in (
                (self.runtime, taken.get("runtime", {})),
                (self.wait, taken.get("wait", {})),
            ):
                for name, counts in theirs.items():
                    total = mine.get(name)
                    if total is None:
                        total = mine[name] = _histogram()
                    if len(counts) == len(total):
                        for i, value in enumerate(counts):
                            total[i] += value
            self.reconnects += int(taken.get("reconnects", 0))
            self.prefetched[source] = int(taken.get("prefetched", 0))

    def lost(self, name: str, reason: str) -> None:
        """A task whose child the supervisor killed, or which died running it (``reason``:
        ``worker/lost.py``'s, as a label: ``time_limit``, ``terminated``, ``worker_lost``...)."""
        with self._lock:
            key = (name or "unknown", reason.replace(" ", "_"))
            self.tasks[key] = self.tasks.get(key, 0) + 1

    def read_depths(self, length: Callable[[str], int]) -> None:
        depths = {}
        for queue in self.queues:
            try:
                depths[queue] = int(length(queue))
            except Exception as exc:  # the broker is away: the last figures stay, said once
                log.debug("metrics: could not read the depth of %r: %s", queue, exc)
                return
        with self._lock:
            self.depths = depths

    def families(self) -> Iterator[Any]:
        """The figures as ``prometheus_client`` metric families (read at each scrape)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        with self._lock:
            tasks = dict(self.tasks)
            runtime = {k: list(v) for k, v in self.runtime.items()}
            wait = {k: list(v) for k, v in self.wait.items()}
            reconnects, restarts = self.reconnects, self.restarts()
            prefetched, depths = sum(self.prefetched.values()), dict(self.depths)
        counter = CounterMetricFamily(
            "fastq_tasks", "Tasks handled, by task name and outcome", labels=["task", "outcome"]
        )
        for (name, outcome), count in sorted(tasks.items()):
            counter.add_metric([name, outcome], count)
        yield counter
        for metric, doc, figures in (
            ("fastq_task_runtime_seconds", "Seconds a task ran", runtime),
            (
                "fastq_task_wait_seconds",
                "Seconds from the worker receiving a task's message to the task starting "
                "(prefetch, rate-limit and ETA holds); messages carry no sent time",
                wait,
            ),
        ):
            family = HistogramMetricFamily(metric, doc, labels=["task"])
            for name, counts in sorted(figures.items()):
                cumulative, buckets = 0.0, []
                for bound, in_bucket in zip([*BUCKETS, float("inf")], counts[:-1], strict=True):
                    cumulative += in_bucket
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                family.add_metric([name], buckets, counts[-1])
            yield family
        yield GaugeMetricFamily(
            "fastq_worker_prefetched_messages",
            "Messages the worker's consumers hold (prefetched or running, not acknowledged)",
            value=prefetched,
        )
        yield GaugeMetricFamily(
            "fastq_worker_prefetch_capacity",
            "Messages the worker's consumers may hold at once (prefetch x consumers)",
            value=self.capacity,
        )
        depth = GaugeMetricFamily(
            "fastq_queue_depth", "Messages waiting in a consumed queue", labels=["queue"]
        )
        for queue, count in sorted(depths.items()):
            depth.add_metric([queue], count)
        yield depth
        yield CounterMetricFamily(
            "fastq_broker_reconnects",
            "Times a consumer reached the broker again after losing it",
            value=reconnects,
        )
        yield CounterMetricFamily(
            "fastq_worker_child_restarts",
            "Pool processes replaced (exited at a limit, crashed or killed)",
            value=restarts,
        )


def check_serving(port: int) -> None:
    """Refuses ``--metrics-port`` at start, before the pool: without ``prometheus_client`` (with
    the extra to install), or when the port is taken."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"--metrics-port / worker_metrics_port needs the prometheus_client library: {EXTRA}"
        ) from None
    try:
        with socket.create_server(("", port)):
            pass
    except OSError as exc:
        raise ConfigurationError(f"cannot serve metrics on port {port}: {exc}") from None


def serve(
    metrics: WorkerMetrics, port: int, depth: Callable[[str], int], stop: threading.Event
) -> None:
    """Serves ``metrics`` on ``port`` (all interfaces) from a thread of this process, and reads
    the queues' depths every ``DEPTH_EVERY`` seconds from another until ``stop`` is set."""
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    class Collector:
        def collect(self) -> Iterator[Any]:
            return metrics.families()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())  # type: ignore[arg-type]
    try:
        server, _ = start_http_server(port, registry=registry)
    except OSError as exc:  # taken since the start: the worker runs on, without its metrics
        log.error("cannot serve metrics on port %d: %s", port, exc)
        return
    log.info("metrics: serving Prometheus metrics on :%d/metrics", port)

    def read_depths() -> None:
        while not stop.is_set():
            metrics.read_depths(depth)
            stop.wait(DEPTH_EVERY)
        server.shutdown()

    threading.Thread(target=read_depths, name="fastq-metrics", daemon=True).start()
