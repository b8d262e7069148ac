//! Celery's events: encoded where they happen, stamped with the clock where they are sent
//! (`fastq_core::events`). Both run with the GIL held: an event is a few hundred bytes, less
//! work than releasing and taking the GIL back.

use fastq_core::events::{self, EventWriter, Field};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};

use crate::convert::to_value;
use crate::errors::{encode_error, IntoPyResult};

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

/// The JSON array of `events` with their clocks spliced in, from `clock` on.
#[pyfunction]
pub fn stamp_events<'py>(
    py: Python<'py>,
    events: &Bound<'py, PyAny>,
    clock: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    let items = events
        .try_iter()?
        .map(|item| Ok(item?.cast_into::<PyBytes>()?))
        .collect::<PyResult<Vec<_>>>()?;
    let body = events::stamp(items.iter().map(|b| b.as_bytes()), clock);
    Ok(PyBytes::new(py, &body))
}
