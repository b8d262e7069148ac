"""The embedded broker: task queues in one SQLite file (``sqlite:///fastq.db``), no server.

For one machine only: every worker process and client opens the same file, so it cannot be
shared across hosts (SQLite over a network filesystem is not safe). Use Redis or RabbitMQ to
scale out.

How a message lives:
- ``publish`` inserts a row into ``fastq_messages`` (or into ``fastq_scheduled`` while its ETA is
  ahead, so a countdown task occupies no prefetch slot; due rows are moved over by ``move_due``
  and by idle consumers).
- A consumer claims up to its free prefetch window in one statement (``UPDATE ... RETURNING``
  inside SQLite's single write lock, so no two consumers get the same row): the row gets the
  consumer's id and a lease until now + ``visibility_timeout`` (``broker_transport_options``,
  3600 s by default). A row whose lease ran out is claimable again, so a worker killed outright
  loses nothing; ``restore_consumer`` gives back a dead prefork child's rows at once. A live
  worker renews the leases of what its consumers hold (``renew``), so a task that runs longer
  than the timeout is not delivered again while its worker lives.
- ``ack`` deletes the rows (one statement per batch); ``reject`` deletes or re-queues at the back.

Order: lower ``priority`` first (0-9, as on Redis, the opposite of RabbitMQ), then FIFO. A message
is stored as headers, properties (JSON) and the encoded body, and decoded by ``_core.decode_task``
when delivered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import cache
from typing import Any

from fastq import _core
from fastq.brokers.base import Broker, Consumer
from fastq.brokers.stored import StoredDelivery, StoredMessage, deliver
from fastq.config import Config
from fastq.control_channel import (
    CONTROL_TTL,
    ControlChannel,
    ControlCommand,
    ControlListener,
    decode_command,
    decode_reply,
    encode_reply,
)
from fastq.errors import BrokerConnectionError, DecodeError
from fastq.protocol import OutgoingMessage
from fastq.sqlitedb import BUSY_TIMEOUT, SQLiteDatabase

log = logging.getLogger("fastq.broker")

SCHEMA = """
CREATE TABLE IF NOT EXISTS fastq_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the delivery tag; AUTOINCREMENT never reuses one
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    visible_at REAL NOT NULL,              -- 0 while waiting, else the end of the lease
    consumer TEXT,                         -- who holds the lease
    previous_consumer TEXT,                -- who held it before (set when a lease ran out)
    deliveries INTEGER NOT NULL DEFAULT 0,
    task_id TEXT,
    task_name TEXT,
    content_type TEXT NOT NULL,
    content_encoding TEXT NOT NULL,
    headers TEXT NOT NULL,
    properties TEXT NOT NULL,
    body BLOB NOT NULL
);
-- Claims walk this in (priority, id) order per queue; visible_at makes the filter index-only.
CREATE INDEX IF NOT EXISTS fastq_messages_claim
    ON fastq_messages (queue, priority, id, visible_at);
CREATE INDEX IF NOT EXISTS fastq_messages_consumer
    ON fastq_messages (consumer) WHERE consumer IS NOT NULL;
CREATE TABLE IF NOT EXISTS fastq_scheduled (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    due REAL NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    task_id TEXT,
    task_name TEXT,
    content_type TEXT NOT NULL,
    content_encoding TEXT NOT NULL,
    headers TEXT NOT NULL,
    properties TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS fastq_scheduled_due ON fastq_scheduled (due);
CREATE TABLE IF NOT EXISTS fastq_control (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS fastq_control_replies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket TEXT NOT NULL,
    created REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS fastq_control_replies_ticket ON fastq_control_replies (ticket);
"""

_PARTS = "task_id, task_name, content_type, content_encoding, headers, properties, body"
#: Idle consumers look for work after 1 ms, doubling up to this (seconds).
POLL_MAX = 0.025
#: Due scheduled messages moved per transaction.
MOVE_BATCH = 500


class SQLiteBroker(Broker):
    """``sqlite:///path.db`` (relative to the working directory) or ``sqlite:////abs/path.db``."""

    consumers_within = "machine"
    visibility_timeout: float

    def __init__(self, url: str, conf: Config) -> None:
        super().__init__(url, conf)
        options = conf.broker_transport_options
        self.visibility_timeout = float(options.get("visibility_timeout", 3600))
        self.db = SQLiteDatabase(
            url,
            SCHEMA,
            error=BrokerConnectionError,
            busy_timeout=float(options.get("busy_timeout", BUSY_TIMEOUT)),
        )

    def startup_note(self) -> str:
        return (
            f"broker: SQLite file {self.db.path}, a single-machine broker: only processes on "
            "this machine can share it; use Redis or RabbitMQ to spread workers over hosts"
        )

    # -- publishing ------------------------------------------------------------------------------
    def publish(self, message: OutgoingMessage) -> None:
        self.publish_many((message,))

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        now = time.time()
        stored = [StoredMessage.encode(m, now) for m in messages]
        ready = [_row(s) for s in stored if s.due is None]
        scheduled = [(s.due, *_row(s)) for s in stored if s.due is not None]
        with self.db.transaction("publish") as conn:
            if ready:
                conn.executemany(
                    f"INSERT INTO fastq_messages (queue, priority, visible_at, {_PARTS}) "
                    "VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?)",
                    ready,
                )
            if scheduled:
                conn.executemany(
                    f"INSERT INTO fastq_scheduled (due, queue, priority, {_PARTS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    scheduled,
                )

    def move_due(self) -> int:
        """Moves scheduled messages whose ETA has come into their queues; how many."""
        now = time.time()
        found = self.db.execute(
            "look for due messages",
            "SELECT EXISTS (SELECT 1 FROM fastq_scheduled WHERE due <= ?)",
            (now,),
        )
        if not found[0][0]:
            return 0
        with self.db.transaction("move due messages") as conn:
            rows = conn.execute(
                "DELETE FROM fastq_scheduled WHERE id IN (SELECT id FROM fastq_scheduled "
                f"WHERE due <= ? ORDER BY due, id LIMIT ?) RETURNING due, id, queue, priority, "
                f"{_PARTS}",
                (now, MOVE_BATCH),
            ).fetchall()
            rows.sort()  # RETURNING gives no order; keep due-time order in the queue
            conn.executemany(
                f"INSERT INTO fastq_messages (queue, priority, visible_at, {_PARTS}) "
                "VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?)",
                [row[2:] for row in rows],
            )
        return len(rows)

    def next_due(self) -> float | None:
        rows = self.db.execute(
            "look for the next due message", "SELECT MIN(due) FROM fastq_scheduled"
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    # -- consuming -------------------------------------------------------------------------------
    def consumer(
        self, queues: list[str], *, prefetch: int, consumer_id: str, accept: list[str]
    ) -> Consumer:
        return SQLiteConsumer(
            self, queues, prefetch=prefetch, consumer_id=consumer_id, accept=accept
        )

    def restore_consumer(self, consumer_id: str) -> int:
        """Puts a dead consumer's messages back at once (they keep their place in the queue)."""
        rows = self.db.execute(
            "return a dead consumer's messages",
            "UPDATE fastq_messages SET consumer = NULL, visible_at = 0 WHERE consumer = ? "
            "RETURNING id",
            (consumer_id,),
        )
        return len(rows)

    def renew(self, consumer_ids: Sequence[str]) -> int:
        """Extends the leases of the rows these live consumers hold to now + the timeout."""
        if not consumer_ids:
            return 0
        marks = ", ".join("?" * len(consumer_ids))
        rows = self.db.execute(
            "renew leases",
            f"UPDATE fastq_messages SET visible_at = ? WHERE consumer IN ({marks}) "
            "AND visible_at > 0 RETURNING id",
            (time.time() + self.visibility_timeout, *consumer_ids),
        )
        return len(rows)

    def discard(self, consumer_id: str, delivery_tag: str) -> None:
        self.db.execute(
            "discard a message",
            "DELETE FROM fastq_messages WHERE id = ? AND consumer = ?",
            (int(delivery_tag), consumer_id),
        )

    # -- queues ----------------------------------------------------------------------------------
    def purge(self, queue: str) -> int:
        """Deletes the queue's waiting and scheduled messages (not those a worker holds)."""
        with self.db.transaction("purge") as conn:
            waiting = conn.execute(
                "DELETE FROM fastq_messages WHERE queue = ? AND consumer IS NULL", (queue,)
            ).rowcount
            scheduled = conn.execute(
                "DELETE FROM fastq_scheduled WHERE queue = ?", (queue,)
            ).rowcount
        return int(waiting + scheduled)

    def queue_length(self, queue: str) -> int:
        """Messages waiting for a consumer now (scheduled and claimed ones are not counted)."""
        rows = self.db.execute(
            "count messages",
            "SELECT count(*) FROM fastq_messages WHERE queue = ? AND consumer IS NULL",
            (queue,),
        )
        return int(rows[0][0])

    def control_channel(self) -> ControlChannel:
        return SQLiteControlChannel(self.db)

    def close(self) -> None:
        self.db.close()


def _row(s: StoredMessage) -> tuple[Any, ...]:
    return (
        s.queue,
        s.priority,
        s.task_id,
        s.task_name,
        s.content_type,
        s.content_encoding,
        _json_text(s.headers),
        _json_text(s.properties),
        s.body,
    )


# Headers and properties are JSON text with kombu's type markers (a datetime in a header comes
# back a datetime), read and written by the Rust codec as on the other transports.
def _json_text(value: dict[str, Any]) -> str:
    return _core.dumps(value, "json").decode()


def _from_json_text(text: str | bytes) -> Any:
    return _core.loads(text.encode() if isinstance(text, str) else bytes(text), "application/json")


@cache
def _claim_sql(queue_count: int) -> str:
    """One UPDATE that claims the first rows of several queues by (priority, id)."""
    pick = "SELECT id{extra} FROM fastq_messages WHERE queue = ? AND visible_at <= ? " + (
        "ORDER BY priority, id LIMIT ?"
    )
    if queue_count == 1:
        chosen = pick.format(extra="")
    else:
        # Each queue's head comes from its own index range; the union is ordered again.
        parts = " UNION ALL ".join(
            f"SELECT * FROM ({pick.format(extra=', priority')})" for _ in range(queue_count)
        )
        chosen = f"SELECT id FROM ({parts}) ORDER BY priority, id LIMIT ?"
    return (
        "UPDATE fastq_messages SET consumer = ?, visible_at = ?, deliveries = deliveries + 1, "
        "previous_consumer = consumer "  # the old value: set only when a lease ran out
        f"WHERE id IN ({chosen}) "
        "RETURNING id, queue, priority, deliveries, previous_consumer, task_id, task_name, "
        "content_type, headers, properties, body"
    )


class SQLiteConsumer:
    """A worker process's claims on ``queues``, at most ``prefetch`` unacknowledged at once."""

    def __init__(
        self,
        broker: SQLiteBroker,
        queues: list[str],
        *,
        prefetch: int,
        consumer_id: str,
        accept: list[str],
    ) -> None:
        self.broker = broker
        self.db = broker.db
        self.queues = list(dict.fromkeys(queues))
        self.prefetch = max(1, prefetch)
        self.consumer_id = consumer_id
        self.accept = accept
        self._held: set[str] = set()
        self._claim = _claim_sql(len(self.queues))
        marks = ", ".join("?" * len(self.queues))
        self._probe = (
            f"SELECT EXISTS (SELECT 1 FROM fastq_messages WHERE queue IN ({marks}) "
            "AND visible_at <= ?), EXISTS (SELECT 1 FROM fastq_scheduled WHERE due <= ?)"
        )
        # After a full batch there is probably more: claim again without looking first.
        self._more = True

    @property
    def in_flight(self) -> int:
        return len(self._held)

    def fetch(self, timeout: float) -> list[StoredDelivery]:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            free = self.prefetch - len(self._held)
            if free > 0:
                deliveries = self._claim_batch(free)
                if deliveries:
                    return deliveries
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, POLL_MAX)

    def _claim_batch(self, count: int) -> list[StoredDelivery]:
        now = time.time()
        if not self._more:
            # A read first: an idle consumer never takes the write lock just to find nothing.
            ready, due = self.db.execute(
                "look for messages", self._probe, (*self.queues, now, now)
            )[0]
            if due:
                self.broker.move_due()
            elif not ready:
                return []
        params: list[Any] = [self.consumer_id, now + self.broker.visibility_timeout]
        for queue in self.queues:
            params += [queue, now, count]
        if len(self.queues) > 1:
            params.append(count)
        rows = self.db.execute("claim messages", self._claim, params)
        self._more = len(rows) == count
        rows.sort(key=lambda r: (r[2], r[0]))  # RETURNING gives no order
        deliveries = [self._decode(row) for row in rows]
        self._held.update(d.delivery_tag for d in deliveries)
        return deliveries

    def _decode(self, row: tuple[Any, ...]) -> StoredDelivery:
        (id_, queue, priority, deliveries, previous, task_id, task_name) = row[:7]
        content_type, headers_text, properties_text, body = row[7:]
        tag = str(id_)
        if previous is not None:
            log.warning(
                "redelivering task %s[%s]: consumer %s held it past the visibility timeout "
                "(%gs) without acknowledging it",
                task_name,
                task_id,
                previous,
                self.broker.visibility_timeout,
            )
        headers: dict[str, Any] | None = None
        properties: dict[str, Any] = {}
        damaged = None
        try:
            headers = _from_json_text(headers_text)
            properties = _from_json_text(properties_text)
            if not isinstance(headers, dict) or not isinstance(properties, dict):
                raise DecodeError("headers and properties must be JSON objects")
            body = bytes(body)
        except (ValueError, TypeError) as exc:
            headers, properties = None, {}
            damaged = f"damaged row {id_} in fastq_messages: {exc}"
            body = body if isinstance(body, bytes) else b""
        return deliver(
            tag,
            queue,
            priority,
            deliveries > 1,
            str(content_type),
            headers,
            properties,
            body,
            self.accept,
            task_id,
            task_name,
            damaged,
        )

    def ack(self, delivery_tags: list[str], wait: bool = True) -> None:
        # Always synchronous here: there is no reply to defer.
        if not delivery_tags:
            return
        # By id alone: if the lease ran out and another consumer re-claimed the row, this ack
        # still removes it (the task has run), which avoids a third delivery.
        marks = ", ".join("?" * len(delivery_tags))
        self.db.execute(
            "acknowledge messages",
            f"DELETE FROM fastq_messages WHERE id IN ({marks})",
            [int(t) for t in delivery_tags],
        )
        self._held.difference_update(delivery_tags)

    def reject(self, delivery_tag: str, requeue: bool) -> None:
        tag = int(delivery_tag)
        with self.db.transaction("reject a message") as conn:
            if requeue:  # to the back of its queue, as kombu does: a new id
                conn.execute(
                    f"INSERT INTO fastq_messages (queue, priority, visible_at, deliveries, "
                    f"{_PARTS}) SELECT queue, priority, 0, deliveries, {_PARTS} "
                    "FROM fastq_messages WHERE id = ?",
                    (tag,),
                )
            conn.execute("DELETE FROM fastq_messages WHERE id = ?", (tag,))
        self._held.discard(delivery_tag)

    def restore_unacked(self) -> int:
        count = self.broker.restore_consumer(self.consumer_id)
        self._held.clear()
        return count

    def close(self) -> None:
        self._held.clear()


class SQLiteControlChannel(ControlChannel):
    """Commands are rows of ``fastq_control`` that each listener reads once (it remembers the
    last id); replies are rows of ``fastq_control_replies`` under the command's ticket."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def broadcast(
        self, command: ControlCommand, timeout: float, limit: int | None
    ) -> list[dict[str, Any]]:
        now = time.time()
        with self.db.transaction("send a control command") as conn:
            conn.execute("DELETE FROM fastq_control WHERE created < ?", (now - CONTROL_TTL,))
            conn.execute(
                "DELETE FROM fastq_control_replies WHERE created < ?", (now - CONTROL_TTL,)
            )
            conn.execute(
                "INSERT INTO fastq_control (created, body) VALUES (?, ?)", (now, command.encode())
            )
        if not command.reply:
            return []
        replies: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        last, delay = 0, 0.002
        while limit is None or len(replies) < limit:
            rows = self.db.execute(
                "read control replies",
                "SELECT id, body FROM fastq_control_replies WHERE ticket = ? AND id > ? "
                "ORDER BY id",
                (command.ticket, last),
            )
            for id_, body in rows:
                last = id_
                reply = decode_reply(body)
                if reply is not None:
                    replies.append(reply)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)
        self.db.execute(
            "clean up control replies",
            "DELETE FROM fastq_control_replies WHERE ticket = ?",
            (command.ticket,),
        )
        return replies[:limit] if limit is not None else replies

    def listen(self) -> ControlListener:
        return SQLiteControlListener(self.db)


class SQLiteControlListener:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db
        rows = db.execute("read control commands", "SELECT max(id) FROM fastq_control")
        self._last = int(rows[0][0] or 0)

    def fetch(self, timeout: float) -> list[ControlCommand]:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            rows = self.db.execute(
                "read control commands",
                "SELECT id, created, body FROM fastq_control WHERE id > ? ORDER BY id",
                (self._last,),
            )
            commands = []
            for id_, created, body in rows:
                self._last = id_
                if created < time.time() - CONTROL_TTL:
                    continue
                command = decode_command(body)
                if command is not None:
                    commands.append(command)
            remaining = deadline - time.monotonic()
            if commands or remaining <= 0:
                return commands
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)

    def reply(self, command: ControlCommand, hostname: str, reply: Any) -> None:
        self.db.execute(
            "send a control reply",
            "INSERT INTO fastq_control_replies (ticket, created, body) VALUES (?, ?, ?)",
            (command.ticket, time.time(), encode_reply(hostname, reply)),
        )

    def close(self) -> None:
        return None
