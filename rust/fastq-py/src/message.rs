//! `TaskMessage` and `Envelope`: decoded messages as small typed Python objects.

use fastq_core::envelope::Envelope as CoreEnvelope;
use fastq_core::protocol::TaskMessage as CoreMessage;
use fastq_core::Value;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use crate::convert::{dict, tuple};
use crate::delivery::PropertiesAndBody;

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
///
/// `body`, `headers` and `properties` become Python objects on first access: a worker reads the
/// task from the `TaskMessage` and seldom needs them.
#[pyclass(frozen, module = "fastq._core")]
pub struct Envelope {
    #[pyo3(get)]
    pub content_type: String,
    #[pyo3(get)]
    pub content_encoding: String,
    #[pyo3(get)]
    pub delivery_tag: Option<String>,
    #[pyo3(get)]
    pub exchange: String,
    #[pyo3(get)]
    pub routing_key: String,
    #[pyo3(get)]
    pub priority: i64,
    #[pyo3(get)]
    pub redelivered: bool,
    raw_headers: Value,
    headers: PyOnceLock<Py<PyDict>>,
    /// The properties and the body.
    properties_and_body: PropertiesAndBody,
}

impl Envelope {
    /// An envelope whose headers are already a Python dict (`raw_headers` is then unused).
    pub fn with_headers(py: Python<'_>, env: CoreEnvelope, headers: Py<PyDict>) -> Self {
        let envelope = Self::from_core(env);
        // A new cell is empty: `set` cannot fail.
        let _ = envelope.headers.set(py, headers);
        envelope
    }

    pub fn from_core(env: CoreEnvelope) -> Self {
        let (exchange, routing_key) = env.delivery_info();
        let (exchange, routing_key) = (exchange.to_owned(), routing_key.to_owned());
        Envelope {
            delivery_tag: env.delivery_tag().map(str::to_owned),
            exchange,
            routing_key,
            priority: env.priority(),
            redelivered: env.redelivered(),
            content_type: env.content_type,
            content_encoding: env.content_encoding,
            raw_headers: env.headers,
            headers: PyOnceLock::new(),
            properties_and_body: PropertiesAndBody::new(env.properties, env.body),
        }
    }
}

#[pymethods]
impl Envelope {
    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyBytes> {
        self.properties_and_body.body(py)
    }

    #[getter]
    fn headers(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let headers = self
            .headers
            .get_or_try_init(py, || map_or_empty(py, &self.raw_headers))?;
        Ok(headers.clone_ref(py))
    }

    #[getter]
    fn properties(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        self.properties_and_body.properties(py)
    }

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
