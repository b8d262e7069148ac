"""The broker interface: publish task messages, and hand workers a consumer.

A broker knows queues, publishing, and how to get unacknowledged messages back; nothing above
it knows Redis or AMQP commands.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from fastq.errors import ConfigurationError

if TYPE_CHECKING:
    from fastq._core import TaskMessage
    from fastq.config import Config
    from fastq.control_channel import ControlChannel
    from fastq.protocol import OutgoingMessage


class Delivery(Protocol):
    """One message handed to a worker (the Rust consumers' ``Delivery`` has these fields)."""

    @property
    def delivery_tag(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def exchange(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def redelivered(self) -> bool: ...
    @property
    def content_type(self) -> str: ...
    @property
    def properties(self) -> dict[str, Any]: ...
    @property
    def reply_to(self) -> str | None: ...
    @property
    def correlation_id(self) -> str | None: ...
    @property
    def message(self) -> TaskMessage | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def error_kind(self) -> str | None: ...
    @property
    def task_id(self) -> str | None: ...
    @property
    def task_name(self) -> str | None: ...
    @property
    def raw(self) -> bytes: ...


class Consumer(Protocol):
    """A worker process's view of its queues, with a prefetch window."""

    def fetch(self, timeout: float) -> Sequence[Delivery]:
        """Up to the free part of the prefetch window; waits up to ``timeout`` when idle."""
        ...

    def ack(self, delivery_tags: list[str], wait: bool = True) -> None:
        """With ``wait=False`` the broker may confirm later (early acks before a task runs)."""
        ...

    def reject(self, delivery_tag: str, requeue: bool) -> None: ...
    def restore_unacked(self) -> int:
        """Puts every message this consumer holds back at the head of its queue."""
        ...

    @property
    def in_flight(self) -> int: ...
    def close(self) -> None: ...


class ReleasingConsumer(Consumer, Protocol):
    """A consumer whose early acks its prefork supervisor sends (``Broker.settler``)."""

    def release(self, delivery_tags: list[str]) -> None:
        """Forgets these tags here without telling the broker: the supervisor acknowledges them
        (it reads their start reports anyway), batched with the other children's."""
        ...


class WindowedConsumer(Consumer, Protocol):
    """A consumer whose window is only how much a fetch may claim (a broker that does not push,
    ``Broker.pushes``): the worker may resize it between fetches."""

    prefetch: int


class Settler(Protocol):
    """A prefork supervisor's acknowledgements for its children's consumers, batched."""

    def ack(self, batch: list[tuple[str, list[str]]]) -> None:
        """Acknowledges each ``(consumer_id, delivery_tags)``; idempotent, so a batch that
        raised can be sent again."""
        ...

    def close(self) -> None: ...


class EventPublisher(Protocol):
    """A broker's side of Celery's events (``fastq.events``): sends ``(routing_key, JSON body)``
    messages to the event exchange, in order."""

    def publish(self, messages: list[tuple[str, bytes]]) -> None: ...
    def close(self) -> None: ...


class Broker(ABC):
    """A transport: publishes task messages and creates consumers."""

    #: Where the consumers of its queues can be: "network" (any host), "machine" (processes of
    #: one host, as SQLite) or "process" (threads of one process, as memory://).
    consumers_within: ClassVar[str] = "network"
    #: The broker itself gives a dead consumer's unacknowledged messages back (RabbitMQ, when
    #: the channel closes), before the worker can settle those it had finished.
    returns_on_close: ClassVar[bool] = False
    #: The broker sends a consumer messages ahead of its fetches, up to its window (RabbitMQ's
    #: ``basic.consume``): they are the worker's from then on, though it has not fetched them.
    pushes: ClassVar[bool] = False

    def __init__(self, url: str, conf: Config) -> None:
        self.url = url
        self.conf = conf

    @abstractmethod
    def publish(self, message: OutgoingMessage) -> None:
        """Sends one task message."""

    def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Sends several messages, pipelined where the transport allows it."""
        for message in messages:
            self.publish(message)

    @abstractmethod
    def consumer(
        self, queues: list[str], *, prefetch: int, consumer_id: str, accept: list[str]
    ) -> Consumer:
        """A consumer of ``queues`` with a window of ``prefetch`` unacknowledged messages."""

    @abstractmethod
    def restore_consumer(self, consumer_id: str) -> int:
        """Returns the unacknowledged messages of a consumer that died; how many came back."""

    def restore_visible(self) -> int:
        """Returns messages left unacknowledged past the visibility timeout (0 if n/a)."""
        return 0

    #: Seconds a delivered message may stay unacknowledged before the broker hands it out again
    #: (None: the broker gives back a dead consumer's messages by itself, as RabbitMQ does).
    visibility_timeout: float | None = None

    def renew(self, consumer_ids: Sequence[str]) -> int:
        """Renews the leases of what these live consumers hold, so a task that runs longer than
        the visibility timeout is not handed out again; how many messages (0 if n/a)."""
        return 0

    def defer(self, raw: bytes, queue: str, priority: int, when: float) -> bool:
        """Keeps an ETA message in the broker until ``when`` (unix time); False if unsupported,
        in which case the worker holds it in memory, unacknowledged, as Celery does."""
        return False

    def move_due(self) -> int:
        """Returns deferred messages whose time has come to their queues; how many."""
        return 0

    def next_due(self) -> float | None:
        """When the earliest deferred message is due (unix time), if any: a worker waits no
        longer than that for new messages, so ETA tasks start on time."""
        return None

    def settler(self) -> Settler | None:
        """What a prefork supervisor acknowledges its children's early-acked messages with, in
        one round trip per batch, their consumers then only ``release``-ing them (a
        ``ReleasingConsumer``); None where each consumer must ack its own (AMQP: an ack belongs
        to the channel that received the message)."""
        return None

    def discard(self, consumer_id: str, delivery_tag: str) -> None:  # noqa: B027 - optional
        """Drops a message a dead consumer held (its task timed out and was recorded as failed)."""

    def quarantine(self, consumer_id: str, delivery_tag: str) -> None:
        """Takes a message a dead consumer held out of circulation for good (it killed its
        workers again and again): kept aside where the broker can, else dropped."""
        self.discard(consumer_id, delivery_tag)

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Deletes the queue's waiting messages; returns how many."""

    @abstractmethod
    def queue_length(self, queue: str) -> int:
        """How many messages wait in ``queue``."""

    def startup_note(self) -> str | None:
        """What the worker should say at start about this transport's limits, if anything."""
        return None

    def control_channel(self) -> ControlChannel:
        """The broadcast/reply channel of remote control (``fastq inspect``)."""
        raise ConfigurationError(
            f"the {self.url.split('://', 1)[0]}:// broker has no remote-control channel yet"
        )

    def event_publisher(self, hostname: str) -> EventPublisher:
        """Sends Celery's events (``celery events``, Flower) to ``event_exchange`` as
        ``hostname``."""
        raise ConfigurationError(
            f"the {self.url.split('://', 1)[0]}:// broker cannot carry Celery's events "
            "(Celery has no such transport): use redis:// or amqp://"
        )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases connections."""
