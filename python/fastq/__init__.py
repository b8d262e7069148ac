"""fastq: a Celery-compatible distributed task queue with a Rust hot path."""

from __future__ import annotations

from fastq._core import __version__

__all__ = ["__version__"]
