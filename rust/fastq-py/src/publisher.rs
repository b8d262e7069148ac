//! `AmqpPublisher`: the RabbitMQ publisher of `fastq-core`, bound for `AmqpBroker`. Python values
//! are read with the GIL held; encoding, publishing and waiting for the socket (or the confirms)
//! run with it released, one crossing per batch.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use fastq_core::amqp::{self, MessageProperties, Outgoing, PublishError, PublisherConfig};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDateTime, PyDict, PyString};

use crate::amqp::{amqp_error, queue_spec};
use crate::codec::{core_message, serializer};
use crate::errors::{codec_error, encode_error, raise};

fn publish_error(py: Python<'_>, err: PublishError) -> PyErr {
    match err {
        PublishError::Codec(e) => codec_error(py, e),
        PublishError::Amqp(e) => amqp_error(py, e),
        PublishError::Refused(m) => raise(py, "BrokerError", m),
    }
}

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
        timeout = None
    ))]
    fn new(
        url: String,
        confirm: bool,
        heartbeat: Option<u16>,
        connect_timeout: f64,
        connection_name: Option<String>,
        timeout: Option<f64>,
    ) -> Self {
        let connection_name = connection_name
            .unwrap_or_else(|| format!("fastq publisher pid {}", std::process::id()));
        let cfg = PublisherConfig {
            url,
            confirm,
            heartbeat,
            connect_timeout: Duration::from_secs_f64(connect_timeout.max(0.1)),
            connection_name: connection_name.clone(),
            timeout: timeout.map(|t| Duration::from_secs_f64(t.max(0.0))),
        };
        AmqpPublisher {
            inner: Mutex::new(amqp::AmqpPublisher::new(cfg)),
            connection_name,
        }
    }

    /// Registers how to declare a queue (a dict as `AmqpConsumer` takes).
    fn add_queue(&self, py: Python<'_>, queue: &Bound<'_, PyDict>) -> PyResult<()> {
        let spec = queue_spec(queue)?;
        py.detach(|| self.lock().add_queue(spec));
        Ok(())
    }

    fn has_queue(&self, py: Python<'_>, name: &str) -> bool {
        py.detach(|| self.lock().has_queue(name))
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
            .map_err(|e| publish_error(py, e))
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

/// A `fastq.protocol.OutgoingMessage` read into the core's model (headers completed, checked).
fn outgoing<'py>(m: &Bound<'py, PyAny>) -> PyResult<Outgoing> {
    let py = m.py();
    let attr = |name: &Bound<'py, PyString>| m.getattr(name);
    let headers = attr(intern!(py, "headers"))?;
    let embed = attr(intern!(py, "embed"))?;
    let message = core_message(
        headers.cast::<PyDict>()?,
        &attr(intern!(py, "args"))?,
        &attr(intern!(py, "kwargs"))?,
        (!embed.is_none()).then_some(&embed),
    )?;
    let serializer = serializer(py, &attr(intern!(py, "serializer"))?.extract::<String>()?)?;
    let queue: String = attr(intern!(py, "queue"))?.extract()?;
    let routing_key: String = attr(intern!(py, "routing_key"))?.extract()?;
    let priority: Option<i64> = attr(intern!(py, "priority"))?.extract()?;
    let mut properties = MessageProperties {
        delivery_mode: octet(
            py,
            "delivery_mode",
            attr(intern!(py, "delivery_mode"))?.extract()?,
        )?,
        priority: octet(py, "priority", priority.unwrap_or(0))?,
        reply_to: attr(intern!(py, "reply_to"))?.extract()?,
        ..MessageProperties::default()
    };
    let extra = attr(intern!(py, "properties"))?;
    if !extra.is_none() {
        for (key, value) in extra.cast::<PyDict>()?.iter() {
            set_property(&mut properties, &key.extract::<String>()?, &value)?;
        }
    }
    Ok(Outgoing {
        message,
        serializer,
        exchange: attr(intern!(py, "exchange"))?.extract()?,
        routing_key: if routing_key.is_empty() {
            queue.clone()
        } else {
            routing_key
        },
        queue,
        properties,
    })
}

fn octet(py: Python<'_>, what: &str, value: i64) -> PyResult<u8> {
    u8::try_from(value)
        .map_err(|_| encode_error(py, format!("{what} must be between 0 and 255, got {value}")))
}

/// An extra AMQP property, as py-amqp takes them: it overrides the one fastq set; names that are
/// not AMQP basic properties are ignored (py-amqp does not send them either).
fn set_property(p: &mut MessageProperties, key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = value.py();
    if value.is_none() {
        return Ok(());
    }
    let text = || -> PyResult<Option<String>> {
        if key == "expiration" && value.extract::<i64>().is_ok() {
            return Ok(Some(value.str()?.to_string()));
        }
        value
            .extract::<String>()
            .map(Some)
            .map_err(|_| encode_error(py, format!("the AMQP property {key} must be a string")))
    };
    match key {
        "content_type" => p.content_type = text()?,
        "content_encoding" => p.content_encoding = text()?,
        "correlation_id" => p.correlation_id = text()?,
        "reply_to" => p.reply_to = text()?,
        "expiration" => p.expiration = text()?,
        "message_id" => p.message_id = text()?,
        "type" => p.kind = text()?,
        "user_id" => p.user_id = text()?,
        "app_id" => p.app_id = text()?,
        "priority" => p.priority = octet(py, key, value.extract()?)?,
        "delivery_mode" => p.delivery_mode = octet(py, key, value.extract()?)?,
        "timestamp" => {
            let seconds = if value.cast::<PyDateTime>().is_ok() {
                // As py-amqp: a naive datetime is UTC.
                py.import("calendar")?
                    .call_method1("timegm", (value.call_method0("utctimetuple")?,))?
                    .extract::<u64>()?
            } else {
                value.extract::<f64>()? as u64
            };
            p.timestamp = Some(seconds);
        }
        _ => {}
    }
    Ok(())
}
