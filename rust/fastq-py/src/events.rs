//! Celery's events: encoded where they happen, stamped with the clock where they are sent
//! (`fastq_core::events`). Both run with the GIL held: an event is a few hundred bytes, less
//! work than releasing and taking the GIL back.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use fastq_core::events::{self, EventWriter, Field};
use fastq_core::redis::event_envelope;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};

use crate::convert::to_value;
use crate::delivery::Delivery;
use crate::errors::{encode_error, IntoPyResult};
use crate::message::TaskMessage;

/// Celery's `resultrepr_maxsize`, and its bound on `argsrepr`/`kwargsrepr`: longer reprs are cut
/// (`fastq.events.REPR_MAX`).
const REPR_MAX: usize = 1024;

/// Encodes `events`, each `(type, timestamp, fields)`, as JSON objects without their clock.
#[pyfunction]
pub fn encode_events<'py>(
    py: Python<'py>,
    events: &Bound<'py, PyAny>,
    common: &[u8],
) -> PyResult<Bound<'py, PyList>> {
    let mut out = Vec::with_capacity(512);
    let mut encoded = Vec::new();
    for item in events.try_iter()? {
        out.clear();
        encode_one(&mut out, &item?, common)?;
        encoded.push(PyBytes::new(py, &out));
    }
    PyList::new(py, encoded)
}

/// `encode_events` as lines: each event `<prefix><JSON>\n` (JSON holds no raw newline).
#[pyfunction]
pub fn encode_event_lines<'py>(
    py: Python<'py>,
    events: &Bound<'py, PyAny>,
    common: &[u8],
    prefix: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(1024);
    for item in events.try_iter()? {
        out.extend_from_slice(prefix);
        encode_one(&mut out, &item?, common)?;
        out.push(b'\n');
    }
    Ok(PyBytes::new(py, &out))
}

fn encode_one(out: &mut Vec<u8>, item: &Bound<'_, PyAny>, common: &[u8]) -> PyResult<()> {
    let py = item.py();
    let (event_type, timestamp, fields): (Bound<'_, PyString>, f64, Bound<'_, PyAny>) =
        item.extract()?;
    let event_type = event_type.to_str()?;
    let Ok(fields) = fields.cast::<PyDict>() else {
        return Err(encode_error(
            py,
            format!("the fields of a {event_type} event must be a dict"),
        ));
    };
    let mut event = EventWriter::begin(out, event_type, timestamp, common).py_err(py)?;
    for (key, value) in fields.iter() {
        event.field(field_name(&key)?, field(&value)?).py_err(py)?;
    }
    event.end();
    Ok(())
}

fn field_name<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    match key.cast::<PyString>() {
        Ok(name) => name.to_str(),
        Err(_) => Err(encode_error(
            key.py(),
            format!(
                "an event's field names are str, not {}",
                key.get_type().name()?
            ),
        )),
    }
}

/// The scalars events carry are written from the Python objects, without a copy.
fn field<'a>(value: &'a Bound<'_, PyAny>) -> PyResult<Field<'a>> {
    if value.is_none() {
        return Ok(Field::Null);
    }
    if let Ok(text) = value.cast::<PyString>() {
        if let Ok(text) = text.to_str() {
            return Ok(Field::Str(text));
        }
    } else if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Field::Bool(b.is_true()));
    } else if let Ok(f) = value.cast::<PyFloat>() {
        return Ok(Field::Float(f.value()));
    } else if let Ok(i) = value.cast::<PyInt>() {
        if let Ok(i) = i.extract::<i64>() {
            return Ok(Field::Int(i));
        }
    }
    Ok(Field::Value(to_value(value)?)) // with to_value's errors (a lone surrogate, a big int…)
}

/// The `task-received` of each delivery of a fetched batch whose message decoded and whose task
/// is in `tasks`, all at `timestamp` (when the batch arrived), as lines `<prefix><JSON>\n`:
/// Celery's fields, `args`/`kwargs` from the message's `argsrepr`/`kwargsrepr` or else the
/// arguments' reprs cut as Celery cuts them.
fn write_received<'py>(
    out: &mut Vec<u8>,
    deliveries: &Bound<'py, PyAny>,
    tasks: &Bound<'py, PyAny>,
    common: &[u8],
    timestamp: f64,
    prefix: &[u8],
) -> PyResult<()> {
    let py = deliveries.py();
    // One arrival time for the batch, written once.
    let at = events::decimal((timestamp.max(0.0) * 1e6) as u64, 6); // whole µs, as `started`
    let mut last: Option<(String, bool)> = None;
    for item in deliveries.try_iter()? {
        let item = item?;
        let message = match item.cast::<Delivery>() {
            Ok(delivery) => match &delivery.get().message {
                Some(message) => message.bind(py).clone().into_any(),
                None => continue,
            },
            Err(_) => item.getattr("message")?, // another broker's delivery
        };
        if message.is_none() {
            continue;
        }
        let (id, task, headers, args, kwargs): (Cow<'_, str>, Cow<'_, str>, _, _, _) =
            match message.cast::<TaskMessage>() {
                Ok(m) => {
                    let m = m.get();
                    (
                        Cow::Borrowed(m.id.as_str()),
                        Cow::Borrowed(m.task.as_str()),
                        m.headers.bind(py).clone().into_any(),
                        m.args.bind(py).clone().into_any(),
                        m.kwargs.bind(py).clone().into_any(),
                    )
                }
                Err(_) => (
                    Cow::Owned(message.getattr("id")?.extract::<String>()?),
                    Cow::Owned(message.getattr("task")?.extract::<String>()?),
                    message.getattr("headers")?,
                    message.getattr("args")?,
                    message.getattr("kwargs")?,
                ),
            };
        // A batch is mostly one task's: its name is looked up once.
        let registered = match &last {
            Some((name, known)) if *name == task => *known,
            _ => {
                let known = tasks.contains(task.as_ref())?;
                last = Some((task.clone().into_owned(), known));
                known
            }
        };
        if !registered {
            continue; // unregistered: refused, as Celery does, without a task-received
        }
        let headers = headers.cast_into::<PyDict>()?;
        let header = |name: &Bound<'py, PyString>| headers.get_item(name);
        let argsrepr = repr_or(header(intern!(py, "argsrepr"))?, &args)?;
        let kwargsrepr = match header(intern!(py, "kwargsrepr"))? {
            Some(text) if text.is_instance_of::<PyString>() => text,
            _ if kwargs.is_none() => short_repr(&PyDict::new(py).into_any()),
            _ => short_repr(&kwargs),
        };
        let (root_id, parent_id) = (
            header(intern!(py, "root_id"))?,
            header(intern!(py, "parent_id"))?,
        );
        let (retries, eta, expires) = (
            header(intern!(py, "retries"))?,
            header(intern!(py, "eta"))?,
            header(intern!(py, "expires"))?,
        );
        out.extend_from_slice(prefix);
        let mut event =
            EventWriter::begin_at(out, "task-received", Field::Number(&at), common).py_err(py)?;
        event.field("uuid", Field::Str(&id)).py_err(py)?;
        event.field("name", Field::Str(&task)).py_err(py)?;
        event.field("args", field(&argsrepr)?).py_err(py)?;
        event.field("kwargs", field(&kwargsrepr)?).py_err(py)?;
        for (name, value) in [("root_id", root_id), ("parent_id", parent_id)] {
            event.field(name, optional(&value)?).py_err(py)?;
        }
        let retries = match &retries {
            Some(value) if !value.is_none() => field(value)?,
            _ => Field::Int(0),
        };
        event.field("retries", retries).py_err(py)?;
        for (name, value) in [("eta", eta), ("expires", expires)] {
            event.field(name, optional(&value)?).py_err(py)?;
        }
        event.end();
        out.push(b'\n');
    }
    Ok(())
}

fn optional<'a>(value: &'a Option<Bound<'_, PyAny>>) -> PyResult<Field<'a>> {
    match value {
        Some(value) => field(value),
        None => Ok(Field::Null),
    }
}

/// `text` when it is a str (the message's `argsrepr`), else `value`'s repr, cut.
fn repr_or<'py>(
    text: Option<Bound<'py, PyAny>>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match text {
        Some(text) if text.is_instance_of::<PyString>() => text,
        _ => short_repr(value),
    })
}

/// `fastq.events.short_repr`: the repr, cut to `REPR_MAX` characters with `...`; a repr that
/// raises is named instead.
fn short_repr<'py>(value: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    let py = value.py();
    let text = match value.repr() {
        Ok(text) => text,
        Err(err) => {
            let kind = value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            let error = err
                .value(py)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_default();
            return PyString::new(py, &format!("<unrepresentable {kind}: {error}>")).into_any();
        }
    };
    match text.to_str() {
        Ok(s) if s.len() > REPR_MAX && s.chars().count() > REPR_MAX => {
            let end = s
                .char_indices()
                .nth(REPR_MAX - 3)
                .map_or(s.len(), |(i, _)| i);
            PyString::new(py, &format!("{}...", &s[..end])).into_any()
        }
        _ => text.into_any(),
    }
}

/// The JSON array of the events in `events` with their clocks spliced in, from `clock` on. An
/// item is an encoded event, or several each on a line of its own (a prefork child's `E` lines,
/// `split_reports`). One that is not a JSON object is left out, and its clock number with it.
#[pyfunction]
pub fn stamp_events<'py>(
    py: Python<'py>,
    events: Vec<Bound<'py, PyBytes>>,
    clock: u64,
) -> Bound<'py, PyBytes> {
    let body = events::stamp(events.iter().map(|raw| raw.as_bytes()), clock);
    PyBytes::new(py, &body)
}

/// How many events `events` hold (`stamp_events`' clock numbers).
#[pyfunction]
pub fn count_events(events: Vec<Bound<'_, PyBytes>>) -> u64 {
    events::count(events.iter().map(|raw| raw.as_bytes()))
}

/// A report chunk of a prefork child split in one pass: its `<prefix>` lines (the task events)
/// with the prefix taken off, together, each ending in `\n`; its other lines, without their
/// `\n`; and what follows the last `\n` (a line not whole yet).
#[pyfunction]
pub fn split_reports<'py>(
    py: Python<'py>,
    data: &[u8],
    prefix: &[u8],
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyList>, Bound<'py, PyBytes>)> {
    let mut events = Vec::new(); // none at all with events off: no allocation
    let lines = PyList::empty(py);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', data) {
        let line = &data[start..end];
        if let Some(event) = line.strip_prefix(prefix) {
            events.extend_from_slice(event);
            events.push(b'\n');
        } else {
            lines.append(PyBytes::new(py, line))?;
        }
        start = end + 1;
    }
    let whole = start;
    Ok((
        PyBytes::new(py, &events),
        lines,
        PyBytes::new(py, &data[whole..]),
    ))
}

/// A prefork child's task events as report lines `<prefix><JSON>\n`, held until its next report
/// carries them (`fastq.events.TaskEvents`): each event written where it happens, in one call,
/// into one buffer. A call that fails leaves nothing of its events behind.
#[pyclass(module = "fastq._core")]
pub struct EventLines {
    common: Vec<u8>,
    prefix: Vec<u8>,
    held: Vec<u8>,
}

impl EventLines {
    /// Runs `write` on the buffer; what it wrote is taken back if it fails.
    fn atomic(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>, &[u8], &[u8]) -> PyResult<()>,
    ) -> PyResult<()> {
        let mark = self.held.len();
        let result = write(&mut self.held, &self.common, &self.prefix);
        if result.is_err() {
            self.held.truncate(mark);
        }
        result
    }
}

#[pymethods]
impl EventLines {
    #[new]
    fn new(common: &[u8], prefix: &[u8]) -> Self {
        EventLines {
            common: common.to_vec(),
            prefix: prefix.to_vec(),
            held: Vec::with_capacity(4096),
        }
    }

    /// The `task-received` of each delivery of a fetched batch whose message decoded and whose
    /// task is in `tasks`, all at `timestamp`: Celery's fields, `args`/`kwargs` from the
    /// message's `argsrepr`/`kwargsrepr` or else the arguments' reprs cut as Celery cuts them.
    fn received(
        &mut self,
        deliveries: &Bound<'_, PyAny>,
        tasks: &Bound<'_, PyAny>,
        timestamp: f64,
    ) -> PyResult<()> {
        self.atomic(|out, common, prefix| {
            write_received(out, deliveries, tasks, common, timestamp, prefix)
        })
    }

    /// The `task-started` of task `uuid`, now.
    fn started(&mut self, py: Python<'_>, uuid: &str) -> PyResult<()> {
        self.atomic(|out, common, prefix| {
            out.extend_from_slice(prefix);
            let at = now_micros();
            let mut event = EventWriter::begin_at(out, "task-started", Field::Number(&at), common)
                .py_err(py)?;
            event.field("uuid", Field::Str(uuid)).py_err(py)?;
            event.end();
            out.push(b'\n');
            Ok(())
        })
    }

    /// The `task-succeeded` of task `uuid`, now: `result` the task's return value (its repr is
    /// sent, cut as Celery cuts it), `runtime` how long it ran (seconds).
    fn succeeded(&mut self, uuid: &str, result: &Bound<'_, PyAny>, runtime: f64) -> PyResult<()> {
        let py = result.py();
        let repr = short_repr(result);
        let repr = repr.cast::<PyString>()?.to_str()?;
        self.atomic(|out, common, prefix| {
            out.extend_from_slice(prefix);
            let at = now_micros();
            let mut event =
                EventWriter::begin_at(out, "task-succeeded", Field::Number(&at), common)
                    .py_err(py)?;
            event.field("uuid", Field::Str(uuid)).py_err(py)?;
            event.field("result", Field::Str(repr)).py_err(py)?;
            event
                .field("runtime", Field::Float(runtime.max(0.0)))
                .py_err(py)?;
            event.end();
            out.push(b'\n');
            Ok(())
        })
    }

    /// Lines encoded elsewhere (`encode_event_lines`), held with the rest.
    fn push(&mut self, lines: &[u8]) {
        self.held.extend_from_slice(lines);
    }

    /// Everything held, and nothing held after.
    fn take<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let taken = PyBytes::new(py, &self.held);
        self.held.clear();
        taken
    }

    /// The bytes held (a child's report writes them when there are any).
    fn __len__(&self) -> usize {
        self.held.len()
    }
}

/// `time.time()` as a JSON number's text, in whole microseconds.
fn now_micros() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    events::decimal(since.as_micros() as u64, 6)
}

/// The RESP `PUBLISH` of an event message on Redis: kombu's envelope around the JSON `body`
/// (`fastq_core::redis::event_envelope`), sent on `channel` as it is.
#[pyfunction]
pub fn redis_event_command<'py>(
    py: Python<'py>,
    channel: &str,
    body: &[u8],
    hostname: &str,
    exchange: &str,
    routing_key: &str,
) -> Bound<'py, PyBytes> {
    let command = event_envelope::publish_command(channel, body, hostname, exchange, routing_key);
    PyBytes::new(py, &command)
}
