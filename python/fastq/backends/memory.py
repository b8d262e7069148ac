"""The in-process result backend, ``cache+memory://`` (or ``memory://``), for tests.

Results live in this process's memory, so they do not cross processes: pair it with the
``memory://`` broker, eager mode, or the threads/solo pool. Apps naming the same URL share one
store. Metas are serialized as on the real backends, and ``get()`` is woken by the store itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastq import errors, states
from fastq.backends.base import Backend
from fastq.backends.waiting import LoopPoller

if TYPE_CHECKING:
    from fastq.config import Config


class MemoryResultStore:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.metas: dict[str, tuple[bytes, str, float | None]] = {}  # id -> (meta, status, expiry)


_STORES: dict[str, MemoryResultStore] = {}
_STORES_LOCK = threading.Lock()


def _store_for(url: str) -> MemoryResultStore:
    name = url.split("://", 1)[1] if "://" in url else ""
    with _STORES_LOCK:
        return _STORES.setdefault(name.strip("/"), MemoryResultStore())


class MemoryBackend(Backend):
    def __init__(self, conf: Config, url: str) -> None:
        super().__init__(conf, url)
        self.store = _store_for(url)
        self._async_poller = LoopPoller(self.get_many, self.get_meta)  # await: in the loop

    def store_many(self, metas: Iterable[tuple[str, dict[str, Any]]]) -> None:
        expires_at = time.time() + self.expires if self.expires else None
        encoded = [(task_id, self.encode_meta(meta), meta["status"]) for task_id, meta in metas]
        with self.store.cond:
            for task_id, data, status in encoded:
                old = self.store.metas.get(task_id)
                if old is not None and old[1] == states.SUCCESS:
                    continue  # a duplicate delivery never undoes a success
                self.store.metas[task_id] = (data, status, expires_at)
            self.store.cond.notify_all()

    def _lookup(self, task_id: str) -> bytes | None:
        item = self.store.metas.get(task_id)
        if item is None:
            return None
        data, _, expires_at = item
        if expires_at is not None and expires_at <= time.time():
            del self.store.metas[task_id]
            return None
        return data

    def get_meta(self, task_id: str) -> dict[str, Any]:
        with self.store.cond:
            data = self._lookup(task_id)
        return self.pending_meta(task_id) if data is None else self.decode_meta(data)

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.store.cond:
            while True:
                data = self._lookup(task_id)
                if data is not None:
                    meta = self.decode_meta(data)
                    if meta["status"] in states.READY_STATES:
                        return meta
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise errors.TimeoutError(f"task {task_id} not ready after {timeout}s")
                self.store.cond.wait(remaining)

    def forget(self, task_id: str) -> None:
        with self.store.cond:
            self.store.metas.pop(task_id, None)
