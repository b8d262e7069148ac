"""What fastq declares on RabbitMQ, as Celery declares it: each queue of the settings (durable,
with ``x-max-priority`` or ``x-queue-type``), its exchange and the binding. The Rust consumer
and publisher take a ``QueueDecl`` as a dict (``as_dict``) and declare it in
``rust/fastq-core/src/amqp/topology.rs``; ``declare`` does the same over py-amqp for the queues
Python declares (remote control, the RabbitMQ result backends).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastq.config import Config
from fastq.errors import ConfigurationError, QueueNotFound
from fastq.routing import QueueSpec, queue_fields, queue_specs


@dataclass(frozen=True)
class QueueDecl:
    """A queue and the exchange binding Celery declares for it."""

    name: str
    exchange: str
    exchange_type: str = "direct"
    routing_key: str = ""
    durable: bool = True
    auto_delete: bool = False
    arguments: Mapping[str, Any] | None = None
    #: Only this connection may use it, and it goes with the connection (never for the Rust
    #: side, whose queues outlive a worker's reconnection).
    exclusive: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "exchange": self.exchange,
            "exchange_type": self.exchange_type,
            "routing_key": self.routing_key or self.name,
            "durable": self.durable,
            "auto_delete": self.auto_delete,
            "arguments": dict(self.arguments or {}),
        }

    @property
    def quorum(self) -> bool:
        return (self.arguments or {}).get("x-queue-type") == "quorum"


def queue_arguments(conf: Config) -> dict[str, Any]:
    """``x-queue-type``/``x-max-priority`` from the settings, as Celery adds them."""
    args: dict[str, Any] = {}
    if conf.task_default_queue_type == "quorum":
        args["x-queue-type"] = "quorum"
        if conf.task_queue_max_priority:
            # Not ignored with a warning: tasks sent with priorities would run in another
            # order than asked, and RabbitMQ refuses the argument on a quorum queue anyway.
            raise ConfigurationError(
                "task_queue_max_priority cannot apply to quorum queues "
                "(task_default_queue_type = 'quorum'): RabbitMQ quorum queues have no "
                "priorities (x-max-priority). Unset one of the two"
            )
    elif conf.task_queue_max_priority:
        args["x-max-priority"] = int(conf.task_queue_max_priority)
    return args


def _declaration(spec: QueueSpec, entry: Any, conf: Config) -> QueueDecl:
    """A queue's declaration: its binding as the router completes it (``queue_specs``), the
    rest from its ``task_queues`` entry (a kombu ``Queue``, duck-typed, or a dict)."""
    get = entry.get if isinstance(entry, Mapping) else lambda k, d=None: getattr(entry, k, d)
    max_priority = get("max_priority", None)
    arguments = {**queue_arguments(conf), **dict(get("queue_arguments", None) or {})}
    if max_priority is not None:
        arguments["x-max-priority"] = int(max_priority)
    return QueueDecl(
        name=spec.name,
        exchange=spec.exchange,
        exchange_type=spec.exchange_type,
        routing_key=spec.routing_key,
        durable=bool(get("durable", True)),
        auto_delete=bool(get("auto_delete", False)),
        arguments=arguments,
    )


def declarations(conf: Config) -> dict[str, QueueDecl]:
    """Every queue the settings define, by name: ``task_queues``, else the default queue, bound
    as Celery binds them (``fastq.routing.queue_specs``)."""
    entries = {queue_fields(e)[0]: e for e in conf.task_queues or ()}
    return {
        name: _declaration(spec, entries.get(name, {}), conf)
        for name, spec in queue_specs(conf).items()
    }


def declaration_for(conf: Config, queue: str, known: Mapping[str, QueueDecl]) -> QueueDecl:
    """A known queue's declaration, or Celery's for a missing one (direct exchange of its name);
    ``QueueNotFound`` when ``task_create_missing_queues`` is off."""
    decl = known.get(queue)
    if decl is not None:
        return decl
    if not conf.task_create_missing_queues:
        raise QueueNotFound(
            f"queue {queue!r} is not in task_queues and task_create_missing_queues is off"
        )
    return QueueDecl(name=queue, exchange=queue, routing_key=queue, arguments=queue_arguments(conf))


def declare_exchange(channel: Any, name: str, kind: str, durable: bool) -> None:
    """An exchange as kombu declares one: never auto-deleted."""
    channel.exchange_declare(name, kind, durable=durable, auto_delete=False)


def declare(channel: Any, decl: QueueDecl) -> None:
    """Exchange, queue and binding with Celery's flags (py-amqp's defaults differ)."""
    if decl.exchange:
        declare_exchange(channel, decl.exchange, decl.exchange_type, decl.durable)
    channel.queue_declare(
        decl.name,
        durable=decl.durable,
        exclusive=decl.exclusive,
        auto_delete=decl.auto_delete,
        arguments=dict(decl.arguments or {}) or None,
    )
    if decl.exchange:
        channel.queue_bind(decl.name, decl.exchange, decl.routing_key or decl.name)
