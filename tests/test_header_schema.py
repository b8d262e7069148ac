"""The protocol 2 header schema has one source, the Rust core's ``V2_HEADERS``/``EMBED_KEYS``:
what Python builds and what the bindings intern must follow it."""

from __future__ import annotations

from fastq import App, _core, protocol


def test_python_builds_the_headers_of_the_core_in_its_order() -> None:
    headers = protocol.task_headers("proj.add", "id-1", (1, 2), {})
    assert tuple(headers) == _core.V2_HEADERS


def test_build_message_embeds_the_core_keys() -> None:
    app = App("schema", broker="memory://", set_as_current=False)
    message = app.build_message("proj.add", (1, 2))
    assert message.embed is not None and tuple(message.embed) == _core.EMBED_KEYS


def test_decoded_headers_and_embed_keys_are_interned() -> None:
    """Every decode hands out the same key objects (no allocation per message); a key outside
    the schema is a new string each time."""
    unknown = "x-not-in-the-schema"
    headers = {**protocol.task_headers("proj.add", "id-2", (), {}), unknown: 1}
    body = _core.dumps([[], {}, dict.fromkeys(_core.EMBED_KEYS)])
    first, second = (_core.decode_task(headers, body, "application/json", ["json"]) for _ in "12")
    schema = {*_core.V2_HEADERS, *_core.EMBED_KEYS}
    keys = {k: k for k in [*first.headers, *first.embed]}
    again = [k for k in [*second.headers, *second.embed] if k in schema]
    assert len(again) == len(schema)
    assert all(keys[k] is k for k in again)
    assert next(k for k in second.headers if k == unknown) is not keys[unknown]
