"""The codec in ``fastq._core``: value round trips, and a typed, named error for every bad input."""

from __future__ import annotations

import base64
import enum
import json
import math
import re
from collections import OrderedDict
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from fastq import _core, errors
from kombu.utils.json import dumps as kombu_json

JSON = "application/json"
MSGPACK = "application/x-msgpack"
PICKLE = "application/x-python-serialize"
YAML = "application/x-yaml"
BOTH = ["json", "msgpack"]
HEADERS = {"task": "proj.add", "id": "id-1"}

ZONE = timezone(timedelta(hours=5, minutes=30))
UUID_VALUE = UUID("0123456789abcdef0123456789abcdef")


def raises(cls: type[Exception], *fragments: str) -> Any:
    """Like ``pytest.raises`` but the class must match exactly and the message name the problem."""
    return _Raises(cls, fragments)


class _Raises:
    def __init__(self, cls: type[Exception], fragments: tuple[str, ...]) -> None:
        self.cls = cls
        self.fragments = fragments
        self.value: Exception | None = None

    def __enter__(self) -> _Raises:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        assert exc is not None, f"expected {self.cls.__name__}, nothing was raised"
        assert type(exc) is self.cls, (
            f"expected {self.cls.__name__}, got {exc_type.__name__}: {exc}"
        )
        for fragment in self.fragments:
            assert fragment in str(exc), f"{fragment!r} not in {str(exc)!r}"
        self.value = exc
        return True


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# -- round trips ---------------------------------------------------------------------------------
SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    2**64 - 1,
    1.5,
    -0.0,
    1e300,
    5e-324,
    "",
    'héllo "quoted" \\ \n\t',
    "\x00 control",
    "emoji 🐍 and CJK 漢字",
    b"",
    b"utf-8 text",
    b"\xff\x00\x80 binary",
    [],
    {},
    [1, "two", [3.0, None], {"four": [5]}],
    {"a": 1, "b": {"c": [True, None]}, "": "empty key"},
]

JSON_ONLY: list[Any] = [
    datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=ZONE),
    datetime(2024, 1, 2, 3, 4, 5),
    datetime(1, 1, 1),
    date(2024, 2, 29),
    time(1, 2, 3),
    time(23, 59, 59, 999999, tzinfo=timezone.utc),
    Decimal("1.50"),
    Decimal("-1E+5"),
    Decimal("0.000000000000000000000000001"),
    UUID_VALUE,
    {"when": datetime(2024, 1, 2, tzinfo=timezone.utc), "ids": [UUID_VALUE, b"\xfe"]},
]


@pytest.mark.parametrize("value", SCALARS + JSON_ONLY, ids=repr)
def test_json_roundtrip(value: Any) -> None:
    back = _core.loads(_core.dumps(value), JSON)
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_msgpack_roundtrip(value: Any) -> None:
    back = _core.loads(_core.dumps(value, "msgpack"), MSGPACK)
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize("serializer", ["json", "msgpack", JSON, MSGPACK])
def test_tuples_become_lists_and_subclasses_their_base(serializer: str) -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Name(str):
        pass

    value = (1, (2, 3), OrderedDict(a=Color.RED), Name("n"), bytearray(b"ba"))
    back = _core.loads(_core.dumps(value, serializer), _mime(serializer))
    assert back == [1, [2, 3], {"a": 1}, "n", b"ba"]
    assert type(back[2]["a"]) is int
    assert type(back[3]) is str


def _mime(serializer: str) -> str:
    return MSGPACK if "msgpack" in serializer else JSON


def test_nan_and_infinity_travel_in_msgpack() -> None:
    nan, inf, ninf = _core.loads(_core.dumps([math.nan, math.inf, -math.inf], "msgpack"), MSGPACK)
    assert math.isnan(nan)
    assert (inf, ninf) == (math.inf, -math.inf)


def test_json_uses_kombu_type_markers() -> None:
    value = [
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        date(2024, 1, 2),
        time(1, 2, 3),
        Decimal("1.5"),
        UUID_VALUE,
        b"text",
        b"\xff",
    ]
    assert json.loads(_core.dumps(value)) == [
        {"__type__": "datetime", "__value__": "2024-01-02T03:04:05+00:00"},
        {"__type__": "date", "__value__": "2024-01-02"},
        {"__type__": "time", "__value__": "01:02:03"},
        {"__type__": "decimal", "__value__": "1.5"},
        {"__type__": "uuid", "__value__": {"hex": "0123456789abcdef0123456789abcdef"}},
        {"__type__": "bytes", "__value__": "text"},
        {"__type__": "base64", "__value__": "/w=="},
    ]


def test_json_output_is_compact_and_keeps_key_order() -> None:
    assert _core.dumps({"b": 1, "a": [1, 2]}) == b'{"b":1,"a":[1,2]}'


def test_uuid_marker_written_by_kombu_5_3_0_with_version() -> None:
    data = b'{"__type__":"uuid","__value__":{"hex":"0123456789ABCDEF0123456789ABCDEF","version":4}}'
    assert _core.loads(data) == UUID_VALUE


def test_maps_that_only_look_like_markers_stay_maps() -> None:
    data = b'{"__type__":"datetime","__value__":"2024-01-01","extra":1}'
    assert _core.loads(data) == {"__type__": "datetime", "__value__": "2024-01-01", "extra": 1}


def test_date_marker_reads_a_datetime_text_like_kombu() -> None:
    # kombu decodes the date marker with datetime.fromisoformat(v).date().
    assert _core.loads(b'{"__type__":"date","__value__":"2024-01-02T03:04:05"}') == date(2024, 1, 2)


def test_json_scalar_keys_become_text_like_json_dumps() -> None:
    value = {2: "a", True: "b", None: "c", 1.5: "d", -7: "e"}
    assert _core.loads(_core.dumps(value)) == json.loads(json.dumps(value))


def test_msgpack_keeps_int_and_bytes_keys() -> None:
    assert _core.loads(_core.dumps({1: "a", b"k": 2}, "msgpack"), MSGPACK) == {1: "a", b"k": 2}


def test_json_reads_big_and_float_numbers_like_python() -> None:
    assert _core.loads(b"[18446744073709551615, 1e2, -0.5, 1E-3]") == [2**64 - 1, 100.0, -0.5, 1e-3]


def test_dunder_json_is_used_as_is() -> None:
    class Point:
        def __json__(self) -> dict[str, int]:
            return {"x": 1, "y": 2}

    assert _core.loads(_core.dumps([Point()])) == [{"x": 1, "y": 2}]


def test_nesting_up_to_the_limit_roundtrips() -> None:
    for serializer, mime in (("json", JSON), ("msgpack", MSGPACK)):
        value = nested(120, "leaf")
        assert _core.loads(_core.dumps(value, serializer), mime) == value


def test_raw_content_types_are_always_trusted() -> None:
    assert _core.loads(b"\x00\x01", "application/data", ["json"]) == b"\x00\x01"
    assert _core.loads("héllo".encode(), "application/text", ["json"]) == "héllo"


def test_content_type_parameters_and_case_are_ignored() -> None:
    assert _core.loads(b"[1]", "Application/JSON; charset=utf-8", ["json"]) == [1]


# -- malformed input -----------------------------------------------------------------------------
MALFORMED_JSON = [
    (b"", "EOF"),
    (b"[1, 2", "EOF"),
    (b'{"a": ', "EOF"),
    (b'"unterminated', "EOF"),
    (b"[1] [2]", "trailing"),
    (b"{'a': 1}", "key must be a string"),
    (b"nul", "EOF"),
    (b"nulx", "expected ident"),
    (b"[01]", "invalid number"),
    (b"1e400", "out of range"),
    (b"[Nan]", "expected value"),  # Python's NaN token is read; other spellings are not
    # not UTF-8
    (b"\xff\xfe[]", "expected value"),
    (b'"\xff"', "invalid unicode"),
    (b'"\xc3"', "invalid unicode"),
    (b'"\\ud800"', "hex escape"),
]
MALFORMED_MSGPACK = [
    (b"", "truncated"),
    (b"\x92\x01", "truncated"),
    (b"\xa5abc", "truncated: 5 more bytes needed"),
    (b"\xdd\xff\xff\xff\xff", "truncated"),
    (b"\x01\x02", "1 bytes after the end"),
    (b"\xc1", "0xc1 is a reserved marker"),
    (b"\x91\xc1", "0xc1 is a reserved marker"),
    (b"\xa2\xff\xfe", "not valid UTF-8"),
    (b"\xd4\x05\x00", "extension type 5"),
    (b"\xc7\x02\xff\x00", "truncated"),
]


@pytest.mark.parametrize(
    ("content_type", "data", "fragment"),
    [(JSON, *case) for case in MALFORMED_JSON] + [(MSGPACK, *case) for case in MALFORMED_MSGPACK],
)
def test_malformed_input_is_a_decode_error(content_type: str, data: bytes, fragment: str) -> None:
    with raises(errors.DecodeError, content_type, fragment):
        _core.loads(data, content_type)


@pytest.mark.parametrize(
    ("data", "kind"), [(b"\x81\x91\x01\x02", "list"), (b"\x81\x80\x02", "map")]
)
def test_msgpack_keys_python_cannot_hash_are_decode_errors(data: bytes, kind: str) -> None:
    with raises(errors.DecodeError, "application/x-msgpack", "map key", f"a {kind}"):
        _core.loads(data, MSGPACK)


def test_json_nested_100k_deep_is_a_decode_error() -> None:
    for data in (b"[" * 100_000, b'{"a":' * 100_000, b"[" * 100_000 + b"]" * 100_000):
        with raises(errors.DecodeError, "application/json", "nested deeper than 127"):
            _core.loads(data, JSON)


def test_msgpack_nested_100k_deep_is_a_decode_error() -> None:
    for data in (b"\x91" * 100_000, b"\x81\x01" * 100_000 + b"\xc0"):
        with raises(errors.DecodeError, "application/x-msgpack", "nested deeper than 127"):
            _core.loads(data, MSGPACK)


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        (
            b'{"__type__":"frobnicate","__value__":1}',
            ('unsupported kombu type marker "frobnicate"',),
        ),
        (b'{"__type__":5,"__value__":1}', ("__type__ must be a string",)),
        (b'{"__type__":"datetime","__value__":5}', ('"datetime" marker needs a string',)),
        (b'{"__type__":"base64","__value__":"!!"}', ("invalid base64",)),
        (b'{"__type__":"uuid","__value__":"0123"}', ('{"hex"',)),
        (b'{"__type__":"uuid","__value__":{"hex":"zz"}}', ("uuid marker",)),
        (
            b'{"__type__":"datetime","__value__":"not a date"}',
            (
                "datetime",
                '"not a date"',
            ),
        ),
        (
            b'{"__type__":"date","__value__":"2024-13-01"}',
            (
                "date",
                '"2024-13-01"',
            ),
        ),
        (
            b'{"__type__":"time","__value__":"25:00"}',
            (
                "time",
                '"25:00"',
            ),
        ),
        (
            b'{"__type__":"decimal","__value__":"1.2.3"}',
            (
                "decimal",
                '"1.2.3"',
            ),
        ),
    ],
)
def test_bad_kombu_markers_are_decode_errors(data: bytes, fragments: tuple[str, ...]) -> None:
    with raises(errors.DecodeError, "application/json", *fragments):
        _core.loads(data, JSON)


def test_bad_marker_values_name_the_marker_and_value() -> None:
    with raises(errors.DecodeError, "kombu datetime marker", '"not a date"'):
        _core.loads(b'[{"__type__":"datetime","__value__":"not a date"}]')
    with raises(errors.DecodeError, "kombu decimal marker", '"1.2.3"'):
        _core.loads(b'{"k":{"__type__":"decimal","__value__":"1.2.3"}}')


def test_unknown_content_type() -> None:
    with raises(errors.UnknownContentType, "application/bogus", "application/json"):
        _core.loads(b"[]", "application/bogus")
    with raises(errors.UnknownContentType, "text/html"):
        _core.loads(b"[]", "text/html", ["json"])


@pytest.mark.parametrize(
    ("content_type", "name"),
    [(PICKLE, "pickle"), (YAML, "yaml"), (MSGPACK, "msgpack")],
)
def test_disallowed_content_type(content_type: str, name: str) -> None:
    with raises(errors.ContentDisallowed, content_type, f"({name})", "accept_content", "json"):
        _core.loads(b"\x80\x04N.", content_type, ["json"])


def test_disallowed_errors_are_decode_errors_for_callers_that_catch_broadly() -> None:
    assert issubclass(errors.ContentDisallowed, errors.DecodeError)
    assert issubclass(errors.UnknownContentType, errors.DecodeError)
    assert issubclass(errors.InvalidMessage, errors.DecodeError)
    assert issubclass(errors.EncodeError, TypeError)


def test_accepted_pickle_is_left_to_python() -> None:
    with raises(errors.DecodeError, PICKLE, "fastq.serialization"):
        _core.loads(b"\x80\x04N.", PICKLE, ["json", "pickle"])


def test_unknown_accept_entry_is_named() -> None:
    with raises(errors.InvalidMessage, '"jsn"', "accept_content"):
        _core.loads(b"[]", JSON, ["jsn"])


# -- encode errors -------------------------------------------------------------------------------
def _stable_id(value: object) -> str:
    """``repr`` without memory addresses: pytest-xdist workers must collect the same ids."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        (object(), ("type object", "__json__")),
        ({1, 2}, ("type set", "list")),
        (frozenset(), ("type frozenset",)),
        (1j, ("type complex",)),
        (timedelta(seconds=1), ("type timedelta",)),
        ([1, [2, {"k": object()}]], ("type object",)),
        (2**64, ("18446744073709551616", "64 bits", "string")),
        (-(2**63) - 1, ("-9223372036854775809", "64 bits")),
        ("lone \ud800 surrogate", ("surrogate", "UTF-8")),
        ({"\udfff": 1}, ("surrogate",)),
    ],
    ids=_stable_id,
)
def test_unencodable_values_are_encode_errors(
    value: Any, fragments: tuple[str, ...], serializer: str
) -> None:
    with raises(errors.EncodeError, *fragments):
        _core.dumps(value, serializer)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1.0, {"x": math.nan}]])
def test_non_finite_floats_travel_in_json_as_python_writes_them(value: Any) -> None:
    # Celery clients send float("nan") as Python's json writes it (NaN, Infinity, -Infinity).
    encoded = _core.dumps(value, "json")
    assert encoded == json.dumps(value, separators=(",", ":")).encode()
    assert repr(_core.loads(encoded, JSON)) == repr(value)
    assert repr(_core.loads(kombu_json(value).encode(), JSON)) == repr(value)


@pytest.mark.parametrize(
    "value",
    [datetime(2024, 1, 1), date(2024, 1, 1), time(1), Decimal("1"), UUID_VALUE],
    ids=repr,
)
def test_msgpack_refuses_types_kombu_msgpack_cannot_carry(value: Any) -> None:
    with raises(errors.EncodeError, "msgpack", type(value).__name__.lower(), "json serializer"):
        _core.dumps({"v": [value]}, "msgpack")


def test_json_keys_that_are_not_scalars_are_refused() -> None:
    with raises(errors.EncodeError, "a list cannot be a JSON object key"):
        _core.dumps({(1, 2): "v"})


def test_self_containing_values_are_encode_errors() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with raises(errors.EncodeError, "nested deeper than"):
        _core.dumps(loop)


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_values_too_deep_for_the_decoder_are_refused_on_encode(serializer: str) -> None:
    # Whatever fastq writes it must read back: the encoder refuses what the decoder would.
    with raises(errors.EncodeError, serializer, "nested deeper than 127"):
        _core.dumps(nested(200), serializer)
    with raises(errors.EncodeError, "nested deeper than 127"):
        _core.dumps(nested(127, UUID_VALUE), "json")


def test_unknown_serializer_is_an_encode_error() -> None:
    for name in ("pickle", "yaml", "bogus"):
        with raises(errors.EncodeError, name, "json and msgpack"):
            _core.dumps(1, name)


def test_dunder_json_errors_propagate() -> None:
    class Broken:
        def __json__(self) -> Any:
            raise RuntimeError("reducer failed")

    with pytest.raises(RuntimeError, match="reducer failed"):
        _core.dumps(Broken())


# -- task messages -------------------------------------------------------------------------------
def _body(*parts: Any) -> bytes:
    return json.dumps(list(parts)).encode()


EMPTY_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_decode_task_fills_celery_defaults() -> None:
    msg = _core.decode_task(HEADERS, _body([2, 3], {"k": 1}), JSON, ["json"])
    assert (msg.task, msg.id, msg.protocol) == ("proj.add", "id-1", 2)
    assert msg.args == (2, 3)
    assert msg.kwargs == {"k": 1}
    assert msg.embed == EMPTY_EMBED
    assert msg.headers["root_id"] == "id-1"
    assert msg.headers["retries"] == 0
    assert msg.headers["lang"] == "py"
    assert msg.headers["timelimit"] == [None, None]
    assert msg.headers["stamps"] == {}
    assert msg.headers["eta"] is None


@pytest.mark.parametrize(
    ("headers", "fragments"),
    [
        ({"task": 5, "id": "i"}, ("`task` header", "the number 5")),
        ({"task": "", "id": "i"}, ("`task` header", "non-empty")),
        ({"task": None, "id": "i"}, ("`task` header", "a null")),
        ({"task": ["x"], "id": "i"}, ("`task` header", "a list")),
        ({"task": "t"}, ("`id` header is missing",)),
        ({"task": "t", "id": 7}, ("`id` header", "the number 7")),
        ({"task": "t", "id": "i", "retries": "x"}, ("`retries` header", "integer")),
    ],
)
def test_bad_task_headers_are_invalid_messages(
    headers: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    with raises(errors.InvalidMessage, *fragments):
        _core.decode_task(headers, _body([], {}, {}), JSON, ["json"])


def test_missing_task_header_with_a_v2_body_is_named() -> None:
    with raises(errors.InvalidMessage, "`task` header is missing"):
        _core.decode_task({"id": "i"}, _body([], {}, {}), JSON, ["json"])
    with raises(errors.InvalidMessage, "`task` header is missing"):
        _core.decode_task(None, _body([], {}, {}), JSON, ["json"])


def test_v1_body_without_task_is_named() -> None:
    with raises(errors.InvalidMessage, "no `task` header", "no `task` field"):
        _core.decode_task({}, b'{"id": "x", "args": []}', JSON, ["json"])


@pytest.mark.parametrize("headers", [[1, 2], "task", 5])
def test_headers_that_are_not_a_mapping_are_invalid_messages(headers: Any) -> None:
    with raises(errors.InvalidMessage, "headers must be a mapping"):
        _core.decode_task(headers, _body([], {}, {}), JSON, ["json"])


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({"a": 1}, ("protocol 2 body", "[args, kwargs, embed]", "a map")),
        ([[], {}, {}, {}], ("[args, kwargs, embed]", "4 items")),
        ([[]], ("1 items",)),
        ("text", ("[args, kwargs, embed]", "a str")),
    ],
)
def test_bad_body_shapes_are_invalid_messages(body: Any, fragments: tuple[str, ...]) -> None:
    with raises(errors.InvalidMessage, *fragments):
        _core.decode_task(HEADERS, json.dumps(body).encode(), JSON, ["json"])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [({"a": 1}, "a map"), ("ab", 'the string "ab"'), (5, "the number 5"), (True, "a bool")],
)
def test_args_that_are_not_a_list_are_invalid_messages(args: Any, fragment: str) -> None:
    with raises(errors.InvalidMessage, "task args must be a list", fragment):
        _core.decode_task(HEADERS, _body(args, {}, {}), JSON, ["json"])


@pytest.mark.parametrize(("kwargs", "fragment"), [([1], "a list"), ("x", '"x"'), (1.5, "float")])
def test_kwargs_that_are_not_a_mapping_are_invalid_messages(kwargs: Any, fragment: str) -> None:
    with raises(errors.InvalidMessage, "task kwargs must be a mapping", fragment):
        _core.decode_task(HEADERS, _body([], kwargs, {}), JSON, ["json"])


def test_kwargs_with_non_string_keys_are_invalid_messages() -> None:
    body = _core.dumps([[], {1: "x"}, {}], "msgpack")
    with raises(errors.InvalidMessage, "kwargs keys must be strings", "the number 1"):
        _core.decode_task(HEADERS, body, MSGPACK, BOTH)


@pytest.mark.parametrize(("embed", "fragment"), [([], "a list"), (3, "the number 3"), ("e", '"e"')])
def test_embed_that_is_not_a_mapping_is_an_invalid_message(embed: Any, fragment: str) -> None:
    with raises(errors.InvalidMessage, "embed", "must be a mapping", fragment):
        _core.decode_task(HEADERS, _body([], {}, embed), JSON, ["json"])


@pytest.mark.parametrize(
    ("embed", "fragments"),
    [
        ({"callbacks": 5}, ("`callbacks`", "list of signatures", "the number 5")),
        ({"errbacks": "x"}, ("`errbacks`", "list of signatures")),
        ({"chain": {"task": "t"}}, ("`chain`", "list of signatures", "a map")),
        ({"callbacks": [1]}, ("`callbacks`", "signature", "the number 1")),
        ({"chord": [1]}, ("`chord`", "signature mapping", "a list")),
    ],
)
def test_embed_entries_of_the_wrong_type_are_invalid_messages(
    embed: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    with raises(errors.InvalidMessage, *fragments):
        _core.decode_task(HEADERS, _body([], {}, embed), JSON, ["json"])


def test_v2_body_of_two_items_and_null_parts_decode() -> None:
    msg = _core.decode_task(HEADERS, b"[null, null]", JSON, ["json"])
    assert (msg.args, msg.kwargs, msg.embed) == ((), {}, EMPTY_EMBED)


def test_decode_task_checks_accept_before_decoding() -> None:
    body = _core.dumps([[1], {}, {}], "msgpack")
    with raises(errors.ContentDisallowed, "msgpack", "accept_content"):
        _core.decode_task(HEADERS, body, MSGPACK, ["json"])
    assert _core.decode_task(HEADERS, body, MSGPACK, BOTH).args == (1,)
    with raises(errors.UnknownContentType, "application/bogus"):
        _core.decode_task(HEADERS, body, "application/bogus", BOTH)
    with raises(errors.InvalidMessage, PICKLE, "fastq.serialization"):
        _core.decode_task(HEADERS, b"\x80\x04N.", PICKLE, ["json", "pickle"])


def test_decode_task_reports_malformed_bodies_as_decode_errors() -> None:
    with raises(errors.DecodeError, "application/json", "EOF"):
        _core.decode_task(HEADERS, b"[[1], {", JSON, ["json"])
    with raises(errors.DecodeError, "application/x-msgpack"):
        _core.decode_task(HEADERS, b"\x93\x91", MSGPACK, BOTH)
    with raises(errors.DecodeError, "nested deeper than 127"):
        _core.decode_task(HEADERS, b"[" * 100_000, JSON, ["json"])


@pytest.mark.parametrize(
    ("args", "kwargs", "embed", "fragments"),
    [
        ({"a": 1}, {}, None, ("task args must be a list", "a map")),
        ([], [1], None, ("task kwargs must be a mapping",)),
        ([], {}, [], ("embed", "mapping")),
        ([], {1: 2}, None, ("kwargs keys must be strings",)),
    ],
)
def test_encoders_check_the_message_shape(
    args: Any, kwargs: Any, embed: Any, fragments: tuple[str, ...]
) -> None:
    with raises(errors.InvalidMessage, *fragments):
        _core.encode_task_message(HEADERS, args, kwargs, embed)
    with raises(errors.InvalidMessage, *fragments):
        _core.encode_task_envelope(HEADERS, args, kwargs, embed)


def test_encoders_require_task_and_id() -> None:
    with raises(errors.InvalidMessage, "`task` header is missing"):
        _core.encode_task_message({"id": "i"}, [], {})
    with raises(errors.InvalidMessage, "`id` header is missing"):
        _core.encode_task_envelope({"task": "t"}, [], {})


def test_encoders_report_unencodable_arguments() -> None:
    with raises(errors.EncodeError, "type set"):
        _core.encode_task_message(HEADERS, [{1}], {})
    with raises(errors.EncodeError, "msgpack", "datetime"):
        _core.encode_task_envelope(HEADERS, [datetime(2024, 1, 1)], {}, serializer="msgpack")
    with raises(errors.EncodeError, "pickle"):
        _core.encode_task_message(HEADERS, [], {}, serializer="pickle")


def test_encode_task_message_returns_completed_headers_and_body() -> None:
    headers, body = _core.encode_task_message(HEADERS, (1, "a"), {"k": [2]})
    assert headers["task"] == "proj.add"
    assert headers["root_id"] == "id-1"
    assert headers["stamps"] == {}
    assert list(headers)[:3] == ["task", "id", "lang"]
    assert json.loads(body) == [[1, "a"], {"k": [2]}, EMPTY_EMBED]
    _, packed = _core.encode_task_message(HEADERS, [b"\x00"], {}, None, "msgpack")
    assert _core.loads(packed, MSGPACK) == [[b"\x00"], {}, EMPTY_EMBED]


# -- envelopes -----------------------------------------------------------------------------------
def _envelope(payload: bytes, **overrides: Any) -> bytes:
    env: dict[str, Any] = {
        "body": base64.b64encode(payload).decode(),
        "content-encoding": "utf-8",
        "content-type": JSON,
        "headers": dict(HEADERS),
        "properties": {
            "correlation_id": "id-1",
            "reply_to": "oid",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "celery"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": "tag-1",
        },
    }
    env.update(overrides)
    return json.dumps(env).encode()


def test_envelope_roundtrip() -> None:
    data = _core.encode_task_envelope(
        HEADERS,
        [1, b"\xff"],
        {"when": date(2024, 1, 2)},
        routing_key="q",
        priority=3,
        reply_to="oid",
        properties={"expiration": "60000"},
    )
    env, msg = _core.decode_task_envelope(data, ["json"])
    assert (env.routing_key, env.exchange, env.priority) == ("q", "", 3)
    assert env.content_type == JSON and env.content_encoding == "utf-8"
    assert env.properties["reply_to"] == "oid"
    assert env.properties["correlation_id"] == "id-1"
    assert env.properties["expiration"] == "60000"
    assert env.properties["body_encoding"] == "base64"
    assert env.delivery_tag is not None and len(env.delivery_tag) == 36
    assert env.redelivered is False
    assert msg.args == (1, b"\xff")
    assert msg.kwargs == {"when": date(2024, 1, 2)}
    raw = json.loads(data)
    assert base64.b64decode(raw["body"]) == env.body


def test_envelope_headers_are_the_sent_ones_and_the_message_has_celerys_defaults() -> None:
    sent = {**HEADERS, "x-custom": [1], "retries": 2}
    env, msg = _core.decode_task_envelope(_envelope(_body([], {}, {}), headers=sent), ["json"])
    assert env.headers == sent
    assert list(env.headers) == list(sent)
    assert msg.headers["x-custom"] == [1]
    assert msg.headers["retries"] == 2
    assert msg.headers["stamps"] == {}
    assert len(msg.headers) == 20
    assert env.headers is not msg.headers
    assert env.headers is env.headers  # converted once


def test_protocol_names_are_shared_python_strings() -> None:
    # The Rust binding interns every v2 header, embed and property name (from fastq-core's lists
    # of them): two decodes must hand out the very same key objects.
    data = _core.encode_task_envelope(HEADERS, [], {})
    first, second = (_core.decode_task_envelope(data, ["json"]) for _ in range(2))
    for a, b in ((first[1].headers, second[1].headers), (first[1].embed, second[1].embed)):
        assert len(a) >= 4
        assert all(x is y for x, y in zip(a, b, strict=True)), [x for x in a]
    props = zip(first[0].properties, second[0].properties, strict=True)
    assert all(x is y for x, y in props)


def test_protocol_1_envelope_keeps_its_own_headers() -> None:
    v1 = json.dumps({"task": "proj.add", "id": "v1", "args": [1], "kwargs": {}}).encode()
    env, msg = _core.decode_task_envelope(_envelope(v1, headers={"x": 1}), ["json"])
    assert env.headers == {"x": 1}
    assert (msg.protocol, msg.task, msg.args, msg.headers["x"]) == (1, "proj.add", (1,), 1)


def test_envelope_without_base64_body_encoding_is_read_as_text() -> None:
    data = json.dumps({"body": "[[1],{},{}]", "headers": HEADERS, "properties": {}}).encode()
    env, msg = _core.decode_task_envelope(data, ["json"])
    assert env.body == b"[[1],{},{}]"
    assert msg.args == (1,)


def test_envelope_redelivered_flag() -> None:
    data = _envelope(_body([], {}, {}), headers={**HEADERS, "redelivered": True})
    assert _core.decode_task_envelope(data, ["json"])[0].redelivered is True


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        (b"not json", ("Redis envelope is not valid kombu JSON",)),
        (b"[1, 2]", ("Redis envelope",)),
        (b'{"body": "e30=", "content-type": 5}', ("Redis envelope", "expected a string")),
        (b'{"body": 5}', ("Redis envelope", "expected a string")),
        (b'{"body": "e30=", "properties": 3}', ("`properties` must be a JSON object",)),
        (b'{"body": "e30=", "headers": [1]}', ("`headers` must be a JSON object",)),
        (b'{"body": "e30=", "headers": "h"}', ("`headers` must be a JSON object",)),
        (b'{"body": "', ("Redis envelope",)),
        (b"\xff\xfe{}", ("Redis envelope",)),
        (b"[" * 100_000, ("Redis envelope",)),
    ],
)
def test_malformed_envelopes_are_invalid_messages(data: bytes, fragments: tuple[str, ...]) -> None:
    with raises(errors.InvalidMessage, *fragments):
        _core.decode_task_envelope(data, ["json"])


@pytest.mark.parametrize("body", ["!!!", "e30", "e3=0", "ZW=="])
def test_envelope_body_that_is_not_base64_is_an_invalid_message(body: str) -> None:
    data = _envelope(b"", body=body)
    with raises(errors.InvalidMessage, "envelope body is not valid base64"):
        _core.decode_task_envelope(data, ["json"])


def test_envelope_content_type_is_checked() -> None:
    with raises(errors.UnknownContentType, "application/bogus"):
        _core.decode_task_envelope(_envelope(b"[]", **{"content-type": "application/bogus"}), BOTH)
    with raises(errors.ContentDisallowed, PICKLE, "pickle"):
        _core.decode_task_envelope(_envelope(b"\x80\x04N.", **{"content-type": PICKLE}), BOTH)
    with raises(errors.ContentDisallowed, MSGPACK):
        _core.decode_task_envelope(_envelope(b"\x90", **{"content-type": MSGPACK}), ["json"])


def test_envelope_with_a_bad_task_body() -> None:
    with raises(errors.DecodeError, "application/json", "EOF"):
        _core.decode_task_envelope(_envelope(b"[[1],"), ["json"])
    with raises(errors.InvalidMessage, "task args must be a list"):
        _core.decode_task_envelope(_envelope(_body({}, {}, {})), ["json"])
    with raises(errors.InvalidMessage, "`task` header"):
        _core.decode_task_envelope(_envelope(_body([], {}, {}), headers={"task": 1}), ["json"])
