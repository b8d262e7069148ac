"""A Redis Cluster of the test's own, started by scripts/redis_cluster.sh on free loopback ports
(short node timeout: a killed master's replica takes over within seconds), with the moves a
fault test makes: a slot migrated to another master key by key (as ``redis-cli --cluster
reshard`` does it) and a node SIGKILLed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.processes import ROOT

SCRIPT = ROOT / "scripts" / "redis_cluster.sh"


def missing() -> str | None:
    """Why a cluster cannot be started here, if it cannot."""
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (apt-get install redis-server)"
    return None


class RedisCluster:
    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fastq-cluster-"))
        self.masters = masters
        self.replicas = replicas

    def __enter__(self) -> RedisCluster:
        try:
            subprocess.run(
                [
                    "bash",
                    str(SCRIPT),
                    "start",
                    str(self.dir),
                    str(self.masters),
                    str(self.replicas),
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.dir)], check=False, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- addresses -------------------------------------------------------------------------------
    def ports(self) -> list[int]:
        count = int((self.dir / "count").read_text())
        return [int((self.dir / f"n{i}" / "port").read_text()) for i in range(1, count + 1)]

    def master_ports(self) -> list[int]:
        """The ports of the live masters."""
        masters = []
        for port in self.ports():
            try:
                role = self.node(port, 0.5).execute_command("ROLE")[0]
            except redis.RedisError:
                continue
            if role in (b"master", "master"):
                masters.append(port)
        return masters

    def url(self) -> str:
        """fastq's broker and backend URL: every master as a seed."""
        return ";".join(f"redis+cluster://127.0.0.1:{p}" for p in self.ports()[: self.masters])

    def node(self, port: int, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout)

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self._live_port())

    def owner(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for lo, hi, master, *_ in self.node(self._live_port()).execute_command("CLUSTER SLOTS"):
            if lo <= slot <= hi:
                return int(master[1])
        raise AssertionError(f"nobody serves slot {slot}")

    def _live_port(self) -> int:
        for port in self.ports():
            try:
                self.node(port).ping()
                return port
            except redis.RedisError:
                continue
        raise AssertionError("no node of the cluster answers")

    def slot(self, key: str) -> int:
        return int(self.node(self._live_port()).execute_command("CLUSTER KEYSLOT", key))

    # -- faults ----------------------------------------------------------------------------------
    def migrate(self, slot: int, to_port: int, pause: float = 0.0, when: str = "") -> int:
        """Moves ``slot`` to the master on ``to_port`` as ``redis-cli --cluster reshard`` does
        (IMPORTING/MIGRATING, ``MIGRATE`` key by key, ``SETSLOT NODE`` everywhere), waiting
        ``pause`` seconds between keys so clients meet the half-migrated slot; returns how many
        keys moved. With ``when``, first waits (up to 5 s) for a key of the slot ending so."""
        src_port = self.owner(slot)
        src, dst = self.node(src_port, 10), self.node(to_port, 10)
        deadline = time.monotonic() + 5
        while when and time.monotonic() < deadline:
            keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100)
            if any((k.decode() if isinstance(k, bytes) else str(k)).endswith(when) for k in keys):
                break
            time.sleep(0.005)
        src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        moved = 0
        self.migrated_keys: list[str] = []
        while True:
            keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 1)
            if not keys:
                break
            src.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            self.migrated_keys += [k.decode() if isinstance(k, bytes) else str(k) for k in keys]
            if pause:
                time.sleep(pause)
        for port in self.ports():
            try:
                self.node(port).execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
            except redis.RedisError:
                pass  # a dead or replica node learns it from the others
        return moved

    def kill(self, port: int) -> None:
        index = self.ports().index(port) + 1
        subprocess.run(
            ["bash", str(SCRIPT), "kill", str(self.dir), str(index)], check=True, timeout=30
        )

    def wait_ok(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = 0
            for port in self.ports():
                try:
                    info = self.node(port).execute_command("CLUSTER INFO")
                except redis.RedisError:
                    continue
                text = info.decode() if isinstance(info, bytes) else str(info)
                ok += "cluster_state:ok" in text
            if ok and all(self._state_ok(p) for p in self.ports() if self._alive(p)):
                return
            time.sleep(0.1)
        raise AssertionError(f"the cluster is not ok after {timeout}s")

    def _alive(self, port: int) -> bool:
        try:
            return bool(self.node(port, 0.5).ping())
        except redis.RedisError:
            return False

    def _state_ok(self, port: int) -> bool:
        info = self.node(port).execute_command("CLUSTER INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text
