//! `RedisConsumer` (its deliveries are `delivery::Delivery`) and the restore functions over
//! `fastq_core::redis`. The GIL is released for all I/O and decoding; only the finished
//! deliveries are converted with it held.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use fastq_core::redis::{self as core, ConsumerConfig};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::signals::DeferSignals;
use pyo3::types::PyList;

use crate::delivery::{decoded_fields, Delivery, PropertiesAndBody};
use crate::errors::{decode_failure, IntoPyResult};
use crate::shared::Shared;

fn delivery(py: Python<'_>, d: core::Delivery) -> PyResult<Delivery> {
    let decoded = d.message.map_err(|e| decode_failure(&e));
    let (message, error, error_kind) = decoded_fields(py, decoded)?;
    Ok(Delivery {
        delivery_tag: d.delivery_tag,
        queue: d.queue,
        exchange: d.exchange,
        priority: d.priority,
        redelivered: d.redelivered,
        content_type: d.content_type,
        reply_to: d.reply_to,
        correlation_id: d.correlation_id,
        message,
        error,
        error_kind,
        task_id: d.task_id,
        task_name: d.task_name,
        properties_and_body: PropertiesAndBody::new(d.properties, d.raw),
    })
}

/// The worker's log, for what the consumer tells that is neither a delivery nor an error.
fn worker_log(py: Python<'_>, level: &str, message: String) {
    let logged = py
        .import("logging")
        .and_then(|logging| logging.call_method1("getLogger", ("fastq.worker",)))
        .and_then(|logger| logger.call_method1(level, (message,)));
    if let Err(err) = logged {
        // Never in place of what the call returns: claimed messages must reach the loop.
        err.write_unraisable(py, None);
    }
}

/// Messages this process has said it holds back (`log_held_back`): each is said once, not at
/// every restore pass that meets it again (a visibility restore runs every few seconds).
static HELD_BACK_SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
/// Past this many, the memory starts again (a message may then be said once more).
const HELD_BACK_KEPT: usize = 65_536;

/// Says which messages could not be put back on their queue because its key holds something
/// other than a list: they stay unacknowledged in Redis (nothing lost), and a later restore
/// moves them once the key is a list again. Each message once per process.
fn log_held_back(py: Python<'_>, held: &[core::HeldBack]) {
    if held.is_empty() {
        return;
    }
    let new: Vec<&core::HeldBack> = {
        let mut said = HELD_BACK_SAID.lock().unwrap_or_else(|e| e.into_inner());
        let said = said.get_or_insert_with(HashSet::new);
        if said.len() > HELD_BACK_KEPT {
            said.clear();
        }
        held.iter().filter(|h| said.insert(h.tag.clone())).collect()
    };
    let mut keys: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for h in new {
        match keys.iter_mut().find(|(key, _, _)| *key == h.key) {
            Some((_, _, tags)) => tags.push(&h.tag),
            None => keys.push((&h.key, &h.kind, vec![&h.tag])),
        }
    }
    for (key, kind, tags) in keys {
        let message = format!(
            "{} message(s) cannot be put back on their queue: its key '{key}' holds a {kind}, \
             not a list of messages; they stay unacknowledged in Redis and are restored once the \
             key holds a list again (delivery tags: {})",
            tags.len(),
            tags.join(", ")
        );
        worker_log(py, "error", message);
    }
}

/// Says that a queue's key began or stopped refusing its reads, since the other queues go on
/// being consumed. Rare (a change of state), so logged from here.
fn log_refusals(py: Python<'_>, refusals: Vec<core::QueueRefusal>) {
    for refusal in refusals {
        match refusal.reason {
            Some(reason) => worker_log(
                py,
                "error",
                format!(
                    "queue '{}' cannot be consumed: Redis refuses to pop from its key '{}', which \
                     holds something other than a list of messages ({reason}); the worker goes \
                     on with its other queues and tries this one again at each fetch",
                    refusal.queue, refusal.key
                ),
            ),
            None => worker_log(
                py,
                "warning",
                format!(
                    "queue '{}' can be consumed again (its key '{}' holds a list or nothing)",
                    refusal.queue, refusal.key
                ),
            ),
        }
    }
}

/// The worker's Redis consumer. Meant for one thread; calls from others wait their turn.
#[pyclass(frozen, module = "fastq._core")]
pub struct RedisConsumer {
    inner: Shared<core::RedisConsumer>,
}

impl RedisConsumer {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut core::RedisConsumer) -> T + Send,
    ) -> T {
        self.inner.with(py, f)
    }
}

#[pymethods]
impl RedisConsumer {
    #[new]
    #[pyo3(signature = (
        url, queues, *, accept, prefetch, consumer_id, global_keyprefix = "",
        visibility_timeout = 3600.0
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        url: String,
        queues: Vec<String>,
        accept: Vec<String>,
        prefetch: usize,
        consumer_id: String,
        global_keyprefix: &str,
        visibility_timeout: f64,
    ) -> PyResult<Self> {
        let consumer = core::RedisConsumer::new(ConsumerConfig {
            url,
            queues,
            accept,
            prefetch,
            consumer_id,
            global_keyprefix: global_keyprefix.to_owned(),
            visibility_timeout,
        })
        .py_err(py)?;
        Ok(RedisConsumer {
            inner: Shared::new(consumer),
        })
    }

    /// Up to `prefetch - in_flight` deliveries, waiting up to `timeout` seconds for the first.
    fn fetch<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyList>> {
        let timeout = Duration::try_from_secs_f64(timeout).map_err(|_| {
            PyValueError::new_err(format!(
                "timeout must be a finite number of seconds >= 0, got {timeout}"
            ))
        })?;
        let (deliveries, refusals) = {
            let _deferred = DeferSignals::new();
            self.with(py, |c| (c.fetch(timeout), c.take_refusals()))
        };
        log_refusals(py, refusals);
        let deliveries = deliveries.py_err(py)?;
        let converted = deliveries
            .into_iter()
            .map(|d| delivery(py, d))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, converted)
    }

    /// With `wait=False` the ack is written without waiting for Redis's reply (read later).
    #[pyo3(signature = (delivery_tags, wait = true))]
    fn ack(&self, py: Python<'_>, delivery_tags: Vec<String>, wait: bool) -> PyResult<()> {
        if wait {
            self.with(py, |c| c.ack(&delivery_tags)).py_err(py)
        } else {
            self.with(py, |c| c.ack_unread(&delivery_tags)).py_err(py)
        }
    }

    /// Forgets `delivery_tags` without telling Redis: the prefork supervisor acknowledges them
    /// (`RedisSettler`).
    fn release(&self, py: Python<'_>, delivery_tags: Vec<String>) {
        self.with(py, |c| c.release(&delivery_tags));
    }

    #[pyo3(signature = (delivery_tag, requeue = false))]
    fn reject(&self, py: Python<'_>, delivery_tag: &str, requeue: bool) -> PyResult<()> {
        let (result, held) = self.with(py, |c| {
            let result = c.reject(delivery_tag, requeue);
            (result, c.take_held_back())
        });
        log_held_back(py, &held);
        result.py_err(py)
    }

    fn restore_unacked(&self, py: Python<'_>) -> PyResult<usize> {
        let report = self.with(py, |c| c.restore_unacked()).py_err(py)?;
        log_held_back(py, &report.held_back);
        Ok(report.restored)
    }

    #[getter]
    fn in_flight(&self, py: Python<'_>) -> usize {
        self.with(py, |c| c.in_flight())
    }

    #[getter]
    fn prefetch(&self, py: Python<'_>) -> usize {
        self.with(py, |c| c.prefetch())
    }

    #[setter]
    fn set_prefetch(&self, py: Python<'_>, prefetch: usize) {
        self.with(py, |c| c.set_prefetch(prefetch));
    }

    #[getter]
    fn visibility_timeout(&self, py: Python<'_>) -> f64 {
        self.with(py, |c| c.visibility_timeout())
    }

    fn close(&self, py: Python<'_>) {
        self.with(py, |c| c.close());
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.with(py, |c| {
            format!(
                "<RedisConsumer {} queues={:?} in_flight={}/{}>",
                c.url(),
                c.queues().collect::<Vec<_>>(),
                c.in_flight(),
                c.prefetch()
            )
        })
    }
}

/// The prefork supervisor's acknowledgements for its children's consumers, batched; one
/// connection, opened on the first ack.
#[pyclass(frozen, module = "fastq._core")]
pub struct RedisSettler {
    inner: Shared<core::Settler>,
}

#[pymethods]
impl RedisSettler {
    #[new]
    #[pyo3(signature = (url, global_keyprefix = ""))]
    fn new(py: Python<'_>, url: &str, global_keyprefix: &str) -> PyResult<Self> {
        let inner = core::Settler::new(url, global_keyprefix).py_err(py)?;
        Ok(RedisSettler {
            inner: Shared::new(inner),
        })
    }

    /// Acknowledges each `(consumer_id, delivery_tags)` in one transaction.
    fn ack(&self, py: Python<'_>, batch: Vec<(String, Vec<String>)>) -> PyResult<()> {
        self.inner.with(py, |inner| inner.ack(&batch)).py_err(py)
    }

    fn close(&self, py: Python<'_>) {
        self.inner.with(py, |inner| inner.close());
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.inner
            .with(py, |inner| format!("<RedisSettler {}>", inner.url()))
    }
}

/// Puts every message a (dead) consumer held back at the head of its queue; returns how many.
#[pyfunction]
#[pyo3(signature = (url, consumer_id, global_keyprefix = ""))]
pub fn restore_consumer(
    py: Python<'_>,
    url: &str,
    consumer_id: &str,
    global_keyprefix: &str,
) -> PyResult<usize> {
    let report = py
        .detach(|| core::restore_consumer(url, consumer_id, global_keyprefix))
        .py_err(py)?;
    log_held_back(py, &report.held_back);
    Ok(report.restored)
}

/// kombu's visibility restore: messages unacknowledged for longer than `visibility_timeout`.
#[pyfunction]
#[pyo3(signature = (url, visibility_timeout, global_keyprefix = ""))]
pub fn restore_visible(
    py: Python<'_>,
    url: &str,
    visibility_timeout: f64,
    global_keyprefix: &str,
) -> PyResult<usize> {
    let report = py
        .detach(|| core::restore_visible(url, visibility_timeout, global_keyprefix))
        .py_err(py)?;
    log_held_back(py, &report.held_back);
    Ok(report.restored)
}

/// Renews the leases of what the live consumers `consumer_ids` hold (and their sets' TTL).
#[pyfunction]
#[pyo3(signature = (url, consumer_ids, visibility_timeout, global_keyprefix = ""))]
pub fn renew_leases(
    py: Python<'_>,
    url: &str,
    consumer_ids: Vec<String>,
    visibility_timeout: f64,
    global_keyprefix: &str,
) -> PyResult<usize> {
    py.detach(|| core::renew_leases(url, &consumer_ids, visibility_timeout, global_keyprefix))
        .py_err(py)
}
