//! msgpack as kombu writes it (`use_bin_type=True`, `raw=False`): str and bin are distinct.

use crate::error::{CodecError, Result};
use crate::value::Value;

/// Deeper than any real message; bounds the recursion a hostile body can cause.
const MAX_DEPTH: usize = 512;

pub fn decode(data: &[u8]) -> Result<Value> {
    let mut rest = data;
    let raw = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH)
        .map_err(|e| CodecError::decode(super::MSGPACK, e))?;
    if !rest.is_empty() {
        return Err(CodecError::decode(
            super::MSGPACK,
            format!("{} bytes after the end of the value", rest.len()),
        ));
    }
    from_rmpv(raw)
}

pub fn encode(value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    rmpv::encode::write_value(&mut out, &to_rmpv(value)?)
        .map_err(|e| CodecError::encode("msgpack", e))?;
    Ok(out)
}

fn from_rmpv(v: rmpv::Value) -> Result<Value> {
    use rmpv::Value as R;
    Ok(match v {
        R::Nil => Value::Null,
        R::Boolean(b) => Value::Bool(b),
        R::Integer(i) => match i.as_i64() {
            Some(n) => Value::Int(n),
            None => Value::UInt(i.as_u64().unwrap_or_default()),
        },
        R::F32(f) => Value::Float(f64::from(f)),
        R::F64(f) => Value::Float(f),
        R::String(s) => match s.into_str() {
            Some(text) => Value::Str(text),
            None => {
                return Err(CodecError::decode(
                    super::MSGPACK,
                    "str field is not valid UTF-8",
                ))
            }
        },
        R::Binary(b) => Value::Bytes(b),
        R::Array(items) => Value::List(items.into_iter().map(from_rmpv).collect::<Result<_>>()?),
        R::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| Ok((from_rmpv(k)?, from_rmpv(v)?)))
                .collect::<Result<_>>()?,
        ),
        R::Ext(code, _) => {
            return Err(CodecError::decode(
                super::MSGPACK,
                format!("msgpack extension type {code} is not supported"),
            ))
        }
    })
}

fn to_rmpv(v: &Value) -> Result<rmpv::Value> {
    use rmpv::Value as R;
    Ok(match v {
        Value::Null => R::Nil,
        Value::Bool(b) => R::Boolean(*b),
        Value::Int(i) => R::from(*i),
        Value::UInt(u) => R::from(*u),
        Value::Float(f) => R::F64(*f),
        Value::Str(s) => R::from(s.as_str()),
        Value::Bytes(b) => R::Binary(b.clone()),
        Value::List(items) => R::Array(items.iter().map(to_rmpv).collect::<Result<_>>()?),
        Value::Map(entries) => R::Map(
            entries
                .iter()
                .map(|(k, v)| Ok((to_rmpv(k)?, to_rmpv(v)?)))
                .collect::<Result<_>>()?,
        ),
        other => {
            return Err(CodecError::encode(
                "msgpack",
                format!(
                    "a {} has no msgpack form (kombu's msgpack cannot carry it either); \
                     send it as a string or use the json serializer",
                    other.type_name()
                ),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_with_bytes_and_int_keys() {
        let v = Value::List(vec![
            Value::Bytes(vec![0, 255]),
            Value::Str("s".into()),
            Value::Map(vec![(Value::Int(1), Value::Float(2.5))]),
            Value::UInt(u64::MAX),
            Value::Int(i64::MIN),
        ]);
        assert_eq!(decode(&encode(&v).unwrap()).unwrap(), v);
    }

    #[test]
    fn truncated_and_trailing_input_are_errors() {
        let bytes = encode(&Value::List(vec![Value::Int(1), Value::Int(2)])).unwrap();
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let mut extra = bytes.clone();
        extra.push(0xc0);
        assert!(decode(&extra).is_err());
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let deep = vec![0x91u8; 100_000];
        assert!(decode(&deep).is_err());
    }

    #[test]
    fn datetimes_are_refused_with_a_reason() {
        let err = encode(&Value::DateTime("2024-01-01T00:00:00".into())).unwrap_err();
        assert!(err.to_string().contains("datetime"));
    }
}
