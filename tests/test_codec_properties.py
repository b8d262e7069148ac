"""Property tests of the codec: round trips over generated values, and agreement with kombu."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgpack
import pytest
from fastq import _core, errors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu.utils import json as kombu_json

JSON = "application/json"
MSGPACK = "application/x-msgpack"

# Generated values are small, but the machine is shared: no deadline, fewer flaky failures.
settings.register_profile(
    "codec", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("codec")

# Whole-minute offsets: datetime.fromisoformat (kombu's decoder as well as fastq's) drops the
# microseconds of an offset such as +00:00:00.000001, so no codec can carry those.
offsets = st.integers(min_value=-1439, max_value=1439).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
zones = st.none() | st.just(timezone.utc) | offsets

INT64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
FINITE = st.floats(allow_nan=False, allow_infinity=False)

common_scalars = st.none() | st.booleans() | INT64 | st.text() | st.binary()
typed_scalars = (
    st.datetimes(timezones=zones)
    | st.dates()
    | st.times(timezones=zones)
    | st.decimals(allow_nan=False)
    | st.uuids()
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
    )


json_values = st.recursive(
    common_scalars | st.floats() | typed_scalars, containers, max_leaves=20
)  # NaN and infinities too, as Python's json writes them
msgpack_values = st.recursive(
    common_scalars | st.floats(), containers, max_leaves=20
)  # NaN and infinities travel in msgpack
kombu_json_values = json_values


def canonical(value: Any) -> Any:
    """A form where equal means identical on the wire: types kept, tuples as lists, -0.0 and NaN
    told apart, datetimes by their ISO text (offset included), decimals by their text."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, (datetime, date, time)):
        return (type(value).__name__, value.isoformat())
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return [(canonical(k), canonical(v)) for k, v in value.items()]
    if isinstance(value, (str, bytes, UUID)):
        return (type(value).__name__, value)
    raise AssertionError(f"unexpected {type(value)}")


@given(json_values)
def test_json_roundtrip(value: Any) -> None:
    assert canonical(_core.loads(_core.dumps(value), JSON)) == canonical(value)


@given(msgpack_values)
def test_msgpack_roundtrip(value: Any) -> None:
    assert canonical(_core.loads(_core.dumps(value, "msgpack"), MSGPACK)) == canonical(value)


@given(msgpack_values, typed_scalars)
def test_msgpack_refuses_json_only_types(value: Any, typed: Any) -> None:
    with pytest.raises(errors.EncodeError, match=f"a {_value_name(typed)} has no msgpack form"):
        _core.dumps([value, {"typed": typed}], "msgpack")


def _value_name(typed: Any) -> str:
    return "uuid" if isinstance(typed, UUID) else type(typed).__name__.lower()


@given(json_values)
def test_kombu_reads_what_fastq_writes(value: Any) -> None:
    assert canonical(kombu_json.loads(_core.dumps(value))) == canonical(value)


@given(kombu_json_values)
def test_fastq_reads_what_kombu_writes(value: Any) -> None:
    assert canonical(_core.loads(kombu_json.dumps(value).encode(), JSON)) == canonical(value)


@given(msgpack_values)
def test_msgpack_bytes_are_msgpack_pythons(value: Any) -> None:
    # kombu's msgpack serializer: packb(use_bin_type=True), unpackb(raw=False).
    packed = msgpack.packb(value, use_bin_type=True)
    assert _core.dumps(value, "msgpack") == packed
    assert canonical(_core.loads(packed, MSGPACK)) == canonical(value)


@given(st.dictionaries(INT64 | st.text(max_size=5) | st.binary(max_size=5), st.none(), max_size=5))
def test_msgpack_scalar_keys_roundtrip(value: dict[Any, None]) -> None:
    assert canonical(_core.loads(_core.dumps(value, "msgpack"), MSGPACK)) == canonical(value)


@given(
    st.lists(json_values, max_size=5),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
)
def test_task_message_roundtrip(args: list[Any], kwargs: dict[str, Any]) -> None:
    headers, body = _core.encode_task_message({"task": "t", "id": "i"}, args, kwargs)
    message = _core.decode_task(headers, body, JSON, ["json"])
    assert canonical(list(message.args)) == canonical(args)
    assert canonical(message.kwargs) == canonical(kwargs)
    envelope, again = _core.decode_task_envelope(
        _core.encode_task_envelope(headers, args, kwargs), ["json"]
    )
    assert envelope.body == body
    assert canonical(list(again.args)) == canonical(args)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash_the_decoders(data: bytes) -> None:
    for content_type in (JSON, MSGPACK):
        try:
            _core.loads(data, content_type)
        except errors.DecodeError:
            pass
    try:
        _core.decode_task_envelope(data, ["json", "msgpack"])
    except errors.DecodeError:
        pass


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_keep_every_bit_through_json(value: float) -> None:
    back = _core.loads(_core.dumps(value))
    assert math.copysign(1.0, back) == math.copysign(1.0, value)
    assert back == value
