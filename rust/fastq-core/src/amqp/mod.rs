//! RabbitMQ (AMQP 0-9-1): the worker's consumer, the client's publisher, header tables, ack
//! planning.
//!
//! Built on lapin; nothing here speaks the wire protocol by hand.

pub mod acks;
pub mod consumer;
pub mod publisher;
pub mod table;

pub use consumer::{AmqpConsumer, Body, ConsumerConfig, Incoming, QueueSpec};
pub use publisher::{publish_via, AmqpPublisher, PublishError, PublisherConfig};

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

/// The runtime lapin runs on: one worker thread (its I/O and heartbeats), created in the process
/// that uses it, after any fork.
pub(crate) fn runtime(thread_name: &str) -> Result<tokio::runtime::Runtime, AmqpError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(thread_name)
        .enable_all()
        .build()
        .map_err(|e| AmqpError::Connection(format!("cannot start the AMQP runtime: {e}")))
}

/// The URL with its password replaced by `***`, for every message that names the broker.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    if user.len() == userinfo.len() {
        return url.to_owned();
    }
    format!("{scheme}://{user}:***{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("amqp://guest:s3cr@t@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact("amqp://host/vh"), "amqp://host/vh");
        assert_eq!(redact("amqps://user@host/"), "amqps://user@host/");
    }
}
