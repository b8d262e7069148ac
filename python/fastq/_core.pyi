"""Types of ``fastq._core``, the compiled Rust extension (crate ``rust/fastq-py``).

Every function raises the ``fastq.errors`` classes: ``DecodeError`` (bytes that are not valid for
their content type), ``InvalidMessage`` (valid data that is not a task message),
``ContentDisallowed`` (a type not in ``accept``), ``UnknownContentType`` and ``EncodeError``.
"""

from typing import Any, final

__version__: str

@final
class TaskMessage:
    """A task message in the protocol 2 model; protocol 1 messages are converted on decode."""

    headers: dict[str, Any]
    """Every v2 header (``task``, ``id``, ``eta``…), missing ones at Celery's defaults."""
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    embed: dict[str, Any]
    """``callbacks``, ``errbacks``, ``chain`` and ``chord``."""
    protocol: int
    task: str
    id: str

@final
class Envelope:
    """A kombu Redis envelope with its body base64-decoded."""

    body: bytes
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    properties: dict[str, Any]
    delivery_tag: str | None
    exchange: str
    routing_key: str
    priority: int
    redelivered: bool

def dumps(obj: Any, serializer: str = "json") -> bytes:
    """Serialize with ``json`` (kombu's type markers) or ``msgpack``; names or MIME types."""

def loads(
    data: bytes, content_type: str = "application/json", accept: list[str] | None = None
) -> Any:
    """Deserialize ``data``; with ``accept``, types not listed raise ``ContentDisallowed``."""

def decode_envelope(data: bytes) -> Envelope: ...
def encode_envelope(
    body: bytes,
    content_type: str,
    content_encoding: str,
    headers: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
) -> bytes: ...
def encode_task_envelope(
    headers: dict[str, Any],
    args: Any,
    kwargs: Any,
    embed: dict[str, Any] | None = None,
    *,
    serializer: str = "json",
    exchange: str = "",
    routing_key: str = "celery",
    priority: int = 0,
    delivery_mode: int = 2,
    reply_to: str | None = None,
    properties: dict[str, Any] | None = None,
) -> bytes:
    """Build a protocol 2 task message inside a kombu Redis envelope: the bytes to LPUSH.

    ``headers`` needs ``task`` and ``id``; every other v2 header is filled with Celery's default.
    """

def encode_task_message(
    headers: dict[str, Any],
    args: Any,
    kwargs: Any,
    embed: dict[str, Any] | None = None,
    serializer: str = "json",
) -> tuple[dict[str, Any], bytes]:
    """Build a protocol 2 task message for AMQP: ``(completed headers, serialized body)``."""

def decode_task(
    headers: dict[str, Any] | None, body: bytes, content_type: str, accept: list[str]
) -> TaskMessage:
    """Decode a task body checked against ``accept``; v1 bodies become the v2 model."""

def task_from_parts(headers: dict[str, Any] | None, body: Any) -> TaskMessage:
    """Read a task message from a body Python already deserialized (pickle, when accepted)."""

def decode_task_envelope(data: bytes, accept: list[str]) -> tuple[Envelope, TaskMessage]:
    """Decode a kombu Redis envelope and the task message inside it."""
