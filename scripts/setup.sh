#!/usr/bin/env bash
# Creates .venv, installs build and test dependencies, and builds fastq's Rust extension into it.
# Idempotent: dependencies are reinstalled only when pyproject.toml changes.
# Usage: scripts/setup.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."

profile=dev
[ "${1:-}" = "--release" ] && profile=release

need() { command -v "$1" >/dev/null 2>&1; }
if ! need cargo; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
need cargo || { echo "setup: cargo (Rust >= 1.88) is required; install it with rustup" >&2; exit 1; }

PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
  || { echo "setup: Python >= 3.10 is required (found $($PY --version 2>&1))" >&2; exit 1; }
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv

stamp=.venv/.fastq-deps-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # Renamed to fastq-worker: a dist-info left from the old name "fastq" would shadow it.
  .venv/bin/python -m pip uninstall -q -y fastq 2>/dev/null || true
  # Runtime dependencies, the bench extra, and every PEP 735 group (test, lint, package): the
  # groups are development-only and never reach the published metadata.
  .venv/bin/python - <<'PY'
import subprocess, sys, tomllib
pyproject = tomllib.load(open("pyproject.toml", "rb"))
project, groups = pyproject["project"], pyproject["dependency-groups"]
pkgs = [*project["dependencies"], *project["optional-dependencies"]["bench"],
        *(pkg for deps in groups.values() for pkg in deps)]
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *pkgs])
PY
  rm -f .venv/.fastq-deps-* && touch "$stamp"
fi

# Compiled Rust is cached outside the clone so fresh clones (CI) rebuild incrementally.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/fastq/target}
args=(-q)
[ "$profile" = release ] && args+=(--release)
.venv/bin/maturin develop "${args[@]}" >/dev/null
.venv/bin/python -c 'import fastq._core as c; print("setup: fastq", c.__version__, "built (" + "'"$profile"'" + ")")'
