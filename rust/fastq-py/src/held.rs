//! What a prefork child holds and has not started (`fastq.worker.held`), for the rest of a
//! fetched batch: the `R` report's JSON written in one call instead of an entry and a JSON
//! encoding per message in Python. Only the common case is written here; the caller reads the
//! rest in Python.

use fastq_core::codec::json;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::delivery::Delivery;

/// `fastq.worker.held.REPR_MAX`: longer argument reprs are cut, as Celery's clients cut them.
const REPR_MAX: usize = 1024;

/// The JSON array of `fastq.worker.held` entries (`[id, name, exchange, routing_key, priority,
/// redelivered, null, argsrepr, kwargsrepr]`) of `deliveries`, those without a task id left
/// out; None when one needs Python: not this extension's `Delivery`, a message with an `eta`
/// header (due or not, read with the worker's own rules), or text that is not UTF-8.
#[pyfunction]
pub fn encode_held<'py>(
    py: Python<'py>,
    deliveries: Vec<Bound<'py, PyAny>>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let mut out = Vec::with_capacity(2 + deliveries.len() * 160);
    out.push(b'[');
    for item in &deliveries {
        let Ok(delivery) = item.cast::<Delivery>() else {
            return Ok(None);
        };
        let delivery = delivery.get();
        let Some(task_id) = delivery.task_id.as_deref().filter(|id| !id.is_empty()) else {
            continue;
        };
        let mut reprs: [Option<String>; 2] = [None, None];
        if let Some(message) = &delivery.message {
            let headers: &Bound<'py, PyDict> = message.get().headers.bind(py);
            match headers.get_item(intern!(py, "eta"))? {
                Some(eta) if !eta.is_none() => return Ok(None),
                _ => {}
            }
            for (slot, key) in reprs
                .iter_mut()
                .zip([intern!(py, "argsrepr"), intern!(py, "kwargsrepr")])
            {
                if let Some(value) = headers.get_item(key)? {
                    if let Ok(text) = value.cast::<PyString>() {
                        let Ok(text) = text.to_str() else {
                            return Ok(None);
                        };
                        *slot = Some(cut(text));
                    }
                }
            }
        }
        if out.len() > 1 {
            out.push(b',');
        }
        out.push(b'[');
        for text in [
            task_id,
            delivery.task_name.as_deref().unwrap_or(""),
            &delivery.exchange,
            &delivery.queue,
        ] {
            json_str(&mut out, text);
            out.push(b',');
        }
        out.extend_from_slice(delivery.priority.to_string().as_bytes());
        out.extend_from_slice(if delivery.redelivered {
            b",true,null,"
        } else {
            b",false,null,"
        });
        for (i, text) in reprs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match text {
                Some(text) => json_str(&mut out, text),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.push(b']');
    }
    out.push(b']');
    Ok(Some(PyBytes::new(py, &out)))
}

/// `text` cut to `REPR_MAX` characters with `...`, as `fastq.worker.held._entry` cuts it.
fn cut(text: &str) -> String {
    if text.len() <= REPR_MAX || text.chars().count() <= REPR_MAX {
        return text.to_owned();
    }
    let end = text
        .char_indices()
        .nth(REPR_MAX - 3)
        .map_or(text.len(), |(i, _)| i);
    format!("{}...", &text[..end])
}

fn json_str(out: &mut Vec<u8>, text: &str) {
    json::to_writer(out, text).expect("a str always serializes");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_by_characters() {
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(REPR_MAX + 1);
        let cut_text = cut(&long);
        assert_eq!(cut_text.chars().count(), REPR_MAX);
        assert!(cut_text.ends_with("..."));
        let exact = "é".repeat(REPR_MAX);
        assert_eq!(cut(&exact), exact);
    }
}
