"""The broker's own ceiling for the patterns the task queues use, with redis-py and no task queue:

- ``lpush_one``: one client, LPUSH one message at a time (the ceiling of a ``.delay()`` loop);
- ``lpush_pipelined``: one client, pipelines of 1 000 LPUSH (the ceiling of a batch enqueue);
- ``rpop_incr_2``: two processes, each RPOP one message then INCR a counter, one at a time
  (the ceiling of a drain that counts with one INCR per task and claims one task per round trip);
- ``rpop_2``: the same without the INCR (the ceiling for the buffered counter).

Messages are 300 bytes, about the size of a small task message.
"""

from __future__ import annotations

import multiprocessing
import time

import redis

MESSAGE = b"x" * 300
KEY, COUNTER = "peers.ceiling", "peers.ceiling.count"


def _fill(conn: redis.Redis, n: int) -> float:
    start = time.perf_counter()
    for offset in range(0, n, 1000):
        with conn.pipeline(transaction=False) as pipe:
            for _ in range(min(1000, n - offset)):
                pipe.lpush(KEY, MESSAGE)
            pipe.execute()
    return n / (time.perf_counter() - start)


def _pop(url: str, incr: bool, go: multiprocessing.synchronize.Event) -> None:
    conn = redis.Redis.from_url(url)
    conn.ping()
    go.wait()
    while conn.rpop(KEY) is not None:
        if incr:
            conn.incr(COUNTER)


def _pop_two(url: str, n: int, incr: bool) -> float:
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    procs = [ctx.Process(target=_pop, args=(url, incr, go)) for _ in range(2)]
    for p in procs:
        p.start()
    time.sleep(0.3)  # both connected and waiting
    start = time.perf_counter()
    go.set()
    for p in procs:
        p.join()
    return n / (time.perf_counter() - start)


def measure(url: str, n: int) -> dict[str, float]:
    conn = redis.Redis.from_url(url)
    try:
        conn.delete(KEY, COUNTER)
        start = time.perf_counter()
        for _ in range(n):
            conn.lpush(KEY, MESSAGE)
        out = {"lpush_one": n / (time.perf_counter() - start)}
        conn.delete(KEY)
        out["lpush_pipelined"] = _fill(conn, n)
        out["rpop_incr_2"] = _pop_two(url, n, incr=True)
        _fill(conn, n)
        out["rpop_2"] = _pop_two(url, n, incr=False)
        return out
    finally:
        conn.delete(KEY, COUNTER)
        conn.close()
