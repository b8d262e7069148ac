//! fastq-core: the pure-Rust half of fastq.
//!
//! Celery protocol v2 messages, the kombu Redis envelope, the JSON/msgpack codecs and the Redis
//! consumer. Nothing here knows Python; `fastq-py` binds it.

pub mod amqp;
pub mod codec;
pub mod compression;
pub mod envelope;
pub mod error;
pub mod events;
pub mod outgoing;
pub mod protocol;
pub mod redis;
pub mod tls;
pub mod value;

pub use error::{CodecError, Result};
pub use outgoing::{MessageProperties, Outgoing};
pub use value::Value;
