"""The Redis result backend in Celery's layout: ``celery-task-meta-<id>`` keys, pub/sub wake-up."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis

from fastq import errors, states
from fastq.backends.base import Backend, ChordJoin, exception_to_meta
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


# One chord header task returns, in Celery 5.7's layout and protocol so that fastq and Celery
# workers can finish the same chord: record [1, tid, state, result] in .j once per (task id,
# index) (.d remembers which), and when .j holds as many parts as .s (+ .t, Celery's count of
# replaced tasks) says, claim the right to send the body with SET NX on .c and return every part.
# Only the claimant gets the parts, so two workers finishing the last parts at once cannot both
# send the body; 'done' in .c means it was sent and late duplicates are ignored.
_CHORD_PART = """
local jkey, tkey, skey, dkey, ckey, gkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tid, value, ordered, score = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]
local expires, claim_expires, token = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
if redis.call('GET', ckey) == 'done' then return {-1} end
local member = tid .. ':' .. score
if redis.call('SISMEMBER', dkey, member) == 0 then
  if ordered then redis.call('ZADD', jkey, score, value) else redis.call('RPUSH', jkey, value) end
  redis.call('SADD', dkey, member)
end
local count
if ordered then count = redis.call('ZCARD', jkey) else count = redis.call('LLEN', jkey) end
if expires > 0 then
  for _, key in ipairs({jkey, tkey, skey, dkey, gkey}) do redis.call('EXPIRE', key, expires) end
end
local size = redis.call('GET', skey)
if not size then return {count} end
local total = tonumber(size) + tonumber(redis.call('GET', tkey) or '0')
if count < total or not redis.call('SET', ckey, token, 'NX', 'EX', claim_expires) then
  return {count, total}
end
if ordered then return {count, total, redis.call('ZRANGE', jkey, 0, -1)} end
return {count, total, redis.call('LRANGE', jkey, 0, -1)}
"""

# The body was sent: drop the chord's keys and leave 'done' in .c, if the claim is still ours.
_CHORD_DONE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', KEYS[1], 'done', 'EX', tonumber(ARGV[2]))
return 1
"""

#: How long a claim on sending a chord body lasts. A worker that dies holding it blocks the chord
#: until it lapses and a redelivered part claims again; a longer claim only matters if sending
#: the body takes longer, which it does not (the parts come back with the claim).
CHORD_CLAIM_SECONDS = 10
#: How long 'done' stays in .c to turn away duplicate deliveries of a finished chord's parts.
CHORD_DONE_SECONDS = 300


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
        self._chord_part = self.client.register_script(_CHORD_PART)
        self._chord_done = self.client.register_script(_CHORD_DONE)
        ordered = app.conf.result_backend_transport_options.get("result_chord_ordered")
        self.chord_ordered = app.conf.result_chord_ordered if ordered is None else bool(ordered)
        self._waiter = ResultWaiter(self)

    def key_for(self, task_id: str) -> str:
        return f"{self.prefix}{TASK_KEY}{task_id}"

    def group_key(self, group_id: str, suffix: str = "") -> str:
        return f"{self.prefix}{GROUP_KEY}{group_id}{suffix}"

    def _ttl(self) -> int:
        return 0 if not self.expires else max(1, math.ceil(self.expires))

    def store_many(self, metas: Iterable[tuple[str, dict[str, Any]]]) -> None:
        ttl = self._ttl()
        if isinstance(metas, list) and len(metas) == 1:
            # A worker stores each result right after its task: no pipeline object for one
            # script call (half the client CPU of a pipeline of one).
            task_id, meta = metas[0]
            try:
                self._store(keys=[self.key_for(task_id)], args=[self.encode_meta(meta), ttl])
            except redis.RedisError as exc:
                raise errors.BackendError(
                    f"cannot store results in {redact(self.url)}: {exc}"
                ) from exc
            return
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
        try:
            values: list[bytes | None] = self.client.mget([self.key_for(t) for t in task_ids])  # type: ignore[assignment]
        except redis.RedisError as exc:
            raise self._error("read results", exc) from exc
        return [
            self.pending_meta(t) if v is None else self.decode_meta(v)
            for t, v in zip(task_ids, values, strict=True)
        ]

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict:
        return self._waiter.wait(task_id, timeout)

    def forget(self, task_id: str) -> None:
        self.client.delete(self.key_for(task_id))

    def _error(self, what: str, exc: redis.RedisError) -> errors.BackendError:
        return errors.BackendError(f"cannot {what} in {redact(self.url)}: {exc}")

    # -- groups ----------------------------------------------------------------------------------
    def save_group(self, group_id: str, result: list[Any]) -> None:
        # Celery stores {"result": tree} and publishes it like a task meta.
        key, ttl = self.group_key(group_id), self._ttl()
        data = self.encode_value({"result": result})
        try:
            with self.client.pipeline() as pipe:
                pipe.set(key, data, ex=ttl or None)
                pipe.publish(key, data)
                pipe.execute()
        except redis.RedisError as exc:
            raise self._error(f"save group {group_id}", exc) from exc

    def restore_group(self, group_id: str) -> dict[str, Any] | None:
        try:
            data: bytes | None = self.client.get(self.group_key(group_id))  # type: ignore[assignment]
        except redis.RedisError as exc:
            raise self._error(f"read group {group_id}", exc) from exc
        if data is None:
            return None
        meta = self.decode_value(data)
        if not isinstance(meta, dict) or "result" not in meta:
            raise errors.DecodeError(f"stored group {group_id} is not a group meta: {meta!r:.200}")
        return meta

    def delete_group(self, group_id: str) -> None:
        self.client.delete(self.group_key(group_id))

    # -- chords ----------------------------------------------------------------------------------
    def set_chord_size(self, group_id: str, size: int) -> None:
        # Reusing a chord's group id starts a new run: forget an old claim or 'done' marker.
        ttl = self._ttl()
        try:
            with self.client.pipeline() as pipe:
                pipe.delete(self.group_key(group_id, ".c"))
                pipe.set(self.group_key(group_id, ".s"), size, ex=ttl or None)
                pipe.execute()
        except redis.RedisError as exc:
            raise self._error(f"set the size of chord {group_id}", exc) from exc

    def chord_part_return(
        self, group_id: str, task_id: str, group_index: int | None, state: str, result: Any
    ) -> ChordJoin | None:
        if state in states.EXCEPTION_STATES and isinstance(result, BaseException):
            result = exception_to_meta(result)
        token = uuid.uuid4().hex
        keys = [self.group_key(group_id, s) for s in (".j", ".t", ".s", ".d", ".c", "")]
        args = [
            task_id,
            self.encode_value([1, task_id, state, result]),
            1 if self.chord_ordered else 0,
            "+inf" if group_index is None else group_index,
            self._ttl(),
            CHORD_CLAIM_SECONDS,
            token,
        ]
        try:
            reply = self._chord_part(keys=keys, args=args)
        except redis.RedisError as exc:
            raise self._error(f"record a part of chord {group_id}", exc) from exc
        if len(reply) < 3:
            return None
        parts = []
        for data in reply[2]:
            _, part_id, part_state, part_result = self.decode_value(data)
            parts.append((str(part_id), str(part_state), part_result))
        return ChordJoin(group_id, parts, token)

    def chord_done(self, join: ChordJoin) -> None:
        keys = [self.group_key(join.group_id, s) for s in (".c", ".j", ".t", ".s", ".d")]
        try:
            self._chord_done(keys=keys, args=[join.token, CHORD_DONE_SECONDS])
        except redis.RedisError as exc:
            raise self._error(f"close chord {join.group_id}", exc) from exc

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
