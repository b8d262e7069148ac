"""Serializers by name, with the accept rules; pickle goes through Python and only when accepted."""

from __future__ import annotations

import pickle
from typing import Any

from fastq import _core
from fastq.errors import ContentDisallowed, EncodeError

PICKLE = "application/x-python-serialize"
_MIMES = {
    "json": "application/json",
    "msgpack": "application/x-msgpack",
    "pickle": PICKLE,
    "yaml": "application/x-yaml",
}
NATIVE = frozenset({"json", "msgpack", "application/json", "application/x-msgpack"})


def content_type_of(serializer: str) -> str:
    """MIME type of a serializer name (or the MIME type itself)."""
    return _MIMES.get(serializer, serializer)


def dumps(obj: Any, serializer: str) -> tuple[bytes, str, str]:
    """Serializes ``obj``; returns ``(body, content_type, content_encoding)``."""
    if serializer in NATIVE:
        ct = content_type_of(serializer)
        return _core.dumps(obj, ct), ct, "utf-8" if ct == "application/json" else "binary"
    if serializer in ("pickle", PICKLE):
        return pickle.dumps(obj, protocol=4), PICKLE, "binary"
    raise EncodeError(f"unknown serializer {serializer!r}: use 'json', 'msgpack' or 'pickle'")


def loads(data: bytes, content_type: str, accept: list[str]) -> Any:
    """Deserializes ``data`` if ``accept`` allows its content type (pickle only when listed)."""
    if content_type == PICKLE:
        if "pickle" in accept or PICKLE in accept:
            return pickle.loads(data)
        raise ContentDisallowed(
            f"refusing content of type {PICKLE} (pickle): it is not in accept_content {accept}"
        )
    return _core.loads(data, content_type, accept)
