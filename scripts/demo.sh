#!/usr/bin/env bash
# The main job: build fastq, start a worker (--concurrency 2), send example tasks, print their
# results, stop the worker cleanly. Runs on the embedded SQLite broker: no Redis or RabbitMQ
# needed (set FASTQ_BROKER_URL / FASTQ_RESULT_BACKEND to use a server instead).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh --release

dir=$(mktemp -d -t fastq-demo.XXXX)
# Four slashes: sqlite:/// followed by an absolute path.
export FASTQ_BROKER_URL=${FASTQ_BROKER_URL:-sqlite:///$dir/fastq.db}
log="$dir/worker.log"
.venv/bin/fastq -A examples.tasks worker --concurrency 2 --loglevel INFO >"$log" 2>&1 &
worker=$!
trap 'kill -TERM $worker 2>/dev/null || true' EXIT

.venv/bin/python -m examples.send

kill -TERM "$worker"
wait "$worker" && echo "worker stopped cleanly (log: $log)"
trap - EXIT
