//! `RedisResultStore`: the worker's result stores for the Redis backend, from `fastq-core`.
//! The items are read with the GIL held; the round trip runs with it released.

use std::sync::{Mutex, PoisonError};

use fastq_core::redis as core;
use pyo3::prelude::*;

use crate::errors::IntoPyResult;

/// One connection per process (a forked child opens its own), shared by the process's threads,
/// which take turns.
#[pyclass(frozen, module = "fastq._core")]
pub struct RedisResultStore {
    inner: Mutex<core::ResultStore>,
}

#[pymethods]
impl RedisResultStore {
    /// Parses `url`; connects on the first store.
    #[new]
    fn new(py: Python<'_>, url: &str, script: &str) -> PyResult<Self> {
        let inner = core::ResultStore::new(url, script).py_err(py)?;
        Ok(RedisResultStore {
            inner: Mutex::new(inner),
        })
    }

    /// Runs the script on each `(key, meta)` with `ttl`, in order, in one round trip.
    fn store(&self, py: Python<'_>, items: Vec<(String, Vec<u8>)>, ttl: u64) -> PyResult<()> {
        py.detach(|| {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.store(&items, ttl)
        })
        .py_err(py)
    }

    #[getter]
    fn sha(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.sha().to_owned()
    }

    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            self.inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .close()
        });
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        py.detach(|| {
            let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            format!("<RedisResultStore {}>", inner.url())
        })
    }
}
