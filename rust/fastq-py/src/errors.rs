//! The one place Rust errors become Python exceptions. Each `fastq.errors` class the bindings
//! raise is imported here, once, as a type; no other module names one.

use fastq_core::amqp::{self, AmqpError};
use fastq_core::redis;
use fastq_core::CodecError;
use pyo3::import_exception;
use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3::PyTypeInfo;

import_exception!(fastq.errors, BackendError);
import_exception!(fastq.errors, BrokerConnectionError);
import_exception!(fastq.errors, BrokerError);
import_exception!(fastq.errors, BrokerInterruptedError);
import_exception!(fastq.errors, ConfigurationError);
import_exception!(fastq.errors, ContentDisallowed);
import_exception!(fastq.errors, DecodeError);
import_exception!(fastq.errors, EncodeError);
import_exception!(fastq.errors, InvalidMessage);
import_exception!(fastq.errors, UnknownContentType);

fn raise<E: PyTypeInfo>(py: Python<'_>, message: String) -> PyErr {
    PyErr::from_type(E::type_object(py), message)
}

/// A `fastq.errors` class: its name and its type object.
type Class = (&'static str, fn(Python<'_>) -> Bound<'_, PyType>);

fn class<E: PyTypeInfo>() -> Class {
    (E::NAME, E::type_object)
}

/// The class a codec error is raised as.
fn codec_class(err: &CodecError) -> Class {
    match err {
        CodecError::Decode { .. } => class::<DecodeError>(),
        CodecError::Encode { .. } => class::<EncodeError>(),
        CodecError::ContentDisallowed { .. } => class::<ContentDisallowed>(),
        CodecError::UnknownContentType(_) => class::<UnknownContentType>(),
        CodecError::InvalidMessage(_) => class::<InvalidMessage>(),
    }
}

/// A message that could not be decoded, as a `Delivery` reports it: the error as a sentence and
/// the name of its class (the worker raises that class of `fastq.errors` by name).
pub fn decode_failure(err: &CodecError) -> (String, String) {
    (err.to_string(), codec_class(err).0.to_owned())
}

/// An `EncodeError` found while reading Python values (before the core sees them).
pub fn encode_error(py: Python<'_>, message: String) -> PyErr {
    raise::<EncodeError>(py, message)
}

/// A Rust error that becomes one `fastq.errors` exception.
pub trait IntoPyErr {
    fn into_py_err(self, py: Python<'_>) -> PyErr;
}

impl IntoPyErr for CodecError {
    fn into_py_err(self, py: Python<'_>) -> PyErr {
        PyErr::from_type(codec_class(&self).1(py), self.to_string())
    }
}

/// Redis: unreachable (retry later), refused command, or unusable configuration.
impl IntoPyErr for redis::BrokerError {
    fn into_py_err(self, py: Python<'_>) -> PyErr {
        let message = self.to_string();
        match self {
            redis::BrokerError::Connection { .. } => raise::<BrokerConnectionError>(py, message),
            redis::BrokerError::Interrupted { .. } => raise::<BrokerInterruptedError>(py, message),
            redis::BrokerError::Command { .. } => raise::<BrokerError>(py, message),
            redis::BrokerError::Config(_) => raise::<ConfigurationError>(py, message),
        }
    }
}

/// A Redis result store's failure, in the result backend's words (the client's own speak of a
/// broker): `BackendError`, whatever the kind, as the worker keeps the results and retries.
pub struct StoreError {
    /// The store's URL, redacted.
    pub url: String,
    pub error: redis::BrokerError,
}

impl IntoPyErr for StoreError {
    fn into_py_err(self, py: Python<'_>) -> PyErr {
        let reason = match self.error {
            redis::BrokerError::Connection { reason, .. }
            | redis::BrokerError::Command { reason, .. } => reason,
            redis::BrokerError::Interrupted { reason, .. } => format!(
                "interrupted by a signal before the reply came (the results may be stored): \
                 {reason}"
            ),
            redis::BrokerError::Config(message) => message,
        };
        raise::<BackendError>(
            py,
            format!("cannot store results in {}: {reason}", self.url),
        )
    }
}

impl IntoPyErr for redis::PublishError {
    fn into_py_err(self, py: Python<'_>) -> PyErr {
        match self {
            redis::PublishError::Codec(e) => e.into_py_err(py),
            e @ redis::PublishError::Refused { .. } => raise::<BrokerError>(py, e.to_string()),
            redis::PublishError::Broker(e) => e.into_py_err(py),
        }
    }
}

impl IntoPyErr for AmqpError {
    fn into_py_err(self, py: Python<'_>) -> PyErr {
        match self {
            AmqpError::Connection(m) => raise::<BrokerConnectionError>(py, m),
            AmqpError::Config(m) => raise::<ConfigurationError>(py, m),
        }
    }
}

impl IntoPyErr for amqp::PublishError {
    fn into_py_err(self, py: Python<'_>) -> PyErr {
        match self {
            amqp::PublishError::Codec(e) => e.into_py_err(py),
            amqp::PublishError::Amqp(e) => e.into_py_err(py),
            amqp::PublishError::Refused(m) => raise::<BrokerError>(py, m),
        }
    }
}

/// Maps a core result into a `PyResult`, converting the error with the GIL held.
pub trait IntoPyResult<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T, E: IntoPyErr> IntoPyResult<T> for Result<T, E> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| e.into_py_err(py))
    }
}
