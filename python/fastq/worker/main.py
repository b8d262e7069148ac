"""``run_worker``: the one function the CLI calls; picks the pool and runs until stopped."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from fastq import signals
from fastq._state import set_task_join_will_block
from fastq.app import App
from fastq.beat import Beat, start_embedded, stop_embedded
from fastq.builtin_tasks import user_tasks
from fastq.errors import ConfigurationError
from fastq.events import EventDispatcher, TaskEvents
from fastq.task import Context
from fastq.urls import redact
from fastq.worker.active import ActiveTasks, ActiveTasksReporter
from fastq.worker.affinity import allowed_cpus, child_cpu, pin
from fastq.worker.control_server import ControlServer, PoolInfo
from fastq.worker.early_acks import EarlyAcks
from fastq.worker.lease import LeaseRenewer
from fastq.worker.loop import TaskReporter, WorkerLoop
from fastq.worker.lost import QUARANTINED, TERMINATED, lost_error, record_lost, store_lost
from fastq.worker.metrics import TaskStats, WorkerMetrics, check_serving, decode, encode, serve
from fastq.worker.observe import TaskObserver
from fastq.worker.prefetch import MAX_WINDOW
from fastq.worker.reports import ReportedTask, SupervisorReporter
from fastq.worker.revoke import RevokedIds
from fastq.worker.supervisor import EXIT_GAVE_UP, Supervisor

log = logging.getLogger("fastq.worker")

POOLS = ("prefork", "threads", "solo", "asyncio")
#: Celery's pool names that mean the same thing here.
#: The asyncio pool's ``--concurrency`` when none is set (tasks in flight on its one loop), and
#: its threads for plain ``def`` tasks (at most the concurrency).
ASYNCIO_CONCURRENCY = 100
ASYNCIO_THREADS = 10
POOL_ALIASES = {"processes": "prefork", "thread": "threads", "threading": "threads"}


def default_hostname() -> str:
    return f"fastq@{socket.gethostname()}"


def run_worker(
    app: App,
    *,
    concurrency: int | None = None,
    pool: str | None = None,
    queues: Sequence[str] | None = None,
    prefetch_multiplier: int | None = None,
    max_tasks_per_child: int | None = None,
    hostname: str | None = None,
    max_memory_per_child: int | None = None,
    beat: bool = False,
    metrics_port: int | None = None,
    task_events: bool = False,
    heartbeat: bool = True,
    cpu_affinity: bool = False,
) -> int:
    """Runs a worker in this process until SIGTERM/SIGINT; returns the exit code. ``beat``:
    periodic tasks too, from a thread of this (main) process, never a pool child;
    ``metrics_port``: Prometheus metrics on this port (``worker_metrics_port``);
    ``task_events`` (``-E``, or ``worker_send_task_events``): Celery's task events;
    ``heartbeat``: worker-online/heartbeat/offline events, which a Celery worker sends even
    without ``-E`` (``--without-heartbeat`` turns them off); ``cpu_affinity``
    (``--cpu-affinity``, ``worker_cpu_affinity``): each prefork child pinned to a CPU."""
    conf = app.conf
    pool = POOL_ALIASES.get(pool or conf.worker_pool, pool or conf.worker_pool)
    if pool not in POOLS:
        raise ConfigurationError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
    if pool == "asyncio":  # tasks in flight on one loop, not processes: not the CPU count
        concurrency = concurrency or conf.worker_concurrency or ASYNCIO_CONCURRENCY
    concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 1
    if pool == "solo":
        concurrency = 1
    multiplier = (
        prefetch_multiplier if prefetch_multiplier is not None else conf.worker_prefetch_multiplier
    )
    if multiplier < 1:  # Celery's 0 is "no limit": a window of 1 would be the opposite
        raise ConfigurationError(
            f"worker_prefetch_multiplier = {multiplier}: fastq has no unlimited prefetch (Celery's "
            "0); leave it unset for the adaptive window (up to 128 messages a process), or set 1 "
            "or more"
        )
    prefetch = multiplier  # per consumer: every process/thread runs one task at a time
    if pool == "asyncio":  # one consumer for every task in flight
        prefetch *= concurrency
    # Left unset, each consumer's window follows its tasks' times (fastq.worker.prefetch), where
    # it is only how much a fetch claims: not on a broker that pushes (RabbitMQ's basic.qos),
    # nor for the asyncio pool's one consumer of many tasks at once.
    adaptive = (
        prefetch_multiplier is None
        and not conf.is_set("worker_prefetch_multiplier")
        and pool != "asyncio"
        and not app.broker.pushes
    )
    # What one consumer may hold at most (inspect stats' prefetch_count, the metrics' capacity).
    window_max = MAX_WINDOW if adaptive else prefetch
    # Without -Q, every queue of task_queues (else the default queue), as a Celery worker.
    queue_list = list(queues or app.router.queues)
    hostname = hostname or conf.worker_hostname or default_hostname()
    max_tasks = max_tasks_per_child or conf.worker_max_tasks_per_child
    # worker_max_memory_per_child: as in Celery, the setting applies to prefork children only.
    max_memory = (
        max_memory_per_child or conf.worker_max_memory_per_child if pool == "prefork" else None
    )
    if max_memory_per_child is not None and pool != "prefork":
        raise ConfigurationError(
            f"--max-memory-per-child replaces pool processes: it needs --pool prefork, not {pool}"
        )
    cpus = None
    if cpu_affinity or conf.worker_cpu_affinity:
        if pool != "prefork":
            raise ConfigurationError(
                f"--cpu-affinity pins prefork children to CPUs: it needs --pool prefork, not {pool}"
            )
        cpus = allowed_cpus()
    app.import_modules()
    app.finalize()  # on_after_configure / on_after_finalize, as a Celery worker sends them
    # Built now so a bad schedule stops the worker at start; its thread starts once ready.
    beat_service = Beat(app) if beat else None
    embedded_beat: list[tuple[threading.Thread, threading.Event]] = []
    broker = app.broker
    if broker.consumers_within == "process" and pool == "prefork":
        raise ConfigurationError(
            f"{redact(broker.url)} keeps its queues in this process's memory, which the children "
            "of a prefork worker do not share: use --pool threads or --pool solo"
        )
    metrics_port = metrics_port or conf.worker_metrics_port
    metrics = None
    if metrics_port:
        check_serving(metrics_port)
        # The asyncio pool's one consumer holds the whole window (``prefetch`` is its).
        capacity = window_max if pool == "asyncio" else window_max * concurrency
        metrics = WorkerMetrics(hostname, queue_list, capacity)
    tracing = app.tracing  # refused here, at start, when the library is missing
    stop_metrics = threading.Event()

    def observer(sink: Callable[[dict[str, Any]], None]) -> TaskObserver | None:
        """A loop's metrics and tracing; None when both are off."""
        stats = TaskStats(sink) if metrics is not None else None
        return TaskObserver(stats, tracing) if stats or tracing else None

    def serve_metrics() -> None:
        if metrics is not None and metrics_port:
            serve(metrics, metrics_port, broker.queue_length, stop_metrics)

    # As in Celery's pools: a task here that waits for another task's result could hold up
    # every process; result.get() refuses unless told (disable_sync_subtasks=False).
    set_task_join_will_block(True)

    log.info(
        "fastq worker %s: broker %s, results %s, pool %s x%d, queues %s, prefetch %s, tasks: %s",
        hostname,
        redact(broker.url),
        redact(app.backend.url),
        pool,
        concurrency,
        ",".join(queue_list),
        f"adaptive ({prefetch} to start, 1-{MAX_WINDOW})" if adaptive else prefetch,
        ", ".join(user_tasks(app)) or "none",
    )
    note = broker.startup_note()
    if note:
        log.info("%s", note)
    if cpus is not None:
        placed = [child_cpu(i, cpus) for i in range(concurrency)]
        log.info("children pinned to CPUs %s (child 0 first)", ", ".join(map(str, placed)))
    active_tasks = ActiveTasks()
    processes: list[int] = []
    control_server = ControlServer(
        app,
        hostname,
        active_tasks,
        PoolInfo(pool, concurrency, window_max, lambda: list(processes), queue_list, max_tasks),
    )
    shutdown_asked = threading.Event()

    def remote_shutdown() -> None:
        """``shutdown`` by remote control: the warm shutdown SIGTERM starts (once: a second
        SIGTERM would make it cold)."""
        if not shutdown_asked.is_set():
            shutdown_asked.set()
            os.kill(os.getpid(), signal.SIGTERM)

    control_server.on_shutdown = remote_shutdown
    send_events = bool(task_events or conf.worker_send_task_events)
    events = event_dispatcher(app, hostname, active_tasks, send_events)
    if events is not None:
        control_server.on_heartbeat = events.heartbeat

    def make_loop(
        consumer_id: str,
        limit: int | None,
        reporter: TaskReporter | None = None,
        enforce_hard_limit: bool = False,
        revoked: RevokedIds | None = None,
        observer: TaskObserver | None = None,
        task_events: TaskEvents | None = None,
        early_acks_by_supervisor: bool = False,
    ) -> WorkerLoop:
        return WorkerLoop(
            app,
            queue_list,
            prefetch=prefetch,
            hostname=hostname,
            consumer_id=consumer_id,
            max_tasks=limit,
            max_memory_kib=max_memory,
            reporter=reporter,
            enforce_hard_limit=enforce_hard_limit,
            revoked=revoked,
            observer=observer,
            events=task_events,
            early_acks_by_supervisor=early_acks_by_supervisor,
            adaptive_prefetch=adaptive,
        )

    def consumer_id(index: int, generation: int) -> str:
        return f"{hostname}.{os.getpid()}.{index}.{generation}"

    if pool == "prefork":
        settler = app.broker.settler()
        early_acks = EarlyAcks(settler) if settler is not None else None

        def child_main(index: int, cid: str, reporter: SupervisorReporter, revoked_fd: int) -> int:
            if cpus is not None:  # before worker_process_init: what it starts runs there too
                pin(child_cpu(index, cpus))
            signals.worker_process_init.send(None)
            reporter.with_args = bool(conf.result_extended)  # the stored meta carries them
            child_events = None
            if events is not None:  # to the supervisor with the reports, which publishes them
                child_events = TaskEvents(hostname, os.getppid(), None, supervisor.revoked)
                reporter.events = child_events
            watch = observer(lambda taken: reporter.metrics(encode(taken)))
            loop = make_loop(
                cid,
                max_tasks,
                reporter,
                revoked=supervisor.revoked,
                observer=watch,
                task_events=child_events,
                early_acks_by_supervisor=early_acks is not None,
            )
            loop.revoked_fd = revoked_fd
            loop.install_signal_handlers()
            try:
                loop.run()
            finally:
                signals.worker_process_shutdown.send(None, pid=os.getpid(), exitcode=0)
                # The child ends with os._exit: close the connections properly first, so the
                # broker takes what this child published last (a chain's next step, a retry).
                app.close()
            return EXIT_GAVE_UP if loop.gave_up else 0

        def on_lost(cid: str, running: ReportedTask, reason: str, exit_code: int) -> None:
            if metrics is not None:
                metrics.lost(running.name, reason)
            try:
                record_lost(app, running, reason, exit_code, hostname)
            finally:
                if lost_events is not None and lost_events.enabled:
                    lost_event(lost_events, running, reason, exit_code)
                if running.delivery_tag and reason == QUARANTINED:  # kept aside, for a look
                    app.broker.quarantine(cid, running.delivery_tag)
                elif running.delivery_tag:  # recorded: not to run again (where the broker can)
                    app.broker.discard(cid, running.delivery_tag)

        renewer = LeaseRenewer(
            lambda: app.broker, lambda: [c.consumer_id for c in supervisor.children.values()]
        )

        def retry_lost(running: ReportedTask, reason: str, exit_code: int) -> None:
            store_lost(app, running, reason, exit_code, hostname)

        def settle_done(cid: str, tags: list[str]) -> None:
            for tag in tags:
                app.broker.discard(cid, tag)

        def fails_when_lost(name: str) -> bool:
            # task_reject_on_worker_lost: fastq's default (None) and True run it again.
            reject = getattr(app.tasks.get(name), "reject_on_worker_lost", None)
            return (conf.task_reject_on_worker_lost if reject is None else reject) is False

        def on_metrics(index: int, data: bytes | None) -> None:
            assert metrics is not None
            if data is None:
                metrics.merge(index, None)
                return
            taken = decode(data)
            if taken is not None:
                metrics.merge(index, taken)

        def on_tick() -> None:
            if beat_service is not None and not embedded_beat:
                # After the first fork: the children must not inherit a running beat's state.
                embedded_beat.append(start_embedded(beat_service))
            if metrics is not None and not served:
                served.append(True)  # after the first fork too: its threads stay here
                serve_metrics()
            processes[:] = [c.pid for c in supervisor.children.values()]
            control_server.tick()
            renewer.tick()
            if events is not None:
                if heartbeat and not events.beating:
                    events.online()
                events.tick()

        supervisor = Supervisor(
            concurrency,
            child_main,
            app.broker.restore_consumer,
            consumer_id,
            on_lost,
            active_tasks=active_tasks,
            on_tick=on_tick,
            retry_lost=retry_lost,
            store_results=lambda metas: app.backend.store_many(metas),
            settle_done=settle_done,
            fails_when_lost=fails_when_lost,
            on_metrics=on_metrics if metrics is not None else None,
            on_events=events.put_many if events is not None else None,
            early_acks=early_acks,
        )
        served: list[bool] = []
        if metrics is not None:
            metrics.restarts = lambda: supervisor.restarts
        supervisor.revoked.send_events = send_events
        lost_events = None
        if events is not None:
            lost_events = TaskEvents(hostname, os.getpid(), events.put_many, supervisor.revoked)
        if events is not None:
            control_server.on_events = lambda on: _switch(
                supervisor.revoked, on, supervisor.send_events
            )
        control_server.on_revoke = supervisor.revoke
        control_server.on_refresh = supervisor.read_reports
        control_server.on_task_change = supervisor.change_task_settings
        control_server.on_queues = supervisor.change_queues
        control_server.on_resize = lambda n: supervisor.grow(n) if n > 0 else supervisor.shrink(-n)
        app.close()  # nothing opened before the fork survives in the children
        signals.worker_ready.send(None)
        code = supervisor.run()
        stop_metrics.set()
        stop_embedded(embedded_beat)
        if events is not None:
            events.offline()
            events.close()
        control_server.close()
        signals.worker_shutdown.send(None)
        log.info("worker %s stopped", hostname)
        return code

    revoked = RevokedIds()
    revoked.send_events = send_events
    loop_events = None
    if events is not None:
        loop_events = TaskEvents(hostname, os.getpid(), events.put_many, revoked)

        def set_events(on: bool) -> None:
            revoked.send_events = on

        control_server.on_events = lambda on: _switch(revoked, on, set_events)
    stop_side_threads = threading.Event()

    def start_side_threads(consumer_ids: Callable[[], list[str]]) -> None:
        """Remote control and lease renewal, in threads of this process."""
        threading.Thread(
            target=control_server.serve,
            args=(stop_side_threads,),
            name="fastq-control",
            daemon=True,
        ).start()
        renewer = LeaseRenewer(lambda: app.broker, consumer_ids)
        threading.Thread(
            target=renewer.serve, args=(stop_side_threads,), name="fastq-lease", daemon=True
        ).start()
        control_server.listening.wait(5.0)  # say "ready" only once remote control can be heard
        if beat_service is not None:
            embedded_beat.append(start_embedded(beat_service))
        if events is not None:
            if heartbeat:
                events.online()
            threading.Thread(
                target=events.serve, args=(stop_side_threads,), name="fastq-events", daemon=True
            ).start()

    def stopped(code: int) -> int:
        stop_embedded(embedded_beat)
        stop_side_threads.set()
        stop_metrics.set()
        if events is not None:
            events.offline()
            events.close()
        signals.worker_shutdown.send(None)
        log.info("worker %s stopped", hostname)
        return code

    if pool == "asyncio":
        import asyncio  # only this pool pays for the import (~13 ms)

        from fastq.worker.asyncio_pool import AsyncioLoop

        aloop = AsyncioLoop(
            app,
            queue_list,
            concurrency=concurrency,
            threads=min(concurrency, ASYNCIO_THREADS),
            prefetch=prefetch,
            hostname=hostname,
            consumer_id=consumer_id(0, 1),
            revoked=revoked,
            active_tasks=active_tasks,
            events=loop_events,
            observer=observer(_merge_into(metrics, 0)),
        )

        def revoke_on_loop(task_ids: list[str], terminate: bool, sig: str) -> None:
            revoked.add(task_ids)
            if terminate:  # the control thread asks; the loop's thread cancels
                aloop.call_soon(aloop.terminate, task_ids)

        control_server.on_revoke = revoke_on_loop
        control_server.on_task_change = lambda change: aloop.call_soon(
            aloop.settings_changed, str(change["task"])
        )
        processes.append(os.getpid())
        serve_metrics()
        start_side_threads(lambda: [aloop.consumer_id])

        async def serve_loop() -> None:
            log.info("ready: asyncio pool, up to %d task(s) in flight", concurrency)
            signals.worker_ready.send(None)
            await aloop.run_async(handle_signals=True)

        asyncio.run(serve_loop())
        return stopped(1 if aloop.gave_up else 0)

    def on_revoke(task_ids: list[str], terminate: bool, sig: str) -> None:
        revoked.add(task_ids)
        if terminate:
            log.warning(
                "revoke with terminate needs the prefork or asyncio pool; %s only skip", pool
            )

    control_server.on_revoke = on_revoke

    def on_task_change(change: dict[str, Any]) -> None:
        for loop in loops:  # the task itself is shared, already changed
            loop.settings_changed(str(change["task"]))

    control_server.on_task_change = on_task_change
    loops = [
        make_loop(
            consumer_id(i, 1),
            None,
            ActiveTasksReporter(active_tasks, i),
            enforce_hard_limit=pool == "solo",
            revoked=revoked,
            observer=observer(_merge_into(metrics, i)),
            task_events=loop_events,
        )
        for i in range(concurrency)
    ]
    serve_metrics()
    processes.append(os.getpid())
    start_side_threads(lambda: [loop.consumer_id for loop in loops])
    stop_count = 0

    def on_term(signum: int, _frame: object) -> None:
        nonlocal stop_count
        stop_count += 1
        if stop_count > 1 or signum == signal.SIGQUIT:
            log.warning("cold shutdown")
            os._exit(1)  # unacknowledged messages come back through restore / visibility
        log.info("warm shutdown: waiting for running tasks (send the signal again for cold)")
        for loop in loops:
            loop.stop()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, on_term)
    threads: list[threading.Thread] = []

    def start_thread(loop: WorkerLoop) -> None:
        thread = threading.Thread(target=loop.run, name=f"fastq-worker-{len(threads)}", daemon=True)
        threads.append(thread)
        thread.start()

    def resize_threads(n: int) -> int:
        """Celery's pool_grow/pool_shrink for the threads pool: more consumer threads, or the
        last ones stopped warm (each finishes its task)."""
        running = [loop for loop in loops if not loop.stopping.is_set()]
        if n < 0:
            if -n >= len(running):
                raise ValueError(f"cannot shrink a pool of {len(running)} by {-n}")
            for loop in running[n:]:
                loop.stop()
            return len(running) + n
        for _ in range(n):
            loop = make_loop(
                consumer_id(len(loops), 1),
                None,
                ActiveTasksReporter(active_tasks, len(loops)),
                revoked=revoked,
                observer=observer(_merge_into(metrics, len(loops))),
                task_events=loop_events,
            )
            loops.append(loop)
            start_thread(loop)
        return len(running) + n

    if pool == "threads":
        control_server.on_resize = resize_threads
    log.info("ready: %s pool with %d consumer(s)", pool, concurrency)
    signals.worker_ready.send(None)
    if pool == "solo":
        loops[0].run()
    else:
        for loop in list(loops):
            start_thread(loop)
        while any(t.is_alive() for t in list(threads)):
            for t in list(threads):
                t.join(timeout=0.5)
            if any(loop.gave_up for loop in loops):  # the broker is out of reach for good
                for loop in loops:
                    loop.stop()
    return stopped(1 if any(loop.gave_up for loop in loops) else 0)


def _merge_into(metrics: WorkerMetrics | None, index: int) -> Callable[[dict[str, Any]], None]:
    """A thread's hand-over of its metrics: into the main process's figures, as consumer
    ``index``."""
    return lambda taken: metrics.merge(index, taken) if metrics is not None else None


def event_dispatcher(
    app: App, hostname: str, active_tasks: ActiveTasks, task_events: bool
) -> EventDispatcher | None:
    """The worker's sender of Celery's events, or None where its broker carries none (SQLite,
    memory: said once when task events were asked for)."""
    try:
        app.broker.event_publisher(hostname).close()  # only asks: nothing is connected yet
    except ConfigurationError as exc:
        if task_events:
            log.warning("task events (-E / worker_send_task_events) are off: %s", exc)
        return None

    def stats() -> tuple[int, int]:
        return len(active_tasks.snapshot()), sum(active_tasks.total.values())

    return EventDispatcher(lambda: app.broker.event_publisher(hostname), hostname, stats)


def lost_event(events: TaskEvents, running: ReportedTask, reason: str, exit_code: int) -> None:
    """The event of a task its pool process did not finish, as Celery's main process sends it:
    ``task-revoked`` (terminated) or ``task-failed`` (time limit, a dead process)."""
    if reason == TERMINATED:
        signum = -exit_code if exit_code < 0 else None
        events.revoked(Context(id=running.task_id), expired=False, terminated=True, signum=signum)
    else:
        events.failed(running.task_id, lost_error(reason, exit_code))


def _switch(revoked: RevokedIds, on: bool, apply: Callable[[bool], None]) -> bool:
    """``enable_events``/``disable_events``: applies ``on``; whether events were on before."""
    was = revoked.send_events
    apply(on)
    log.info("task events %s by remote control", "enabled" if on else "disabled")
    return was
