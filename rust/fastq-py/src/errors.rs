//! The one place Rust errors become Python exceptions, all classes of `fastq.errors`.

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

pub fn codec_error(py: Python<'_>, err: CodecError) -> PyErr {
    let class = match &err {
        CodecError::Decode { .. } => "DecodeError",
        CodecError::Encode { .. } => "EncodeError",
        CodecError::ContentDisallowed { .. } => "ContentDisallowed",
        CodecError::UnknownContentType(_) => "UnknownContentType",
        CodecError::InvalidMessage(_) => "InvalidMessage",
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
