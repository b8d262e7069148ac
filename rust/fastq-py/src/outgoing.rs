//! `fastq.protocol.OutgoingMessage` read into the core's `Outgoing`, the one shape every
//! publisher (Redis, AMQP) sends.

use fastq_core::{MessageProperties, Outgoing};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDateTime, PyDict, PyString};

use crate::codec::{core_message, serializer};
use crate::errors::encode_error;

/// A `fastq.protocol.OutgoingMessage` read into the core's model (headers completed, checked).
pub fn outgoing<'py>(m: &Bound<'py, PyAny>) -> PyResult<Outgoing> {
    let py = m.py();
    let attr = |name: &Bound<'py, PyString>| m.getattr(name);
    let headers = attr(intern!(py, "headers"))?;
    let embed = attr(intern!(py, "embed"))?;
    let message = core_message(
        headers.cast::<PyDict>()?,
        &attr(intern!(py, "args"))?,
        &attr(intern!(py, "kwargs"))?,
        (!embed.is_none()).then_some(&embed),
    )?;
    let serializer = serializer(py, &attr(intern!(py, "serializer"))?.extract::<String>()?)?;
    let queue: String = attr(intern!(py, "queue"))?.extract()?;
    let routing_key: String = attr(intern!(py, "routing_key"))?.extract()?;
    let priority: Option<i64> = attr(intern!(py, "priority"))?.extract()?;
    let mut properties = MessageProperties {
        delivery_mode: octet(
            py,
            "delivery_mode",
            attr(intern!(py, "delivery_mode"))?.extract()?,
        )?,
        priority: octet(py, "priority", priority.unwrap_or(0))?,
        reply_to: attr(intern!(py, "reply_to"))?.extract()?,
        ..MessageProperties::default()
    };
    let extra = attr(intern!(py, "properties"))?;
    if !extra.is_none() {
        for (key, value) in extra.cast::<PyDict>()?.iter() {
            set_property(&mut properties, &key.extract::<String>()?, &value)?;
        }
    }
    Ok(Outgoing {
        message,
        serializer,
        exchange: attr(intern!(py, "exchange"))?.extract()?,
        routing_key: if routing_key.is_empty() {
            queue.clone()
        } else {
            routing_key
        },
        queue,
        properties,
    })
}

fn octet(py: Python<'_>, what: &str, value: i64) -> PyResult<u8> {
    u8::try_from(value)
        .map_err(|_| encode_error(py, format!("{what} must be between 0 and 255, got {value}")))
}

/// An extra AMQP property, as py-amqp takes them: it overrides the one fastq set; names that are
/// not AMQP basic properties are ignored (py-amqp does not send them either).
fn set_property(p: &mut MessageProperties, key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = value.py();
    if value.is_none() {
        return Ok(());
    }
    let text = || -> PyResult<Option<String>> {
        if key == "expiration" && value.extract::<i64>().is_ok() {
            return Ok(Some(value.str()?.to_string()));
        }
        value
            .extract::<String>()
            .map(Some)
            .map_err(|_| encode_error(py, format!("the AMQP property {key} must be a string")))
    };
    match key {
        "content_type" => p.content_type = text()?,
        "content_encoding" => p.content_encoding = text()?,
        "correlation_id" => p.correlation_id = text()?,
        "reply_to" => p.reply_to = text()?,
        "expiration" => p.expiration = text()?,
        "message_id" => p.message_id = text()?,
        "type" => p.kind = text()?,
        "user_id" => p.user_id = text()?,
        "app_id" => p.app_id = text()?,
        "priority" => p.priority = octet(py, key, value.extract()?)?,
        "delivery_mode" => p.delivery_mode = octet(py, key, value.extract()?)?,
        "timestamp" => {
            let seconds = if value.cast::<PyDateTime>().is_ok() {
                // As py-amqp: a naive datetime is UTC.
                py.import("calendar")?
                    .call_method1("timegm", (value.call_method0("utctimetuple")?,))?
                    .extract::<u64>()?
            } else {
                value.extract::<f64>()? as u64
            };
            p.timestamp = Some(seconds);
        }
        _ => {}
    }
    Ok(())
}
