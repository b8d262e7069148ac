"""The extension imports and its error classes are fastq.errors'."""

import pytest
from fastq import _core, errors


def test_version_is_the_cargo_version() -> None:
    import fastq

    assert fastq.__version__ == _core.__version__


def test_rust_errors_are_fastq_errors() -> None:
    with pytest.raises(errors.DecodeError, match="EOF"):
        _core.loads(b"[1,")
    with pytest.raises(errors.ContentDisallowed, match="pickle"):
        _core.loads(b"\x80\x04N.", "application/x-python-serialize", ["json"])
