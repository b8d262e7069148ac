"""Why redis-py could not talk to Redis, in words a user can act on.

The Rust clients word the same causes in ``fastq-core/src/redis/connection.rs``
(``connect_reason``); the Python side (control channel, result backend, broker helpers) says the
same, so the first error line a worker logs names the cause whichever part hits it first.
"""

from __future__ import annotations

import ssl

import redis

from fastq.urls import redact


def redis_failure(doing: str, url: str, exc: BaseException) -> str:
    """``<doing> <url>: <hint> [<redis-py's own message>]`` (the hint only when one is known);
    ``doing`` reads like ``"cannot store results in"``."""
    hint = _hint(url, exc)
    detail = str(exc) or type(exc).__name__
    reason = f"{hint} [{detail}]" if hint else detail
    return f"{doing} {redact(url)}: {reason}"


def _hint(url: str, exc: BaseException) -> str | None:
    tls = url.startswith("rediss://")
    text = str(exc).lower()
    if isinstance(exc, redis.AuthenticationError) or "wrongpass" in text or "noauth" in text:
        return (
            "Redis refused the credentials (authentication failed): check the user name and "
            "password in the URL"
        )
    if "connection refused" in text or isinstance(exc.__cause__, ConnectionRefusedError):
        return (
            "connection refused: nothing accepts connections at that host and port "
            "(is Redis running there?)"
        )
    if isinstance(exc, redis.TimeoutError) or "timeout" in text or "timed out" in text:
        if tls:
            return (
                "no TLS handshake in time: the server does not seem to speak TLS (a rediss:// "
                "URL to a port without TLS waits like this; use redis:// for it)"
            )
        return (
            "no answer in time (host down, packets dropped by a firewall, or a TLS-only port "
            "reached with redis://)"
        )
    if tls and (isinstance(exc.__cause__, ssl.SSLError) or "ssl" in text or "tls" in text):
        return (
            "the TLS handshake failed (is this port serving TLS, with a certificate this client "
            "trusts?)"
        )
    if not tls and ("closed by server" in text or "end of file" in text):
        return (
            "the server closed the connection at once (a TLS-only port reached with redis://? "
            "use rediss://)"
        )
    return None
