"""The embedded result backend: task metas in a SQLite file (``sqlite:///fastq.db``).

It is the default backend when the broker is SQLite and no backend is set, and then shares the
broker's file. A meta is stored serialized (``result_serializer``) with an expiry time
(``result_expires``); expired rows read as PENDING and are deleted now and then by the processes
that store results. As on Redis, a SUCCESS is never overwritten by a later store of the same id.
``get()`` polls with a short backoff (1 ms doubling to 50 ms): SQLite has no wake-up channel
across processes, and a point read costs microseconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastq import errors, states
from fastq.backends.base import Backend
from fastq.backends.waiting import LoopPoller
from fastq.sqlitedb import BUSY_TIMEOUT, SQLiteDatabase

if TYPE_CHECKING:
    from fastq.config import Config

SCHEMA = """
CREATE TABLE IF NOT EXISTS fastq_results (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    meta BLOB NOT NULL,
    expires_at REAL           -- NULL: kept until forgotten
);
CREATE INDEX IF NOT EXISTS fastq_results_expiry
    ON fastq_results (expires_at) WHERE expires_at IS NOT NULL;
"""

#: How often one process deletes expired results (seconds).
CLEANUP_INTERVAL = 60.0
#: ``get()`` polls no slower than this (seconds).
POLL_MAX = 0.05

_STORE = """
INSERT INTO fastq_results (task_id, status, meta, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (task_id) DO UPDATE SET
    status = excluded.status, meta = excluded.meta, expires_at = excluded.expires_at
WHERE fastq_results.status != 'SUCCESS'
"""


class SQLiteBackend(Backend):
    def __init__(self, conf: Config, url: str) -> None:
        super().__init__(conf, url)
        options = conf.result_backend_transport_options
        self.db = SQLiteDatabase(
            url,
            SCHEMA,
            error=errors.BackendError,
            busy_timeout=float(options.get("busy_timeout", BUSY_TIMEOUT)),
        )
        self._next_cleanup = 0.0
        # await: local reads, so in the loop itself (a point read costs microseconds)
        self._async_poller = LoopPoller(self.get_many, self.get_meta, cap=POLL_MAX)

    def store_many(self, metas: Iterable[tuple[str, dict[str, Any]]]) -> None:
        now = time.time()
        expires_at = now + self.expires if self.expires else None
        rows = [
            (task_id, meta["status"], self.encode_meta(meta), expires_at) for task_id, meta in metas
        ]
        if not rows:
            return
        with self.db.transaction("store results") as conn:
            conn.executemany(_STORE, rows)
            if now >= self._next_cleanup:
                self._next_cleanup = now + CLEANUP_INTERVAL
                conn.execute("DELETE FROM fastq_results WHERE expires_at <= ?", (now,))

    def get_meta(self, task_id: str) -> dict[str, Any]:
        rows = self.db.execute(
            "read a result",
            "SELECT meta FROM fastq_results WHERE task_id = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (task_id, time.time()),
        )
        return self.pending_meta(task_id) if not rows else self.decode_meta(bytes(rows[0][0]))

    def get_many(self, task_ids: list[str]) -> list[dict[str, Any]]:
        found: dict[str, bytes] = {}
        now = time.time()
        for i in range(0, len(task_ids), 500):
            batch = task_ids[i : i + 500]
            rows = self.db.execute(
                "read results",
                f"SELECT task_id, meta FROM fastq_results WHERE task_id IN "
                f"({', '.join('?' * len(batch))}) AND (expires_at IS NULL OR expires_at > ?)",
                (*batch, now),
            )
            found.update((row[0], bytes(row[1])) for row in rows)
        return [
            self.decode_meta(found[t]) if t in found else self.pending_meta(t) for t in task_ids
        ]

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while True:
            meta = self.get_meta(task_id)
            if meta["status"] in states.READY_STATES:
                return meta
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.TimeoutError(f"task {task_id} not ready after {timeout}s")
                delay = min(delay, remaining)
            time.sleep(delay)
            delay = min(delay * 2, POLL_MAX, interval)

    def forget(self, task_id: str) -> None:
        self.db.execute(
            "forget a result", "DELETE FROM fastq_results WHERE task_id = ?", (task_id,)
        )

    def close(self) -> None:
        self.db.close()
