"""Sentinel URLs and transport options read as kombu and Celery read them (no servers needed; the
set-ups with sentinels are in tests/faults/test_redis_sentinel.py)."""

from __future__ import annotations

import pytest
from fastq import _core, sentinel
from fastq.errors import ConfigurationError
from fastq.urls import redact

OPTIONS = {"master_name": "mymaster"}


def test_every_sentinel_and_the_first_parts_credentials_and_db() -> None:
    spec = sentinel.parse(
        "sentinel://:s%40cret@h1:26380/3;sentinel://h2;sentinel://u:p@h3:1",
        {**OPTIONS, "sentinel_kwargs": {"password": "sp"}, "min_other_sentinels": 1},
        "broker_transport_options",
    )
    assert spec.sentinels == [("h1", 26380), ("h2", 26379), ("h3", 1)]
    assert (spec.username, spec.password, spec.db) == (None, "s@cret", 3)
    assert spec.master_name == "mymaster"
    assert spec.sentinel_kwargs == {"password": "sp"}
    assert spec.min_other_sentinels == 1
    url = sentinel.core_url(spec)
    assert url == (
        "sentinel://:s%40cret@h1:26380/3?master_name=mymaster&sentinel_password=sp"
        "&min_other_sentinels=1;sentinel://h2:26379;sentinel://h3:1"
    )
    assert "cret" not in redact(url).split("?")[0]


def test_missing_master_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="broker_transport_options has no 'master_name'"):
        sentinel.parse("sentinel://h:26379", {}, "broker_transport_options")


def test_options_fastq_cannot_pass_on_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="ssl"):
        sentinel.parse("sentinel://h", {**OPTIONS, "sentinel_kwargs": {"ssl": True}}, "x")
    with pytest.raises(ConfigurationError, match="sentinel_fanout_compat"):
        sentinel.parse("sentinel://h", {**OPTIONS, "sentinel_fanout_compat": True}, "x")
    with pytest.raises(ConfigurationError, match="sentinel://"):
        sentinel.parse("sentinel://h;redis://h2", OPTIONS, "x")


def test_the_rust_side_refuses_a_url_without_master_name() -> None:
    with pytest.raises(Exception, match="master_name"):
        _core.RedisPublisher("sentinel://127.0.0.1:1")
    # With it, nothing connects until the first publish.
    publisher = _core.RedisPublisher("sentinel://:pw@127.0.0.1:1/0?master_name=m")
    assert "pw" not in repr(publisher)
