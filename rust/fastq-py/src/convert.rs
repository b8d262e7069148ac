//! Python objects ↔ `fastq_core::Value`, the only place that walks Python values.

use fastq_core::envelope::TASK_PROPERTIES;
use fastq_core::protocol::{EMBED_KEYS, V2_HEADERS};
use fastq_core::{codec, CodecError, Value};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDate, PyDateTime, PyDict, PyFloat, PyInt, PyList, PyString,
    PyTime, PyTuple,
};

use crate::errors::{encode_error, IntoPyErr};

/// Deeper than any real task argument; stops a self-referencing list from recursing forever.
const MAX_DEPTH: usize = 256;

struct Stdlib {
    decimal: Py<PyAny>,
    uuid: Py<PyAny>,
    datetime_fromisoformat: Py<PyAny>,
    time_fromisoformat: Py<PyAny>,
}

static STDLIB: PyOnceLock<Stdlib> = PyOnceLock::new();

fn stdlib(py: Python<'_>) -> PyResult<&Stdlib> {
    STDLIB.get_or_try_init(py, || {
        let dt = py.import("datetime")?;
        Ok(Stdlib {
            decimal: py.import("decimal")?.getattr("Decimal")?.unbind(),
            uuid: py.import("uuid")?.getattr("UUID")?.unbind(),
            datetime_fromisoformat: dt.getattr("datetime")?.getattr("fromisoformat")?.unbind(),
            time_fromisoformat: dt.getattr("time")?.getattr("fromisoformat")?.unbind(),
        })
    })
}

pub fn to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    to_value_at(obj, 0)
}

fn to_value_at(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    let py = obj.py();
    if depth > MAX_DEPTH {
        return Err(encode_error(
            py,
            format!("value nested deeper than {MAX_DEPTH} levels (or it contains itself)"),
        ));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return match s.to_str() {
            Ok(text) => Ok(Value::Str(text.to_owned())),
            Err(e) => Err(encode_error(
                py,
                format!(
                    "a str that is not valid UTF-8 cannot be sent (it holds a lone surrogate, \
                     e.g. from surrogateescape); send bytes instead: {e}"
                ),
            )),
        };
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        if let Ok(n) = i.extract::<i64>() {
            return Ok(Value::Int(n));
        }
        if let Ok(n) = i.extract::<u64>() {
            return Ok(Value::UInt(n));
        }
        return Err(encode_error(
            py,
            format!("integer {i} does not fit in 64 bits; send it as a string"),
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut entries = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            entries.push((to_value_at(&k, depth + 1)?, to_value_at(&v, depth + 1)?));
        }
        return Ok(Value::Map(entries));
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return l
            .iter()
            .map(|v| to_value_at(&v, depth + 1))
            .collect::<PyResult<_>>()
            .map(Value::List);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return t
            .iter()
            .map(|v| to_value_at(&v, depth + 1))
            .collect::<PyResult<_>>()
            .map(Value::List);
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Value::Bytes(b.to_vec()));
    }
    if obj.cast::<PyDateTime>().is_ok() {
        return Ok(Value::DateTime(isoformat(obj)?));
    }
    if obj.cast::<PyDate>().is_ok() {
        return Ok(Value::Date(isoformat(obj)?));
    }
    if obj.cast::<PyTime>().is_ok() {
        return Ok(Value::Time(isoformat(obj)?));
    }
    let std = stdlib(py)?;
    if obj.is_instance(std.decimal.bind(py))? {
        return Ok(Value::Decimal(obj.str()?.to_str()?.to_owned()));
    }
    if obj.is_instance(std.uuid.bind(py))? {
        return Ok(Value::Uuid(obj.getattr("hex")?.extract()?));
    }
    if let Ok(reducer) = obj.getattr("__json__") {
        return to_value_at(&reducer.call0()?, depth + 1);
    }
    // Sets, generators and mappings that are not dicts: convert the obvious ones like json would not.
    Err(encode_error(
        py,
        format!(
            "object of type {} cannot be serialized; pass JSON-like values \
             (dict, list, str, int, float, bool, None, bytes, datetime, Decimal, UUID) \
             or give it a __json__() method",
            obj.get_type().name()?
        ),
    ))
}

fn isoformat(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    obj.call_method0("isoformat")?.extract()
}

pub fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::UInt(u) => u.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::List(items) => list(py, items)?.into_any(),
        Value::Map(entries) => dict(py, entries)?.into_any(),
        Value::DateTime(s) => from_marker(py, "datetime", s, &stdlib(py)?.datetime_fromisoformat)?,
        // kombu reads a date marker with datetime.fromisoformat(text).date().
        Value::Date(s) => {
            from_marker(py, "date", s, &stdlib(py)?.datetime_fromisoformat)?.call_method0("date")?
        }
        Value::Time(s) => from_marker(py, "time", s, &stdlib(py)?.time_fromisoformat)?,
        Value::Decimal(s) => from_marker(py, "decimal", s, &stdlib(py)?.decimal)?,
        Value::Uuid(hex) => {
            let kwargs = PyDict::new(py);
            kwargs.set_item("hex", hex)?;
            stdlib(py)?.uuid.bind(py).call((), Some(&kwargs))?
        }
    })
}

/// Builds the Python value of a kombu marker's text; text Python refuses is a `DecodeError`.
fn from_marker<'py>(
    py: Python<'py>,
    kind: &str,
    text: &str,
    parse: &Py<PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    parse.bind(py).call1((text,)).map_err(|e| {
        CodecError::Decode {
            content_type: codec::JSON.into(),
            reason: format!("kombu {kind} marker holds {text:?}, which is not a valid {kind}: {e}"),
        }
        .into_py_err(py)
    })
}

/// Keys that messages repeat besides the protocol's headers, embed and envelope properties:
/// signatures' and `delivery_info`'s.
const OTHER_KEYS: [&str; 11] = [
    // signatures
    "args",
    "kwargs",
    "options",
    "subtask_type",
    "immutable",
    "chord_size",
    "link",
    "link_error",
    // delivery_info
    "exchange",
    "routing_key",
    "redelivered",
];

fn known_keys() -> impl Iterator<Item = &'static str> {
    V2_HEADERS
        .into_iter()
        .chain(EMBED_KEYS)
        .chain(TASK_PROPERTIES)
        .chain(OTHER_KEYS)
}

/// `known_keys()` as interned Python strings, in the same order, made once per process.
static INTERNED: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();

/// The names every task message repeats as interned Python strings: no allocation or hashing
/// per message, and dict lookups on them hit the identity fast path.
fn known_key<'py>(py: Python<'py>, key: &str) -> Option<&'py Bound<'py, PyString>> {
    let i = known_keys().position(|k| k == key)?;
    let interned = INTERNED.get_or_init(py, || {
        known_keys()
            .map(|k| PyString::intern(py, k).unbind())
            .collect()
    });
    Some(interned[i].bind(py))
}

fn key_to_py<'py>(py: Python<'py>, key: &Value) -> PyResult<Bound<'py, PyAny>> {
    match key {
        Value::Str(s) => Ok(match known_key(py, s) {
            Some(interned) => interned.clone().into_any(),
            None => PyString::new(py, s).into_any(),
        }),
        other => to_py(py, other),
    }
}

pub fn list<'py>(py: Python<'py>, items: &[Value]) -> PyResult<Bound<'py, PyList>> {
    let converted = items
        .iter()
        .map(|v| to_py(py, v))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, converted)
}

pub fn tuple<'py>(py: Python<'py>, items: &[Value]) -> PyResult<Bound<'py, PyTuple>> {
    let converted = items
        .iter()
        .map(|v| to_py(py, v))
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(py, converted)
}

pub fn dict<'py>(py: Python<'py>, entries: &[(Value, Value)]) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in entries {
        d.set_item(key_to_py(py, k)?, to_py(py, v)?)?;
    }
    Ok(d)
}
