//! AMQP field tables ↔ `Value`: message headers in, queue arguments out.

use lapin::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, LongString, ShortString};

use crate::value::Value;

/// A headers table as the codec's value tree (a map; order is the table's sorted key order).
pub fn table_to_value(table: &FieldTable) -> Value {
    Value::Map(
        table
            .inner()
            .iter()
            .map(|(k, v)| (Value::Str(k.as_str().to_owned()), amqp_to_value(v)))
            .collect(),
    )
}

/// One AMQP value. Long strings are text when they are UTF-8 (py-amqp writes every `str` as one),
/// bytes otherwise; timestamps become ISO-8601 text in UTC as Celery would read them.
pub fn amqp_to_value(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => Value::Int(i64::from(*i)),
        AMQPValue::ShortShortUInt(i) => Value::Int(i64::from(*i)),
        AMQPValue::ShortInt(i) => Value::Int(i64::from(*i)),
        AMQPValue::ShortUInt(i) => Value::Int(i64::from(*i)),
        AMQPValue::LongInt(i) => Value::Int(i64::from(*i)),
        AMQPValue::LongUInt(i) => Value::Int(i64::from(*i)),
        AMQPValue::LongLongInt(i) => Value::Int(*i),
        AMQPValue::Float(f) => Value::Float(f64::from(*f)),
        AMQPValue::Double(f) => Value::Float(*f),
        AMQPValue::DecimalValue(d) => Value::Decimal(decimal_text(d.value, d.scale)),
        AMQPValue::ShortString(s) => Value::Str(s.as_str().to_owned()),
        AMQPValue::LongString(s) => bytes_or_text(s.as_bytes()),
        AMQPValue::ByteArray(b) => Value::Bytes(b.as_slice().to_vec()),
        AMQPValue::FieldArray(a) => Value::List(a.as_slice().iter().map(amqp_to_value).collect()),
        AMQPValue::Timestamp(t) => Value::DateTime(timestamp_iso(*t)),
        AMQPValue::FieldTable(t) => table_to_value(t),
        AMQPValue::Void => Value::Null,
    }
}

fn bytes_or_text(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::Str(s.to_owned()),
        Err(_) => Value::Bytes(b.to_vec()),
    }
}

fn decimal_text(value: u32, scale: u8) -> String {
    let digits = value.to_string();
    let scale = usize::from(scale);
    if scale == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{int}.{frac}")
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SS+00:00` (civil-from-days, no date crate needed).
fn timestamp_iso(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}+00:00")
}

/// Queue or exchange arguments (`x-max-priority`, `x-queue-type`, `x-expires`…) as a field table.
/// Integers go out as signed 64-bit (`l`), which RabbitMQ accepts for every numeric argument.
pub fn value_to_table(v: &Value) -> Result<FieldTable, String> {
    match v {
        Value::Null => Ok(FieldTable::default()),
        Value::Map(entries) => table(entries, Dialect::Arguments),
        other => Err(format!(
            "arguments must be a mapping, got a {}",
            other.type_name()
        )),
    }
}

/// Message headers (a task's protocol 2 headers) as a field table, typed as py-amqp writes them,
/// so a Celery worker reads back what a Celery client would have sent: text and bytes as long
/// strings, integers as 32-bit when they fit (`I`) else 64-bit, floats as doubles, datetimes as
/// timestamps (seconds, UTC), decimals as AMQP decimals. Dates, times and UUIDs are refused, as
/// py-amqp refuses them.
pub fn headers_table(entries: &[(Value, Value)]) -> Result<FieldTable, String> {
    table(entries, Dialect::Headers)
}

/// How values become AMQP values. Arguments keep every integer 64-bit, as fastq has always
/// declared them (RabbitMQ compares argument types when a queue is declared again); headers
/// follow py-amqp.
#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    Arguments,
    Headers,
}

impl Dialect {
    fn noun(self) -> &'static str {
        match self {
            Dialect::Arguments => "argument",
            Dialect::Headers => "header",
        }
    }
}

fn table(entries: &[(Value, Value)], dialect: Dialect) -> Result<FieldTable, String> {
    let what = dialect.noun();
    let mut table = FieldTable::default();
    for (k, v) in entries {
        let key = k
            .as_str()
            .ok_or_else(|| format!("{what} names must be strings, got a {}", k.type_name()))?;
        let name = ShortString::try_new(key)
            .map_err(|_| format!("{what} name {key:.40?}… is longer than 255 bytes"))?;
        let value = value_to_amqp(v, dialect).map_err(|e| format!("{what} {key:?}: {e}"))?;
        table.insert(name, value);
    }
    Ok(table)
}

fn value_to_amqp(v: &Value, dialect: Dialect) -> Result<AMQPValue, String> {
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Int(i) => match i32::try_from(*i) {
            Ok(small) if dialect == Dialect::Headers => AMQPValue::LongInt(small),
            _ => AMQPValue::LongLongInt(*i),
        },
        Value::UInt(u) => AMQPValue::LongLongInt(
            i64::try_from(*u)
                .map_err(|_| format!("{u} does not fit in a signed 64-bit integer"))?,
        ),
        Value::Float(f) => AMQPValue::Double(*f),
        Value::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        Value::Bytes(b) => AMQPValue::LongString(LongString::from(b.as_slice())),
        Value::List(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .map(|item| value_to_amqp(item, dialect))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Map(entries) => AMQPValue::FieldTable(table(entries, dialect)?),
        Value::DateTime(text) if dialect == Dialect::Headers => AMQPValue::Timestamp(
            iso_timestamp(text).ok_or_else(|| format!("cannot read the datetime {text:?}"))?,
        ),
        Value::Decimal(text) if dialect == Dialect::Headers => AMQPValue::DecimalValue(
            decimal_value(text)
                .ok_or_else(|| format!("the decimal {text} does not fit an AMQP decimal"))?,
        ),
        other => {
            return Err(format!(
                "a {} cannot be an AMQP {} value{}",
                other.type_name(),
                dialect.noun(),
                if dialect == Dialect::Headers {
                    " (py-amqp refuses it too); send it as text"
                } else {
                    ""
                }
            ))
        }
    })
}

/// `Decimal` text (`"1.50"`) as an AMQP decimal: scale = digits after the point, value unsigned.
fn decimal_value(text: &str) -> Option<DecimalValue> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits: String = [int, frac].concat();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(DecimalValue {
        scale: u8::try_from(frac.len()).ok()?,
        value: digits.parse().ok()?,
    })
}

/// ISO-8601 (`datetime.isoformat()`) to seconds since the epoch; naive times are UTC, as py-amqp
/// takes them (`calendar.timegm(dt.utctimetuple())`). Fractions of a second are dropped.
fn iso_timestamp(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, m, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let end = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        rest = &frac[end..];
    }
    let offset = match rest {
        "" | "Z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = rest[1..].split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3600 + om.get(..2)?.parse::<i64>().ok()? * 60)
        }
    };
    // days_from_civil (Howard Hinnant), the inverse of `timestamp_iso` above.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + s - offset).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::DecimalValue;

    #[test]
    fn headers_as_py_amqp_writes_them() {
        let mut t = FieldTable::default();
        t.insert("task".into(), AMQPValue::LongString("proj.add".into()));
        t.insert("retries".into(), AMQPValue::LongInt(0));
        t.insert("eta".into(), AMQPValue::Void);
        t.insert("ignore_result".into(), AMQPValue::Boolean(false));
        t.insert(
            "timelimit".into(),
            AMQPValue::FieldArray(vec![AMQPValue::Void, AMQPValue::LongLongInt(5)].into()),
        );
        let v = table_to_value(&t);
        assert_eq!(v.get("task"), Some(&Value::from("proj.add")));
        assert_eq!(v.get("retries"), Some(&Value::Int(0)));
        assert_eq!(v.get("eta"), Some(&Value::Null));
        assert_eq!(
            v.get("timelimit"),
            Some(&Value::List(vec![Value::Null, Value::Int(5)]))
        );
    }

    #[test]
    fn scalars() {
        assert_eq!(
            amqp_to_value(&AMQPValue::LongString(vec![0xff, 0x00].into())),
            Value::Bytes(vec![0xff, 0])
        );
        let d = AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 5 });
        assert_eq!(amqp_to_value(&d), Value::Decimal("0.05".into()));
        assert_eq!(
            amqp_to_value(&AMQPValue::Timestamp(1_700_000_000)),
            Value::DateTime("2023-11-14T22:13:20+00:00".into())
        );
    }

    #[test]
    fn arguments_out() {
        let args = Value::map_from([
            ("x-max-priority", Value::Int(10)),
            ("x-queue-type", "quorum".into()),
        ]);
        let t = value_to_table(&args).unwrap();
        assert_eq!(
            t.inner().get("x-max-priority"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert!(value_to_table(&Value::Int(1)).is_err());
    }
    #[test]
    fn headers_typed_as_py_amqp_types_them() {
        let headers = vec![
            (Value::from("retries"), Value::Int(0)),
            (Value::from("big"), Value::Int(1 << 40)),
            (Value::from("eta"), Value::Null),
            (
                Value::from("when"),
                Value::DateTime("2023-11-14T23:13:20.5+01:00".into()),
            ),
            (
                Value::from("naive"),
                Value::DateTime("2023-11-14T22:13:20".into()),
            ),
            (Value::from("price"), Value::Decimal("1.50".into())),
            (
                Value::from("stamps"),
                Value::map_from([("a", Value::List(vec![Value::Float(1.5)]))]),
            ),
        ];
        let t = headers_table(&headers).unwrap();
        let get = |k: &str| t.inner().get(k).cloned();
        assert_eq!(get("retries"), Some(AMQPValue::LongInt(0)));
        assert_eq!(get("big"), Some(AMQPValue::LongLongInt(1 << 40)));
        assert_eq!(get("eta"), Some(AMQPValue::Void));
        assert_eq!(get("when"), Some(AMQPValue::Timestamp(1_700_000_000)));
        assert_eq!(get("naive"), Some(AMQPValue::Timestamp(1_700_000_000)));
        assert_eq!(
            get("price"),
            Some(AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 150
            }))
        );
        // The round trip the worker does gives the same values back.
        assert_eq!(
            table_to_value(&t).get("stamps"),
            Some(&Value::map_from([(
                "a",
                Value::List(vec![Value::Float(1.5)])
            )]))
        );
        let uuid = vec![(Value::from("u"), Value::Uuid("ab".repeat(16)))];
        assert!(headers_table(&uuid).unwrap_err().contains("header \"u\""));
        let long_key = vec![(Value::Str("k".repeat(256)), Value::Null)];
        assert!(headers_table(&long_key).is_err());
    }
}
