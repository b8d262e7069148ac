//! Celery's events as a worker sends them: each a JSON object encoded where it happens
//! (`encode`), without its Lamport clock, which the process that publishes it splices in
//! (`stamp`): a prefork worker's children encode their task events, its supervisor stamps them.

use std::io::Write as _;

use crate::codec::json;
use crate::error::Result;
use crate::value::Value;

/// A field of an event: the scalars events carry, written as they are, or any other value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// A JSON number as text, written as it is (the caller wrote it: `decimal`).
    Number(&'a str),
    Value(Value),
}

/// `units / 10^scale` as a JSON number's text, exactly (`1_500_000, 6` → `1.500000`): a
/// timestamp or duration counted in integer micro- or nanoseconds, without a float's formatting.
pub fn decimal(units: u64, scale: u32) -> String {
    let div = 10u64.pow(scale);
    format!(
        "{}.{:0width$}",
        units / div,
        units % div,
        width = scale as usize
    )
}

/// Appends one event: `{"type":…,"timestamp":…,<common>,<fields>}`. `common` holds the JSON
/// object members every event of the sender shares (`"hostname":…,"utcoffset":…,"pid":…`),
/// written as they are; `fields` are the event's own.
pub fn encode<'a>(
    out: &mut Vec<u8>,
    event_type: &str,
    timestamp: f64,
    common: &[u8],
    fields: impl IntoIterator<Item = (&'a str, Field<'a>)>,
) -> Result<()> {
    let mut event = EventWriter::begin(out, event_type, timestamp, common)?;
    for (key, field) in fields {
        event.field(key, field)?;
    }
    event.end();
    Ok(())
}

/// `encode` a field at a time, for a caller that reads the fields as it writes them.
pub struct EventWriter<'o> {
    out: &'o mut Vec<u8>,
}

impl<'o> EventWriter<'o> {
    pub fn begin(
        out: &'o mut Vec<u8>,
        event_type: &str,
        timestamp: f64,
        common: &[u8],
    ) -> Result<Self> {
        Self::begin_at(out, event_type, Field::Float(timestamp), common)
    }

    /// `begin` with the timestamp as a `Field` (`Float`, or `Number` text from `decimal`).
    pub fn begin_at(
        out: &'o mut Vec<u8>,
        event_type: &str,
        timestamp: Field<'_>,
        common: &[u8],
    ) -> Result<Self> {
        out.extend_from_slice(b"{\"type\":");
        write_str(out, event_type)?;
        out.extend_from_slice(b",\"timestamp\":");
        match timestamp {
            Field::Number(text) => out.extend_from_slice(text.as_bytes()),
            Field::Float(f) => json::write(out, &Value::Float(f))?,
            other => json::write(out, &field_value(other))?,
        }
        if !common.is_empty() {
            out.push(b',');
            out.extend_from_slice(common);
        }
        Ok(EventWriter { out })
    }

    pub fn field(&mut self, key: &str, field: Field<'_>) -> Result<()> {
        let out = &mut *self.out;
        out.push(b',');
        write_str(out, key)?;
        out.push(b':');
        match field {
            Field::Null => out.extend_from_slice(b"null"),
            Field::Bool(true) => out.extend_from_slice(b"true"),
            Field::Bool(false) => out.extend_from_slice(b"false"),
            Field::Int(i) => {
                let _ = write!(out, "{i}"); // writing to a Vec cannot fail
            }
            Field::Float(f) => json::write(out, &Value::Float(f))?,
            Field::Str(text) => write_str(out, text)?,
            Field::Number(text) => out.extend_from_slice(text.as_bytes()),
            Field::Value(value) => json::write(out, &value)?,
        }
        Ok(())
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}

/// A JSON string, written as it is when nothing in it needs escaping (ids, names, most reprs:
/// the usual case), else as serde_json escapes it.
fn write_str(out: &mut Vec<u8>, text: &str) -> Result<()> {
    // A fold without an early exit, so the compiler can vectorize it.
    let plain = text
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return Ok(());
    }
    json::to_writer(out, text)
}

fn field_value(field: Field<'_>) -> Value {
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(b),
        Field::Int(i) => Value::Int(i),
        Field::Float(f) => Value::Float(f),
        Field::Str(text) | Field::Number(text) => Value::Str(text.to_owned()),
        Field::Value(value) => value,
    }
}

/// The JSON array of the events in `runs` (objects from `encode`, one per line of a run: a
/// run is one event, or several each ending in `\n`), each with `"clock"` spliced in as its
/// first member: `first_clock`, `first_clock + 1`… (the body of a `task.multi` message). An
/// event that is not a JSON object (`{…}`) is left out, and its clock with it; empty lines
/// are not events.
pub fn stamp<'a>(runs: impl IntoIterator<Item = &'a [u8]>, first_clock: u64) -> Vec<u8> {
    let runs = runs.into_iter();
    let mut out = Vec::with_capacity(2 + runs.size_hint().0 * 320);
    out.push(b'[');
    let mut clock = first_clock;
    for event in runs.flat_map(lines) {
        if event.len() < 2 || event[0] != b'{' || event[event.len() - 1] != b'}' {
            clock += 1;
            continue;
        }
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"clock\":");
        let _ = write!(out, "{clock}"); // writing to a Vec cannot fail
        if event.len() > 2 {
            out.push(b',');
            out.extend_from_slice(&event[1..]);
        } else {
            out.push(b'}');
        }
        clock += 1;
    }
    out.push(b']');
    out
}

/// How many events `runs` hold (`stamp`'s clock numbers): their non-empty lines.
pub fn count<'a>(runs: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    runs.into_iter().flat_map(lines).count() as u64
}

/// The non-empty lines of `run`, without their `\n`.
fn lines(run: &[u8]) -> impl Iterator<Item = &[u8]> {
    let ends = memchr::memchr_iter(b'\n', run).chain(std::iter::once(run.len()));
    let mut start = 0;
    ends.filter_map(move |end| {
        let line = &run[start..end];
        start = end + 1;
        (!line.is_empty()).then_some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_writes_type_timestamp_common_then_fields() {
        let mut out = Vec::new();
        let fields = [
            ("uuid", Field::Str("a\"b")),
            ("runtime", Field::Float(0.5)),
            ("retries", Field::Int(-3)),
            ("requeue", Field::Bool(false)),
            ("eta", Field::Null),
            (
                "loadavg",
                Field::Value(Value::List(vec![Value::Float(0.25)])),
            ),
        ];
        encode(&mut out, "task-succeeded", 1.25, b"\"pid\":7", fields).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"type":"task-succeeded","timestamp":1.25,"pid":7,"uuid":"a\"b","runtime":0.5,"retries":-3,"requeue":false,"eta":null,"loadavg":[0.25]}"#
        );
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for text in [
            "plain-id",
            "",
            "é ünïcode",
            "quote\" back\\ nl\n tab\t \u{1}",
            "\u{7f}",
        ] {
            let mut fast = Vec::new();
            write_str(&mut fast, text).unwrap();
            assert_eq!(fast, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn decimal_writes_integer_units_exactly() {
        assert_eq!(decimal(1_764_770_000_123_456, 6), "1764770000.123456");
        assert_eq!(decimal(123_456, 9), "0.000123456");
        assert_eq!(decimal(5, 6), "0.000005");
        let mut out = Vec::new();
        let at = decimal(2_500_000, 6);
        EventWriter::begin_at(&mut out, "task-started", Field::Number(&at), b"")
            .unwrap()
            .end();
        assert_eq!(out, br#"{"type":"task-started","timestamp":2.500000}"#);
    }

    #[test]
    fn encode_without_fields_or_common() {
        let mut out = Vec::new();
        encode(&mut out, "task-started", 2.0, b"", []).unwrap();
        assert_eq!(out, br#"{"type":"task-started","timestamp":2.0}"#);
    }

    #[test]
    fn encoded_events_are_valid_json_with_every_member() {
        let mut out = Vec::new();
        let fields = [("args", Field::Str("(1,\n2)")), ("eta", Field::Null)];
        encode(
            &mut out,
            "task-received",
            3.5,
            b"\"hostname\":\"h\"",
            fields,
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["args"], "(1,\n2)");
        assert_eq!(value["hostname"], "h");
        assert!(value["eta"].is_null());
        assert!(
            !out.contains(&b'\n'),
            "one line per event on the report pipe"
        );
    }

    #[test]
    fn stamp_splices_consecutive_clocks_and_skips_what_is_not_an_object() {
        let events: [&[u8]; 4] = [br#"{"type":"a"}"#, b"{}", b"oops", br#"{"type":"b"}"#];
        let body = stamp(events, 41);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"[{"clock":41,"type":"a"},{"clock":42},{"clock":44,"type":"b"}]"#
        );
        assert_eq!(stamp(std::iter::empty(), 1), b"[]");
    }

    #[test]
    fn a_run_of_lines_is_stamped_line_by_line() {
        let runs: [&[u8]; 3] = [b"{\"a\":1}\n{\"b\":2}\n", b"{\"c\":3}", b"\n\n"];
        assert_eq!(count(runs), 3);
        assert_eq!(
            String::from_utf8(stamp(runs, 7)).unwrap(),
            r#"[{"clock":7,"a":1},{"clock":8,"b":2},{"clock":9,"c":3}]"#
        );
    }
}
