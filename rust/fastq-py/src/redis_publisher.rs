//! `RedisPublisher`: the Redis publisher of `fastq-core`, bound for `RedisBroker`, and kombu's
//! queue key names for the broker's other commands. Python values are read with the GIL held;
//! encoding, the round trip and waiting for the connection run with it released.

use fastq_core::redis as core;
use fastq_core::redis::keys::KeyLayout;
use fastq_core::Outgoing;
use pyo3::prelude::*;

use crate::errors::IntoPyResult;
use crate::outgoing::outgoing;
use crate::shared::Shared;

/// The client's Redis publisher: one connection per process (a forked child opens its own),
/// shared by the process's threads, which take turns.
#[pyclass(frozen, module = "fastq._core")]
pub struct RedisPublisher {
    inner: Shared<core::RedisPublisher>,
}

impl RedisPublisher {
    fn send(&self, py: Python<'_>, batch: Vec<Outgoing>) -> PyResult<()> {
        self.inner
            .with(py, |inner| inner.publish(&batch))
            .py_err(py)
    }
}

#[pymethods]
impl RedisPublisher {
    /// Parses `url`; connects on the first publish.
    #[new]
    #[pyo3(signature = (url, *, global_keyprefix = ""))]
    fn new(py: Python<'_>, url: &str, global_keyprefix: &str) -> PyResult<Self> {
        let inner = core::RedisPublisher::new(url, global_keyprefix).py_err(py)?;
        Ok(RedisPublisher {
            inner: Shared::new(inner),
        })
    }

    /// Publishes one `OutgoingMessage` (`.delay()`); returns once Redis has it.
    fn publish(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        self.send(py, vec![outgoing(message)?])
    }

    /// Publishes `OutgoingMessage`s in order, in one round trip.
    fn publish_many(&self, py: Python<'_>, messages: Vec<Bound<'_, PyAny>>) -> PyResult<()> {
        let batch = messages
            .iter()
            .map(outgoing)
            .collect::<PyResult<Vec<_>>>()?;
        self.send(py, batch)
    }

    fn close(&self, py: Python<'_>) {
        self.inner.with(py, |inner| inner.close());
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.inner
            .with(py, |inner| format!("<RedisPublisher {}>", inner.url()))
    }
}

/// kombu's Redis key layout (and fastq's additions) under a `global_keyprefix`, for the
/// commands the Python broker still sends itself.
#[pyclass(frozen, module = "fastq._core")]
pub struct RedisKeys {
    keys: KeyLayout,
}

#[pymethods]
impl RedisKeys {
    #[new]
    #[pyo3(signature = (global_keyprefix = ""))]
    fn new(global_keyprefix: &str) -> Self {
        RedisKeys {
            keys: KeyLayout::new(global_keyprefix),
        }
    }

    /// The list a message of `priority` for `queue` waits in (kombu's priority steps).
    #[pyo3(signature = (queue, priority = 0))]
    fn queue(&self, queue: &str, priority: i64) -> String {
        self.keys.queue_for_priority(queue, priority)
    }

    /// The lists of every priority step of `queue`, step 0 first.
    fn queue_keys(&self, queue: &str) -> Vec<String> {
        self.keys.queue_keys(queue)
    }

    fn unacked(&self) -> String {
        self.keys.unacked()
    }

    fn unacked_index(&self) -> String {
        self.keys.unacked_index()
    }

    fn consumer(&self, consumer_id: &str) -> String {
        self.keys.consumer(consumer_id)
    }

    fn delayed(&self) -> String {
        self.keys.delayed()
    }

    fn quarantine(&self) -> String {
        self.keys.quarantine()
    }
}
