//! `RedisResultStore`: the worker's result stores for the Redis backend, from `fastq-core`.
//! The items are read with the GIL held; the round trip runs with it released.

use fastq_core::redis as core;
use pyo3::prelude::*;

use crate::errors::{IntoPyResult, StoreError};
use crate::shared::Shared;

/// One connection per process (a forked child opens its own), shared by the process's threads,
/// which take turns.
#[pyclass(frozen, module = "fastq._core")]
pub struct RedisResultStore {
    inner: Shared<core::ResultStore>,
}

#[pymethods]
impl RedisResultStore {
    /// Parses `url`; connects on the first store.
    #[new]
    fn new(py: Python<'_>, url: &str, script: &str) -> PyResult<Self> {
        let inner = core::ResultStore::new(url, script).py_err(py)?;
        Ok(RedisResultStore {
            inner: Shared::new(inner),
        })
    }

    /// Stores each `(key, meta)` with `ttl`, in order (see the core's `ResultStore::store`);
    /// returns `(index, reason)` of those refused for their key alone. A failure is a
    /// `BackendError` naming the store.
    fn store(
        &self,
        py: Python<'_>,
        items: Vec<(String, Vec<u8>)>,
        ttl: u64,
    ) -> PyResult<Vec<(usize, String)>> {
        let refused = self
            .inner
            .with(py, |inner| {
                inner.store(&items, ttl).map_err(|error| StoreError {
                    url: inner.url().to_owned(),
                    error,
                })
            })
            .py_err(py)?;
        Ok(refused.into_iter().map(|r| (r.index, r.reason)).collect())
    }

    #[getter]
    fn sha(&self, py: Python<'_>) -> String {
        self.inner.with(py, |inner| inner.sha().to_owned())
    }

    fn close(&self, py: Python<'_>) {
        self.inner.with(py, |inner| inner.close());
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.inner
            .with(py, |inner| format!("<RedisResultStore {}>", inner.url()))
    }
}
