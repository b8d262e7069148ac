//! `fastq._core`: bindings only; the logic lives in the `fastq-core` crate.

mod amqp;
mod codec;
mod consumer;
mod convert;
mod delivery;
mod errors;
mod message;
mod outgoing;
mod publisher;
mod redis_publisher;
mod signals;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<message::TaskMessage>()?;
    m.add_class::<message::Envelope>()?;
    m.add_class::<delivery::Delivery>()?;
    m.add_class::<consumer::RedisConsumer>()?;
    m.add_class::<amqp::AmqpConsumer>()?;
    m.add_class::<publisher::AmqpPublisher>()?;
    m.add_class::<redis_publisher::RedisPublisher>()?;
    m.add_class::<redis_publisher::RedisKeys>()?;
    m.add_function(wrap_pyfunction!(codec::dumps, m)?)?;
    m.add_function(wrap_pyfunction!(codec::loads, m)?)?;
    m.add_function(wrap_pyfunction!(codec::decode_envelope, m)?)?;
    m.add_function(wrap_pyfunction!(codec::encode_envelope, m)?)?;
    m.add_function(wrap_pyfunction!(codec::encode_task_envelope, m)?)?;
    m.add_function(wrap_pyfunction!(codec::encode_task_message, m)?)?;
    m.add_function(wrap_pyfunction!(codec::decode_task, m)?)?;
    m.add_function(wrap_pyfunction!(codec::task_from_parts, m)?)?;
    m.add_function(wrap_pyfunction!(codec::decode_task_envelope, m)?)?;
    m.add_function(wrap_pyfunction!(consumer::restore_consumer, m)?)?;
    m.add_function(wrap_pyfunction!(consumer::restore_visible, m)?)?;
    m.add_function(wrap_pyfunction!(consumer::renew_leases, m)?)?;
    m.add_function(wrap_pyfunction!(amqp::amqp_connect_failure, m)?)?;
    Ok(())
}
