#!/usr/bin/env bash
# Builds what gets published into dist/: a manylinux_2_28 wheel (x86_64, abi3: CPython >= 3.10,
# no Rust needed to install it) and the sdist. Idempotent: replaces the fastq_worker files in
# dist/; compiled Rust is reused from $CARGO_TARGET_DIR (default ~/.cache/fastq/target).
# Usage: scripts/package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/fastq/target}

# maturin and ziglang come from the `package` dependency group, which setup.sh installs.
.venv/bin/python -c 'import maturin, ziglang' 2>/dev/null || bash scripts/setup.sh

mkdir -p dist
rm -f dist/fastq_worker-*.whl dist/fastq_worker-*.tar.gz  # dist/ holds one version: this one

# Linked by zig against glibc 2.28's symbols: the host's own linker would take the symbol
# versions of the host's newer glibc (2.34 for pthread_create on Debian 12), which a
# manylinux_2_28 system does not have, and maturin would refuse the tag. maturin finds zig
# through `python3 -m ziglang`, hence the venv first on PATH.
PATH="$PWD/.venv/bin:$PATH" .venv/bin/maturin build --release --zig \
  --compatibility manylinux_2_28 --out dist --quiet
.venv/bin/maturin sdist --out dist
ls -l dist/fastq_worker-*
