#!/usr/bin/env bash
# Regenerates bench/RESULTS.md (its generated sections), the plots and bench/data/*.json.
# Usage: bash bench/run_all.sh [--quick] [--only headline|sweep|micro|peers]
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python bench/run_all.py "$@"
