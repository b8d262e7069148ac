"""A RabbitMQ cluster of the test module's own: three nodes on this machine, started by
``scripts/rabbitmq_cluster.sh`` (own names, ports, data and cookie; the shared node on 5672 is
never touched), which a test may SIGKILL node by node and boot again. Every node is killed when
the fixture ends, whatever happened."""

from __future__ import annotations

import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import amqp

from tests.processes import ROOT

SCRIPT = ROOT / "scripts" / "rabbitmq_cluster.sh"
SBIN = Path("/usr/lib/rabbitmq/bin")


class RabbitCluster:
    """``start()`` boots and joins the nodes; ``kill(i)``/``restart(i)`` (1-based) one node;
    ``close()`` kills them all and removes their data."""

    def __init__(self, nodes: int = 3) -> None:
        self.nodes = nodes
        self.dir = Path(tempfile.mkdtemp(prefix="fastq-rabbit-cluster-"))
        self.ports: list[int] = []
        self.down: set[int] = set()

    def _run(self, *args: str, timeout: float = 180.0) -> str:
        out = subprocess.run(
            ["bash", str(SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"rabbitmq_cluster.sh {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def start(self) -> None:
        urls = self._run("start", str(self.dir), str(self.nodes)).split()
        self.ports = [int(u.rsplit(":", 1)[1].split("/")[0]) for u in urls]

    def ctl(self, node: int, *args: str, timeout: float = 60.0) -> str:
        return self._run("ctl", str(self.dir), str(node), *args, timeout=timeout)

    def add_vhost(self) -> str:
        """A vhost of the calling test's own; guest may use it."""
        name = f"fastq-{uuid.uuid4().hex[:8]}"
        up = self.up()[0]
        self.ctl(up, "add_vhost", name)
        self.ctl(up, "set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return name

    def up(self) -> list[int]:
        return [i for i in range(1, self.nodes + 1) if i not in self.down]

    def url(self, node: int, vhost: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.ports[node - 1]}/{vhost}"

    def urls(self, order: list[int], vhost: str) -> str:
        """Celery's list of broker URLs (``;``-separated), in ``order``."""
        return ";".join(self.url(i, vhost) for i in order)

    def node_of_port(self, port: int) -> int:
        return self.ports.index(port) + 1

    def declare_quorum(self, node: int, vhost: str, queue: str) -> None:
        """Declares ``queue`` as Celery declares its default queue, as a quorum queue, from a
        connection to ``node``: its leader starts there (RabbitMQ's client-local placement)."""
        deadline = time.monotonic() + 10
        while True:  # a new vhost reaches the other nodes a moment after add_vhost returns
            conn = amqp.Connection(
                host=f"127.0.0.1:{self.ports[node - 1]}", virtual_host=vhost, connect_timeout=5
            )
            try:
                conn.connect()
                break
            except amqp.exceptions.NotAllowed:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            ch = conn.channel()
            ch.exchange_declare(queue, "direct", durable=True, auto_delete=False)
            ch.queue_declare(
                queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"}
            )
            ch.queue_bind(queue, queue, queue)
        finally:
            conn.close()

    def leader(self, vhost: str, queue: str) -> int | None:
        """The node (1-based) leading ``queue``'s Raft group now."""
        out = self.ctl(self.up()[0], "list_queues", "-p", vhost, "name", "leader")
        for line in out.splitlines():
            fields = line.split("\t")
            if len(fields) == 2 and fields[0] == queue:
                for i in range(1, self.nodes + 1):
                    if fields[1] == self.node_name(i):
                        return i
        return None

    def node_name(self, node: int) -> str:
        return (self.dir / f"n{node}" / "name").read_text().strip()

    def connections(self, vhost: str) -> list[tuple[int, str]]:
        """``(node, client-given name)`` of every connection to ``vhost``."""
        out = self.ctl(self.up()[0], "list_connections", "vhost", "port", "client_properties")
        found = []
        for line in out.splitlines():
            fields = line.split("\t")
            if len(fields) >= 3 and fields[0] == vhost and fields[1].isdigit():
                port = int(fields[1])
                if port in self.ports:
                    found.append((self.node_of_port(port), fields[2]))
        return found

    def depth(self, vhost: str, queue: str) -> tuple[int, int]:
        """(ready, unacknowledged) messages of ``queue``."""
        out = self.ctl(
            self.up()[0], "list_queues", "-p", vhost, "name", "messages_ready",
            "messages_unacknowledged",
        )  # fmt: skip
        for line in out.splitlines():
            fields = line.split("\t")
            if len(fields) == 3 and fields[0] == queue:
                return int(fields[1]), int(fields[2])
        return 0, 0

    def kill(self, node: int) -> None:
        """SIGKILLs the node's Erlang VM: its connections just drop, as in a crash."""
        self._run("kill", str(self.dir), str(node))
        self.down.add(node)

    def restart(self, node: int) -> None:
        """Boots a killed node again on its data; it rejoins the cluster."""
        self._run("restart", str(self.dir), str(node))
        self.down.discard(node)

    def logs(self, node: int) -> str:
        texts = [
            p.read_text(errors="replace")[-3000:]
            for p in (self.dir / f"n{node}" / "log").glob("*.log")
        ]
        return "\n".join(texts)

    def close(self) -> None:
        self._run("stop", str(self.dir), timeout=60)


def cluster_available() -> str | None:
    """Why a cluster cannot start here, or None."""
    if not (SBIN / "rabbitmq-server").exists():
        return "rabbitmq-server is not installed (scripts/services.sh installs it)"
    return None
