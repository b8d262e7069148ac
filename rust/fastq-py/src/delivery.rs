//! `Delivery`: one message as a worker's consumer (Redis or RabbitMQ) hands it over, decoded as
//! far as it goes; and `PropertiesAndBody`, the parts that become Python objects only when read.

use fastq_core::protocol::TaskMessage as CoreMessage;
use fastq_core::Value;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict};

use crate::message::{map_or_empty, TaskMessage};

/// Properties and body kept as Rust values until Python asks: a worker reads the task from the
/// decoded message and seldom needs them.
pub(crate) struct PropertiesAndBody {
    properties: Value,
    body: Vec<u8>,
    properties_py: PyOnceLock<Py<PyDict>>,
    body_py: PyOnceLock<Py<PyBytes>>,
}

impl PropertiesAndBody {
    pub(crate) fn new(properties: Value, body: Vec<u8>) -> Self {
        PropertiesAndBody {
            properties,
            body,
            properties_py: PyOnceLock::new(),
            body_py: PyOnceLock::new(),
        }
    }

    pub(crate) fn properties(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let properties = self
            .properties_py
            .get_or_try_init(py, || map_or_empty(py, &self.properties))?;
        Ok(properties.clone_ref(py))
    }

    pub(crate) fn body(&self, py: Python<'_>) -> Py<PyBytes> {
        self.body_py
            .get_or_init(py, || PyBytes::new(py, &self.body).unbind())
            .clone_ref(py)
    }
}

/// The task message, or why there is none: the error as a sentence and its `fastq.errors`
/// class name.
pub(crate) type Decoded = Result<CoreMessage, (String, String)>;

/// `(message, error, error_kind)` as `Delivery` carries them.
pub(crate) type DecodedFields = (Option<Py<TaskMessage>>, Option<String>, Option<String>);

pub(crate) fn decoded_fields(py: Python<'_>, decoded: Decoded) -> PyResult<DecodedFields> {
    Ok(match decoded {
        Ok(m) => (
            Some(Py::new(py, TaskMessage::from_core(py, m)?)?),
            None,
            None,
        ),
        Err((error, kind)) => (None, Some(error), Some(kind)),
    })
}

/// One message from a queue. A message that cannot be decoded still arrives, with `message`
/// None and `error` saying why, so the worker can record a failure for `task_id` and settle it.
#[pyclass(frozen, module = "fastq._core")]
pub struct Delivery {
    #[pyo3(get)]
    pub(crate) delivery_tag: String,
    #[pyo3(get)]
    pub(crate) queue: String,
    #[pyo3(get)]
    pub(crate) exchange: String,
    #[pyo3(get)]
    pub(crate) priority: i64,
    #[pyo3(get)]
    pub(crate) redelivered: bool,
    #[pyo3(get)]
    pub(crate) content_type: String,
    #[pyo3(get)]
    pub(crate) reply_to: Option<String>,
    #[pyo3(get)]
    pub(crate) correlation_id: Option<String>,
    #[pyo3(get)]
    pub(crate) message: Option<Py<TaskMessage>>,
    #[pyo3(get)]
    pub(crate) error: Option<String>,
    #[pyo3(get)]
    pub(crate) error_kind: Option<String>,
    #[pyo3(get)]
    pub(crate) task_id: Option<String>,
    #[pyo3(get)]
    pub(crate) task_name: Option<String>,
    /// The properties, and `raw`: the kombu envelope as it was in Redis, the body on RabbitMQ.
    pub(crate) properties_and_body: PropertiesAndBody,
}

#[pymethods]
impl Delivery {
    #[getter]
    fn properties(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        self.properties_and_body.properties(py)
    }

    #[getter]
    fn raw(&self, py: Python<'_>) -> Py<PyBytes> {
        self.properties_and_body.body(py)
    }

    fn __repr__(&self) -> String {
        match &self.error_kind {
            None => format!(
                "<Delivery {:?} tag={:?} task={}>",
                self.queue,
                self.delivery_tag,
                self.task_name.as_deref().unwrap_or("?")
            ),
            Some(kind) => format!(
                "<Delivery {:?} tag={:?} error={kind}>",
                self.queue, self.delivery_tag
            ),
        }
    }
}
