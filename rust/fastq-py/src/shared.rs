//! One core object per Python object, behind a mutex, used with the GIL released: the shape of
//! every Redis client here (consumer, publisher, result store, settler). Threads take turns; a
//! thread waiting for the lock never holds the GIL.

use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;

pub struct Shared<T>(Mutex<T>);

impl<T: Send> Shared<T> {
    pub fn new(inner: T) -> Self {
        Shared(Mutex::new(inner))
    }

    /// Runs `f` on the object without the GIL. A panic in an earlier call does not poison it:
    /// the objects stay usable (a broken connection is reopened by the next call).
    pub fn with<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut T) -> R + Send) -> R {
        py.detach(|| f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner)))
    }
}
