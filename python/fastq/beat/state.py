"""Where beat keeps its state: the leader lease and each entry's last run, on the broker.

Every store offers the same three operations, each atomic on the server:

- ``acquire(token)``: take the lease if it is free or expired, or renew it if ``token`` holds
  it; True while ``token`` leads.
- ``record(token, name, old, new)``: set an entry's last run from ``old`` (None: not stored) to
  ``new``, only if ``token`` still holds the lease *and* the stored value is still ``old``. Beat
  records a tick this way before it sends it, so a leader that lost its lease (paused, cut off)
  cannot send a tick another leader has taken: that is the fence.
- ``release(token)``: give the lease up (a clean stop), only if ``token`` holds it.

Redis: the lease is a string key set with ``SET NX PX``, renewed and released by token-checked
scripts; last runs are a hash. SQLite: a lease row and a table, changed in ``BEGIN IMMEDIATE``
transactions of the broker's file. memory://: in this process.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from fastq.errors import BrokerConnectionError, ConfigurationError

#: Key names (after the broker's ``global_keyprefix``) and table names.
LEASE_KEY = "fastq.beat.lease"
LAST_RUN_KEY = "fastq.beat.last_run"
ENTRIES_KEY = "fastq.beat.entries"


class BeatState(ABC):
    """The lease and the last runs of one schedule, shared by every beat process using it."""

    def __init__(self, lease_timeout: float) -> None:
        self.lease_timeout = lease_timeout

    @abstractmethod
    def acquire(self, token: str) -> bool: ...

    @abstractmethod
    def release(self, token: str) -> None: ...

    @abstractmethod
    def holder(self) -> str | None:
        """The token that holds the lease, if any."""

    @abstractmethod
    def last_runs(self) -> dict[str, float]:
        """Each stored entry's last run (unix time)."""

    @abstractmethod
    def record(self, token: str, name: str, old: float | None, new: float | None) -> bool:
        """Compare-and-set of ``name``'s last run under the lease; ``new`` None deletes it."""

    @abstractmethod
    def stored_entries(self) -> dict[str, str]:
        """Entries added at run time (``StoredEntries``): name -> their JSON."""

    @abstractmethod
    def put_entry(self, name: str, spec: str) -> None: ...

    @abstractmethod
    def delete_entry(self, name: str) -> bool: ...

    def close(self) -> None:  # noqa: B027 - optional
        """Releases connections."""


def _text(value: float | None) -> str:
    return "" if value is None else repr(float(value))


# -- Redis ----------------------------------------------------------------------------------------

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_RECORD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local stored = redis.call('HGET', KEYS[2], ARGV[2]) or ''
if stored ~= ARGV[3] then return -1 end
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[2], ARGV[2])
else
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
end
return 1
"""


class RedisBeatState(BeatState):
    def __init__(
        self, url: str, lease_timeout: float, prefix: str = "", client: Any = None
    ) -> None:
        """``client``: a redis-py client to use instead of one made from ``url`` (Sentinel's)."""
        import redis

        super().__init__(lease_timeout)
        self.url = url
        if client is None:
            client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        self.client = client
        self.lease_key = prefix + LEASE_KEY
        self.last_run_key = prefix + LAST_RUN_KEY
        self.entries_key = prefix + ENTRIES_KEY
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)
        self._record = self.client.register_script(_RECORD)
        self._error = redis.RedisError

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._error as exc:
            raise BrokerConnectionError(f"beat cannot {what} on {self.url}: {exc}") from exc

    def acquire(self, token: str) -> bool:
        ms = int(self.lease_timeout * 1000)
        if self._call("renew its lease", self._renew, keys=[self.lease_key], args=[token, ms]):
            return True
        return bool(
            self._call("take the lease", self.client.set, self.lease_key, token, nx=True, px=ms)
        )

    def release(self, token: str) -> None:
        self._call("release its lease", self._release, keys=[self.lease_key], args=[token])

    def holder(self) -> str | None:
        value = self._call("read the lease", self.client.get, self.lease_key)
        return value.decode() if value is not None else None

    def last_runs(self) -> dict[str, float]:
        stored = self._call("read its state", self.client.hgetall, self.last_run_key)
        return {k.decode(): float(v) for k, v in stored.items()}

    def record(self, token: str, name: str, old: float | None, new: float | None) -> bool:
        done = self._call(
            "record a run",
            self._record,
            keys=[self.lease_key, self.last_run_key],
            args=[token, name, _text(old), _text(new)],
        )
        return int(done) == 1

    def stored_entries(self) -> dict[str, str]:
        stored = self._call("read its entries", self.client.hgetall, self.entries_key)
        return {k.decode(): v.decode() for k, v in stored.items()}

    def put_entry(self, name: str, spec: str) -> None:
        self._call("store an entry", self.client.hset, self.entries_key, name, spec)

    def delete_entry(self, name: str) -> bool:
        return bool(self._call("remove an entry", self.client.hdel, self.entries_key, name))

    def close(self) -> None:
        self.client.close()


# -- SQLite ---------------------------------------------------------------------------------------

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS fastq_beat_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    expires REAL NOT NULL          -- unix time; the machine's clock is shared by every holder
);
CREATE TABLE IF NOT EXISTS fastq_beat_last_run (
    name TEXT PRIMARY KEY,
    last_run REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fastq_beat_entries (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL              -- JSON, as StoredEntries writes it
);
"""


class SQLiteBeatState(BeatState):
    def __init__(self, url: str, lease_timeout: float) -> None:
        from fastq.sqlitedb import SQLiteDatabase

        super().__init__(lease_timeout)
        self.db = SQLiteDatabase(url, SQLITE_SCHEMA, error=BrokerConnectionError)

    def _holds(self, conn: Any, token: str, now: float) -> bool:
        row = conn.execute("SELECT holder, expires FROM fastq_beat_lease WHERE id = 1").fetchone()
        return row is not None and row[0] == token and row[1] >= now

    def acquire(self, token: str) -> bool:
        now = time.time()
        with self.db.transaction("take the beat lease") as conn:
            row = conn.execute(
                "SELECT holder, expires FROM fastq_beat_lease WHERE id = 1"
            ).fetchone()
            if row is not None and row[0] != token and row[1] >= now:
                return False
            conn.execute(
                "INSERT INTO fastq_beat_lease (id, holder, expires) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, "
                "expires = excluded.expires",
                (token, now + self.lease_timeout),
            )
            return True

    def release(self, token: str) -> None:
        self.db.execute(
            "release the beat lease", "DELETE FROM fastq_beat_lease WHERE holder = ?", (token,)
        )

    def holder(self) -> str | None:
        rows = self.db.execute(
            "read the beat lease",
            "SELECT holder FROM fastq_beat_lease WHERE id = 1 AND expires >= ?",
            (time.time(),),
        )
        return str(rows[0][0]) if rows else None

    def last_runs(self) -> dict[str, float]:
        rows = self.db.execute("read beat state", "SELECT name, last_run FROM fastq_beat_last_run")
        return {str(name): float(last) for name, last in rows}

    def record(self, token: str, name: str, old: float | None, new: float | None) -> bool:
        with self.db.transaction("record a beat run") as conn:
            if not self._holds(conn, token, time.time()):
                return False
            row = conn.execute(
                "SELECT last_run FROM fastq_beat_last_run WHERE name = ?", (name,)
            ).fetchone()
            if (None if row is None else float(row[0])) != old:
                return False
            if new is None:
                conn.execute("DELETE FROM fastq_beat_last_run WHERE name = ?", (name,))
            else:
                conn.execute(
                    "INSERT INTO fastq_beat_last_run (name, last_run) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET last_run = excluded.last_run",
                    (name, new),
                )
            return True

    def stored_entries(self) -> dict[str, str]:
        rows = self.db.execute("read beat entries", "SELECT name, spec FROM fastq_beat_entries")
        return {str(name): str(spec) for name, spec in rows}

    def put_entry(self, name: str, spec: str) -> None:
        self.db.execute(
            "store a beat entry",
            "INSERT INTO fastq_beat_entries (name, spec) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec",
            (name, spec),
        )

    def delete_entry(self, name: str) -> bool:
        with self.db.transaction("remove a beat entry") as conn:
            return (
                conn.execute("DELETE FROM fastq_beat_entries WHERE name = ?", (name,)).rowcount > 0
            )

    def close(self) -> None:
        self.db.close()


# -- memory:// ------------------------------------------------------------------------------------


class MemoryBeatState(BeatState):
    """For memory:// (one process: ``worker -B`` or tests); shared by URL within the process."""

    _shared: ClassVar[dict[str, dict[str, Any]]] = {}
    _lock = threading.Lock()

    def __init__(self, url: str, lease_timeout: float) -> None:
        super().__init__(lease_timeout)
        with self._lock:
            self.data = self._shared.setdefault(
                url, {"lease": None, "last_runs": {}, "entries": {}}
            )

    def acquire(self, token: str) -> bool:
        now = time.monotonic()
        with self._lock:
            lease = self.data["lease"]
            if lease is not None and lease[0] != token and lease[1] >= now:
                return False
            self.data["lease"] = (token, now + self.lease_timeout)
            return True

    def release(self, token: str) -> None:
        with self._lock:
            if self.data["lease"] is not None and self.data["lease"][0] == token:
                self.data["lease"] = None

    def holder(self) -> str | None:
        with self._lock:
            lease = self.data["lease"]
            return lease[0] if lease is not None and lease[1] >= time.monotonic() else None

    def last_runs(self) -> dict[str, float]:
        with self._lock:
            return dict(self.data["last_runs"])

    def record(self, token: str, name: str, old: float | None, new: float | None) -> bool:
        with self._lock:
            lease = self.data["lease"]
            if lease is None or lease[0] != token or lease[1] < time.monotonic():
                return False
            runs = self.data["last_runs"]
            if runs.get(name) != old:
                return False
            if new is None:
                runs.pop(name, None)
            else:
                runs[name] = new
            return True

    def stored_entries(self) -> dict[str, str]:
        with self._lock:
            return dict(self.data["entries"])

    def put_entry(self, name: str, spec: str) -> None:
        with self._lock:
            self.data["entries"][name] = spec

    def delete_entry(self, name: str) -> bool:
        with self._lock:
            return self.data["entries"].pop(name, None) is not None


def state_for(conf: Any, broker_url: str, result_backend_url: str | None) -> BeatState:
    """The state store of this app: ``beat_state_url`` if set, else the broker when it is Redis
    (Sentinel too), SQLite or memory://, else the result backend when it is Redis or SQLite."""
    lease = float(conf.beat_lease_timeout)
    candidates = (
        [conf.beat_state_url] if conf.beat_state_url else [broker_url, result_backend_url or ""]
    )
    for url in candidates:
        scheme = url.split("://", 1)[0].lower()
        if scheme in ("redis", "rediss", "sentinel"):
            prefix = ""
            if url == broker_url:
                prefix = str(conf.broker_transport_options.get("global_keyprefix") or "")
            client = None
            if scheme == "sentinel":
                from fastq import sentinel

                setting = (
                    "result_backend_transport_options"
                    if url == result_backend_url and url != broker_url
                    else "broker_transport_options"
                )
                spec = sentinel.parse(url, conf[setting], setting)
                client = sentinel.master_client(spec, socket_connect_timeout=5, socket_timeout=5)
            return RedisBeatState(url, lease, prefix, client)
        if scheme == "sqlite":
            return SQLiteBeatState(url, lease)
        if scheme == "memory":
            return MemoryBeatState(url, lease)
    raise ConfigurationError(
        f"beat keeps its state on Redis, SQLite or memory://, and neither the broker "
        f"({broker_url}) nor the result backend ({result_backend_url}) is one: set "
        "beat_state_url to a Redis URL (e.g. redis://host:6379/0)"
    )
