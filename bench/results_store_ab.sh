#!/usr/bin/env bash
# CPU per task of a results-on drain, result stores through Rust or redis-py (A/B in one build).
#   bash bench/results_store_ab.sh <port of a Redis of your own> [rounds] [tasks]
# Prints, per round and arm, CPU ms per 1 000 tasks of the children, the supervisor and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=$1 ROUNDS=${2:-3} N=${3:-40000}
export PYTHONPATH=bench FASTQ_BENCH_BROKER=redis://127.0.0.1:$PORT/0
export FASTQ_BENCH_BACKEND=redis://127.0.0.1:$PORT/1
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for round in $(seq "$ROUNDS"); do
  for arm in redispy rust; do
    redis-cli -p "$PORT" flushall >/dev/null
    AB_ARM=$arm .venv/bin/python -c "
from results_store_app import app
from fastq.bench.spec import TASK_NAME
for _ in range($N // 10000):
    app.send_many([(TASK_NAME, ('', 'noop'), None)] * 10000)"
    rpid=$(redis-cli -p "$PORT" info server | awk -F: '/process_id/ {print $2}' | tr -d '\r')
    r0=$(cpu "$rpid")
    AB_ARM=$arm .venv/bin/fastq -A results_store_app worker -c 2 --pool prefork -Q fastq.bench \
      --loglevel WARNING >/dev/null 2>&1 &
    worker=$!
    while [ "$(redis-cli -p "$PORT" llen fastq.bench)" != "0" ]; do sleep 0.05; done
    sleep 0.3
    kids=0; for k in $(pgrep -P $worker); do kids=$((kids + $(cpu "$k"))); done
    sup=$(cpu $worker) r1=$(cpu "$rpid")
    kill -TERM $worker; wait $worker 2>/dev/null || true
    python3 -c "
t = $(getconf CLK_TCK) * $N / 1e6
print(f'round $round $arm: CPU ms/1k tasks: children {$kids / t:.1f} supervisor {$sup / t:.1f}'
      f' redis {($r1 - $r0) / t:.1f}; load $(cut -d' ' -f1 /proc/loadavg)')"
  done
done
