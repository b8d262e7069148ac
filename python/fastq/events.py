"""Celery's events (``celery/events``): what a worker sends so ``celery events`` and Flower see
it, and the ``task-sent`` a client sends with ``task_send_sent_event``.

An event is a JSON object with Celery's fields: ``type`` (``task-succeeded``), ``hostname``,
``timestamp``, ``utcoffset``, ``pid``, ``clock`` and the type's own. It goes to the
``event_exchange`` (``celeryev``) with its type as routing key (``task.succeeded``). Task events
are batched as Celery's own prefork worker batches them: a JSON list on ``task.multi``, which
Celery's receivers (``celery events``, Flower) read as the events it holds.

Each event is encoded once, in Rust (``_core.encode_events``), and published off the task's
path: ``EventDispatcher.tick`` runs from the supervisor's loop (prefork) or a thread of its own
(threads, solo). The Lamport clock is stamped at publish time, by the process that publishes,
spliced into the encoded events in one call per batch (``_core.stamp_events``).

A prefork child does as little as it can per task (``TaskEvents`` without ``emit``): the
``task-received`` of a fetched batch are encoded in one call when it arrives, a task's
``task-started`` and ``task-succeeded`` in one call each, into one buffer
(``_core.EventLines``), and they go to the supervisor as ``E`` lines with the child's next
report (``worker/reports.py``). The supervisor takes a chunk's ``E`` lines off in one call
(``_core.split_reports``) and hands them on as they are: it does no per-event work of its own
but splicing the clocks in. Other events (failed, retried, revoked, rejected) are encoded by
the child too, as they happen.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from fastq import _core, errors, states
from fastq.backoff import Backoff
from fastq.control_channel import CLOCK

if TYPE_CHECKING:
    from fastq.app import App
    from fastq.brokers.base import Delivery, EventPublisher
    from fastq.execution.tracer import Outcome
    from fastq.protocol import OutgoingMessage
    from fastq.task import Context

log = logging.getLogger("fastq.events")

JSON = "application/json"
#: Celery's heartbeat interval (``worker_heartbeat``'s default), in seconds: Flower and
#: ``celery events`` take a worker for offline after missing a few.
HEARTBEAT_EVERY = 2.0
#: Celery's ``resultrepr_maxsize`` and argsrepr bound: longer reprs are cut.
REPR_MAX = 1024
#: What starts a prefork child's report line that carries a task event (``worker/reports.py``).
LINE_PREFIX = b"E "
#: How often buffered task events are published (seconds): one message per interval, however
#: often the prefork supervisor wakes up.
FLUSH_EVERY = 0.1
#: Task events kept between two publishes, as items (an encoded event, or the events of a
#: child's report chunk); the oldest are dropped past this.
MAX_BUFFERED = 10_000
#: After a failed publish, events are dropped (not tried) for this long, doubling up to the
#: ceiling: the prefork supervisor publishes from its loop, which a broker that does not answer
#: must not hold up at every tick.
RETRY_START = 1.0
RETRY_MAX = 30.0


def utcoffset() -> float:
    """The local offset to UTC in hours as Celery's events carry it: hours *west* of UTC
    (``time.timezone``), which receivers use to adjust ``timestamp``."""
    return (time.altzone if time.localtime().tm_isdst > 0 else time.timezone) / 3600


def short_repr(value: Any, limit: int = REPR_MAX) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a repr that raises must not lose the event
        text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def common_members(hostname: str, pid: int) -> bytes:
    """The JSON object members every event of a sender carries besides its type, timestamp and
    clock: ``"hostname":…,"utcoffset":…,"pid":…`` (``_core.encode_events``' ``common``)."""
    return _core.dumps({"hostname": hostname, "utcoffset": _UTCOFFSET, "pid": pid}, JSON)[1:-1]


def encode_events(events: list[tuple[str, float, dict[str, Any]]], common: bytes) -> list[bytes]:
    """``events`` (type, timestamp, fields) as JSON objects without their ``clock``."""
    try:
        return _core.encode_events(events, common)
    except errors.EncodeError:  # a field JSON cannot carry: its repr
        return [_encode_one(event, common) for event in events]


def encode_lines(
    events: list[tuple[str, float, dict[str, Any]]], common: bytes, prefix: bytes
) -> bytes:
    """``events`` as lines, each ``<prefix><JSON>\\n`` (a prefork child's ``E`` reports)."""
    try:
        return _core.encode_event_lines(events, common, prefix)
    except errors.EncodeError:
        return b"".join(prefix + raw + b"\n" for raw in encode_events(events, common))


def _encode_one(event: tuple[str, float, dict[str, Any]], common: bytes) -> bytes:
    try:
        return _core.encode_events([event], common)[0]
    except errors.EncodeError:
        event_type, timestamp, fields = event
        fields = {k: _writable(v if _plain(v) else repr(v)) for k, v in fields.items()}
        return _core.encode_events([(event_type, timestamp, fields)], common)[0]


def _writable(value: Any) -> Any:
    """``value``, a str with what UTF-8 cannot carry (a lone surrogate) as its escape."""
    if isinstance(value, str) and not value.isascii():
        return value.encode("utf-8", "backslashreplace").decode()
    return value


def with_clock(raw: bytes, clock: int) -> bytes:
    """``raw`` (a JSON object from ``encode_events``) with ``clock`` as its first field."""
    return b'{"clock":%d,%s' % (clock, raw[1:])


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None)))


_UTCOFFSET = utcoffset()
#: Celery's ``SOFTWARE_INFO``, for fastq: Flower shows these in a worker's details.
SOFTWARE_INFO = {"sw_ident": "fastq", "sw_ver": _core.__version__, "sw_sys": platform.system()}


class EventSwitch(Protocol):
    """Whether task events are on now: set at start (``-E``) and by ``enable_events`` /
    ``disable_events`` (a prefork child hears them on its revoked-ids pipe)."""

    send_events: bool


class TaskEvents:
    """A consumer loop's task events, with Celery's fields, handed to ``emit`` encoded.

    ``pid`` is the worker's main process, as in Celery, where the main process sends them.
    Without ``emit`` (a prefork child), events are ``held`` as lines until ``take``: the
    child's next report carries them. The ``task-received`` of a batch are encoded when it is
    fetched (``fetched``), in one call; every other event as it happens.
    """

    def __init__(
        self,
        hostname: str,
        pid: int,
        emit: Callable[[list[bytes]], None] | None,
        switch: EventSwitch,
    ) -> None:
        self.hostname = hostname
        self.pid = pid
        self.emit = emit
        self.switch = switch
        self.common = common_members(hostname, pid)
        #: Events not written yet (``emit`` None), as lines ``E <JSON>\n``.
        self.held = _core.EventLines(self.common, LINE_PREFIX)

    @property
    def enabled(self) -> bool:
        return self.switch.send_events

    def _send(self, event_type: str, fields: dict[str, Any]) -> None:
        event = (event_type, time.time(), fields)
        if self.emit is None:
            self.held.push(encode_lines([event], self.common, LINE_PREFIX))
        else:  # shared by a thread pool's loops: nothing held
            self.emit(encode_events([event], self.common))

    def take(self) -> bytes:
        """The events held so far, as lines (``emit`` None)."""
        return self.held.take()

    def fetched(self, deliveries: Sequence[Delivery], tasks: Mapping[str, Any]) -> None:
        """A batch arrived (a prefork child): the ``task-received`` of its tasks, in one call
        (those whose message did not decode or whose task is not registered have none)."""
        if self.emit is not None:
            return  # ``received`` per task
        now = time.time()
        try:
            self.held.received(deliveries, tasks, now)
        except (errors.EncodeError, TypeError, AttributeError):  # one by one, reprs if need be
            for delivery in deliveries:
                try:
                    self.held.received([delivery], tasks, now)
                except (errors.EncodeError, TypeError, AttributeError):
                    fields = _received_fields(delivery)
                    if fields is not None:
                        event = ("task-received", now, fields)
                        self.held.push(encode_lines([event], self.common, LINE_PREFIX))

    def received(self, context: Context) -> None:
        if self.emit is None:
            return  # the batch's, when it was fetched
        headers = context.headers or {}
        argsrepr, kwargsrepr = headers.get("argsrepr"), headers.get("kwargsrepr")
        self._send(
            "task-received",
            {
                "uuid": context.id,
                "name": context.task,
                "args": argsrepr if isinstance(argsrepr, str) else short_repr(context.args),
                "kwargs": kwargsrepr
                if isinstance(kwargsrepr, str)
                else short_repr(context.kwargs or {}),
                "root_id": context.root_id,
                "parent_id": context.parent_id,
                "retries": context.retries,
                "eta": context.eta,
                "expires": context.expires,
            },
        )

    def started(self, context: Context) -> None:
        if self.emit is None and isinstance(context.id, str):
            try:
                self.held.started(context.id)
                return
            except UnicodeEncodeError:  # a lone surrogate: the general path writes its escape
                pass
        self._send("task-started", {"uuid": context.id})

    def outcome(self, context: Context, outcome: Outcome, runtime: float) -> None:
        """``task-succeeded``, ``-failed``, ``-retried``, ``-revoked`` or ``-rejected``, from
        what the task's run came to."""
        state = outcome.state
        if state == states.SUCCESS:
            if self.emit is None and isinstance(context.id, str):
                try:
                    self.held.succeeded(context.id, outcome.value, runtime)  # its repr, cut
                    return
                except UnicodeEncodeError:  # a lone surrogate: the general path writes its escape
                    pass
            fields = {"uuid": context.id, "result": short_repr(outcome.value), "runtime": runtime}
            self._send("task-succeeded", fields)
        elif state in (states.FAILURE, states.RETRY):
            error = outcome.error if state == states.RETRY else outcome.value
            if state == states.RETRY and error is not None:
                error = getattr(error, "exc", None) or error  # the reason, as Celery's
            self._send(
                "task-failed" if state == states.FAILURE else "task-retried",
                {
                    "uuid": context.id,
                    "exception": short_repr(error),
                    "traceback": outcome.traceback or "",
                },
            )
        elif state == states.REVOKED:
            self.revoked(context, expired=False, terminated=False)
        else:  # Ignore, Reject: nothing stored, and the message is settled as the task asked
            self.rejected(context, requeue=outcome.settle.name == "REQUEUE")

    def revoked(
        self, context: Context, expired: bool, terminated: bool, signum: int | None = None
    ) -> None:
        self._send(
            "task-revoked",
            {"uuid": context.id, "terminated": terminated, "signum": signum, "expired": expired},
        )

    def failed(self, task_id: str, error: BaseException) -> None:
        """A task that failed outside its run: its pool process was killed or died."""
        self._send(
            "task-failed", {"uuid": task_id, "exception": short_repr(error), "traceback": ""}
        )

    def rejected(self, context: Context, requeue: bool) -> None:
        self._send("task-rejected", {"uuid": context.id, "requeue": requeue})


def _received_fields(delivery: Delivery) -> dict[str, Any] | None:
    """A ``task-received``'s fields from a delivery's message, where ``EventLines.received``
    cannot write them (a header JSON cannot carry: ``encode_lines`` writes its repr)."""
    message = delivery.message
    if message is None:
        return None
    headers = message.headers if isinstance(message.headers, Mapping) else {}
    argsrepr, kwargsrepr = headers.get("argsrepr"), headers.get("kwargsrepr")
    return {
        "uuid": message.id,
        "name": message.task,
        "args": argsrepr if isinstance(argsrepr, str) else short_repr(message.args),
        "kwargs": kwargsrepr if isinstance(kwargsrepr, str) else short_repr(message.kwargs or {}),
        "root_id": headers.get("root_id"),
        "parent_id": headers.get("parent_id"),
        "retries": headers.get("retries") or 0,
        "eta": headers.get("eta"),
        "expires": headers.get("expires"),
    }


class EventDispatcher:
    """Sends this process's events: task events buffered (``put_many``) and published in batches by
    ``tick``, worker events (online, heartbeat, offline) as they come.

    ``stats()`` gives the heartbeat's ``active`` and ``processed``. A broker that refuses events
    drops them with one warning per outage: events are for watching, and must never hold up
    the tasks they describe.
    """

    def __init__(
        self,
        open_publisher: Callable[[], EventPublisher],
        hostname: str,
        stats: Callable[[], tuple[int, int]] = lambda: (0, 0),
    ) -> None:
        self.open_publisher = open_publisher
        self.hostname = hostname
        self.stats = stats
        self.pid = os.getpid()
        self.common = common_members(hostname, self.pid)
        self._publisher: EventPublisher | None = None
        #: Encoded events: one each, or a child's runs of ``\n``-ended lines (``stamp_events``).
        self._buffer: deque[bytes] = deque(maxlen=MAX_BUFFERED)
        self._lock = threading.Lock()
        self._next_heartbeat = 0.0
        self._next_flush = 0.0
        self._backoff = Backoff(RETRY_START, RETRY_MAX)
        self._retry_at = 0.0
        #: Heartbeats on: between ``online()`` and ``offline()``.
        self.beating = False

    def put_many(self, raws: Sequence[bytes]) -> None:
        """Buffers task events (thread-safe): each item one encoded event, or several each
        ending in ``\n`` (a prefork child's ``E`` lines)."""
        with self._lock:
            self._buffer.extend(raws)

    def send(self, event_type: str, **fields: Any) -> None:
        """Publishes one event now (worker events)."""
        self.send_many([(event_type, fields)])

    def send_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Publishes events now, in one round trip (a client's ``task-sent``)."""
        raws = encode_events([(t, time.time(), fields) for t, fields in events], self.common)
        self._publish(
            [
                (event_type.replace("-", "."), with_clock(raw, CLOCK.forward()))
                for (event_type, _), raw in zip(events, raws, strict=True)
            ]
        )

    def worker_event(self, event_type: str) -> None:
        active, processed = self.stats()
        self.send(
            event_type,
            freq=HEARTBEAT_EVERY,
            active=active,
            processed=processed,
            loadavg=[round(x, 2) for x in os.getloadavg()],
            **SOFTWARE_INFO,
        )

    def online(self) -> None:
        self.beating = True
        self.worker_event("worker-online")
        self._next_heartbeat = time.monotonic() + HEARTBEAT_EVERY

    def offline(self) -> None:
        """The last events, and worker-offline; skipped when the broker failed the last try:
        a warm stop must not wait on a broker that is away."""
        if self._backoff.failures:
            self.beating = False
            return
        self.tick(force=True)
        if self.beating:
            self.beating = False
            self.worker_event("worker-offline")

    def heartbeat(self) -> None:
        """A heartbeat now (the ``heartbeat`` control command), and the next in 2 s."""
        self.worker_event("worker-heartbeat")
        self._next_heartbeat = time.monotonic() + HEARTBEAT_EVERY

    def tick(self, force: bool = False) -> None:
        """Publishes the buffered task events (one ``task.multi`` message) at most every
        ``FLUSH_EVERY`` seconds (``force``: now) and, when due, a heartbeat. Never raises."""
        now = time.monotonic()
        if self._buffer and (force or now >= self._next_flush):
            self._next_flush = now + FLUSH_EVERY
            with self._lock:
                batch = list(self._buffer)
                self._buffer.clear()
            if batch:
                first = CLOCK.forward_many(_core.count_events(batch))
                body = _core.stamp_events(batch, first)
                self._publish([("task.multi", body)])
        if self.beating and time.monotonic() >= self._next_heartbeat:
            self.heartbeat()

    def serve(self, stop: threading.Event, every: float = 0.1) -> None:
        """``tick`` every ``every`` seconds until ``stop`` is set (threads and solo pools)."""
        while not stop.wait(every):
            self.tick()

    def _publish(self, messages: list[tuple[str, bytes]]) -> None:
        if self._backoff.failures and time.monotonic() < self._retry_at:
            return  # the broker failed the last try: dropped until the next one
        try:
            if self._publisher is None:
                self._publisher = self.open_publisher()
            self._publisher.publish(messages)
            if self._backoff.failures:
                log.info("events are sent again")
                self._backoff.reset()
        except errors.FastqError as exc:
            if not self._backoff.failures:
                log.warning("could not send events (%s); dropped until the broker answers", exc)
            self._retry_at = time.monotonic() + self._backoff.next()
            self.close()

    def close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            try:
                publisher.close()
            except errors.FastqError:
                pass


def sent_event(message: OutgoingMessage) -> dict[str, Any]:
    """The fields of Celery's ``task-sent`` for a message just published."""
    headers = message.headers
    return {
        "uuid": message.id,
        "root_id": headers.get("root_id"),
        "parent_id": headers.get("parent_id"),
        "name": headers.get("task"),
        "args": headers.get("argsrepr") or short_repr(message.args),
        "kwargs": headers.get("kwargsrepr") or short_repr(message.kwargs),
        "retries": headers.get("retries") or 0,
        "eta": headers.get("eta"),
        "expires": headers.get("expires"),
        "queue": message.queue,
        "exchange": message.exchange,
        "routing_key": message.routing_key or message.queue,
    }


def client_dispatcher(app: App) -> EventDispatcher | None:
    """The app's sender of ``task-sent`` (one per process, named as Celery's anonymous
    ``gen<pid>@<host>``), or None where the broker carries no events (said once)."""
    dispatcher: EventDispatcher | None = app.__dict__.get("_events")
    if dispatcher is not None and dispatcher.pid == os.getpid():
        return dispatcher
    hostname = f"gen{os.getpid()}@{socket.gethostname()}"
    try:
        app.broker.event_publisher(hostname).close()
    except errors.ConfigurationError as exc:
        if not app.__dict__.get("_events_refused"):
            log.warning("task_send_sent_event is set, but no task-sent is sent: %s", exc)
            app.__dict__["_events_refused"] = True
        return None
    dispatcher = EventDispatcher(lambda: app.broker.event_publisher(hostname), hostname)
    app.__dict__["_events"] = dispatcher
    return dispatcher
