//! JSON as kombu ≥ 5.3 writes it: non-JSON types travel as `{"__type__": T, "__value__": V}`.

use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::error::{CodecError, Result};
use crate::value::Value;

const TYPE_KEY: &str = "__type__";
const VALUE_KEY: &str = "__value__";

pub fn decode(data: &[u8]) -> Result<Value> {
    serde_json::from_slice(data).map_err(|e| CodecError::decode(super::JSON, e))
}

pub fn encode(value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    write(&mut out, value)?;
    Ok(out)
}

/// Appends `value` as JSON to `out` (used to embed values in larger documents without a copy).
pub fn write(out: &mut Vec<u8>, value: &Value) -> Result<()> {
    serde_json::to_writer(out, &Json(value)).map_err(|e| CodecError::encode("json", e))
}

/// Serializes a `Value` the way kombu's JSON encoder does.
pub struct Json<'a>(pub &'a Value);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) => {
                if !f.is_finite() {
                    return Err(S::Error::custom(format!(
                        "{f} is not valid JSON; use msgpack or send it as a string"
                    )));
                }
                s.serialize_f64(*f)
            }
            Value::Str(text) => s.serialize_str(text),
            Value::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => typed(s, "bytes", text),
                Err(_) => typed(
                    s,
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(bytes),
                ),
            },
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Json(item))?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(&key_text(k).map_err(S::Error::custom)?, &Json(v))?;
                }
                map.end()
            }
            Value::DateTime(t) => typed(s, "datetime", t),
            Value::Date(t) => typed(s, "date", t),
            Value::Time(t) => typed(s, "time", t),
            Value::Decimal(t) => typed(s, "decimal", t),
            Value::Uuid(hex) => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry(TYPE_KEY, "uuid")?;
                map.serialize_entry(VALUE_KEY, &UuidHex(hex))?;
                map.end()
            }
        }
    }
}

fn typed<S: Serializer>(s: S, kind: &str, text: &str) -> std::result::Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(2))?;
    map.serialize_entry(TYPE_KEY, kind)?;
    map.serialize_entry(VALUE_KEY, text)?;
    map.end()
}

struct UuidHex<'a>(&'a str);

impl Serialize for UuidHex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("hex", self.0)?;
        map.end()
    }
}

/// JSON object keys are text; like Python's `json.dumps`, scalars are converted.
fn key_text(key: &Value) -> std::result::Result<std::borrow::Cow<'_, str>, String> {
    Ok(match key {
        Value::Str(s) => s.as_str().into(),
        Value::Int(i) => i.to_string().into(),
        Value::UInt(u) => u.to_string().into(),
        Value::Bool(b) => if *b { "true" } else { "false" }.into(),
        Value::Null => "null".into(),
        Value::Float(f) if f.is_finite() => format!("{f:?}").into(),
        other => {
            return Err(format!(
                "a {} cannot be a JSON object key",
                other.type_name()
            ))
        }
    })
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> std::result::Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> std::result::Result<Value, E> {
        Ok(i64::try_from(u).map_or(Value::UInt(u), Value::Int))
    }
    fn visit_f64<E>(self, f: f64) -> std::result::Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> std::result::Result<Value, E> {
        Ok(Value::Str(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> std::result::Result<Value, E> {
        Ok(Value::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut entries: Vec<(Value, Value)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value: Value = map.next_value()?;
            entries.push((Value::Str(key), value));
        }
        if entries.len() == 2 {
            if let Some(converted) = from_marker(&entries).map_err(de::Error::custom)? {
                return Ok(converted);
            }
        }
        Ok(Value::Map(entries))
    }
}

/// Converts a `{"__type__", "__value__"}` object; `Ok(None)` when the map is not a marker.
fn from_marker(entries: &[(Value, Value)]) -> std::result::Result<Option<Value>, String> {
    let field = |name: &str| {
        entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v)
    };
    let (Some(kind), Some(value)) = (field(TYPE_KEY), field(VALUE_KEY)) else {
        return Ok(None);
    };
    let kind = kind
        .as_str()
        .ok_or("a kombu type marker's __type__ must be a string")?;
    let text = || {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("kombu {kind:?} marker needs a string __value__"))
    };
    Ok(Some(match kind {
        "datetime" => Value::DateTime(text()?),
        "date" => Value::Date(text()?),
        "time" => Value::Time(text()?),
        "decimal" => Value::Decimal(text()?),
        "bytes" => Value::Bytes(text()?.into_bytes()),
        "base64" => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(text()?)
                .map_err(|e| format!("kombu base64 marker holds invalid base64: {e}"))?,
        ),
        "uuid" => {
            let hex = value
                .get("hex")
                .and_then(Value::as_str)
                .ok_or("kombu uuid marker needs {\"hex\": \"<32 hex digits>\"}")?;
            let parsed =
                uuid::Uuid::try_parse(hex).map_err(|e| format!("kombu uuid marker: {e}"))?;
            Value::Uuid(parsed.simple().to_string())
        }
        other => return Err(format!("unsupported kombu type marker {other:?}")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: Value) {
        let bytes = encode(&v).unwrap();
        assert_eq!(
            decode(&bytes).unwrap(),
            v,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }

    #[test]
    fn plain_values_roundtrip() {
        roundtrip(Value::List(vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-3),
            Value::UInt(u64::MAX),
            Value::Float(1.5),
            Value::Str("héllo \"q\"".into()),
            Value::map_from([("a", Value::Int(1))]),
        ]));
    }

    #[test]
    fn typed_values_use_kombu_markers() {
        let v = Value::DateTime("2024-01-02T03:04:05+00:00".into());
        assert_eq!(
            String::from_utf8(encode(&v).unwrap()).unwrap(),
            r#"{"__type__":"datetime","__value__":"2024-01-02T03:04:05+00:00"}"#
        );
        for v in [
            Value::Date("2024-01-02".into()),
            Value::Time("01:02:03".into()),
            Value::Decimal("1.5".into()),
            Value::Uuid("0123456789abcdef0123456789abcdef".into()),
            Value::Bytes(b"text".to_vec()),
            Value::Bytes(vec![0xff, 0x00, 0x80]),
        ] {
            roundtrip(v);
        }
    }

    #[test]
    fn uuid_marker_from_kombu_530_with_version() {
        let v = decode(br#"{"__type__":"uuid","__value__":{"hex":"0123456789ABCDEF0123456789abcdef","version":4}}"#)
            .unwrap();
        assert_eq!(v, Value::Uuid("0123456789abcdef0123456789abcdef".into()));
    }

    #[test]
    fn unknown_marker_is_an_error() {
        let err = decode(br#"{"__type__":"frobnicate","__value__":1}"#).unwrap_err();
        assert!(err.to_string().contains("frobnicate"), "{err}");
    }

    #[test]
    fn maps_with_other_keys_are_not_markers() {
        let v = decode(br#"{"__type__":"x","other":1}"#).unwrap();
        assert!(matches!(v, Value::Map(ref e) if e.len() == 2));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [&b"[1, 2"[..], b"{\"a\":}", b"\xff\xfe", b"", b"nul"] {
            assert!(decode(bad).is_err());
        }
        let deep = "[".repeat(100_000);
        assert!(decode(deep.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("recursion"));
    }

    #[test]
    fn non_finite_floats_are_refused() {
        assert!(encode(&Value::Float(f64::NAN)).is_err());
    }

    #[test]
    fn scalar_keys_become_text() {
        let m = Value::Map(vec![
            (Value::Int(1), Value::Null),
            (Value::Bool(true), Value::Null),
        ]);
        assert_eq!(encode(&m).unwrap(), br#"{"1":null,"true":null}"#);
    }
}
