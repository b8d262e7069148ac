"""What fastq declares on RabbitMQ, as Celery declares it: each queue of the settings (durable,
with ``x-max-priority`` or ``x-queue-type``), its exchange and the binding. The Rust consumer
and publisher take a ``QueueDecl`` as a dict (``as_dict``) and declare it in
``rust/fastq-core/src/amqp/topology.rs``; ``declare`` does the same over py-amqp for the queues
Python declares (remote control, the RabbitMQ result backends).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastq.config import Config
from fastq.errors import ConfigurationError

log = logging.getLogger("fastq.amqp")


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
            log.warning("quorum queues have no x-max-priority; task_queue_max_priority ignored")
    elif conf.task_queue_max_priority:
        args["x-max-priority"] = int(conf.task_queue_max_priority)
    return args


def _from_task_queue(entry: Any, conf: Config) -> QueueDecl:
    """A ``task_queues`` entry: a kombu ``Queue`` (duck-typed) or a dict with its field names."""
    if isinstance(entry, Mapping):
        exchange = entry.get("exchange")
        name = str(entry["name"])
        exchange_name = exchange.get("name") if isinstance(exchange, Mapping) else exchange
        exchange_type = (
            exchange.get("type") if isinstance(exchange, Mapping) else entry.get("exchange_type")
        )
        args = entry.get("queue_arguments")
        durable = entry.get("durable", True)
        auto_delete = entry.get("auto_delete", False)
        routing_key = entry.get("routing_key")
        max_priority = entry.get("max_priority")
    else:
        name = str(entry.name)
        ex = getattr(entry, "exchange", None)
        exchange_name = getattr(ex, "name", ex)
        exchange_type = getattr(ex, "type", None)
        args = getattr(entry, "queue_arguments", None)
        durable = getattr(entry, "durable", True)
        auto_delete = getattr(entry, "auto_delete", False)
        routing_key = getattr(entry, "routing_key", None)
        max_priority = getattr(entry, "max_priority", None)
    arguments = {**queue_arguments(conf), **dict(args or {})}
    if max_priority is not None:
        arguments["x-max-priority"] = int(max_priority)
    return QueueDecl(
        name=name,
        exchange=name if exchange_name is None else str(exchange_name),
        exchange_type=str(exchange_type or conf.task_default_exchange_type),
        routing_key=str(routing_key or name),
        durable=bool(durable),
        auto_delete=bool(auto_delete),
        arguments=arguments,
    )


def declarations(conf: Config) -> dict[str, QueueDecl]:
    """Every queue the settings define, by name: ``task_queues``, else the default queue."""
    decls: dict[str, QueueDecl] = {}
    for entry in conf.task_queues or ():
        decl = _from_task_queue(entry, conf)
        decls[decl.name] = decl
    default = conf.task_default_queue
    if default not in decls:
        decls[default] = QueueDecl(
            name=default,
            exchange=conf.task_default_exchange or default,
            exchange_type=conf.task_default_exchange_type,
            routing_key=conf.task_default_routing_key or default,
            arguments=queue_arguments(conf),
        )
    return decls


def declaration_for(conf: Config, queue: str, known: Mapping[str, QueueDecl]) -> QueueDecl:
    """A known queue's declaration, or Celery's for a missing one (direct exchange of its name)."""
    decl = known.get(queue)
    if decl is not None:
        return decl
    if not conf.task_create_missing_queues:
        raise ConfigurationError(
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
