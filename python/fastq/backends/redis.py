"""The Redis result backend in Celery's layout: ``celery-task-meta-<id>`` keys, pub/sub wake-up.

On a Redis Cluster (``redis+cluster://``, fastq only) task results spread over the slots by task
id as they are; a group's keys (its result, its chord counters) carry the group id as a hash tag,
``celery-taskset-meta-{<group id>}.j``, so a chord's scripts run in one slot. The wake-up listens on
one node (``PUBLISH`` reaches every node of a cluster).
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fastq import _core, errors, redis_cluster, sentinel, states
from fastq.backends.base import Backend, ChordJoin, exception_to_meta
from fastq.backends.waiting import BlockingListener, CallbackListener, Listener, LoopListener
from fastq.backoff import Backoff
from fastq.config import SETTINGS
from fastq.redis_errors import redis_failure
from fastq.urls import redact

if TYPE_CHECKING:
    from fastq.config import Config

log = logging.getLogger("fastq.backends")

TASK_KEY = "celery-task-meta-"
GROUP_KEY = "celery-taskset-meta-"

# Stores each meta and publishes it on its key's channel, unless the task already succeeded (a
# duplicate delivery must not turn a SUCCESS back into FAILURE or STARTED), as Celery's worker
# does; a whole batch in one call (one round trip, one read for Redis). KEYS are the result keys,
# ARGV[1] the TTL (0: none), ARGV[i + 1] the meta of KEYS[i]. Most keys are new: SET NX stores.
# A meta already stored as given (a batch sent again after a lost reply) is published, which the
# first attempt may not have. A key of another type refuses its result alone: the reply is
# {index, error, ...} (1-based).
_STORE = """
local ttl = tonumber(ARGV[1])
local refused = {}
for i, key in ipairs(KEYS) do
  local meta = ARGV[i + 1]
  local stored
  if ttl > 0 then
    stored = redis.call('SET', key, meta, 'NX', 'EX', ttl)
  else
    stored = redis.call('SET', key, meta, 'NX')
  end
  local publish = stored
  if not stored then
    local old = redis.pcall('GET', key)
    if type(old) == 'table' and old['err'] then
      refused[#refused + 1] = i
      refused[#refused + 1] = old['err']
    elseif old == meta then
      publish = true
    else
      local succeeded = false
      if old then
        local ok, prior = pcall(cjson.decode, old)
        if not ok then ok, prior = pcall(cmsgpack.unpack, old) end
        succeeded = ok and type(prior) == 'table' and prior['status'] == 'SUCCESS'
      end
      if not succeeded then
        if ttl > 0 then
          redis.call('SETEX', key, ttl, meta)
        else
          redis.call('SET', key, meta)
        end
        publish = true
      end
    end
  end
  if publish then redis.call('PUBLISH', key, meta) end
end
return refused
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


#: The client's connection options where the app sets none of Celery's ``redis_*`` settings.
BASE_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 5, "health_check_interval": 30}


def connection_options(conf: Config) -> dict[str, Any]:
    """The client's connection options: fastq's, with Celery's ``redis_socket_timeout``,
    ``redis_socket_connect_timeout``, ``redis_socket_keepalive``, ``redis_retry_on_timeout`` and
    ``redis_max_connections`` where the app sets them (a socket timeout left at Celery's 120 s
    default: none, as fastq's)."""
    options: dict[str, Any] = dict(BASE_OPTIONS)
    if conf.redis_socket_connect_timeout:
        options["socket_connect_timeout"] = conf.redis_socket_connect_timeout
    if conf.redis_socket_timeout != SETTINGS["redis_socket_timeout"][0]:
        options["socket_timeout"] = conf.redis_socket_timeout
    if conf.redis_socket_keepalive:
        options["socket_keepalive"] = True
    if conf.redis_retry_on_timeout:
        options["retry_on_timeout"] = True
    if conf.redis_max_connections:
        options["max_connections"] = int(conf.redis_max_connections)
    return options


def _refusals(reply: Any) -> list[tuple[int, str]]:
    """The store script's ``{index, error, ...}`` (1-based) as ``(index, Redis's reason)``."""
    flat = list(reply or [])
    return [
        (int(index) - 1, reason.decode() if isinstance(reason, bytes) else str(reason))
        for index, reason in zip(flat[::2], flat[1::2], strict=True)
    ]


def _rust_stores(conf: Config, url: str) -> bool:
    """Whether results go through the Rust store, which takes none of the client settings."""
    parts = urlsplit(url)
    return parts.scheme == "redis" and not parts.query and connection_options(conf) == BASE_OPTIONS


class RedisBackend(Backend):
    def __init__(self, conf: Config, url: str) -> None:
        super().__init__(conf, url)
        options = conf.result_backend_transport_options
        self.prefix = result_keyprefix(options)
        #: With a sentinel:// URL (Celery's SentinelBackend): the sentinels and the master's name.
        self.sentinel: sentinel.SentinelSpec | None = None
        if sentinel.is_sentinel_url(url):
            self.sentinel = sentinel.parse(url, options, "result_backend_transport_options")
        #: With a redis+cluster:// URL: the seed nodes.
        self.cluster: redis_cluster.ClusterSpec | None = None
        if redis_cluster.is_cluster_url(url):
            self.cluster = redis_cluster.parse(url)
            if "{" in self.prefix or "}" in self.prefix:
                raise errors.ConfigurationError(
                    f"global_keyprefix {self.prefix!r} contains a brace: on a Redis Cluster a "
                    "group's keys carry {group id} as their hash tag, which it would break"
                )
        self.client = self.redis_client(**connection_options(conf))
        self._watch = sentinel.MasterWatch(self.client) if self.sentinel else None
        self._store = self.client.register_script(_STORE)
        #: Stores from Rust (no redis-py per command, GIL released) where the connection is
        #: all in the URL: plain TCP and none of Celery's ``redis_*`` client settings, which
        #: only redis-py's client applies.
        self._rust_store = _core.RedisResultStore(url, _STORE) if _rust_stores(conf, url) else None
        self._chord_part = self.client.register_script(_CHORD_PART)
        self._chord_done = self.client.register_script(_CHORD_DONE)
        ordered = conf.result_backend_transport_options.get("result_chord_ordered")
        self.chord_ordered = conf.result_chord_ordered if ordered is None else bool(ordered)
        self._hub: ResultHub | None = None  # made on the first wait: workers mostly store
        self._hub_lock = threading.Lock()

    def redis_client(self, **options: Any) -> redis.Redis:
        """A redis-py client of the backend (of the master the sentinels name, with Sentinel)."""
        if self.sentinel is not None:
            return sentinel.master_client(self.sentinel, **options)
        if self.cluster is not None:
            return redis_cluster.client(self.cluster, **options)
        return redis.Redis.from_url(self.url, **options)

    def mget(self, client: redis.Redis, keys: list[str]) -> list[bytes | None]:
        """``MGET``, or on a cluster one per slot (``mget_nonatomic``)."""
        if self.cluster is not None:
            return client.mget_nonatomic(keys)  # type: ignore[attr-defined,no-any-return]
        return client.mget(keys)  # type: ignore[return-value]

    def follow(self, force: bool = False) -> tuple[str, int] | None:
        """With Sentinel, moves ``client`` to a new master (``MasterWatch``); the master's
        address when the sentinels were asked."""
        return self._watch.check(force) if self._watch is not None else None

    def key_for(self, task_id: str) -> str:
        return f"{self.prefix}{TASK_KEY}{task_id}"

    def group_key(self, group_id: str, suffix: str = "") -> str:
        if self.cluster is not None:  # one slot for a group's keys
            return f"{self.prefix}{GROUP_KEY}{{{group_id}}}{suffix}"
        return f"{self.prefix}{GROUP_KEY}{group_id}{suffix}"

    def _ttl(self) -> int:
        return 0 if not self.expires else max(1, math.ceil(self.expires))

    def store_many(self, metas: Iterable[tuple[str, dict[str, Any]]]) -> None:
        ttl = self._ttl()
        if self._rust_store is not None:
            metas = metas if isinstance(metas, list) else list(metas)  # indexed when refused
            items = [(self.key_for(task_id), self.encode_meta(meta)) for task_id, meta in metas]
            refused = self._rust_store.store(items, ttl)  # raises BackendError
            if refused:
                raise self._refused({metas[index][0]: reason for index, reason in refused})
            return
        # Before every store: a worker acks a late-acked task once its result is stored, and
        # its Rust consumer follows a failover on its own; a result written to the demoted
        # master after that consumer moved would be lost with its ack kept.
        self.follow(force=True)
        metas = metas if isinstance(metas, list) else list(metas)
        keys = [self.key_for(task_id) for task_id, _ in metas]
        values = [self.encode_meta(meta) for _, meta in metas]
        try:
            if self.cluster is None or len(metas) == 1:
                # One call (redis-py's script object loads it again if the server lost it).
                refused = _refusals(self._store(keys=keys, args=[ttl, *values]))
            else:
                refused = self._store_per_key(keys, values, ttl)
        except redis.RedisError as exc:
            raise self._error("store results", exc) from exc
        if refused:
            raise self._refused({metas[index][0]: reason for index, reason in refused})

    def _store_per_key(
        self, keys: list[str], values: list[bytes], ttl: int
    ) -> list[tuple[int, str]]:
        """On a cluster, where one call cannot span slots: a call per key in one pipeline (not
        through redis-py's registered script, whose pipeline asks SCRIPT EXISTS first: a second
        round trip for every batch)."""

        def send() -> list[Any]:
            with self.client.pipeline(transaction=False) as pipe:
                for key, value in zip(keys, values, strict=True):
                    pipe.evalsha(self._store.sha, 1, key, ttl, value)
                return pipe.execute(raise_on_error=False)

        replies = send()
        if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
            self.client.script_load(_STORE)  # a restarted or flushed server
            replies = send()
        refused = []
        for index, reply in enumerate(replies):
            if isinstance(reply, redis.RedisError):
                raise reply
            refused += [(index, reason) for _, reason in _refusals(reply)]
        return refused

    def _refused(self, refused: dict[str, str]) -> errors.ResultsRefused:
        """The results Redis refused for their key alone (the rest of the batch is stored)."""
        reasons = "; ".join(f"task {task_id}: {reason}" for task_id, reason in refused.items())
        return errors.ResultsRefused(
            f"cannot store results in {redact(self.url)}: refused for their keys: {reasons}",
            refused,
        )

    def get_meta(self, task_id: str) -> dict[str, Any]:
        self.follow()
        try:
            data: bytes | None = self.client.get(self.key_for(task_id))  # type: ignore[assignment]
        except redis.RedisError as exc:
            raise errors.BackendError(
                redis_failure("cannot read results from", self.url, exc)
            ) from exc
        return self.pending_meta(task_id) if data is None else self.decode_meta(data)

    def get_many(self, task_ids: list[str]) -> list[dict[str, Any]]:
        if not task_ids:
            return []
        self.follow()
        try:
            values = self.mget(self.client, [self.key_for(t) for t in task_ids])
        except redis.RedisError as exc:
            raise self._error("read results", exc) from exc
        return [
            self.pending_meta(t) if v is None else self.decode_meta(v)
            for t, v in zip(task_ids, values, strict=True)
        ]

    def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> dict:
        return self.hub().wait(task_id, timeout)

    async def wait_async(self, task_id: str, timeout: float | None = None) -> dict[str, Any]:
        return await self.hub().wait_async(task_id, timeout)

    def on_ready(
        self, task_id: str, callback: Callable[[dict[str, Any] | BaseException], None]
    ) -> None:
        self.hub().add(CallbackListener(task_id, callback))

    def hub(self) -> ResultHub:
        if self._hub is None:
            with self._hub_lock:
                if self._hub is None:
                    self._hub = ResultHub(self)
        return self._hub

    def forget(self, task_id: str) -> None:
        self.client.delete(self.key_for(task_id))

    def _error(self, what: str, exc: redis.RedisError) -> errors.BackendError:
        return errors.BackendError(redis_failure(f"cannot {what} in", self.url, exc))

    # -- groups ----------------------------------------------------------------------------------
    def save_group(self, group_id: str, result: list[Any]) -> None:
        # Celery stores {"result": tree} and publishes it like a task meta.
        key, ttl = self.group_key(group_id), self._ttl()
        data = self.encode_value({"result": result})
        self.follow(force=True)
        try:
            with self.client.pipeline(transaction=self.cluster is None) as pipe:
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
        self.follow(force=True)
        try:
            with self.client.pipeline(transaction=self.cluster is None) as pipe:
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
        self.follow(force=True)  # as store_many: the task is acked once this returns
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
        if self._hub is not None:
            self._hub.close()
        if self._rust_store is not None:
            self._rust_store.close()
        self.client.close()


#: A waited-on key is read as the wait starts, after every SUBSCRIBE is confirmed, and again on
#: a backoff from POLL_FIRST doubling to POLL_MAX: pub/sub is at-most-once (a PUBLISH handled
#: before the SUBSCRIBE, or during a reconnect, is lost), so the key is the truth and the channel
#: only makes the wake-up faster.
POLL_FIRST = 0.05
POLL_MAX = 0.5
#: Keys per MGET and channels per SUBSCRIBE.
BATCH = 500
#: Reconnecting the subscription backs off up to this (seconds).
RECONNECT_MAX = 1.0
#: The hub's thread exits after this long with nobody waiting (it starts again on demand).
IDLE_EXIT = 10.0


class _Watch:
    __slots__ = ("delay", "due", "listeners", "task_id", "typed")

    def __init__(self, task_id: str, now: float) -> None:
        self.task_id = task_id
        self.listeners: list[Listener] = []
        self.delay = POLL_FIRST
        self.due = now
        #: Whether the key's type was looked at (``_foreign``): once, if a poll finds nothing.
        self.typed = False


#: Taken by the first waits of a forked child, so that one of them replaces the parent's hub.
_FORK_LOCK = threading.Lock()


def _new_fork_lock() -> None:
    global _FORK_LOCK
    _FORK_LOCK = threading.Lock()  # the parent's may have been held by a thread that is gone


os.register_at_fork(after_in_child=_new_fork_lock)


class ResultHub:
    """Every wait of this process on one Redis backend: one pub/sub connection and one thread,
    however many callers (threads blocked in ``get()``, or futures awaited in event loops) wait.

    The thread subscribes to the waited-on keys' channels (Celery's worker and fastq's publish a
    stored meta on the key's own channel), reads the keys with MGET in batches when they are due
    and after each SUBSCRIBE is confirmed, and reconnects on its own when the connection drops.
    Callers never touch the connections, so a dropped connection only delays them.
    """

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self._pid = -1
        self._start_fresh()

    def _start_fresh(self) -> None:
        # Also after a fork: the parent's thread and sockets are not this process's. The pid is
        # set last, so a concurrent first wait never sees it before the rest is replaced.
        for sock in (getattr(self, "_wake_r", None), getattr(self, "_wake_w", None)):
            if sock is not None:
                sock.close()  # this process's copies of the parent's socket pair
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._due: list[tuple[float, str]] = []  # heap; entries whose watch moved on are stale
        self._added: set[str] = set()
        self._removed: set[str] = set()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        #: What went wrong with the backend last, until a read succeeds again (named when a
        #: wait times out, so an outage does not look like a slow task).
        self.trouble: str | None = None
        # Its own connections, with a read timeout and at most one quick retry: a caller's
        # client may be blocked elsewhere, and a hung server must not wedge every waiter.
        self._reader = self.backend.redis_client(
            socket_connect_timeout=5,
            socket_timeout=10,
            retry=Retry(NoBackoff(), 1),
        )
        self._master_watch: sentinel.MasterWatch | None = None
        self._pid = os.getpid()

    # -- callers' side ---------------------------------------------------------------------------
    def add(self, listener: Listener) -> None:
        if self._pid != os.getpid():
            with _FORK_LOCK:
                if self._pid != os.getpid():
                    self._start_fresh()
        key = self.backend.key_for(listener.task_id)
        now = time.monotonic()
        with self._lock:
            if self._closed:
                raise errors.BackendError(
                    f"the result backend {redact(self.backend.url)} is closed"
                )
            watch = self._watches.get(key)
            if watch is None:
                watch = self._watches[key] = _Watch(listener.task_id, now)
                heapq.heappush(self._due, (now, key))  # read at once: it may be stored already
                self._added.add(key)
            watch.listeners.append(listener)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run_guarded, name="fastq-results", daemon=True
                )
                self._thread.start()
        self._wake()

    def remove(self, listener: Listener) -> None:
        """Stops waiting (a delivered listener is already gone; this is then a no-op)."""
        if self._pid != os.getpid():
            return
        key = self.backend.key_for(listener.task_id)
        with self._lock:
            watch = self._watches.get(key)
            if watch is None or listener not in watch.listeners:
                return
            watch.listeners.remove(listener)
            if not watch.listeners:
                del self._watches[key]
                self._removed.add(key)  # unsubscribed on the thread's next turn

    def wait(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        listener = BlockingListener(task_id)
        self.add(listener)
        try:
            outcome = listener.wait(timeout)
        finally:
            self.remove(listener)
        if outcome is None:
            outcome = self._last_look(task_id)  # a timeout of 0, or stored at the last moment
        if outcome is None:
            raise self.timeout_error(task_id, timeout)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def wait_async(self, task_id: str, timeout: float | None) -> dict[str, Any]:
        import asyncio

        listener = LoopListener(task_id)
        self.add(listener)
        try:
            return await asyncio.wait_for(listener.future, timeout)
        except asyncio.TimeoutError:
            raise self.timeout_error(task_id, timeout) from None
        finally:
            self.remove(listener)

    def _last_look(self, task_id: str) -> dict[str, Any] | None:
        if self.trouble is not None:
            return None  # the backend fails: do not wait on it past the timeout
        try:
            data: bytes | None = self._reader.get(self.backend.key_for(task_id))  # type: ignore[assignment]
        except (redis.RedisError, OSError):
            return None
        meta = None if data is None else self.backend.decode_meta(data)
        return meta if meta is not None and meta["status"] in states.READY_STATES else None

    def timeout_error(self, task_id: str, timeout: float | None) -> errors.TimeoutError:
        message = f"task {task_id} not ready after {timeout}s"
        if self.trouble:
            message += f" (the result backend {redact(self.backend.url)} fails: {self.trouble})"
        return errors.TimeoutError(message)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full (a wake-up is already pending) or closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
            watches, self._watches = self._watches, {}
        closed = errors.BackendError(
            f"the result backend {redact(self.backend.url)} was closed while waiting"
        )
        for watch in watches.values():  # nothing would wake them any more
            for listener in watch.listeners:
                listener.deliver(closed)
        self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(2)
            if not thread.is_alive():
                self._wake_r.close()
                self._wake_w.close()
        self._reader.close()

    # -- the thread --------------------------------------------------------------------------------
    def _run_guarded(self) -> None:
        # A bug here must not leave every waiter to its timeout with no thread to wake it.
        while True:
            try:
                self._run()
                return
            except Exception:
                log.exception(
                    "the result waiter of %s failed; restarting it", redact(self.backend.url)
                )
                time.sleep(0.1)

    def _run(self) -> None:
        conn: Any = None
        subscribed: set[str] = set()
        retry_at, reconnect = 0.0, Backoff(0.1, RECONNECT_MAX)
        idle_since: float | None = None
        try:
            while True:
                now = time.monotonic()
                with self._lock:
                    if self._closed:
                        return
                    if self._watches:
                        idle_since = None
                    elif idle_since is None:
                        idle_since = now
                    elif now - idle_since >= IDLE_EXIT:
                        self._thread = None
                        return
                confirmed: list[str] = []
                if conn is None and now >= retry_at and self._watches:
                    try:
                        conn = self._connect()
                        subscribed = set()
                        reconnect.reset()
                    except (redis.RedisError, OSError) as exc:
                        self._note(exc)
                        retry_at = now + reconnect.next()
                if conn is not None and self._moved(conn):
                    # Reconnected (to the new master) and resubscribed on the next turn; the
                    # confirmations re-read every waited-on key there.
                    self._drop(conn)
                    conn, subscribed = None, set()
                    retry_at = now
                    continue
                if conn is not None:
                    try:
                        self._resubscribe(conn, subscribed)
                        while conn.can_read(0):
                            self._on_reply(conn.read_response(), confirmed)
                    except (redis.RedisError, OSError) as exc:
                        # Confirmations of the new connection's SUBSCRIBEs trigger re-reads.
                        self._note(exc)
                        self._drop(conn)
                        conn, subscribed = None, set()
                        retry_at = now
                        continue
                self._read(confirmed)
                self._sleep(conn, retry_at)
        finally:
            if conn is not None:
                self._drop(conn)

    def _connect(self) -> Any:
        spec = self.backend.cluster
        if spec is not None:
            # Any node hears every PUBLISH of the cluster: one the client knows, at random.
            node = self._reader.get_random_node()  # type: ignore[attr-defined]
            cls = redis.SSLConnection if spec.tls else redis.Connection
            extra: dict[str, Any] = dict(spec.options) if spec.tls else {}
            conn = cls(
                host=node.host,
                port=node.port,
                username=spec.username,
                password=spec.password,
                socket_connect_timeout=5,
                socket_timeout=10,
                protocol=2,
                **extra,
            )
            conn.connect()
            return conn
        pool = self._reader.connection_pool
        # RESP2: messages arrive as replies (RESP3 would route them to push handlers instead).
        kwargs = {**pool.connection_kwargs, "protocol": 2}
        # redis-py 8 turns on maintenance notifications for every connection of a pool, which
        # it then refuses for a RESP2 connection with its pure-Python parser (no hiredis).
        # Push messages are what this connection must not have: off, whatever the version.
        if "maint_notifications_config" in kwargs:
            kwargs["maint_notifications_config"] = None
            kwargs.pop("maint_notifications_pool_handler", None)
            kwargs.pop("oss_cluster_maint_notifications_handler", None)
        conn = pool.connection_class(**kwargs)
        conn.connect()
        return conn

    @staticmethod
    def _drop(conn: Any) -> None:
        try:
            conn.disconnect()
        except Exception:
            pass

    def _note(self, exc: BaseException) -> None:
        if self.trouble is None:
            log.warning(
                "result backend %s failed while results are awaited (%s); retrying",
                redact(self.backend.url),
                exc,
            )
        self.trouble = f"{type(exc).__name__}: {exc}"

    def _moved(self, conn: Any) -> bool:
        """With Sentinel: whether the master moved away from ``conn``'s node (the reader's idle
        connections are dropped by the check itself)."""
        if self.backend.sentinel is None:
            return False
        if self._master_watch is None:
            self._master_watch = sentinel.MasterWatch(self._reader)
        address = self._master_watch.check()
        return address is not None and conn is not None and (conn.host, conn.port) != address

    def _resubscribe(self, conn: Any, subscribed: set[str]) -> None:
        with self._lock:
            if subscribed:
                new = [k for k in self._added if k in self._watches and k not in subscribed]
            else:  # a new connection: everything waited on
                new = list(self._watches)
            gone = [k for k in self._removed if k not in self._watches and k in subscribed]
            self._added.clear()
            self._removed.clear()
        for i in range(0, len(new), BATCH):
            conn.send_command("SUBSCRIBE", *new[i : i + BATCH], check_health=False)
            subscribed.update(new[i : i + BATCH])
        for i in range(0, len(gone), BATCH):
            conn.send_command("UNSUBSCRIBE", *gone[i : i + BATCH], check_health=False)
            subscribed.difference_update(gone[i : i + BATCH])

    def _on_reply(self, reply: Any, confirmed: list[str]) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind, channel = reply[0], reply[1]
        key = channel.decode() if isinstance(channel, bytes) else str(channel)
        if kind in (b"subscribe", "subscribe"):
            confirmed.append(key)  # published before this took effect? read the key to know
        elif kind in (b"message", "message") and key in self._watches:
            try:
                meta = self.backend.decode_meta(reply[2])
            except Exception:
                confirmed.append(key)  # reading the key reports the error to the caller
                return
            if meta["status"] in states.READY_STATES:
                self._deliver(key, meta)

    def _deliver(self, key: str, outcome: dict[str, Any] | BaseException) -> None:
        with self._lock:
            watch = self._watches.pop(key, None)
            if watch is not None:
                self._removed.add(key)
        for listener in watch.listeners if watch is not None else ():
            listener.deliver(outcome)

    def _read(self, confirmed: list[str]) -> None:
        """Reads the keys just subscribed and those due, and schedules their next read."""
        now = time.monotonic()
        keys = dict.fromkeys(confirmed)
        just_subscribed = set(keys)
        with self._lock:
            while self._due and self._due[0][0] <= now:
                due, key = heapq.heappop(self._due)
                watch = self._watches.get(key)
                if watch is not None and watch.due == due:
                    keys[key] = None
            for key in keys:
                watch = self._watches.get(key)
                if watch is None:
                    continue
                watch.due = now + watch.delay
                watch.delay = min(watch.delay * 2, POLL_MAX)
                heapq.heappush(self._due, (watch.due, key))
            todo = [k for k in keys if k in self._watches]
        for i in range(0, len(todo), BATCH):
            batch = todo[i : i + BATCH]
            try:
                values = self.backend.mget(self._reader, batch)
            except (redis.RedisError, OSError) as exc:
                self._note(exc)
                return  # they stay scheduled: read again on their backoff
            if self.trouble is not None:
                log.warning("result backend %s answers again", redact(self.backend.url))
                self.trouble = None
            untyped = []
            for key, data in zip(batch, values, strict=True):
                if data is None:
                    watch = self._watches.get(key)
                    if watch is not None and not watch.typed and key not in just_subscribed:
                        watch.typed = True
                        untyped.append(key)
                    continue
                try:
                    meta = self.backend.decode_meta(data)
                except Exception as exc:
                    self._deliver(key, exc)
                    continue
                if meta["status"] in states.READY_STATES:
                    self._deliver(key, meta)
            if untyped:
                self._foreign(untyped)

    def _foreign(self, keys: list[str]) -> None:
        """Fails the waits on keys that hold a value of another type than a result (MGET reads
        them as missing, so the wait would never end; Celery's GET raises WRONGTYPE). Asked once
        per wait, at its first poll that found nothing: off the path of a result that comes at
        once."""
        try:
            with self._reader.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.type(key)
                kinds = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._note(exc)
            return
        for key, kind in zip(keys, kinds, strict=True):
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if kind not in ("none", "string"):
                error = errors.BackendError(
                    f"cannot read results from {redact(self.backend.url)}: the key {key} holds a "
                    f"{kind}, not a task result (something other than Celery or fastq writes "
                    "there); the result of its task cannot be stored"
                )
                self._deliver(key, error)

    def _sleep(self, conn: Any, retry_at: float) -> None:
        now = time.monotonic()
        with self._lock:
            while self._due and (
                self._due[0][1] not in self._watches
                or self._watches[self._due[0][1]].due != self._due[0][0]
            ):
                heapq.heappop(self._due)  # stale
            timeout = self._due[0][0] - now if self._due else IDLE_EXIT
            if conn is None and self._watches:
                timeout = min(timeout, retry_at - now)
        readable: list[Any] = [self._wake_r]
        sock = getattr(conn, "_sock", None) if conn is not None else None
        if sock is not None:
            readable.append(sock)
        elif conn is not None:
            timeout = min(timeout, 0.05)  # no socket to watch: look again soon
        if timeout > 0:
            select.select(readable, [], [], timeout)
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass  # drained
