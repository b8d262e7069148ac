"""The facts about the machine that a figure is meaningless without."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any

import redis


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _command_version(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _redis_version(url: str) -> str | None:
    if url.split("://", 1)[0] not in ("redis", "rediss"):
        return None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
        client.close()
    except redis.RedisError:
        return None
    return str(info.get("redis_version"))


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def facts(broker: str) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_gib": _ram_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "rustc": _command_version(["rustc", "--version"]),
        "redis": _redis_version(broker),
        "fastq": _package_version("fastq"),
        "celery": _package_version("celery"),
        "loadavg": loadavg(),
    }
