//! The one place Rust errors become Python exceptions, all classes of `fastq.errors`.

use fastq_core::redis::BrokerError;
use fastq_core::CodecError;
use pyo3::prelude::*;
use pyo3::types::PyType;

pub fn raise(py: Python<'_>, class: &str, message: String) -> PyErr {
    match py.import("fastq.errors").and_then(|m| m.getattr(class)) {
        Ok(cls) => match cls.cast_into::<PyType>() {
            Ok(ty) => PyErr::from_type(ty, message),
            Err(e) => PyErr::from(e),
        },
        Err(e) => e,
    }
}

/// The `fastq.errors` class a codec error is raised as (also reported on a failed delivery).
pub fn codec_error_kind(err: &CodecError) -> &'static str {
    match err {
        CodecError::Decode { .. } => "DecodeError",
        CodecError::Encode { .. } => "EncodeError",
        CodecError::ContentDisallowed { .. } => "ContentDisallowed",
        CodecError::UnknownContentType(_) => "UnknownContentType",
        CodecError::InvalidMessage(_) => "InvalidMessage",
    }
}

pub fn codec_error(py: Python<'_>, err: CodecError) -> PyErr {
    raise(py, codec_error_kind(&err), err.to_string())
}

/// Broker failures: unreachable (retry later), refused command, or unusable configuration.
pub fn broker_error(py: Python<'_>, err: BrokerError) -> PyErr {
    let class = match &err {
        BrokerError::Connection { .. } => "BrokerConnectionError",
        BrokerError::Command { .. } => "BrokerError",
        BrokerError::Config(_) => "ConfigurationError",
    };
    raise(py, class, err.to_string())
}

pub fn encode_error(py: Python<'_>, message: String) -> PyErr {
    raise(py, "EncodeError", message)
}

/// Maps a `fastq_core::Result` into a `PyResult`, converting the error with the GIL held.
pub trait IntoPyResult<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for fastq_core::Result<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| codec_error(py, e))
    }
}

impl<T> IntoPyResult<T> for fastq_core::redis::BrokerResult<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| broker_error(py, e))
    }
}
