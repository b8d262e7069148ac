//! `TaskMessage` and `Envelope`: decoded messages as small typed Python objects.

use fastq_core::envelope::Envelope as CoreEnvelope;
use fastq_core::protocol::TaskMessage as CoreMessage;
use fastq_core::Value;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use crate::convert::{dict, tuple};

/// A task message in the protocol 2 model (v1 messages are converted on decode).
#[pyclass(frozen, get_all, module = "fastq._core")]
pub struct TaskMessage {
    pub headers: Py<PyDict>,
    pub args: Py<PyTuple>,
    pub kwargs: Py<PyDict>,
    pub embed: Py<PyDict>,
    pub protocol: u8,
    pub task: String,
    pub id: String,
}

impl TaskMessage {
    pub fn from_core(py: Python<'_>, msg: CoreMessage) -> PyResult<Self> {
        let task = msg.task().to_owned();
        let id = msg.id().to_owned();
        let protocol = msg.protocol;
        let (headers, args, kwargs, embed) = msg.into_parts();
        Ok(TaskMessage {
            headers: dict(py, &headers)?.unbind(),
            args: tuple(py, &args)?.unbind(),
            kwargs: dict(py, &kwargs)?.unbind(),
            embed: dict(py, &embed)?.unbind(),
            protocol,
            task,
            id,
        })
    }
}

#[pymethods]
impl TaskMessage {
    fn __repr__(&self) -> String {
        format!(
            "<TaskMessage {} id={} protocol={}>",
            self.task, self.id, self.protocol
        )
    }
}

/// A kombu Redis envelope, body already base64-decoded.
#[pyclass(frozen, get_all, module = "fastq._core")]
pub struct Envelope {
    pub body: Py<PyBytes>,
    pub content_type: String,
    pub content_encoding: String,
    pub headers: Py<PyDict>,
    pub properties: Py<PyDict>,
    pub delivery_tag: Option<String>,
    pub exchange: String,
    pub routing_key: String,
    pub priority: i64,
    pub redelivered: bool,
}

impl Envelope {
    pub fn from_core(py: Python<'_>, env: &CoreEnvelope) -> PyResult<Self> {
        let (exchange, routing_key) = env.delivery_info();
        Ok(Envelope {
            body: PyBytes::new(py, &env.body).unbind(),
            content_type: env.content_type.clone(),
            content_encoding: env.content_encoding.clone(),
            headers: map_or_empty(py, &env.headers)?,
            properties: map_or_empty(py, &env.properties)?,
            delivery_tag: env.delivery_tag().map(str::to_owned),
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            priority: env.priority(),
            redelivered: env.redelivered(),
        })
    }
}

#[pymethods]
impl Envelope {
    fn __repr__(&self) -> String {
        format!(
            "<Envelope {} tag={:?} rk={:?}>",
            self.content_type, self.delivery_tag, self.routing_key
        )
    }
}

pub fn map_or_empty(py: Python<'_>, v: &Value) -> PyResult<Py<PyDict>> {
    match v {
        Value::Map(entries) => Ok(dict(py, entries)?.unbind()),
        _ => Ok(PyDict::new(py).unbind()),
    }
}
