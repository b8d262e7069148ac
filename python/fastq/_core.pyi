"""Types of ``fastq._core``, the compiled Rust extension (crate ``rust/fastq-py``).

Every function raises the ``fastq.errors`` classes: ``DecodeError`` (bytes that are not valid for
their content type), ``InvalidMessage`` (valid data that is not a task message),
``ContentDisallowed`` (a type not in ``accept``), ``UnknownContentType`` and ``EncodeError``.
"""

import os
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any, Literal, final

# The module's own list (PyO3 fills it from every `m.add*` in lib.rs); stubtest compares the two.
__all__ = [
    "EMBED_KEYS",
    "V2_HEADERS",
    "AmqpConsumer",
    "AmqpPublisher",
    "Delivery",
    "Envelope",
    "EventLines",
    "RedisConsumer",
    "RedisKeys",
    "RedisPublisher",
    "RedisResultStore",
    "RedisSettler",
    "TaskMessage",
    "__version__",
    "amqp_connect_failure",
    "compression_type",
    "count_events",
    "decode_task",
    "decode_task_envelope",
    "dumps",
    "encode_event_lines",
    "encode_events",
    "encode_held",
    "encode_task_envelope",
    "encode_task_message",
    "loads",
    "redis_event_command",
    "renew_leases",
    "restore_consumer",
    "restore_visible",
    "split_reports",
    "stamp_events",
]

__version__: str

V2_HEADERS: tuple[str, ...]
"""Every protocol 2 header a Celery 5.x client sends, in its order (``fastq-core``'s
``protocol::V2_HEADERS``); a decoded message has them all, missing ones at Celery's defaults."""
EMBED_KEYS: tuple[str, ...]
"""The keys of a protocol 2 body's third item: ``callbacks``, ``errbacks``, ``chain``, ``chord``."""

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

def encode_events(
    events: Iterable[tuple[str, float, Mapping[str, Any]]], common: bytes
) -> list[bytes]:
    """Celery's events, each ``(type, timestamp, fields)``, as JSON objects without their clock:
    ``{"type": …, "timestamp": …, <common>, <fields>}``, where ``common`` holds the members every
    event of the sender shares (``b'"hostname":"w@h","utcoffset":-1,"pid":7'``), written as
    given. ``fields`` is a dict; a value JSON cannot carry raises ``EncodeError``."""

def encode_event_lines(
    events: Iterable[tuple[str, float, Mapping[str, Any]]], common: bytes, prefix: bytes
) -> bytes:
    """``encode_events`` as lines, each ``<prefix><JSON>\\n`` (JSON holds no raw newline): a
    prefork child's ``E`` report lines."""

def stamp_events(events: list[bytes], clock: int) -> bytes:
    """A ``task.multi`` body: the JSON array of the events in ``events``, each with ``"clock"``
    spliced in as its first member, numbered from ``clock`` on. An item is one encoded event
    (``encode_events``'), or several each on a line of its own (a prefork child's ``E`` lines,
    ``split_reports``). An event that is not a JSON object ``{…}`` is left out, and its clock
    number with it."""

def count_events(events: list[bytes]) -> int:
    """How many events ``events`` hold: ``stamp_events``' clock numbers (non-empty lines)."""

def split_reports(data: bytes, prefix: bytes) -> tuple[bytes, list[bytes], bytes]:
    """A prefork child's report chunk in one pass: its ``<prefix>`` lines (task events), prefix
    off and each ending in ``\\n``, together; its other lines without their ``\\n``; and what
    follows the last ``\\n`` (a line not whole yet)."""

@final
class EventLines:
    """A prefork child's task events as report lines ``<prefix><JSON>\\n``, held until its next
    report carries them: each written where it happens, in one call, into one buffer. A call
    that fails (``EncodeError``, or ``UnicodeEncodeError`` for a lone surrogate) leaves nothing
    of its events behind. ``len()`` is the bytes held."""

    def __new__(cls, common: bytes, prefix: bytes) -> EventLines:
        """``common``: the members every event of the sender shares (``encode_events``)."""
    def received(self, deliveries: Iterable[Any], tasks: Container[str], timestamp: float) -> None:
        """The ``task-received`` of each delivery of a fetched batch whose message decoded and
        whose task is in ``tasks``, all at ``timestamp``: Celery's fields, ``args``/``kwargs``
        from the ``argsrepr``/``kwargsrepr`` headers or else the arguments' reprs cut to 1024
        characters. A header JSON cannot carry raises ``EncodeError``."""
    def started(self, uuid: str) -> None:
        """The ``task-started`` of task ``uuid``, now."""
    def succeeded(self, uuid: str, result: Any, runtime: float) -> None:
        """The ``task-succeeded`` of task ``uuid``, now: ``result``'s repr (cut to 1024
        characters), ``runtime`` in seconds."""
    def push(self, lines: bytes) -> None:
        """Lines encoded elsewhere (``encode_event_lines``), held with the rest."""
    def take(self) -> bytes:
        """Everything held; nothing is held after."""
    def __len__(self) -> int: ...

def redis_event_command(
    channel: str, body: bytes, hostname: str, exchange: str, routing_key: str
) -> bytes:
    """The RESP ``PUBLISH channel <message>`` of an event message on Redis: kombu's transient
    envelope around the JSON ``body`` (base64, header ``hostname``, a fresh ``delivery_tag``),
    written to a connection as it is."""

def encode_held(deliveries: list[Any]) -> bytes | None:
    """The JSON array of ``fastq.worker.held`` entries of ``deliveries`` (those without a task
    id left out), or None when Python must read them: not this extension's deliveries, a message
    with an ``eta`` header, text that is not UTF-8."""

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

def compression_type(name: str) -> str:
    """kombu's MIME type for a compression name (``"zlib"`` -> ``"application/x-gzip"``); an
    unknown name raises ``fastq.errors.EncodeError``. A ``compression`` header set to it makes
    every encoder compress the body, and every decoder decompresses such a body."""

def decode_task_envelope(data: bytes, accept: list[str]) -> tuple[Envelope, TaskMessage]:
    """Decode a kombu Redis envelope and the task message inside it."""

# -- Redis consumer --------------------------------------------------------------------------
# Broker calls raise ``fastq.errors.BrokerConnectionError`` when Redis cannot be reached, went
# away or is not ready (the URL in the message has its password hidden; the next call
# reconnects), ``fastq.errors.BrokerError`` when Redis refuses a command, and
# ``fastq.errors.ConfigurationError`` for arguments that cannot work.

@final
class Delivery:
    """One message fetched by ``RedisConsumer`` or ``AmqpConsumer``, decoded as far as it goes.

    A message that cannot be decoded still arrives, with ``message`` None and ``error`` saying
    why, so the worker can store a failure for ``task_id`` and ack it.
    """

    delivery_tag: str
    """Redis: the kombu delivery tag to ack or reject; "" only when the envelope could not be
    read well enough to record it as unacknowledged (it was moved to the ``fastq.malformed`` list
    and there is nothing to ack). RabbitMQ: ``"<channel generation>.<AMQP delivery tag>"``; acks
    for a closed channel are dropped."""
    queue: str
    """The queue it came from: no priority suffix, no key prefix."""
    exchange: str
    """``properties.delivery_info.exchange`` ("" for the default exchange)."""
    priority: int
    """Redis: ``properties.priority`` clamped to 0 to 9, lower numbers served first. RabbitMQ:
    the message priority (0 when unset)."""
    redelivered: bool
    content_type: str
    properties: dict[str, Any]
    """Built on first access. Redis: the envelope's properties. RabbitMQ: ``correlation_id``,
    ``reply_to``, ``delivery_mode``, ``priority``, ``expiration`` and ``delivery_info``
    (``exchange``, ``routing_key``, ``redelivered``)."""
    reply_to: str | None
    correlation_id: str | None
    message: TaskMessage | None
    """The task message, or None when it could not be decoded (see ``error``)."""
    error: str | None
    """Why it could not be decoded, as a sentence."""
    error_kind: str | None
    """The ``fastq.errors`` class of ``error``: ``DecodeError``, ``InvalidMessage``,
    ``ContentDisallowed`` or ``UnknownContentType``."""
    task_id: str | None
    """The task id, from the headers (or ``correlation_id``) even when the body is bad."""
    task_name: str | None
    raw: bytes
    """Redis: the envelope exactly as it was stored. RabbitMQ: the message body."""

@final
class RedisConsumer:
    """The worker's consumer of kombu-layout Redis queues, compatible with Celery.

    Each fetched message is popped and recorded in kombu's ``unacked``/``unacked_index`` (and in
    this consumer's own set ``fastq.consumer.<consumer_id>``) in one atomic script, so it is
    always either in its queue or unacknowledged. Connects on first use; after a connection
    error the next call reconnects. Meant for one thread.
    """

    def __new__(
        cls,
        url: str,
        queues: list[str],
        *,
        accept: list[str],
        prefetch: int,
        consumer_id: str,
        global_keyprefix: str = "",
        visibility_timeout: float = 3600.0,
    ) -> RedisConsumer:
        """``url``: ``redis://[:password@]host[:port][/db]``; ``accept``: serializer names or MIME
        types (``accept_content``); ``prefetch``: how many messages may be held unacknowledged;
        ``consumer_id``: unique per live consumer (e.g. hostname and pid), for
        ``restore_consumer``."""

    def fetch(self, timeout: float) -> list[Delivery]:
        """Up to ``prefetch - in_flight`` deliveries, the lowest priority number first, waiting
        up to ``timeout`` seconds for the first one (0: do not wait). Returns [] at once when the
        window is full. The GIL is released while waiting and decoding.

        The one step that is not atomic: when the queues are empty it blocks in ``BRPOP`` and
        records the popped message right after; if this process dies in between, that message
        is lost (as in kombu).

        After a dropped connection, the fetch that reaches Redis again first sends the acks and
        requeues decided meanwhile, then puts back at the head of their queues the messages
        recorded for this consumer that it does not hold (a claim whose reply was lost). Raises
        ``BrokerConnectionError`` while Redis cannot be reached.

        A queue whose key holds another type than a list is skipped (the others are served) and
        logged on ``fastq.worker`` when it begins, and when it stops, refusing its pops."""

    def ack(self, delivery_tags: list[str], wait: bool = True) -> None:
        """Acknowledge these tags in one round trip; unknown or empty tags are ignored.

        ``wait=False`` writes the ack without waiting for the reply (read before the next
        command): the early ack before a task runs, at no round trip's cost.

        Never raises for a dropped connection: the acks are kept (as are unread ones whose
        connection died) and sent again by the next ``fetch``; the tags leave the window at once.
        """

    def release(self, delivery_tags: list[str]) -> None:
        """Forget these tags here without telling Redis: the prefork supervisor acknowledges
        them for this consumer (``RedisSettler``), from the start reports it reads anyway. Their
        window slots are free at once; ``restore_unacked`` and the reconcile after a dropped
        connection leave them alone until the supervisor's ack lands."""

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Without ``requeue``, the same as ``ack``. With it, the message goes to the back of its
        queue marked redelivered. As ``ack``, kept for the next ``fetch`` on a dropped
        connection."""

    def restore_unacked(self) -> int:
        """Warm shutdown: put every message this consumer holds back at the head of its queue,
        marked redelivered, the first taken served first. Returns how many were restored."""

    @property
    def in_flight(self) -> int:
        """Messages delivered and not yet acked, rejected or restored by this consumer."""

    @property
    def prefetch(self) -> int:
        """The window: how many messages may be held unacknowledged."""

    @prefetch.setter
    def prefetch(self, prefetch: int) -> None:
        """A new window for the next fetches (at least 1); nothing held is given back."""

    @property
    def visibility_timeout(self) -> float:
        """Seconds, for the worker's periodic ``restore_visible``; fetch does not use it."""

    def close(self) -> None:
        """Drop the connection (the next call opens a new one); held messages stay held."""

def restore_consumer(url: str, consumer_id: str, global_keyprefix: str = "") -> int:
    """Put every message a dead consumer held back at the head of its queue, marked
    redelivered; returns how many. The supervisor calls it when a child exits."""

def renew_leases(
    url: str, consumer_ids: list[str], visibility_timeout: float, global_keyprefix: str = ""
) -> int:
    """Renew the lease of every message the live consumers ``consumer_ids`` hold: their
    ``unacked_index`` scores become now (plain unix time, as Celery reads them), and their sets
    get a TTL of a few visibility timeouts again. Returns how many messages were renewed."""

def restore_visible(url: str, visibility_timeout: float, global_keyprefix: str = "") -> int:
    """kombu's visibility restore: under kombu's ``unacked_mutex`` lock, put back every message
    unacknowledged for longer than ``visibility_timeout`` seconds, whoever holds it. Returns how
    many (0 when another process holds the lock).

    Entries that cannot be restored (unreadable, or no queue bound for their exchange and
    routing key) are moved to the ``fastq.unrestorable`` list rather than dropped."""

# -- RabbitMQ ------------------------------------------------------------------------------------
def amqp_connect_failure(
    failure: Literal[
        "login_refused",
        "vhost_refused",
        "broker_refused",
        "port_refused",
        "untrusted",
        "client_certificate_refused",
        "not_tls",
        "unresolved",
        "no_answer",
        "closed_in_handshake",
        "other",
    ],
    detail: str,
    *,
    host: str,
    port: int,
    user: str,
    vhost: str,
    tls: bool,
) -> str:
    """Why a connection to ``host:port`` failed, in the words the Rust consumer and publisher
    use; ``detail`` is what the client or the broker said. fastq's py-amqp connections sort
    their errors into ``failure`` (``fastq.brokers.amqp_connection.why_not_connected``)."""

@final
class AmqpConsumer:
    """A worker process's RabbitMQ consumer (lapin on a runtime it starts itself).

    Declares ``queues`` (dicts: ``name``, ``exchange``, ``exchange_type``, ``routing_key``,
    ``durable``, ``auto_delete``, ``arguments``), sets ``basic.qos(prefetch, global_qos)`` and
    consumes them. Raises ``BrokerConnectionError`` when the broker is unreachable or the
    connection broke (the next ``fetch`` reconnects and redeclares), ``ConfigurationError`` when
    the broker refuses a declaration.

    ``url`` may be a list: the nodes of a cluster. The first connection tries them from the
    first, each in turn until one answers; after a lost connection the next one starts at
    another node (``failover``: ``round-robin``, the next in the list, or ``shuffle``, one at
    random), the lost one being tried last.
    """

    def __new__(
        cls,
        url: str | list[str],
        queues: list[dict[str, Any]],
        *,
        accept: list[str],
        prefetch: int,
        consumer_tag: str,
        global_qos: bool = True,
        heartbeat: int | None = None,
        connect_timeout: float = 10.0,
        tls: Mapping[str, str | os.PathLike[str]] | None = None,
        failover: str = "round-robin",
    ) -> AmqpConsumer:
        """``tls``: ``ca_certs``, ``certfile``, ``keyfile`` (PEM files) for ``amqps://``."""
    def fetch(self, timeout: float) -> list[Delivery]:
        """Waits up to ``timeout`` seconds (GIL released); returns every delivery received."""
    def ack(self, delivery_tags: list[str], wait: bool = True) -> None:
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
    @property
    def broker(self) -> str | None:
        """The URL of the node connected to (password redacted); None while disconnected."""
    def close(self) -> None: ...

@final
class AmqpPublisher:
    """The client's RabbitMQ publisher: one lapin connection and channel, opened on the first
    publish in this process (a forked child opens its own and leaves the parent's alone) and
    reopened when the broker closed it.

    ``publish_many`` encodes the messages, declares what they need (each queue registered with
    ``add_queue``, with its exchange and binding, once per connection; a route's other exchange
    as direct and durable), then publishes them all with Celery's properties: ``content_type``
    and ``content_encoding`` of the serializer, the protocol 2 headers, ``delivery_mode``,
    ``priority``, ``correlation_id`` (the task id), ``reply_to`` and the message's
    ``properties`` (``expiration``…; names that are not AMQP properties are ignored, as
    py-amqp does). It returns once every message was written to the socket, py-amqp's
    guarantee, so nothing is lost when the process exits right after; with ``confirm`` (the
    default) once the broker acked every one, so nothing is lost when the broker dies either.
    The GIL is released throughout; threads take turns.

    Raises ``EncodeError``/``InvalidMessage`` for a message that cannot be sent (nothing of the
    batch is), ``BrokerConnectionError`` when the broker cannot be reached or the connection
    broke (with ``retry``, a connection lost part-way is reopened once and the messages not yet
    out are sent again), ``ConfigurationError`` when the broker refuses a declaration or a
    publish (queue arguments that differ from the existing queue's), ``BrokerError`` for a
    nacked message (confirms on).
    """

    def __new__(
        cls,
        url: str | list[str],
        *,
        confirm: bool = True,
        heartbeat: int | None = None,
        connect_timeout: float = 10.0,
        connection_name: str | None = None,
        timeout: float | None = None,
        tls: Mapping[str, str | os.PathLike[str]] | None = None,
        failover: str = "round-robin",
    ) -> AmqpPublisher:
        """``url``: an RFC AMQP URI (``AmqpParams.lapin_url()``), or a list of them (a
        cluster's nodes, tried and failed over as ``AmqpConsumer`` does); ``heartbeat`` None
        takes the broker's proposal; ``connection_name`` is shown by ``rabbitmqctl list_connections
        client_properties``; ``timeout`` bounds a wait without progress (for the next write
        or confirm of a call), None waits as long as the connection lives; ``tls`` as
        ``AmqpConsumer`` takes it."""
    def add_queue(self, queue: dict[str, Any]) -> None:
        """Registers how to declare a queue (the dict ``AmqpConsumer`` takes); it is declared on
        the next publish to it."""
    def publish_many(self, messages: Sequence[Any], *, retry: bool = False) -> int:
        """Publishes ``fastq.protocol.OutgoingMessage``s in order; returns how many times it
        reconnected after losing the connection part-way (0 or 1)."""
    def close(self, *, wait: bool = True) -> None:
        """Closes the connection (RabbitMQ takes every frame sent before it) and stops the
        runtime; the next publish opens new ones. ``wait=False`` leaves a publisher another
        thread is using alone (at interpreter exit)."""
    @property
    def connected(self) -> bool:
        """True while this process holds an open connection (as far as lapin knows)."""
    @property
    def connection_name(self) -> str: ...

@final
class RedisPublisher:
    """The client's Redis publisher: task messages ``LPUSH``ed as kombu envelopes onto the list
    of their queue's priority step (kombu's key layout, ``global_keyprefix`` applied), the
    queue's binding (``_kombu.binding.<exchange>``) recorded the first time this process sends
    to it, a batch in one pipelined round trip. One connection, opened on the first publish in
    this process (a forked child opens its own and leaves the parent's alone); threads take
    turns. The GIL is released for encoding and I/O.

    A call returns once Redis answered every command. Raises ``EncodeError`` for a message that
    cannot be encoded (nothing of the batch is sent), ``BrokerError`` when Redis refused a
    command (out of memory…), ``BrokerConnectionError`` when it cannot be reached (a connection
    found dead when reused is reopened and the call sent once more), ``ConfigurationError`` for
    an unusable URL. Messages name the URL with its password hidden.
    """

    def __new__(cls, url: str, *, global_keyprefix: str = "") -> RedisPublisher:
        """Parses ``url``; connects on the first publish."""
    def publish(self, message: Any) -> None:
        """Publishes one ``fastq.protocol.OutgoingMessage``."""
    def publish_many(self, messages: Sequence[Any]) -> None:
        """Publishes ``fastq.protocol.OutgoingMessage``s in order, in one round trip."""
    def close(self) -> None:
        """Closes this process's connection; the next publish opens a new one."""

@final
class RedisResultStore:
    """The worker's result stores for the Redis backend: the backend's store script run by
    ``EVALSHA`` on each ``(key, meta)``, a batch in one pipelined round trip (a server that lost
    the script gets it loaded and the batch again). One connection per process, opened on the
    first store (a forked child opens its own); threads take turns; the GIL is released for the
    round trip. A store that fails raises ``BackendError`` (a connection found dead when reused
    is reopened and the batch sent once more); an unusable URL, ``ConfigurationError``.
    """

    def __new__(cls, url: str, script: str) -> RedisResultStore:
        """Parses ``url``; connects on the first store."""
    @property
    def sha(self) -> str:
        """The script's SHA1."""
    def store(self, items: list[tuple[str, bytes]], ttl: int) -> list[tuple[int, str]]:
        """Stores each ``(key, meta)`` with ``ttl`` (seconds, 0: none), in order, and publishes it
        for waiting clients; a key that held something goes through the store script. Returns
        ``(index, reason)`` of the items Redis refused for their key alone (``WRONGTYPE``: a
        value of another type there), the others stored. Raises ``BackendError`` ("cannot store
        results in <url>: <reason>") for any other failure."""
    def close(self) -> None:
        """Closes this process's connection; the next store opens a new one."""

@final
class RedisSettler:
    """The prefork supervisor's acknowledgements for its children's consumers: the messages
    they started with an early ack, or finished before dying, taken out of ``unacked``, the
    index and each consumer's set in one transaction per batch. One connection, opened on the
    first ack; the GIL is released for the round trip. Raises ``BrokerConnectionError`` when
    Redis cannot be reached (the batch can be sent again: acks are idempotent)."""

    def __new__(cls, url: str, global_keyprefix: str = "") -> RedisSettler:
        """Parses ``url``; connects on the first ack."""
    def ack(self, batch: list[tuple[str, list[str]]]) -> None:
        """Acknowledges each ``(consumer_id, delivery_tags)``, all in one round trip."""
    def close(self) -> None:
        """Closes the connection; the next ack opens a new one."""

@final
class RedisKeys:
    """kombu's Redis key layout, and fastq's additions, under a ``global_keyprefix`` (the
    consumer's and publisher's own, from ``keys.rs``). With ``cluster=True``, fastq's Redis
    Cluster layout: every key of a queue carries ``{queue}`` as its hash tag, and the
    ack-emulation keys are per queue (``queue=`` required for them)."""

    def __new__(cls, global_keyprefix: str = "", cluster: bool = False) -> RedisKeys: ...
    @property
    def cluster(self) -> bool: ...
    def queue(self, queue: str, priority: int = 0) -> str:
        """The list a message of ``priority`` for ``queue`` waits in: ``queue`` for priority
        step 0, else ``queue + "\\x06\\x16" + step`` (the largest of kombu's steps 0, 3, 6, 9
        not above the priority, clamped to 0-9); ``{queue}`` on a cluster."""
    def queue_keys(self, queue: str) -> list[str]:
        """The lists of every priority step of ``queue``, step 0 first."""
    def unacked(self, queue: str | None = None) -> str:
        """HASH delivery tag -> ``[envelope, exchange, routing_key]``."""
    def unacked_index(self, queue: str | None = None) -> str:
        """ZSET of delivery tags scored by delivery time."""
    def consumer(self, consumer_id: str, queue: str | None = None) -> str:
        """SET of the delivery tags one consumer holds."""
    def delayed(self, queue: str | None = None) -> str:
        """ZSET of deferred ETA messages (``queue key NUL envelope``, the queue key unprefixed)
        scored by due time."""
    def quarantine(self, queue: str | None = None) -> str:
        """LIST of messages that killed their workers too often, newest first."""
