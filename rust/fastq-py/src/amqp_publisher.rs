//! `AmqpPublisher`: the RabbitMQ publisher of `fastq-core`, bound for `AmqpBroker`. Python values
//! are read with the GIL held; encoding, publishing and waiting for the socket (or the confirms)
//! run with it released, one crossing per batch.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use fastq_core::amqp::{self, PublisherConfig};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::amqp::{endpoint, queue_spec, Urls};
use crate::errors::IntoPyResult;
use crate::outgoing::outgoing;

/// The client's RabbitMQ publisher (see `fastq-core`'s `amqp::publisher`). Safe to share between
/// threads: calls take turns to write, and wait for their confirms together.
#[pyclass(frozen, weakref, module = "fastq._core")]
pub struct AmqpPublisher {
    inner: Mutex<amqp::AmqpPublisher>,
    connection_name: String,
}

impl AmqpPublisher {
    fn lock(&self) -> MutexGuard<'_, amqp::AmqpPublisher> {
        // A panic mid-publish leaves nothing half-updated that the next call cannot handle.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl AmqpPublisher {
    #[new]
    #[pyo3(signature = (
        url, *, confirm = true, heartbeat = None, connect_timeout = 10.0, connection_name = None,
        timeout = None, tls = None, failover = "round-robin"
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        url: Urls,
        confirm: bool,
        heartbeat: Option<u16>,
        connect_timeout: f64,
        connection_name: Option<String>,
        timeout: Option<f64>,
        tls: Option<HashMap<String, PathBuf>>,
        failover: &str,
    ) -> PyResult<Self> {
        let connection_name = connection_name
            .unwrap_or_else(|| format!("fastq publisher pid {}", std::process::id()));
        let cfg = PublisherConfig {
            endpoint: endpoint(py, url, failover, heartbeat, connect_timeout, tls)?,
            confirm,
            connection_name: connection_name.clone(),
            timeout: timeout.map(|t| Duration::from_secs_f64(t.max(0.0))),
        };
        Ok(AmqpPublisher {
            inner: Mutex::new(amqp::AmqpPublisher::new(cfg)),
            connection_name,
        })
    }

    /// Registers how to declare a queue (a dict as `AmqpConsumer` takes).
    fn add_queue(&self, py: Python<'_>, queue: &Bound<'_, PyDict>) -> PyResult<()> {
        let spec = queue_spec(queue)?;
        py.detach(|| self.lock().add_queue(spec));
        Ok(())
    }

    /// Publishes `OutgoingMessage`s in order; returns how many times it reconnected.
    #[pyo3(signature = (messages, *, retry = false))]
    fn publish_many(
        &self,
        py: Python<'_>,
        messages: Vec<Bound<'_, PyAny>>,
        retry: bool,
    ) -> PyResult<u32> {
        let batch = messages
            .iter()
            .map(outgoing)
            .collect::<PyResult<Vec<_>>>()?;
        // The publisher is held while the messages are written, not while their confirms come
        // back: other threads' calls overlap their waits.
        py.detach(|| amqp::publish_via(&self.inner, batch, retry))
            .py_err(py)
    }

    /// With `wait=False` (at interpreter exit), a publisher another thread is using is left
    /// alone rather than waited for.
    #[pyo3(signature = (*, wait = true))]
    fn close(&self, py: Python<'_>, wait: bool) {
        py.detach(|| {
            if wait {
                self.lock().close();
            } else if let Ok(mut inner) = self.inner.try_lock() {
                inner.close();
            }
        });
    }

    #[getter]
    fn connected(&self, py: Python<'_>) -> bool {
        py.detach(|| self.lock().connected())
    }

    #[getter]
    fn connection_name(&self) -> &str {
        &self.connection_name
    }

    fn __repr__(&self) -> String {
        format!("<AmqpPublisher {:?}>", self.connection_name)
    }
}
