"""RabbitMQ pieces of the fault suite: a vhost of the test's own on the shared RabbitMQ (whose
connections a test may close), and a RabbitMQ node of the test's own that a test may SIGKILL
and start again on the same data. The shared node is never stopped, and only connections in
the test's vhost are ever closed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import amqp
import pytest

from tests.faults.redis_server import free_port

SHARED_URL = "amqp://guest:guest@127.0.0.1:5672"
#: The Debian wrapper runs the CLI as the rabbitmq user with the shared node's cookie.
RABBITMQCTL = "rabbitmqctl"
#: The tools themselves, for a node of the test's own (run as the test's user, its own cookie).
SBIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmqctl(*args: str, timeout: float = 30.0) -> str:
    out = subprocess.run(
        [RABBITMQCTL, "-q", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {out.stderr.strip() or out.stdout}")
    return out.stdout


def available() -> bool:
    return shutil.which(RABBITMQCTL) is not None and _port_open("127.0.0.1", 5672)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Vhost:
    """A vhost on the shared RabbitMQ, for one test: its URL, its connections, its queues."""

    def __init__(self) -> None:
        self.name = f"fastq-fault-{uuid.uuid4().hex[:8]}"
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")

    def url(self) -> str:
        return f"{SHARED_URL}/{self.name}"

    def connections(self) -> list[tuple[str, str]]:
        """``(pid, client-given name)`` of every connection in this vhost."""
        out = rabbitmqctl("list_connections", "pid", "vhost", "client_properties")
        found = []
        for line in out.splitlines():
            fields = line.split("\t")
            if len(fields) >= 2 and fields[1] == self.name:
                found.append((fields[0], fields[2] if len(fields) > 2 else ""))
        return found

    def close_connections(self, reason: str = "fault test", match: str = "") -> int:
        """Closes every connection in this vhost at once (``close_all_connections --vhost``,
        one call), or with ``match`` each one whose client properties contain it
        (``close_connection``); returns how many there were."""
        found = self.connections()
        if not match:
            self.close_all(reason)
            return len(found)
        closed = 0
        for pid, props in found:
            if match and match not in props:
                continue
            try:
                rabbitmqctl("close_connection", pid, reason)
                closed += 1
            except RuntimeError:
                pass  # gone meanwhile
        return closed

    def close_all(self, reason: str = "fault test") -> None:
        """Closes every connection in this vhost in one ``rabbitmqctl`` call, without listing
        them first (each call starts an Erlang VM: seconds on a busy machine)."""
        rabbitmqctl("close_all_connections", "-p", self.name, "--limit", "10000", reason)

    def consumers(self) -> list[dict[str, str]]:
        """``list_consumers``: queue, tag, prefetch count of each consumer in this vhost."""
        out = rabbitmqctl(
            "list_consumers", "-p", self.name, "queue_name", "consumer_tag", "prefetch_count"
        )
        rows = []
        for line in out.splitlines():
            fields = line.split("\t")
            if len(fields) == 3:
                rows.append({"queue": fields[0], "tag": fields[1], "prefetch": fields[2]})
        return rows

    def queue_depth(self, queue: str) -> tuple[int, int]:
        """(ready, unacknowledged) messages of ``queue``."""
        out = rabbitmqctl(
            "list_queues", "-p", self.name, "name", "messages_ready", "messages_unacknowledged"
        )
        for line in out.splitlines():
            fields = line.split("\t")
            if len(fields) == 3 and fields[0] == queue:
                return int(fields[1]), int(fields[2])
        return 0, 0

    def delete(self) -> None:
        try:
            rabbitmqctl("delete_vhost", self.name)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass


@pytest.fixture
def own_vhost() -> Iterator[Vhost]:
    if not available():
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672 (scripts/services.sh starts it)")
    vhost = Vhost()
    try:
        yield vhost
    finally:
        vhost.delete()


class RabbitNode:
    """A RabbitMQ node of the test's own: its own name, ports, data and cookie, no plugins.
    ``kill()`` SIGKILLs its Erlang VM; ``start()`` again boots it on the same data."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fastq-fault-rabbit-"))
        self.name = f"fastq-fault-{uuid.uuid4().hex[:6]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.home = self.dir / "home"
        self.home.mkdir()
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o400)
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (self.dir / "rabbitmq-env.conf").write_text("")
        self.pid: int | None = None

    @property
    def env(self) -> dict[str, str]:
        d = str(self.dir)
        return {
            **os.environ,
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": f"{d}/mnesia",
            "RABBITMQ_LOG_BASE": f"{d}/log",
            "RABBITMQ_PID_FILE": f"{d}/node.pid",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{d}/enabled_plugins",
            "RABBITMQ_CONFIG_FILE": f"{d}/rabbitmq.conf",
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{d}/advanced.config",
            "RABBITMQ_CONF_ENV_FILE": f"{d}/rabbitmq-env.conf",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def url(self, vhost: str = "/") -> str:
        v = "" if vhost == "/" else vhost
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{v}"

    def ctl(self, *args: str, timeout: float = 30.0) -> str:
        out = subprocess.run(
            [str(SBIN / "rabbitmqctl"), "-q", "-n", self.name, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def start(self, timeout: float = 60.0) -> None:
        subprocess.run(
            [str(SBIN / "rabbitmq-server"), "-detached"],
            env=self.env,
            cwd=self.dir,
            check=True,
            timeout=30,
            capture_output=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._answers():
                self.pid = self._read_pid()
                return
            time.sleep(0.2)
        raise RuntimeError(f"RabbitMQ node {self.name} did not answer in {timeout}s: {self.logs()}")

    def _answers(self) -> bool:
        """AMQP login works (the node has booted, not just opened its port)."""
        if not _port_open("127.0.0.1", self.port):
            return False
        try:
            conn = amqp.Connection(
                host=f"127.0.0.1:{self.port}", userid="guest", password="guest", connect_timeout=2
            )
            conn.connect()
            conn.close()
            return True
        except Exception:
            return False

    def _read_pid(self) -> int | None:
        path = self.dir / "node.pid"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                return int(path.read_text().strip())
            except (OSError, ValueError):
                time.sleep(0.1)
        return None

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM: no clean shutdown, connections just drop."""
        pid = self.pid or self._read_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        self.pid = None
        (self.dir / "node.pid").unlink(missing_ok=True)

    def logs(self) -> str:
        texts = [p.read_text(errors="replace")[-3000:] for p in (self.dir / "log").glob("*.log")]
        return "\n".join(texts)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RabbitNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our child, not reaped) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def own_rabbit() -> Iterator[RabbitNode]:
    if not (SBIN / "rabbitmq-server").exists():
        pytest.skip("rabbitmq-server is not installed (scripts/services.sh installs it)")
    with RabbitNode() as node:
        yield node
