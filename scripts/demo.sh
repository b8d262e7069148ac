#!/usr/bin/env bash
# The main job: build fastq, start a worker (--concurrency 2), send example tasks, print their
# results, stop the worker cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh --release
bash scripts/services.sh redis

export FASTQ_BROKER_URL=${FASTQ_BROKER_URL:-redis://127.0.0.1:6379/0}
export FASTQ_RESULT_BACKEND=${FASTQ_RESULT_BACKEND:-redis://127.0.0.1:6379/1}
log=$(mktemp -t fastq-demo-worker.XXXX.log)
.venv/bin/fastq -A examples.tasks worker --concurrency 2 --loglevel INFO >"$log" 2>&1 &
worker=$!
trap 'kill -TERM $worker 2>/dev/null || true' EXIT

.venv/bin/python -m examples.send

kill -TERM "$worker"
wait "$worker" && echo "worker stopped cleanly (log: $log)"
trap - EXIT
