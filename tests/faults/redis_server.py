"""A ``redis-server`` of the test's own on a free loopback port, with an AOF, that the test may
kill and restart: fault tests never touch the shared Redis other tests use."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serves(client: redis.Redis, proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` is the server ``client`` reaches. Between ``free_port()`` and the server's
    bind, another test (another xdist worker) may take the port: a ping would then be answered
    by its server while ours exits."""
    return int(client.info("server")["process_id"]) == proc.pid


#: How many free ports a server start tries when the one it picked is taken before it binds.
PORT_TRIES = 5


def wait_serving(
    client: Callable[[], redis.Redis], proc: subprocess.Popen[bytes], what: str, timeout: float
) -> bool:
    """Waits until ``proc`` answers (``serves``): True; False when it exits first (its port was
    taken). Raises after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if serves(client(), proc):
                return True
        except redis.RedisError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not answer in {timeout}s")


class RedisServer:
    """``start()``, ``kill()`` (SIGKILL), ``restart()`` (same port, data from the AOF)."""

    def __init__(self, appendfsync: str = "always") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/services.sh installs it)")
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="fastq-fault-redis-"))
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = False

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5)

    def start(self, timeout: float = 10.0) -> None:
        """Starts the server; the first start moves to another free port if its port was taken
        before the server bound it (a restart keeps its port: its clients reconnect to it)."""
        for _ in range(PORT_TRIES if not self._started else 1):
            if self._launch(timeout):
                self._started = True
                return
            self.port = free_port()
        raise RuntimeError(f"redis-server could not bind a free port in {PORT_TRIES} tries")

    def _launch(self, timeout: float) -> bool:
        """False when the server exited before answering (its port was taken)."""
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--protected-mode", "yes",
            "--daemonize", "no",
        ]  # fmt: skip
        log = (self.dir / "redis.log").open("ab")
        proc = self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        what = f"redis-server on port {self.port}"
        if wait_serving(self.client, proc, what, timeout):
            return True
        if self._started:
            raise RuntimeError(f"{what} exited at restart (its port was taken meanwhile?)")
        return False

    def kill(self) -> None:
        """SIGKILL: no shutdown save, clients see their connections die."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.kill()
        if down_for:
            time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_kill_all(server: RedisServer, exclude_self: bool = True) -> int:
    """``CLIENT KILL`` every normal connection (a dropped-connection fault); returns how many."""
    c = server.client()
    killed = int(
        c.execute_command(
            "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes" if exclude_self else "no"
        )
    )
    c.close()
    return killed
