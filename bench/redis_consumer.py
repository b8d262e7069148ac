"""Consume throughput of fastq's Rust Redis consumer, with kombu's own consumer for reference.

N task envelopes are LPUSHed in one redis-py pipeline, then drained with fetch + ack (fastq,
prefetch P) or basic_get + ack (kombu's Redis channel, one message at a time as its QoS does).
Uses Redis db 15 and flushes it.

    python bench/redis_consumer.py [--messages 20000] [--prefetch 64] [--kombu]
"""

from __future__ import annotations

import argparse
import time
import uuid

import redis
from fastq import _core

URL = "redis://127.0.0.1:6379/15"


def fill(r: redis.Redis, n: int) -> None:
    r.flushdb()
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.lpush(
            "bench",
            _core.encode_task_envelope(
                {"task": "bench.add", "id": str(uuid.uuid4())}, [i, i], {}, routing_key="bench"
            ),
        )
    pipe.execute()


def drain_fastq(n: int, prefetch: int) -> float:
    consumer = _core.RedisConsumer(
        URL, ["bench"], accept=["json"], prefetch=prefetch, consumer_id="bench"
    )
    start = time.perf_counter()
    done = 0
    while done < n:
        batch = consumer.fetch(1.0)
        consumer.ack([d.delivery_tag for d in batch])
        done += len(batch)
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


def drain_kombu(n: int) -> float:
    from kombu import Connection

    with Connection(URL) as conn:
        channel = conn.default_channel
        start = time.perf_counter()
        done = 0
        while done < n:
            message = channel.basic_get("bench", no_ack=False)
            if message is None:
                continue
            message.decode()
            message.ack()
            done += 1
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description="Consume throughput of the Redis consumer")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=64)
    parser.add_argument("--kombu", action="store_true", help="also time kombu's consumer")
    args = parser.parse_args()
    r = redis.Redis.from_url(URL)

    fill(r, args.messages)
    elapsed = drain_fastq(args.messages, args.prefetch)
    print(
        f"fastq RedisConsumer prefetch={args.prefetch}: {args.messages} messages in "
        f"{elapsed:.2f} s = {args.messages / elapsed:,.0f} msg/s"
    )
    if args.kombu:
        fill(r, args.messages)
        elapsed = drain_kombu(args.messages)
        print(
            f"kombu basic_get + ack: {args.messages} messages in {elapsed:.2f} s = "
            f"{args.messages / elapsed:,.0f} msg/s"
        )
    r.flushdb()


if __name__ == "__main__":
    main()
