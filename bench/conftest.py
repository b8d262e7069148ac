"""Benchmarks stay out of the default run (``testpaths = ["tests"]``) and are quick when asked for.

``pytest bench`` runs each benchmark once, as a plain test of its assertions; timing needs
``--benchmark-only`` (or ``--benchmark-enable``), against a release build:
``maturin develop --release && python -m pytest bench --benchmark-only``.
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Before pytest-benchmark's own hook reads the option.
    if not (config.getoption("benchmark_only") or config.getoption("benchmark_enable")):
        config.option.benchmark_disable = True
