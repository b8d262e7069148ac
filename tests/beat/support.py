"""Helpers of the beat tests: beat subprocesses, and the ticks they sent, read off the queue."""

from __future__ import annotations

import base64
import json
from datetime import datetime

import redis
from fastq import _core

from tests.processes import BIN, WorkerProcess

QUEUE = "beat-q"


def beat_process(env: dict[str, str], *args: str) -> WorkerProcess:
    return WorkerProcess(
        [str(BIN / "fastq"), "-A", "tests.beat.proj", "beat", "-l", "INFO", *args], env=env
    )


def messages(client: redis.Redis, queue: str = QUEUE) -> list[dict]:
    """The messages waiting in ``queue`` (every priority step's list), as kombu envelopes."""
    out = []
    for key in _core.RedisKeys().queue_keys(queue):
        out.extend(json.loads(raw) for raw in client.lrange(key, 0, -1))
    return out


def sent(client: redis.Redis, queue: str = QUEUE) -> list[tuple[str, datetime]]:
    """(entry, due time) of every message beat sent to ``queue``, by due time."""
    out = []
    for envelope in messages(client, queue):
        headers = envelope["headers"]
        json.loads(base64.b64decode(envelope["body"]))  # a task body: [args, kwargs, embed]
        due = datetime.fromisoformat(headers["fastq_beat_due"])
        out.append((headers["periodic_task_name"], due))
    return sorted(out, key=lambda sent: sent[1])
