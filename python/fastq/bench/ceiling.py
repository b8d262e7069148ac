"""The broker's raw limit: how fast one client moves messages of the benchmark's size through it
with no task queue in between. fastq's rates are reported as a percentage of it.

Probes are registered per URL scheme; ``amqp`` has none yet (``register("amqp", probe)`` adds it:
a probe takes the URL, a message size and a count and returns a ``Ceiling``).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

import redis


@dataclass
class Ceiling:
    method: str
    #: Messages per second into the broker (pipelined pushes from one client).
    push_per_s: float
    #: Messages per second out of it (pipelined pops from one client).
    pop_per_s: float
    #: The same with redis-benchmark (several clients, C client), when it is installed.
    server_push_per_s: float | None = None
    server_pop_per_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Probe = Callable[[str, int, int], Ceiling]
PROBES: dict[str, Probe] = {}


def register(scheme: str, probe: Probe) -> None:
    PROBES[scheme] = probe


def measure(url: str, message_bytes: int, count: int) -> Ceiling | None:
    """The ceiling for the broker at ``url``; None when no probe knows its scheme."""
    probe = PROBES.get(url.split("://", 1)[0].lower())
    return probe(url, message_bytes, count) if probe is not None else None


def redis_ceiling(url: str, message_bytes: int, count: int, pipeline: int = 1000) -> Ceiling:
    """Pipelined LPUSH then RPOP of ``count`` messages on a scratch key, with redis-py."""
    client = redis.Redis.from_url(url)
    key = f"fastq.bench.ceiling.{uuid.uuid4().hex}"
    blob = b"x" * message_bytes
    try:
        start = time.perf_counter()
        for offset in range(0, count, pipeline):
            with client.pipeline(transaction=False) as pipe:
                for _ in range(min(pipeline, count - offset)):
                    pipe.lpush(key, blob)
                pipe.execute()
        push = count / (time.perf_counter() - start)
        start = time.perf_counter()
        for offset in range(0, count, pipeline):
            with client.pipeline(transaction=False) as pipe:
                for _ in range(min(pipeline, count - offset)):
                    pipe.rpop(key)
                pipe.execute()
        pop = count / (time.perf_counter() - start)
    finally:
        client.delete(key)
        client.close()
    server = _redis_benchmark(url, message_bytes, count)
    return Ceiling(
        method=f"redis-py, pipelines of {pipeline} LPUSH then RPOP, {message_bytes}-byte values"
        + ("; redis-benchmark -P 16 -c 4" if server else ""),
        push_per_s=push,
        pop_per_s=pop,
        server_push_per_s=server.get("LPUSH") if server else None,
        server_pop_per_s=server.get("RPOP") if server else None,
    )


def _redis_benchmark(url: str, message_bytes: int, count: int) -> dict[str, float] | None:
    """redis-benchmark's LPUSH/RPOP rates, when it is installed (it uses the key ``mylist``)."""
    exe = shutil.which("redis-benchmark")
    parts = urlparse(url)
    if exe is None or parts.scheme != "redis" or parts.password:
        return None
    db = (parts.path or "/0").lstrip("/") or "0"
    argv = [exe, "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    argv += ["--dbnum", db, "-t", "lpush,rpop", "-n", str(count), "-P", "16", "-c", "4"]
    argv += ["-d", str(max(1, message_bytes)), "--csv"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    rates: dict[str, float] = {}
    for line in out.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2 and cells[0] in ("LPUSH", "RPOP"):
            try:
                rates[cells[0]] = float(cells[1])
            except ValueError:
                continue
    try:
        redis.Redis.from_url(url).delete("mylist")
    except redis.RedisError:
        pass
    return rates or None


register("redis", redis_ceiling)
register("rediss", redis_ceiling)
