//! Module functions over the codec: the GIL is held to read Python values and released for the
//! byte work.

use fastq_core::codec::{self, Accept, Decoded, Serializer};
use fastq_core::envelope::{self, Envelope as CoreEnvelope, Routing};
use fastq_core::protocol::TaskMessage as CoreMessage;
use fastq_core::{CodecError, Value};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::convert::{dict, to_py, to_value};
use crate::errors::{encode_error, IntoPyErr, IntoPyResult};
use crate::message::{Envelope, TaskMessage};

pub fn serializer(py: Python<'_>, name: &str) -> PyResult<Serializer> {
    Serializer::from_name(name).ok_or_else(|| {
        CodecError::Encode {
            serializer: name.into(),
            reason: "fastq serializes json and msgpack natively (pickle only through Python, when accepted)".into(),
        }
        .into_py_err(py)
    })
}

pub fn accept(py: Python<'_>, accept: &[String]) -> PyResult<Accept> {
    Accept::new(accept).py_err(py)
}

/// Serializes a Python value with `serializer` (a name or MIME type).
#[pyfunction]
#[pyo3(signature = (obj, serializer = "json"))]
pub fn dumps<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
    serializer: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let ser = self::serializer(py, serializer)?;
    let value = to_value(obj)?;
    let bytes = py.detach(|| ser.encode(&value)).py_err(py)?;
    Ok(PyBytes::new(py, &bytes))
}

/// Deserializes `data` of `content_type`; with `accept`, refuses types not in it.
#[pyfunction]
#[pyo3(signature = (data, content_type = "application/json", accept = None))]
pub fn loads<'py>(
    py: Python<'py>,
    data: &[u8],
    content_type: &str,
    accept: Option<Vec<String>>,
) -> PyResult<Bound<'py, PyAny>> {
    let accept = match accept {
        Some(list) => self::accept(py, &list)?,
        None => Accept::new(&["json", "msgpack"]).py_err(py)?,
    };
    let decoded = py
        .detach(|| codec::decode_accepted(content_type, data, &accept))
        .py_err(py)?;
    match decoded {
        Decoded::Value(v) => to_py(py, &v),
        Decoded::Foreign { content_type } => Err(CodecError::Decode {
            content_type: content_type.into(),
            reason: "this format is decoded by fastq.serialization in Python".into(),
        }
        .into_py_err(py)),
    }
}

fn optional_map(d: Option<&Bound<'_, PyDict>>) -> PyResult<Value> {
    d.map_or(Ok(Value::Map(vec![])), |d| to_value(d.as_any()))
}

fn optional_value(v: Option<&Bound<'_, PyAny>>) -> PyResult<Value> {
    v.map_or(Ok(Value::Null), to_value)
}

pub(crate) fn core_message(
    headers: &Bound<'_, PyDict>,
    args: &Bound<'_, PyAny>,
    kwargs: &Bound<'_, PyAny>,
    embed: Option<&Bound<'_, PyAny>>,
) -> PyResult<CoreMessage> {
    let py = headers.py();
    let embed = embed.map_or(Ok(Value::Null), to_value)?;
    CoreMessage::new(
        to_value(headers.as_any())?,
        to_value(args)?,
        to_value(kwargs)?,
        embed,
    )
    .py_err(py)
}

/// Builds a protocol 2 task message and wraps it in a kombu Redis envelope: the bytes to LPUSH.
#[pyfunction]
#[pyo3(signature = (
    headers, args, kwargs, embed = None, *, serializer = "json", exchange = "",
    routing_key = "celery", priority = 0, delivery_mode = 2, reply_to = None, properties = None
))]
#[allow(clippy::too_many_arguments)]
pub fn encode_task_envelope<'py>(
    py: Python<'py>,
    headers: &Bound<'py, PyDict>,
    args: &Bound<'py, PyAny>,
    kwargs: &Bound<'py, PyAny>,
    embed: Option<&Bound<'py, PyAny>>,
    serializer: &str,
    exchange: &str,
    routing_key: &str,
    priority: i64,
    delivery_mode: i64,
    reply_to: Option<String>,
    properties: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let ser = self::serializer(py, serializer)?;
    let msg = core_message(headers, args, kwargs, embed)?;
    let extra = optional_map(properties)?;
    let routing = Routing {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        priority,
        delivery_mode,
        reply_to,
    };
    let bytes = py
        .detach(|| envelope::encode_task_envelope(&msg, ser, &routing, extra))
        .py_err(py)?;
    Ok(PyBytes::new(py, &bytes))
}

/// Builds a protocol 2 task message for AMQP: the completed headers and the serialized body.
#[pyfunction]
#[pyo3(signature = (headers, args, kwargs, embed = None, serializer = "json"))]
pub fn encode_task_message<'py>(
    py: Python<'py>,
    headers: &Bound<'py, PyDict>,
    args: &Bound<'py, PyAny>,
    kwargs: &Bound<'py, PyAny>,
    embed: Option<&Bound<'py, PyAny>>,
    serializer: &str,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyBytes>)> {
    let ser = self::serializer(py, serializer)?;
    let msg = core_message(headers, args, kwargs, embed)?;
    let body = py.detach(|| msg.encode_body(ser)).py_err(py)?;
    Ok((dict(py, &msg.headers)?, PyBytes::new(py, &body)))
}

/// kombu's MIME type for a compression name (`zlib` -> `application/x-gzip`); an unknown one
/// raises EncodeError naming the methods fastq has.
#[pyfunction]
pub fn compression_type(py: Python<'_>, name: &str) -> PyResult<&'static str> {
    fastq_core::compression::Compression::from_name(name)
        .map(fastq_core::compression::Compression::content_type)
        .map_err(|e| match e {
            CodecError::InvalidMessage(reason) => encode_error(py, reason),
            other => encode_error(py, other.to_string()),
        })
}

/// Decodes a task body of `content_type` (checked against `accept`) with its message headers.
#[pyfunction]
#[pyo3(signature = (headers, body, content_type, accept))]
pub fn decode_task(
    py: Python<'_>,
    headers: Option<&Bound<'_, PyAny>>,
    body: &[u8],
    content_type: &str,
    accept: Vec<String>,
) -> PyResult<TaskMessage> {
    let accept = self::accept(py, &accept)?;
    // Any object is read; one that is not a mapping is an InvalidMessage naming its type.
    let headers = optional_value(headers)?;
    let msg = py
        .detach(|| {
            match codec::decode_accepted(
                content_type,
                &fastq_core::compression::decompressed(&headers, body)?,
                &accept,
            )? {
                Decoded::Value(v) => CoreMessage::parse(headers, v),
                Decoded::Foreign { content_type } => Err(CodecError::invalid(format!(
                    "{content_type} bodies must go through fastq.serialization"
                ))),
            }
        })
        .py_err(py)?;
    TaskMessage::from_core(py, msg)
}

/// Reads a kombu Redis envelope and the task message inside it in one call.
#[pyfunction]
pub fn decode_task_envelope(
    py: Python<'_>,
    data: &[u8],
    accept: Vec<String>,
) -> PyResult<(Envelope, TaskMessage)> {
    let accept = self::accept(py, &accept)?;
    let (env, msg, sent_headers, redelivered) = py
        .detach(|| {
            let mut env = CoreEnvelope::decode(data)?;
            let sent_headers = match &env.headers {
                Value::Map(entries) => entries.len(),
                _ => 0,
            };
            // Read before the headers move into the message: `headers.redelivered` counts.
            let redelivered = env.redelivered();
            let msg = env.take_task_message(&accept)?;
            Ok::<_, CodecError>((env, msg, sent_headers, redelivered))
        })
        .py_err(py)?;
    if msg.protocol == 1 {
        return Ok((Envelope::from_core(env), TaskMessage::from_core(py, msg)?));
    }
    // The v2 headers moved into the message: the envelope's are the message's without the
    // defaults appended after the ones sent.
    let defaults: Vec<Value> = msg.headers[sent_headers..]
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    let msg = TaskMessage::from_core(py, msg)?;
    let headers = msg.headers.bind(py).copy()?;
    for key in &defaults {
        headers.del_item(to_py(py, key)?)?;
    }
    let mut envelope = Envelope::with_headers(py, env, headers.unbind());
    envelope.redelivered = redelivered;
    Ok((envelope, msg))
}
