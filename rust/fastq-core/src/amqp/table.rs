//! AMQP field tables ↔ `Value`: message headers in, queue arguments out.

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

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
    let mut table = FieldTable::default();
    match v {
        Value::Null => {}
        Value::Map(entries) => {
            for (k, v) in entries {
                let key = k.as_str().ok_or_else(|| {
                    format!("argument names must be strings, got a {}", k.type_name())
                })?;
                table.insert(ShortString::from(key), value_to_amqp(v)?);
            }
        }
        other => {
            return Err(format!(
                "arguments must be a mapping, got a {}",
                other.type_name()
            ))
        }
    }
    Ok(table)
}

fn value_to_amqp(v: &Value) -> Result<AMQPValue, String> {
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Int(i) => AMQPValue::LongLongInt(*i),
        Value::UInt(u) => AMQPValue::LongLongInt(
            i64::try_from(*u).map_err(|_| format!("argument {u} does not fit in 64 bits"))?,
        ),
        Value::Float(f) => AMQPValue::Double(*f),
        Value::Str(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        Value::Bytes(b) => AMQPValue::LongString(LongString::from(b.as_slice())),
        Value::List(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .map(value_to_amqp)
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Map(_) => AMQPValue::FieldTable(value_to_table(v)?),
        other => {
            return Err(format!(
                "a {} cannot be an AMQP argument",
                other.type_name()
            ))
        }
    })
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
}
