"""Times a loop of ``.delay()`` calls of the benchmark's task (fastq or Celery, results on) and
prints the mean and median per call in µs: one side of an A/B comparison of two builds, run
alternately at the same moment (an old build first on ``PYTHONPATH``).

    python bench/delay_loop.py fastq 2000 --redis redis://127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import statistics
import time

import redis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=["fastq", "celery"])
    parser.add_argument("calls", type=int)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="without a db number")
    parser.add_argument("--queue", default="fastq.delay-loop")
    opts = parser.parse_args()
    broker, backend = f"{opts.redis}/6", f"{opts.redis}/7"
    if opts.system == "celery":
        from fastq.bench.apps.celery_app import make_app
    else:
        from fastq.bench.apps.fastq_app import make_app  # type: ignore[assignment]
    app, task = make_app(broker, backend, False, opts.queue)
    for _ in range(200):  # connections open, code warm
        task.delay("", "noop")
    clock, calls = time.perf_counter, []
    start = clock()
    for _ in range(opts.calls):
        before = clock()
        task.delay("", "noop")
        calls.append(clock() - before)
    mean = (clock() - start) / opts.calls
    print(f"{opts.system} mean {mean * 1e6:.0f} median {statistics.median(calls) * 1e6:.0f}")
    redis.Redis.from_url(broker).delete(opts.queue)
    app.close()


if __name__ == "__main__":
    main()
