//! What fastq declares on RabbitMQ, as Celery declares it: a queue (durable, with its arguments:
//! `x-max-priority`, `x-queue-type`…), its exchange and the binding between them. The consumer
//! declares its queues on every connection, the publisher each queue and exchange once per
//! connection, both through [`declare_queue`].

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};

use super::connection::channel_error;
use super::table::value_to_table;
use super::AmqpError;
use crate::value::Value;

/// A queue to declare and consume, as Celery declares it.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    /// `""`: the queue is only reachable through the default exchange; nothing to bind.
    pub exchange: String,
    pub exchange_type: String,
    pub routing_key: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// `x-max-priority`, `x-queue-type`, … (a map, or null).
    pub arguments: Value,
}

fn exchange_kind(name: &str) -> ExchangeKind {
    match name {
        "direct" => ExchangeKind::Direct,
        "topic" => ExchangeKind::Topic,
        "fanout" => ExchangeKind::Fanout,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_owned()),
    }
}

/// The broker refusing a declaration (arguments that differ from the existing queue's, access
/// rights: a channel-level error) is a configuration problem; anything else, a connection-level
/// error such as `rabbitmqctl close_connection`'s included, is the connection.
pub(super) fn declare_error(what: &str, e: lapin::Error) -> AmqpError {
    match channel_error(&e) {
        Some(err) => AmqpError::Config(format!(
            "{what} refused by the broker: {err}. If the queue already exists with other \
             arguments (x-max-priority, x-queue-type), make the settings match or delete the queue"
        )),
        None => AmqpError::Connection(format!("{what} failed: {e}")),
    }
}

/// An exchange of type `kind` (`direct`, `fanout`…), never auto-deleted, as kombu declares one.
pub(super) async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: &str,
    durable: bool,
) -> Result<(), AmqpError> {
    channel
        .exchange_declare(
            name.into(),
            exchange_kind(kind),
            ExchangeDeclareOptions {
                durable,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| declare_error(&format!("declaring exchange {name:?}"), e))
}

/// The queue, and when it names one, its exchange and the binding.
pub(super) async fn declare_queue(channel: &Channel, q: &QueueSpec) -> Result<(), AmqpError> {
    let arguments = value_to_table(&q.arguments)
        .map_err(|e| AmqpError::Config(format!("queue {:?} arguments: {e}", q.name)))?;
    if !q.exchange.is_empty() {
        declare_exchange(channel, &q.exchange, &q.exchange_type, q.durable).await?;
    }
    channel
        .queue_declare(
            q.name.as_str().into(),
            QueueDeclareOptions {
                durable: q.durable,
                auto_delete: q.auto_delete,
                ..Default::default()
            },
            arguments,
        )
        .await
        .map_err(|e| declare_error(&format!("declaring queue {:?}", q.name), e))?;
    if !q.exchange.is_empty() {
        channel
            .queue_bind(
                q.name.as_str().into(),
                q.exchange.as_str().into(),
                q.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| declare_error(&format!("binding queue {:?}", q.name), e))?;
    }
    Ok(())
}
