"""The Redis result backend in Celery's layout: ``celery-task-meta-<id>`` keys, pub/sub wake-up."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis

from fastq import errors, states
from fastq.backends.base import Backend
from fastq.urls import redact

if TYPE_CHECKING:
    from fastq.app import App

TASK_KEY = "celery-task-meta-"
GROUP_KEY = "celery-taskset-meta-"

# Stores a meta and publishes it on the key's channel, unless the task already succeeded (a
# duplicate delivery must not turn a SUCCESS back into FAILURE or STARTED), as Celery's worker does.
_STORE = """
local old = redis.call('GET', KEYS[1])
if old then
  local ok, meta = pcall(cjson.decode, old)
  if not ok then ok, meta = pcall(cmsgpack.unpack, old) end
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SETEX', KEYS[1], ttl, ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


def result_keyprefix(options: dict[str, Any]) -> str:
    """Celery's ``global_keyprefix`` for results gets a ``_`` unless it ends in ``:_-.``."""
    prefix = str(options.get("global_keyprefix") or "")
    if prefix and prefix[-1] not in ":_-.":
        prefix += "_"
    return prefix


class RedisBackend(Backend):
    def __init__(self, app: App, url: str) -> None:
        super().__init__(app, url)
        self.prefix = result_keyprefix(app.conf.result_backend_transport_options)
        self.client = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        self._store = self.client.register_script(_STORE)
        self._waiter = ResultWaiter(self)

    def key_for(self, task_id: str) -> str:
        return f"{self.prefix}{TASK_KEY}{task_id}"

    def _ttl(self) -> int:
        return 0 if not self.expires else max(1, math.ceil(self.expires))

    def store_many(self, metas: Iterable[tuple[str, dict[str, Any]]]) -> None:
        ttl = self._ttl()
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for task_id, meta in metas:
                    self._store(
                        keys=[self.key_for(task_id)],
                        args=[self.encode_meta(meta), ttl],
                        client=pipe,
                    )
                pipe.execute()
        except redis.RedisError as exc:
            raise errors.BackendError(f"cannot store results in {redact(self.url)}: {exc}") from exc

    def get_meta(self, task_id: str) -> dict[str, Any]:
        try:
            data: bytes | None = self.client.get(self.key_for(task_id))  # type: ignore[assignment]
        except redis.RedisError as exc:
            raise errors.BackendError(
                f"cannot read results from {redact(self.url)}: {exc}"
            ) from exc
        return self.pending_meta(task_id) if data is None else self.decode_meta(data)

    def get_many(self, task_ids: list[str]) -> list[dict[str, Any]]:
        if not task_ids:
            return []
        values: list[bytes | None] = self.client.mget([self.key_for(t) for t in task_ids])  # type: ignore[assignment]
        return [
            self.pending_meta(t) if v is None else self.decode_meta(v)
            for t, v in zip(task_ids, values, strict=True)
        ]

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict:
        return self._waiter.wait(task_id, timeout)

    def forget(self, task_id: str) -> None:
        self.client.delete(self.key_for(task_id))

    def close(self) -> None:
        self._waiter.close()
        self.client.close()


class ResultWaiter:
    """Waits for results on the keys' pub/sub channels: subscribe, then GET (covers the race),
    then read messages until the state is ready. One subscription connection per process."""

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._pubsub: Any = None

    def wait(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        key = self.backend.key_for(task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            try:
                return self._wait_locked(task_id, key, deadline, timeout)
            except redis.RedisError as exc:
                self._reset()
                raise errors.BackendError(
                    f"lost the result backend {redact(self.backend.url)} while waiting: {exc}"
                ) from exc

    def _wait_locked(
        self, task_id: str, key: str, deadline: float | None, timeout: float | None
    ) -> dict[str, Any]:
        if self._pubsub is None:
            self._pubsub = self.backend.client.pubsub(ignore_subscribe_messages=True)
        pubsub = self._pubsub
        pubsub.subscribe(key)
        try:
            meta = self.backend.get_meta(task_id)
            while meta["status"] not in states.READY_STATES:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise errors.TimeoutError(f"task {task_id} not ready after {timeout}s")
                message = pubsub.get_message(
                    timeout=1.0 if remaining is None else min(remaining, 1.0)
                )
                if message is None:
                    continue
                channel = message["channel"]
                if isinstance(channel, bytes):
                    channel = channel.decode()
                if message["type"] == "message" and channel == key:
                    meta = self.backend.decode_meta(message["data"])
            return meta
        finally:
            pubsub.unsubscribe(key)

    def _reset(self) -> None:
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            finally:
                self._pubsub = None

    def close(self) -> None:
        with self._lock:
            self._reset()
