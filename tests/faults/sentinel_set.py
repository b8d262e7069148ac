"""A Redis Sentinel set-up of the test's own: a master, one replica and three sentinels on free
loopback ports, with short failure detection (down after 1 s), that a test may fail over
(``SENTINEL FAILOVER``) or break (the master SIGKILLed)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.faults.redis_server import PORT_TRIES, free_port, wait_serving

MASTER_NAME = "mymaster"
#: How long the master may not answer before a sentinel sees it down.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class Node:
    """One ``redis-server`` process (a data node, or a sentinel with ``--sentinel``)."""

    def __init__(
        self, workdir: Path, name: str, port: int, argv: list[str], password: str | None = None
    ) -> None:
        self.name = name
        self.port = port
        self.password = password
        log = (workdir / f"{name}.log").open("ab")
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT
        )

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=timeout
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None


class SentinelSet:
    """``password``: the data nodes' (``requirepass``, ``masterauth``); ``sentinel_password``:
    the sentinels' own (``requirepass``, and what they give each other)."""

    def __init__(
        self, sentinels: int = 3, password: str | None = None, sentinel_password: str | None = None
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/services.sh installs it)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="fastq-sentinel-"))
        self.data: dict[int, Node] = {}
        self.sentinels: list[Node] = []
        self.sentinel_count = sentinels
        self.password = password
        self.sentinel_password = sentinel_password

    # -- URLs ----------------------------------------------------------------------------------
    def url(self, db: int = 0) -> str:
        """kombu's form: every sentinel, ``;``-separated, the db in the first."""
        parts = [f"sentinel://127.0.0.1:{s.port}" for s in self.sentinels]
        parts[0] += f"/{db}"
        if self.password:
            parts[0] = parts[0].replace("://", f"://:{self.password}@", 1)
        return ";".join(parts)

    # -- processes -----------------------------------------------------------------------------
    def _launch(
        self, name: str, argv_for: Callable[[int], list[str]], password: str | None
    ) -> Node:
        """A server on a free port, moving to another if the one picked was taken before the
        server bound it (``wait_serving``)."""
        for _ in range(PORT_TRIES):
            port = free_port()
            node = Node(self.dir, f"{name}-{port}", port, argv_for(port), password)
            assert node.proc is not None
            try:
                if wait_serving(node.client, node.proc, f"{name} on port {port}", 10.0):
                    return node
            except RuntimeError:
                node.kill()  # not answering: not left running behind the error
                raise
            # It exited: another test took the port first; the next try picks another.
        raise RuntimeError(f"{name} could not bind a free port in {PORT_TRIES} tries")

    def _data_node(self, replica_of: int | None = None) -> Node:
        node = self._launch("redis", lambda port: self._data_argv(port, replica_of), self.password)
        self.data[node.port] = node
        return node

    def _data_argv(self, port: int, replica_of: int | None) -> list[str]:
        argv = [
            self.binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--dbfilename", f"dump-{port}.rdb",
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            "--daemonize", "no",
        ]  # fmt: skip
        if replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
        if self.password:
            argv += ["--requirepass", self.password, "--masterauth", self.password]
        return argv

    def _sentinel_argv(self, port: int, master_port: int) -> list[str]:
        conf = self.dir / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        with conf.open("a") as f:
            if self.password:
                f.write(f"sentinel auth-pass {MASTER_NAME} {self.password}\n")
            if self.sentinel_password:
                f.write(f"requirepass {self.sentinel_password}\n")
                f.write(f"sentinel sentinel-pass {self.sentinel_password}\n")
        return [self.binary, str(conf), "--sentinel"]

    def start(self) -> None:
        master = self._data_node()
        replica = self._data_node(replica_of=master.port)
        _wait(
            lambda: replica.client().info("replication")["master_link_status"] == "up",
            "the replica's first sync",
        )
        for _ in range(self.sentinel_count):
            node = self._launch(
                "sentinel",
                lambda port: self._sentinel_argv(port, master.port),
                self.sentinel_password,
            )
            self.sentinels.append(node)
        # A failover needs every sentinel to know the replica and the others (hello messages).
        for node in self.sentinels:
            _wait(
                lambda node=node: _agreed(node, self.sentinel_count - 1),
                f"sentinel {node.port} to see the replica and the other sentinels",
                timeout=20,
            )

    def master_port(self) -> int:
        """The master's port, as the first sentinel that answers says."""
        for node in self.sentinels:
            try:
                _, port = node.client().sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(port)
            except (redis.RedisError, TypeError):
                continue
        raise RuntimeError("no sentinel answers")

    def master(self) -> Node:
        return self.data[self.master_port()]

    def client(self, db: int = 0) -> redis.Redis:
        """A direct client of the current master."""
        port = self.master_port()
        return redis.Redis(
            host="127.0.0.1", port=port, db=db, password=self.password, socket_timeout=5
        )

    def failover(self) -> int:
        """``SENTINEL FAILOVER``; returns the old master's port (the new one is not known yet)."""
        old = self.master_port()
        self.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        return old

    def wait_for_new_master(self, old: int, timeout: float = 20.0) -> float:
        """Waits until every sentinel names a master other than ``old`` that says it is one;
        returns when (monotonic)."""

        def switched() -> bool:
            ports = set()
            for node in self.sentinels:
                _, port = node.client().sentinel_get_master_addr_by_name(MASTER_NAME)
                ports.add(int(port))
            if len(ports) != 1 or old in ports:
                return False
            new = self.data[ports.pop()]
            return bool(new.client().execute_command("ROLE")[0] == b"master")

        _wait(switched, "the sentinels to agree on a new master", timeout)
        return time.monotonic()

    def close(self) -> None:
        for node in [*self.sentinels, *self.data.values()]:
            node.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SentinelSet:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _agreed(node: Node, others: int) -> bool:
    state = node.client().sentinel_master(MASTER_NAME)
    return int(state["num-slaves"]) >= 1 and int(state["num-other-sentinels"]) >= others


def _wait(predicate: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError, KeyError, TypeError) as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what} (last error: {last})")
