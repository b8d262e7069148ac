"""redis-py's errors reworded with the cause a user can act on (as the Rust clients word them)."""

from __future__ import annotations

import redis
from fastq.redis_errors import redis_failure


def test_timeout_on_rediss_names_tls_and_hides_the_password() -> None:
    exc = redis.TimeoutError("Timeout connecting to server")
    text = redis_failure("cannot reach", "rediss://:pw@127.0.0.1:7000/0", exc)
    assert text.startswith("cannot reach rediss://:***@127.0.0.1:7000/0: no TLS handshake")
    assert "[Timeout connecting to server]" in text
    assert "pw@" not in text


def test_refused_and_plain_timeout() -> None:
    refused = redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    assert "is Redis running there?" in redis_failure("cannot reach", "redis://h:1/0", refused)
    slow = redis.TimeoutError("Timeout reading from socket")
    assert "TLS-only port reached with redis://" in redis_failure("x", "redis://h/0", slow)


def test_unknown_cause_is_passed_through() -> None:
    exc = redis.ResponseError("OOM command not allowed")
    assert redis_failure("cannot store results in", "redis://h/0", exc) == (
        "cannot store results in redis://h/0: OOM command not allowed"
    )
