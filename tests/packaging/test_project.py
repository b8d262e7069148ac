"""What the installed distribution promises, checked in the dev venv (fast; no build)."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import fastq
import fastq._core

from tests.processes import BIN

#: `fastq bench`'s optional heavy dependencies (the bench and compare extras): a worker, a client
#: or the CLI's help must not pay for them, nor need them installed.
HEAVY = {"celery", "kombu", "matplotlib", "numpy", "psutil", "rich"}


def test_distribution_extension_and_cli_agree_on_the_version() -> None:
    assert importlib.metadata.version("fastq-worker") == fastq._core.__version__
    assert fastq.__version__ == fastq._core.__version__
    out = subprocess.run(
        [str(BIN / "fastq"), "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"fastq {fastq.__version__}"


def test_cli_and_bench_worker_app_load_no_heavy_dependency() -> None:
    code = """
import contextlib, io, json, sys
import fastq, fastq.cli
for argv in (["--help"], ["worker", "--help"], ["bench", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        fastq.cli.main(argv)
import fastq.bench.apps.fastq_app  # what `fastq bench` starts as its fastq workers
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # redis-py imports OpenTelemetry's SDK (and with it psutil) when it is installed, as it is
    # in the test environment: what redis brings is not fastq's to answer for.
    redis_brings = subprocess.run(
        [sys.executable, "-c", "import json, sys, redis; print(json.dumps(list(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    by_redis = {name.partition(".")[0] for name in json.loads(redis_brings.stdout)}
    assert (HEAVY - by_redis).isdisjoint(json.loads(out.stdout))
