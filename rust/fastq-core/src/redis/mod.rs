//! kombu's Redis transport, wire-compatible with Celery: the client's publisher (`publisher`)
//! and the worker's consumer, with the same queue lists, the same ack emulation (`unacked` hash,
//! `unacked_index` zset) and the same restore, so Celery and fastq workers and clients can share
//! one Redis. Every key name comes from `keys`.
//!
//! Where fastq departs from kombu it is to lose less: popping and recording as unacknowledged
//! is one atomic script (kombu: two round trips), envelopes that cannot be recorded are kept in
//! `fastq.malformed`, and unacked entries that cannot be restored are kept in
//! `fastq.unrestorable` (kombu drops both). Every script declares its keys. kombu's layout is for
//! a single Redis (or Sentinel); on a Redis Cluster (`redis+cluster://`, `cluster`) fastq uses
//! its own, every key of a queue hash-tagged `{queue}` so each queue's scripts run in one slot
//! (see `KeyLayout::cluster`): Celery cannot share those queues.
//!
//! Each consumer also keeps the tags it holds in a set, so the supervisor can restore a dead
//! child's messages at once instead of after the visibility timeout. A visibility restore does
//! not know the holder and leaves its set alone: if a message outlives the timeout, is
//! redelivered to another consumer and the first one then dies, restoring the first one puts
//! it back a second time — one more duplicate in a case that is already at-least-once.
//!
//! A live worker renews the `unacked_index` score of everything its consumers hold (`lease`), so
//! only a dead worker's messages outlive the visibility timeout; the consumer sets carry a TTL
//! of a few visibility timeouts, refreshed by every claim and renewal, so a worker killed
//! outright leaves none behind.

pub mod cluster;
mod connection;
mod consumer;
mod delivery;
pub mod event_envelope;
pub mod keys;
mod lease;
mod publisher;
mod restore;
mod results;
mod scripts;
pub mod sentinel;
mod settle;
#[cfg(test)]
mod signal_test;
mod spin_socket;
pub mod url;

pub use connection::{BrokerError, BrokerResult};
pub use consumer::{
    restore_consumer, restore_visible, ConsumerConfig, QueueRefusal, RedisConsumer,
};
pub use delivery::Delivery;
pub use lease::{consumer_set_ttl, renew_leases};
pub use publisher::{PublishError, RedisPublisher};
pub use restore::{route, topic_matches, Binding, HeldBack, RestoreReport};
pub use results::{Refused, ResultStore};
pub use settle::Settler;
