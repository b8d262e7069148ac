//! `fastq._core`: bindings only; the logic lives in the `fastq-core` crate.

mod amqp;
mod amqp_publisher;
mod codec;
mod convert;
mod delivery;
mod errors;
mod events;
mod held;
mod message;
mod outgoing;
mod redis_consumer;
mod redis_publisher;
mod redis_results;
mod shared;
mod signals;

use fastq_core::protocol::{EMBED_KEYS, V2_HEADERS};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// Every Rust allocation of the extension (decoding, encoding, the brokers' buffers) goes to
/// mimalloc; Python objects keep Python's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("V2_HEADERS", PyTuple::new(m.py(), V2_HEADERS)?)?;
    m.add("EMBED_KEYS", PyTuple::new(m.py(), EMBED_KEYS)?)?;
    m.add_class::<message::TaskMessage>()?;
    m.add_class::<message::Envelope>()?;
    m.add_class::<delivery::Delivery>()?;
    m.add_class::<redis_consumer::RedisConsumer>()?;
    m.add_class::<redis_consumer::RedisSettler>()?;
    m.add_class::<amqp::AmqpConsumer>()?;
    m.add_class::<amqp_publisher::AmqpPublisher>()?;
    m.add_class::<redis_publisher::RedisPublisher>()?;
    m.add_class::<redis_publisher::RedisKeys>()?;
    m.add_class::<redis_results::RedisResultStore>()?;
    m.add_function(wrap_pyfunction!(codec::dumps, m)?)?;
    m.add_function(wrap_pyfunction!(codec::loads, m)?)?;
    m.add_function(wrap_pyfunction!(codec::encode_task_envelope, m)?)?;
    m.add_function(wrap_pyfunction!(codec::encode_task_message, m)?)?;
    m.add_function(wrap_pyfunction!(codec::decode_task, m)?)?;
    m.add_function(wrap_pyfunction!(codec::compression_type, m)?)?;
    m.add_function(wrap_pyfunction!(codec::decode_task_envelope, m)?)?;
    m.add_function(wrap_pyfunction!(events::encode_events, m)?)?;
    m.add_function(wrap_pyfunction!(events::encode_event_lines, m)?)?;
    m.add_class::<events::EventLines>()?;
    m.add_function(wrap_pyfunction!(events::stamp_events, m)?)?;
    m.add_function(wrap_pyfunction!(events::count_events, m)?)?;
    m.add_function(wrap_pyfunction!(events::split_reports, m)?)?;
    m.add_function(wrap_pyfunction!(events::redis_event_command, m)?)?;
    m.add_function(wrap_pyfunction!(held::encode_held, m)?)?;
    m.add_function(wrap_pyfunction!(redis_consumer::restore_consumer, m)?)?;
    m.add_function(wrap_pyfunction!(redis_consumer::restore_visible, m)?)?;
    m.add_function(wrap_pyfunction!(redis_consumer::renew_leases, m)?)?;
    m.add_function(wrap_pyfunction!(amqp::amqp_connect_failure, m)?)?;
    Ok(())
}
