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

# -- RabbitMQ ------------------------------------------------------------------------------------
@final
class AmqpDelivery:
    """One message from RabbitMQ (the same fields as the Redis consumer's ``Delivery``)."""

    delivery_tag: str
    """``"<channel generation>.<AMQP delivery tag>"``; acks for a closed channel are dropped."""
    queue: str
    priority: int
    redelivered: bool
    content_type: str
    properties: dict[str, Any]
    """``correlation_id``, ``reply_to``, ``delivery_mode``, ``priority``, ``expiration`` and
    ``delivery_info`` (``exchange``, ``routing_key``, ``redelivered``)."""
    reply_to: str | None
    correlation_id: str | None
    message: TaskMessage | None
    error: str | None
    error_kind: str | None
    """The ``fastq.errors`` class name of ``error`` (``DecodeError``, ``ContentDisallowed``…)."""
    task_id: str | None
    task_name: str | None
    raw: bytes

@final
class AmqpConsumer:
    """A worker process's RabbitMQ consumer (lapin on a runtime it starts itself).

    Declares ``queues`` (dicts: ``name``, ``exchange``, ``exchange_type``, ``routing_key``,
    ``durable``, ``auto_delete``, ``arguments``), sets ``basic.qos(prefetch, global_qos)`` and
    consumes them. Raises ``BrokerConnectionError`` when the broker is unreachable or the
    connection broke (the next ``fetch`` reconnects and redeclares), ``ConfigurationError`` when
    the broker refuses a declaration.
    """

    def __init__(
        self,
        url: str,
        queues: list[dict[str, Any]],
        *,
        accept: list[str],
        prefetch: int,
        consumer_tag: str,
        global_qos: bool = True,
        heartbeat: int | None = None,
        connect_timeout: float = 10.0,
    ) -> None: ...
    def fetch(self, timeout: float) -> list[AmqpDelivery]:
        """Waits up to ``timeout`` seconds (GIL released); returns every delivery received."""
    def ack(self, delivery_tags: list[str]) -> None:
        """Acks (``multiple=true`` for runs from the oldest outstanding tag); tags of a closed
        channel are dropped with a warning (RabbitMQ redelivers those messages)."""
    def reject(self, delivery_tag: str, requeue: bool) -> None: ...
    def restore_unacked(self) -> int:
        """Requeues everything this consumer holds; returns how many."""
    @property
    def in_flight(self) -> int: ...
    @property
    def generation(self) -> int:
        """1 for the first connection, +1 on every reconnection."""
    def close(self) -> None: ...
