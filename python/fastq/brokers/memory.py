"""The in-process broker, ``memory://``: queues in this process's memory, for tests.

It does not cross processes: use it with the ``threads`` or ``solo`` pool, with eager mode, or
with a ``WorkerLoop`` running in a thread of the test (a prefork worker refuses it). Every app
in the process that names the same URL shares its queues: ``memory://`` is one set, and
``memory://name`` another, so tests can keep theirs apart.

Messages are encoded and decoded as on the real brokers (so unserializable arguments fail here
too); priorities (lower first), ETA, acks, rejects and restores behave as on SQLite, without a
visibility timeout.
"""

from __future__ import annotations

import heapq
import itertools
import queue as queue_module
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastq.brokers.base import Broker, Consumer
from fastq.brokers.stored import StoredDelivery, StoredMessage, deliver
from fastq.config import Config
from fastq.control_channel import (
    ControlChannel,
    ControlCommand,
    ControlListener,
    decode_reply,
    encode_reply,
)
from fastq.protocol import OutgoingMessage


@dataclass(order=True)
class _Entry:
    priority: int
    tag: int
    message: StoredMessage = field(compare=False)
    deliveries: int = field(default=0, compare=False)


class MemoryStore:
    """One URL's queues, scheduled messages, held messages and control listeners."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queues: dict[str, list[_Entry]] = {}
        self.scheduled: list[tuple[float, int, _Entry]] = []
        self.held: dict[str, dict[int, _Entry]] = {}  # consumer id -> tag -> entry
        self.tags = itertools.count(1)
        self.listeners: list[queue_module.SimpleQueue[ControlCommand]] = []
        self.replies: dict[str, queue_module.SimpleQueue[dict[str, Any]]] = {}

    def push(self, entry: _Entry) -> None:
        heapq.heappush(self.queues.setdefault(entry.message.queue, []), entry)

    def move_due(self, now: float) -> int:
        moved = 0
        while self.scheduled and self.scheduled[0][0] <= now:
            _, _, entry = heapq.heappop(self.scheduled)
            self.push(entry)
            moved += 1
        return moved


_STORES: dict[str, MemoryStore] = {}
_STORES_LOCK = threading.Lock()


def store_for(url: str) -> MemoryStore:
    name = url.split("://", 1)[1] if "://" in url else url
    with _STORES_LOCK:
        return _STORES.setdefault(name.strip("/"), MemoryStore())


class MemoryBroker(Broker):
    consumers_within = "process"

    def __init__(self, url: str, conf: Config) -> None:
        super().__init__(url, conf)
        self.store = store_for(url)

    def publish(self, message: OutgoingMessage) -> None:
        self.publish_many((message,))

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        now = time.time()
        encoded = [StoredMessage.encode(m, now) for m in messages]
        store = self.store
        with store.cond:
            for message in encoded:
                entry = _Entry(message.priority, next(store.tags), message)
                if message.due is None:
                    store.push(entry)
                else:
                    heapq.heappush(store.scheduled, (message.due, entry.tag, entry))
            store.cond.notify_all()

    def move_due(self) -> int:
        with self.store.cond:
            moved = self.store.move_due(time.time())
            if moved:
                self.store.cond.notify_all()
        return moved

    def consumer(
        self, queues: list[str], *, prefetch: int, consumer_id: str, accept: list[str]
    ) -> Consumer:
        return MemoryConsumer(self.store, queues, prefetch, consumer_id, accept)

    def restore_consumer(self, consumer_id: str) -> int:
        store = self.store
        with store.cond:
            held = store.held.get(consumer_id, {})
            entries = list(held.values())
            held.clear()  # in place: a consumer that is still alive shares this dict
            for entry in entries:
                store.push(entry)
            store.cond.notify_all()
        return len(entries)

    def purge(self, queue: str) -> int:
        store = self.store
        with store.cond:
            waiting = len(store.queues.pop(queue, []))
            kept = [s for s in store.scheduled if s[2].message.queue != queue]
            scheduled = len(store.scheduled) - len(kept)
            heapq.heapify(kept)
            store.scheduled = kept
        return waiting + scheduled

    def queue_length(self, queue: str) -> int:
        with self.store.cond:
            return len(self.store.queues.get(queue, []))

    def control_channel(self) -> ControlChannel:
        return MemoryControlChannel(self.store)


class MemoryConsumer:
    def __init__(
        self,
        store: MemoryStore,
        queues: list[str],
        prefetch: int,
        consumer_id: str,
        accept: list[str],
    ) -> None:
        self.store = store
        self.queues = list(dict.fromkeys(queues))
        self.prefetch = max(1, prefetch)
        self.consumer_id = consumer_id
        self.accept = accept
        with store.cond:
            self._held = store.held.setdefault(consumer_id, {})

    @property
    def in_flight(self) -> int:
        with self.store.cond:
            return len(self._held)

    def fetch(self, timeout: float) -> list[StoredDelivery]:
        store = self.store
        deadline = time.monotonic() + timeout
        with store.cond:
            while True:
                store.move_due(time.time())
                entries = self._take(self.prefetch - len(self._held))
                remaining = deadline - time.monotonic()
                if entries or remaining <= 0:
                    break
                if store.scheduled:
                    remaining = min(remaining, max(0.0, store.scheduled[0][0] - time.time()))
                store.cond.wait(remaining)
        return [self._deliver(e) for e in entries]

    def _take(self, count: int) -> list[_Entry]:
        taken: list[_Entry] = []
        heaps = [h for q in self.queues if (h := self.store.queues.get(q))]
        while len(taken) < count and heaps:
            best = min(heaps, key=lambda h: h[0])  # lowest (priority, tag) across the queues
            entry = heapq.heappop(best)
            entry.deliveries += 1
            self._held[entry.tag] = entry
            taken.append(entry)
            heaps = [h for h in heaps if h]
        return taken

    def _deliver(self, entry: _Entry) -> StoredDelivery:
        m = entry.message
        return deliver(
            str(entry.tag),
            m.queue,
            m.priority,
            entry.deliveries > 1,
            m.content_type,
            m.headers,
            m.properties,
            m.body,
            self.accept,
            m.task_id,
            m.task_name,
        )

    def ack(self, delivery_tags: list[str], wait: bool = True) -> None:
        # Always synchronous here: there is no reply to defer.
        with self.store.cond:
            for tag in delivery_tags:
                self._held.pop(int(tag), None)

    def reject(self, delivery_tag: str, requeue: bool) -> None:
        store = self.store
        with store.cond:
            entry = self._held.pop(int(delivery_tag), None)
            if entry is not None and requeue:  # to the back of its queue, as kombu does
                entry.tag = next(store.tags)
                store.push(entry)
                store.cond.notify_all()

    def restore_unacked(self) -> int:
        store = self.store
        with store.cond:
            entries = list(self._held.values())
            self._held.clear()
            for entry in entries:
                store.push(entry)
            store.cond.notify_all()
        return len(entries)

    def close(self) -> None:
        return None


class MemoryControlChannel(ControlChannel):
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def broadcast(
        self, command: ControlCommand, timeout: float, limit: int | None
    ) -> list[dict[str, Any]]:
        inbox: queue_module.SimpleQueue[dict[str, Any]] = queue_module.SimpleQueue()
        with self.store.cond:
            if command.reply:
                self.store.replies[command.ticket] = inbox
            for listener in self.store.listeners:
                listener.put(command)
        if not command.reply:
            return []
        replies: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            while limit is None or len(replies) < limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    replies.append(inbox.get(timeout=remaining))
                except queue_module.Empty:
                    break
        finally:
            with self.store.cond:
                self.store.replies.pop(command.ticket, None)
        return replies

    def listen(self) -> ControlListener:
        return MemoryControlListener(self.store)


class MemoryControlListener:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.inbox: queue_module.SimpleQueue[ControlCommand] = queue_module.SimpleQueue()
        with store.cond:
            store.listeners.append(self.inbox)

    def fetch(self, timeout: float) -> list[ControlCommand]:
        commands: list[ControlCommand] = []
        try:
            if timeout > 0:
                commands.append(self.inbox.get(timeout=timeout))
            while True:
                commands.append(self.inbox.get_nowait())
        except queue_module.Empty:
            pass
        return commands

    def reply(self, command: ControlCommand, hostname: str, reply: Any) -> None:
        with self.store.cond:
            inbox = self.store.replies.get(command.ticket)
        if inbox is not None:  # through JSON, as on the other transports
            decoded = decode_reply(encode_reply(hostname, reply))
            if decoded is not None:
                inbox.put(decoded)

    def close(self) -> None:
        with self.store.cond:
            if self.inbox in self.store.listeners:
                self.store.listeners.remove(self.inbox)
