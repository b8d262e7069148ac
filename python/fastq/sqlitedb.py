"""One SQLite file shared by processes: ``sqlite:///`` URLs, connections, write transactions.

The embedded broker and result backend both live here. SQLite is safe across processes when each
process opens its own connections after a fork (a connection must never cross ``fork()``), the
database is in WAL mode (readers never block the single writer) and writers wait for the lock
(``busy_timeout``) instead of failing. ``synchronous=NORMAL`` means a commit survives the process
being killed, but the last commits may be lost on power failure: the usual WAL trade-off.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastq.errors import ConfigurationError, FastqError

#: How long a writer waits for another process's write lock before giving up, by default.
BUSY_TIMEOUT = 30.0


def path_from_url(url: str) -> str:
    """The absolute file path of ``sqlite:///relative.db`` or ``sqlite:////abs/path.db``.

    As in SQLAlchemy, everything after ``sqlite:///`` is the path, so three slashes are relative to
    the working directory and four are absolute.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite" or not rest.startswith("/"):
        raise ConfigurationError(
            f"{url!r} is not a SQLite URL; write sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = rest[1:].split("?", 1)[0]
    if not path or path == ":memory:":
        raise ConfigurationError(
            f"{url!r} names no file; the embedded broker needs a file that every worker process "
            "opens (use memory:// for a single process)"
        )
    return os.path.abspath(os.path.expanduser(path))


class SQLiteDatabase:
    """The file at ``url`` with ``schema`` created; one connection per process and thread."""

    def __init__(
        self,
        url: str,
        schema: str,
        *,
        error: type[FastqError],
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        self.url = url
        self.path = path_from_url(url)
        self.schema = schema
        self.error = error
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._opened: list[sqlite3.Connection] = []
        _DATABASES.add(self)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use in this process."""
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        conn = self._open()
        local.conn, local.pid = conn, os.getpid()
        return conn

    def _open(self) -> sqlite3.Connection:
        with self._lock:
            if self._pid != os.getpid():
                # Inherited from the parent: never close them here (that would touch the parent's
                # locks and WAL index); keeping the objects alive keeps them from being finalized.
                _INHERITED.extend(self._opened)
                self._opened, self._pid = [], os.getpid()
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise self.error(
                f"cannot open SQLite database {self.path}: directory {directory} does not exist"
            )
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,  # autocommit; write transactions are explicit (IMMEDIATE)
                check_same_thread=False,  # used by one thread, but close() may run on another
            )
            self._initialise(conn)
        except sqlite3.Error as exc:
            raise self._wrap(exc, "open") from exc
        with self._lock:
            self._opened.append(conn)
        return conn

    def _initialise(self, conn: sqlite3.Connection) -> None:
        # A fresh file is switched to WAL by whichever process gets there first; the others may
        # see the switch in progress and retry for up to the busy timeout.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        conn.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints are where WAL mode syncs to disk; every 10 000 pages instead of SQLite's
        # 1 000 makes a commit about a third cheaper here, and the WAL file is cut back to
        # 64 MB after each one.
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        conn.execute("PRAGMA journal_size_limit=67108864")
        try:  # one transaction, so concurrent first openers do not trip over each other
            conn.executescript(f"BEGIN IMMEDIATE;\n{self.schema}\nCOMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock at once (``BEGIN IMMEDIATE``), so two
        processes never read the same rows and then both update them."""
        conn = self.connection()
        try:
            with _immediate(conn):
                yield conn
        except sqlite3.Error as exc:
            raise self._wrap(exc, what) from exc

    def execute(self, what: str, sql: str, parameters: Any = ()) -> list[Any]:
        """One statement in its own (autocommit) transaction; returns its rows."""
        try:
            return self.connection().execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise self._wrap(exc, what) from exc

    def _wrap(self, exc: sqlite3.Error, what: str) -> FastqError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            hint = (
                f"another process held the write lock for more than {self.busy_timeout:g}s "
                "(raise busy_timeout in the transport options, or look for a stuck process)"
            )
        elif "unable to open" in text or "readonly" in text:
            hint = "check that the file and its directory exist and are writable by this user"
        elif "not a database" in text or "malformed" in text:
            hint = "the file is not a fastq SQLite database or is damaged"
        else:
            return self.error(f"SQLite {self.path}: cannot {what}: {text}")
        return self.error(f"SQLite {self.path}: cannot {what}: {text}; {hint}")

    def close(self) -> None:
        """Closes this process's connections (those of a parent process are left alone)."""
        with self._lock:
            if self._pid != os.getpid():
                return
            opened, self._opened = self._opened, []
        for conn in opened:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()


#: Connections a forked child inherited; referenced so that they are never finalized there.
_INHERITED: list[sqlite3.Connection] = []
_DATABASES: weakref.WeakSet[SQLiteDatabase] = weakref.WeakSet()


def _close_before_fork() -> None:
    """SQLite keeps per-process lock and WAL-index state in C, which a child would inherit along
    with any open connection; so a single-threaded process (the prefork supervisor respawning a
    child) closes its connections before forking and reopens them when next used. With other
    threads running, closing under them is not safe, and the child just never uses them."""
    if threading.active_count() > 1:
        return
    for db in list(_DATABASES):
        db.close()


os.register_at_fork(before=_close_before_fork)


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # some errors already rolled the transaction back
            conn.execute("ROLLBACK")
        raise
