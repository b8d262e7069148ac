"""Broker and backend URL helpers shared by the Redis and AMQP parts."""

from __future__ import annotations

import re

_CREDENTIALS = re.compile(r"(?P<scheme>[a-z+]+://)(?P<user>[^:@/]*)(?::(?P<pw>[^@/]*))?@")


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs and error messages)."""

    def _sub(m: re.Match[str]) -> str:
        if m.group("pw") is None:
            return m.group(0)
        return f"{m.group('scheme')}{m.group('user')}:***@"

    return _CREDENTIALS.sub(_sub, url)
