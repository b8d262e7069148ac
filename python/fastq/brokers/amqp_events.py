"""Celery's events over RabbitMQ: transient JSON messages on the durable topic exchange
``celeryev`` (``event_exchange``), routing key the event type with dots (``task.succeeded``,
``worker.heartbeat``, ``task.multi`` for a batch), header ``hostname``, as Celery's
``EventDispatcher`` publishes them. Receivers (``celery events``, Flower) bind their own queues.
"""

from __future__ import annotations

import amqp

from fastq.brokers.amqp_connection import CONNECTION_ERRORS, AmqpChannel
from fastq.brokers.amqp_topology import declare_exchange
from fastq.errors import BrokerConnectionError
from fastq.urls import redact


class AmqpEventPublisher:
    def __init__(self, channel: AmqpChannel, exchange: str, hostname: str) -> None:
        self.channel = channel
        self.exchange = exchange
        self.hostname = hostname

    def publish(self, messages: list[tuple[str, bytes]]) -> None:
        with self.channel.lock:
            try:
                channel = self.channel.channel()
                if self.exchange not in self.channel.declared:  # as Celery declares it
                    declare_exchange(channel, self.exchange, "topic", durable=True)
                    self.channel.declared.add(self.exchange)
                for routing_key, body in messages:
                    message = amqp.Message(
                        body,
                        content_type="application/json",
                        content_encoding="utf-8",
                        application_headers={"hostname": self.hostname},
                        delivery_mode=1,
                    )
                    channel.basic_publish(message, exchange=self.exchange, routing_key=routing_key)
            except BrokerConnectionError:
                raise
            except CONNECTION_ERRORS as exc:
                self.channel.reset()
                raise BrokerConnectionError(
                    f"cannot send events to {redact(self.channel.url)}: {exc}"
                ) from exc

    def close(self) -> None:
        self.channel.close()
