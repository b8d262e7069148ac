//! `AmqpConsumer`: the RabbitMQ consumer of `fastq-core`, bound for the worker; its deliveries
//! are `delivery::Delivery`, as the Redis consumer's.
//! The GIL is released while the consumer waits for the broker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use fastq_core::amqp::{
    self, AmqpError, Body, ConsumerConfig, Endpoint, Failover, Failure, Incoming, QueueSpec,
    Target, Tls,
};
use fastq_core::protocol::TaskMessage as CoreMessage;
use fastq_core::Value;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::codec::accept;
use crate::convert::to_value;
use crate::delivery::{decoded_fields, Delivery, PropertiesAndBody};
use crate::errors::{decode_failure, IntoPyErr, IntoPyResult};

/// Reads a pickle/yaml body through `fastq.serialization` (only reached when it is accepted).
fn foreign_message(
    py: Python<'_>,
    inc: &Incoming,
    content_type: &str,
    accept: &[String],
) -> PyResult<CoreMessage> {
    let body = py.import("fastq.serialization")?.getattr("loads")?.call1((
        PyBytes::new(py, &inc.body),
        content_type,
        accept.to_vec(),
    ))?;
    CoreMessage::parse(inc.headers.clone(), to_value(&body)?).py_err(py)
}

fn delivery(py: Python<'_>, mut inc: Incoming, accept: &[String]) -> PyResult<Delivery> {
    let task_id = inc.task_id().map(str::to_owned);
    let task_name = inc.task_name().map(str::to_owned);
    let delivery_tag = inc.delivery_tag();
    // Moved out, not cloned: the task's arguments can be large.
    let decoded = match std::mem::replace(&mut inc.decoded, Body::Foreign("")) {
        Body::Foreign(ct) => match foreign_message(py, &inc, ct, accept) {
            Ok(m) => Ok(m),
            Err(e) => Err((e.to_string(), e.get_type(py).name()?.to_string())),
        },
        Body::Message(m) => Ok(m),
        Body::Error(e) => Err(decode_failure(&e)),
    };
    let (message, error, error_kind) = decoded_fields(py, decoded)?;
    Ok(Delivery {
        delivery_tag,
        queue: inc.queue,
        exchange: inc.exchange,
        priority: i64::from(inc.priority),
        redelivered: inc.redelivered,
        content_type: inc.content_type,
        reply_to: inc.reply_to,
        correlation_id: inc.correlation_id,
        message,
        error,
        error_kind,
        task_id,
        task_name,
        properties_and_body: PropertiesAndBody::new(inc.properties, inc.body),
    })
}

/// One broker URL, or the URLs of a cluster's nodes tried in turn.
#[derive(FromPyObject)]
pub(crate) enum Urls {
    One(String),
    Many(Vec<String>),
}

/// Where to connect, as the consumer and the publisher take it from Python; `failover` is
/// `broker_failover_strategy` (`round-robin` or `shuffle`), `tls` holds the files of
/// `broker_use_ssl` (`ca_certs`, `certfile`, `keyfile`).
pub(crate) fn endpoint(
    py: Python<'_>,
    urls: Urls,
    failover: &str,
    heartbeat: Option<u16>,
    connect_timeout: f64,
    tls: Option<HashMap<String, PathBuf>>,
) -> PyResult<Endpoint> {
    let urls = match urls {
        Urls::One(url) => vec![url],
        Urls::Many(urls) => urls,
    };
    if urls.is_empty() {
        return Err(AmqpError::Config("no broker URL".into()).into_py_err(py));
    }
    let failover = Failover::from_name(failover).ok_or_else(|| {
        let message = format!("unknown failover strategy {failover:?}: round-robin or shuffle");
        AmqpError::Config(message).into_py_err(py)
    })?;
    let mut files = tls.unwrap_or_default();
    let tls = Tls {
        ca_certs: files.remove("ca_certs"),
        certfile: files.remove("certfile"),
        keyfile: files.remove("keyfile"),
    };
    if let Some(other) = files.keys().next() {
        let message = format!("unknown TLS option {other:?}: ca_certs, certfile, keyfile");
        return Err(AmqpError::Config(message).into_py_err(py));
    }
    Ok(Endpoint {
        urls,
        failover,
        heartbeat,
        connect_timeout: Duration::from_secs_f64(connect_timeout.max(0.1)),
        tls,
    })
}

pub(crate) fn queue_spec(d: &Bound<'_, PyDict>) -> PyResult<QueueSpec> {
    let get = |k: &str| -> PyResult<Option<Bound<'_, PyAny>>> { d.get_item(k) };
    let string = |k: &str, default: &str| -> PyResult<String> {
        match get(k)? {
            Some(v) if !v.is_none() => v.extract(),
            _ => Ok(default.to_owned()),
        }
    };
    let flag = |k: &str, default: bool| -> PyResult<bool> {
        match get(k)? {
            Some(v) if !v.is_none() => v.extract(),
            _ => Ok(default),
        }
    };
    let name = string("name", "")?;
    Ok(QueueSpec {
        exchange: string("exchange", "")?,
        exchange_type: string("exchange_type", "direct")?,
        routing_key: string("routing_key", &name)?,
        durable: flag("durable", true)?,
        auto_delete: flag("auto_delete", false)?,
        arguments: match get("arguments")? {
            Some(v) => to_value(&v)?,
            None => Value::Null,
        },
        name,
    })
}

/// Why a connection to RabbitMQ failed, worded as the Rust clients word it: fastq's py-amqp
/// connections sort their errors into `failure` (`login_refused`…) and say the same.
#[pyfunction]
#[pyo3(signature = (failure, detail, *, host, port, user, vhost, tls))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn amqp_connect_failure(
    py: Python<'_>,
    failure: &str,
    detail: &str,
    host: String,
    port: u16,
    user: String,
    vhost: String,
    tls: bool,
) -> PyResult<String> {
    let failure = Failure::from_name(failure).ok_or_else(|| {
        AmqpError::Config(format!("unknown connection failure {failure:?}")).into_py_err(py)
    })?;
    let target = Target {
        host,
        port,
        user,
        vhost,
        tls,
    };
    Ok(target.explain(failure, detail, None))
}

/// A worker process's RabbitMQ consumer (see `fastq-core`'s `amqp::consumer`).
#[pyclass(module = "fastq._core")]
pub struct AmqpConsumer {
    inner: amqp::AmqpConsumer,
    accept: Vec<String>,
}

#[pymethods]
impl AmqpConsumer {
    #[new]
    #[pyo3(signature = (
        url, queues, *, accept, prefetch, consumer_tag, global_qos = true, heartbeat = None,
        connect_timeout = 10.0, tls = None, failover = "round-robin"
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        url: Urls,
        queues: Vec<Bound<'_, PyDict>>,
        accept: Vec<String>,
        prefetch: u16,
        consumer_tag: String,
        global_qos: bool,
        heartbeat: Option<u16>,
        connect_timeout: f64,
        tls: Option<HashMap<String, PathBuf>>,
        failover: &str,
    ) -> PyResult<Self> {
        let cfg = ConsumerConfig {
            endpoint: endpoint(py, url, failover, heartbeat, connect_timeout, tls)?,
            queues: queues.iter().map(queue_spec).collect::<PyResult<_>>()?,
            prefetch,
            global_qos,
            accept: self::accept(py, &accept)?,
            consumer_tag,
        };
        let inner = py.detach(|| amqp::AmqpConsumer::new(cfg)).py_err(py)?;
        Ok(AmqpConsumer { inner, accept })
    }

    /// Waits up to `timeout` seconds for deliveries; returns every one already received.
    fn fetch(&mut self, py: Python<'_>, timeout: f64) -> PyResult<Vec<Delivery>> {
        let wait = Duration::from_secs_f64(timeout.max(0.0));
        let inner = &mut self.inner;
        let batch = py.detach(|| inner.fetch(wait)).py_err(py)?;
        batch
            .into_iter()
            .map(|inc| delivery(py, inc, &self.accept))
            .collect()
    }

    /// Acknowledges deliveries; tags of a channel that is gone are dropped (RabbitMQ redelivers
    /// them) with a warning. `wait` is accepted for the `Consumer` protocol: basic.ack has no
    /// reply to wait for.
    #[pyo3(signature = (delivery_tags, wait = true))]
    fn ack(&mut self, py: Python<'_>, delivery_tags: Vec<String>, wait: bool) -> PyResult<()> {
        let _ = wait;
        let inner = &mut self.inner;
        let stale = py.detach(|| inner.ack(&delivery_tags)).py_err(py)?;
        if stale > 0 {
            warn(
                py,
                &format!(
                    "dropped {stale} ack(s) for deliveries of a closed channel; \
                     RabbitMQ delivers those messages again"
                ),
            )?;
        }
        Ok(())
    }

    /// Rejects one delivery; a stale tag is dropped (nothing to reject on a closed channel).
    fn reject(&mut self, py: Python<'_>, delivery_tag: String, requeue: bool) -> PyResult<()> {
        let inner = &mut self.inner;
        py.detach(|| inner.reject(&delivery_tag, requeue))
            .map(drop)
            .py_err(py)
    }

    /// Puts every message this consumer holds back in its queue; returns how many.
    fn restore_unacked(&mut self, py: Python<'_>) -> PyResult<usize> {
        let inner = &mut self.inner;
        py.detach(|| inner.restore_unacked()).py_err(py)
    }

    #[getter]
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    /// Increases by one on every (re)connection.
    #[getter]
    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    /// The broker of the current connection (password redacted), None while disconnected.
    #[getter]
    fn broker(&self) -> Option<String> {
        self.inner.broker().map(str::to_owned)
    }

    fn close(&mut self, py: Python<'_>) {
        let inner = &mut self.inner;
        py.detach(|| inner.close());
    }
}

fn warn(py: Python<'_>, message: &str) -> PyResult<()> {
    py.import("logging")?
        .call_method1("getLogger", ("fastq.worker",))?
        .call_method1("warning", (message,))?;
    Ok(())
}
