//! RabbitMQ (AMQP 0-9-1): the worker's consumer, the client's publisher, the connection and the
//! declarations both use, header tables, ack planning.
//!
//! Built on lapin; nothing here speaks the wire protocol by hand.

pub mod acks;
pub mod connection;
pub mod consumer;
pub mod publisher;
pub mod table;
pub mod topology;

pub use connection::{redact, Endpoint, Failover, Failure, Rotation, Target, Tls};
pub use consumer::{AmqpConsumer, Body, ConsumerConfig, Incoming};
pub use publisher::{publish_via, AmqpPublisher, PublishError, PublisherConfig};
pub use topology::QueueSpec;

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum AmqpError {
    /// The broker is unreachable or the connection broke; the caller backs off and retries.
    #[error("{0}")]
    Connection(String),
    /// The settings or the broker's existing topology make consuming impossible until changed.
    #[error("{0}")]
    Config(String),
}

impl AmqpError {
    /// Prefixes the (redacted) broker URL so a log line says which broker failed.
    pub fn context(self, url: &str) -> Self {
        match self {
            AmqpError::Connection(m) => AmqpError::Connection(format!("{url}: {m}")),
            AmqpError::Config(m) => AmqpError::Config(format!("{url}: {m}")),
        }
    }
}
