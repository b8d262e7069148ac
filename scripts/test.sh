#!/usr/bin/env bash
# The whole test suite from a bare machine: dependencies, build, services, cargo test, pytest.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/fastq/target}

bash scripts/setup.sh
bash scripts/services.sh redis rabbitmq

echo "== cargo test"
cargo test --workspace --exclude fastq-py -q

echo "== lint"
.venv/bin/ruff check python tests bench
.venv/bin/mypy
# The typed task API: fails when a type changes or an ignore there is no longer needed.
.venv/bin/mypy --config-file pyproject.toml tests/typecheck/check_task_api.py
# The hand-written _core.pyi against the built extension: a binding changed without its stub fails.
.venv/bin/python -m mypy.stubtest fastq._core
cargo clippy --workspace -q --all-targets -- -D warnings
cargo fmt --all --check

# Built once here rather than inside a test: a cold release build takes minutes, and its output
# belongs in the log. tests/packaging installs these into fresh venvs.
echo "== package"
bash scripts/package.sh

# Several pytest-xdist workers: most tests wait on worker subprocesses and brokers, not on CPU.
# Each worker gets a Redis server and a RabbitMQ vhost of its own (tests/isolation.py); modules
# with an expensive module fixture stay on one worker (xdist_group, --dist loadgroup).
# FASTQ_TEST_WORKERS=0 runs in one process; pytest args given here come last and win (-n 0).
echo "== pytest"
.venv/bin/python -m pytest -q -n "${FASTQ_TEST_WORKERS:-3}" --dist loadgroup "$@"
