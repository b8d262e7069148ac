//! JSON as kombu ≥ 5.3 writes it: non-JSON types travel as `{"__type__": T, "__value__": V}`.

use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Error as _, Serialize, SerializeMap, SerializeSeq, Serializer};

use super::MAX_DEPTH;
use crate::error::{CodecError, Result};
use crate::value::Value;

const TYPE_KEY: &str = "__type__";
const VALUE_KEY: &str = "__value__";

pub fn decode(data: &[u8]) -> Result<Value> {
    serde_json::from_slice(data)
        .or_else(|e| {
            // Python's json (so kombu, so Celery) writes NaN and ±Infinity as bare tokens, which
            // strict JSON (serde_json) refuses: only then is the document rewritten and read again.
            let rewritten = mark_non_finite(data).ok_or(e)?;
            serde_json::from_slice(&rewritten)
        })
        .map_err(decode_error)
}

/// Kind of the internal marker a bare `NaN`/`Infinity`/`-Infinity` token is rewritten to before
/// parsing; the NUL keeps it apart from kombu's type names.
const NON_FINITE: &str = "\u{0}float";
/// `NON_FINITE` as JSON string text.
const NON_FINITE_JSON: &str = r"\u0000float";

/// The marker `mark_non_finite` puts in place of `token`, as compact JSON.
fn non_finite_marker(token: &str) -> String {
    format!(r#"{{"{TYPE_KEY}":"{NON_FINITE_JSON}","{VALUE_KEY}":"{token}"}}"#)
}

/// `data` with every `NaN`, `Infinity` and `-Infinity` outside strings replaced by a
/// `{"__type__": NON_FINITE, "__value__": token}` marker; `None` when there is none.
pub(crate) fn mark_non_finite(data: &[u8]) -> Option<Vec<u8>> {
    const TOKENS: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];
    let mut out = Vec::with_capacity(data.len() + 64);
    let (mut in_string, mut escaped, mut found) = (false, false, false);
    let mut i = 0;
    'bytes: while i < data.len() {
        let b = data[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else {
            for token in TOKENS {
                if data[i..].starts_with(token) {
                    let text = std::str::from_utf8(token).unwrap_or_default();
                    out.extend_from_slice(non_finite_marker(text).as_bytes());
                    i += token.len();
                    found = true;
                    continue 'bytes;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    found.then_some(out)
}

/// The reverse of `mark_non_finite` on compact JSON that serde_json wrote back: each marker
/// becomes its bare token again. A marker's text cannot occur inside a JSON string (its quotes
/// would be escaped there), so only markers are replaced.
pub(crate) fn unmark_non_finite(data: &[u8]) -> Vec<u8> {
    let markers = ["-Infinity", "Infinity", "NaN"].map(|t| (non_finite_marker(t), t));
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    'bytes: while i < data.len() {
        for (marker, token) in &markers {
            if data[i..].starts_with(marker.as_bytes()) {
                out.extend_from_slice(token.as_bytes());
                i += marker.len();
                continue 'bytes;
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

/// serde_json stops at 128 nested containers; say so in terms of the value, not the parser.
fn decode_error(e: serde_json::Error) -> CodecError {
    let text = e.to_string();
    if text.starts_with("recursion limit exceeded") {
        CodecError::decode(
            super::JSON,
            format!("value nested deeper than {MAX_DEPTH} levels ({text})"),
        )
    } else {
        CodecError::decode(super::JSON, text)
    }
}

pub fn encode(value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    write(&mut out, value)?;
    Ok(out)
}

/// Appends `value` as JSON to `out` (used to embed values in larger documents without a copy).
pub fn write(out: &mut Vec<u8>, value: &Value) -> Result<()> {
    to_writer(out, &Json(value))
}

/// `serde_json::to_writer` with non-finite floats written as Python's json writes them.
pub fn to_writer<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<()> {
    value
        .serialize(&mut serde_json::Serializer::with_formatter(
            out,
            PythonFloats,
        ))
        .map_err(|e| CodecError::encode("json", e))
}

/// Appends the protocol 2 body `[args, kwargs, embed]` without building it as one `Value`.
pub fn write_task_body(
    out: &mut Vec<u8>,
    args: &[Value],
    kwargs: &[(Value, Value)],
    embed: &[(Value, Value)],
) -> Result<()> {
    let body = (JsonList(args, 1), JsonMap(kwargs, 1), JsonMap(embed, 1));
    to_writer(out, &body)
}

thread_local! {
    /// The token for the non-finite float being serialized: serde_json hands those to
    /// `Formatter::write_null`, which `PythonFloats` turns into the token.
    static NON_FINITE_TOKEN: std::cell::Cell<Option<&'static str>> =
        const { std::cell::Cell::new(None) };
}

/// serde_json's compact output, except that NaN and ±Infinity are written as Python's json
/// writes them (serde_json would write `null`, changing the value).
struct PythonFloats;

impl serde_json::ser::Formatter for PythonFloats {
    fn write_null<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        let token = NON_FINITE_TOKEN
            .with(std::cell::Cell::take)
            .unwrap_or("null");
        writer.write_all(token.as_bytes())
    }
}

fn non_finite_token(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// Serializes a `Value` the way kombu's JSON encoder does.
pub struct Json<'a>(pub &'a Value);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        JsonAt(self.0, 0).serialize(s)
    }
}

/// A `Value` written inside `.1` enclosing containers, so that the depth limit counts the whole
/// document: whatever fastq writes, its decoder (and serde_json's recursion limit) reads back.
pub struct JsonAt<'a>(pub &'a Value, pub usize);

impl Serialize for JsonAt<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let JsonAt(value, depth) = *self;
        match value {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) if !f.is_finite() => {
                NON_FINITE_TOKEN.with(|t| t.set(Some(non_finite_token(*f))));
                let written = s.serialize_f64(*f)?;
                // Still set: a serializer other than `to_writer`'s wrote `null` in its place.
                if NON_FINITE_TOKEN.with(std::cell::Cell::take).is_some() {
                    return Err(S::Error::custom(format!(
                        "{f} can only be written by fastq's JSON writer (internal error)"
                    )));
                }
                Ok(written)
            }
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(text) => s.serialize_str(text),
            Value::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => typed(s, depth, "bytes", text),
                Err(_) => typed(
                    s,
                    depth,
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(bytes),
                ),
            },
            Value::List(items) => JsonList(items, depth).serialize(s),
            Value::Map(entries) => JsonMap(entries, depth).serialize(s),
            Value::DateTime(t) => typed(s, depth, "datetime", t),
            Value::Date(t) => typed(s, depth, "date", t),
            Value::Time(t) => typed(s, depth, "time", t),
            Value::Decimal(t) => typed(s, depth, "decimal", t),
            Value::Uuid(hex) => {
                let inner = enter::<S::Error>(depth)?;
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry(TYPE_KEY, "uuid")?;
                map.serialize_entry(VALUE_KEY, &UuidHex(hex, inner))?;
                map.end()
            }
        }
    }
}

/// The depth inside one more container, or an error past `MAX_DEPTH`.
fn enter<E: serde::ser::Error>(depth: usize) -> std::result::Result<usize, E> {
    if depth >= MAX_DEPTH {
        return Err(E::custom(format!(
            "value nested deeper than {MAX_DEPTH} levels (markers and the message body count); \
             fastq's decoder stops there, so flatten it"
        )));
    }
    Ok(depth + 1)
}

/// The items of a list written inside `.1` enclosing containers.
pub struct JsonList<'a>(pub &'a [Value], pub usize);

impl Serialize for JsonList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let depth = enter::<S::Error>(self.1)?;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for item in self.0 {
            seq.serialize_element(&JsonAt(item, depth))?;
        }
        seq.end()
    }
}

/// The entries of a map written inside `.1` enclosing containers.
pub struct JsonMap<'a>(pub &'a [(Value, Value)], pub usize);

impl Serialize for JsonMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let depth = enter::<S::Error>(self.1)?;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(&JsonKey(k), &JsonAt(v, depth))?;
        }
        map.end()
    }
}

fn typed<S: Serializer>(
    s: S,
    depth: usize,
    kind: &str,
    text: &str,
) -> std::result::Result<S::Ok, S::Error> {
    enter::<S::Error>(depth)?;
    let mut map = s.serialize_map(Some(2))?;
    map.serialize_entry(TYPE_KEY, kind)?;
    map.serialize_entry(VALUE_KEY, text)?;
    map.end()
}

struct UuidHex<'a>(&'a str, usize);

impl Serialize for UuidHex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        enter::<S::Error>(self.1)?;
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("hex", self.0)?;
        map.end()
    }
}

/// A map key written as JSON object key text.
pub struct JsonKey<'a>(pub &'a Value);

impl Serialize for JsonKey<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&key_text(self.0).map_err(S::Error::custom)?)
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
        Value::Float(f) => non_finite_token(*f).into(),
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
        // The thread's scratch stacks are taken for this document and given back, warm.
        let mut scratch = SCRATCH.with(|s| s.take());
        let result = ValueSeed(&mut scratch).deserialize(d);
        scratch.reset();
        SCRATCH.with(|s| s.replace(scratch));
        result
    }
}

/// Items and entries of the containers being read, on two stacks: a finished list or map is
/// moved off the top into a `Vec` of exactly its size, instead of growing one `Vec` per
/// container by doubling (a Celery header map would be reallocated four times).
#[derive(Default)]
struct Scratch {
    items: Vec<Value>,
    entries: Vec<(Value, Value)>,
}

impl Scratch {
    /// Empties the stacks; one huge document does not keep its memory for the thread's lifetime.
    fn reset(&mut self) {
        const KEEP: usize = 1024;
        self.items.clear();
        self.entries.clear();
        self.items.shrink_to(KEEP);
        self.entries.shrink_to(KEEP);
    }
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

struct ValueSeed<'s>(&'s mut Scratch);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor(self.0))
    }
}

struct ValueVisitor<'s>(&'s mut Scratch);

impl<'de> Visitor<'de> for ValueVisitor<'_> {
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
        ValueSeed(self.0).deserialize(d)
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
        let start = self.0.items.len();
        while let Some(item) = seq.next_element_seed(ValueSeed(self.0))? {
            self.0.items.push(item);
        }
        Ok(Value::List(self.0.items.drain(start..).collect()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let start = self.0.entries.len();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ValueSeed(self.0))?;
            self.0.entries.push((Value::Str(key), value));
        }
        if self.0.entries.len() - start == 2 {
            if let Some(converted) =
                from_marker(&self.0.entries[start..]).map_err(de::Error::custom)?
            {
                self.0.entries.truncate(start);
                return Ok(converted);
            }
        }
        Ok(Value::Map(self.0.entries.drain(start..).collect()))
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
        NON_FINITE => match text()?.as_str() {
            "NaN" => Value::Float(f64::NAN),
            "Infinity" => Value::Float(f64::INFINITY),
            _ => Value::Float(f64::NEG_INFINITY),
        },
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

    fn nested(depth: usize, leaf: Value) -> Value {
        (0..depth).fold(leaf, |v, _| Value::List(vec![v]))
    }

    #[test]
    fn encode_refuses_exactly_what_decode_refuses() {
        let deepest = encode(&nested(MAX_DEPTH, Value::Int(1))).unwrap();
        assert_eq!(decode(&deepest).unwrap(), nested(MAX_DEPTH, Value::Int(1)));
        let mut too_deep = b"[".to_vec();
        too_deep.extend_from_slice(&deepest);
        too_deep.push(b']');
        let err = decode(&too_deep).unwrap_err().to_string();
        assert!(err.contains("nested deeper than 127 levels"), "{err}");
        let err = encode(&nested(MAX_DEPTH + 1, Value::Int(1)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nested deeper than 127 levels"), "{err}");
        // A marker is an object, a uuid marker two.
        let uuid = Value::Uuid("0123456789abcdef0123456789abcdef".into());
        assert!(encode(&nested(MAX_DEPTH - 2, uuid.clone())).is_ok());
        assert!(encode(&nested(MAX_DEPTH - 1, uuid)).is_err());
        assert!(encode(&nested(MAX_DEPTH, Value::Date("2024-01-01".into()))).is_err());
    }

    #[test]
    fn task_body_counts_its_own_levels() {
        let mut out = Vec::new();
        let kwargs = [(Value::from("k"), Value::Bytes(b"v".to_vec()))];
        write_task_body(&mut out, &[Value::Int(1)], &kwargs, &[]).unwrap();
        assert_eq!(
            out,
            br#"[[1],{"k":{"__type__":"bytes","__value__":"v"}},{}]"#
        );
        let deep = [nested(MAX_DEPTH - 2, Value::Null)];
        assert!(write_task_body(&mut Vec::new(), &deep, &[], &[]).is_ok());
        let deeper = [nested(MAX_DEPTH - 1, Value::Null)];
        assert!(write_task_body(&mut Vec::new(), &deeper, &[], &[]).is_err());
    }

    #[test]
    fn nested_containers_keep_their_own_items() {
        let v =
            decode(br#"{"a":[1,{"b":[2,3],"c":{}},[]],"d":{"e":[4]},"f":[[5],[6,[7]]]}"#).unwrap();
        let text = String::from_utf8(encode(&v).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"a":[1,{"b":[2,3],"c":{}},[]],"d":{"e":[4]},"f":[[5],[6,[7]]]}"#
        );
        // A failed document leaves nothing behind for the next one.
        assert!(decode(br#"{"a":[1,2,{"b":3"#).is_err());
        assert_eq!(
            decode(b"[[]]").unwrap(),
            Value::List(vec![Value::List(vec![])])
        );
        let marker = decode(br#"[{"x":1},{"__type__":"date","__value__":"2024-01-01"},{}]"#);
        assert_eq!(
            marker.unwrap(),
            Value::List(vec![
                Value::map_from([("x", Value::Int(1))]),
                Value::Date("2024-01-01".into()),
                Value::Map(vec![])
            ])
        );
    }

    #[test]
    fn non_finite_floats_travel_as_python_writes_them() {
        let v = Value::List(vec![
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NEG_INFINITY),
            Value::Null,
            Value::Float(1.5),
        ]);
        let text = encode(&v).unwrap();
        assert_eq!(text, b"[NaN,Infinity,-Infinity,null,1.5]");
        let Value::List(back) = decode(&text).unwrap() else {
            panic!()
        };
        assert!(matches!(back[0], Value::Float(f) if f.is_nan()));
        assert_eq!(
            back[1..],
            [
                Value::Float(f64::INFINITY),
                Value::Float(f64::NEG_INFINITY),
                Value::Null,
                Value::Float(1.5)
            ]
        );
        let key = Value::Map(vec![(Value::Float(f64::NAN), Value::Int(1))]);
        assert_eq!(encode(&key).unwrap(), br#"{"NaN":1}"#);
        // A writer other than ours would put `null` there: refused, not silently changed.
        assert!(serde_json::to_vec(&Json(&Value::Float(f64::NAN))).is_err());
    }

    #[test]
    fn non_finite_tokens_inside_strings_stay_text() {
        let v = decode(br#"{"a": "NaN \" Infinity", "b": -Infinity, "c": [NaN]}"#).unwrap();
        assert_eq!(v.get("a"), Some(&Value::from("NaN \" Infinity")));
        assert_eq!(v.get("b"), Some(&Value::Float(f64::NEG_INFINITY)));
        assert!(decode(b"[Nan]").is_err()); // not Python's token: still an error
        assert!(decode(b"[NaN").is_err());
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
