"""The protocol 2 header schema has one source, the Rust core's ``V2_HEADERS``/``EMBED_KEYS``:
what Python builds must follow it (the bindings intern those very lists, see
``test_codec.test_protocol_names_are_shared_python_strings``)."""

from __future__ import annotations

from fastq import App, _core, protocol


def test_python_builds_the_headers_of_the_core_in_its_order() -> None:
    headers = protocol.task_headers("proj.add", "id-1", (1, 2), {})
    assert tuple(headers) == _core.V2_HEADERS


def test_build_message_embeds_the_core_keys() -> None:
    app = App("schema", broker="memory://", set_as_current=False)
    message = app.build_message("proj.add", (1, 2))
    assert message.embed is not None and tuple(message.embed) == _core.EMBED_KEYS
