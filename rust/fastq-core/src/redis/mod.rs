//! The worker's side of kombu's Redis transport, wire-compatible with Celery.

pub mod keys;
pub mod url;
