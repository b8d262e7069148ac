//! The kombu Redis envelope: one JSON document per list element, the body base64-encoded.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::codec::json::{self, JsonAt, JsonKey, JsonMap};
use crate::codec::Serializer;
use crate::error::{CodecError, Result};
use crate::protocol::{lookup, TaskMessage};
use crate::value::Value;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The serialized body, base64 already undone.
    pub body: Vec<u8>,
    pub content_type: String,
    pub content_encoding: String,
    pub headers: Value,
    /// `correlation_id`, `reply_to`, `delivery_mode`, `delivery_info`, `priority`,
    /// `body_encoding`, `delivery_tag` and anything else the publisher set.
    pub properties: Value,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    /// Borrowed from the input when it has no escapes (base64 never does): no copy before decoding.
    #[serde(borrow)]
    body: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "content-type")]
    content_type: Option<String>,
    #[serde(rename = "content-encoding")]
    content_encoding: Option<String>,
    #[serde(default)]
    headers: Value,
    #[serde(default)]
    properties: Value,
}

impl Envelope {
    pub fn decode(data: &[u8]) -> Result<Self> {
        let invalid =
            |e| CodecError::invalid(format!("the Redis envelope is not valid kombu JSON: {e}"));
        match serde_json::from_slice(data) {
            Ok(raw) => Self::from_raw(raw),
            Err(e) => {
                // NaN or ±Infinity in a header, as Python's json writes them: read as in a body.
                let marked = json::mark_non_finite(data).ok_or_else(|| invalid(e))?;
                Self::from_raw(serde_json::from_slice(&marked).map_err(invalid)?)
            }
        }
    }

    fn from_raw(raw: RawEnvelope<'_>) -> Result<Self> {
        if !matches!(raw.properties, Value::Map(_) | Value::Null) {
            return Err(CodecError::invalid(
                "the envelope's `properties` must be a JSON object",
            ));
        }
        if !matches!(raw.headers, Value::Map(_) | Value::Null) {
            return Err(CodecError::invalid(
                "the envelope's `headers` must be a JSON object",
            ));
        }
        let text = raw.body.unwrap_or_default();
        let body_encoding = raw.properties.get("body_encoding").and_then(Value::as_str);
        let body = match body_encoding {
            Some("base64") => B64.decode(text.as_bytes()).map_err(|e| {
                CodecError::invalid(format!("the envelope body is not valid base64: {e}"))
            })?,
            _ => text.into_owned().into_bytes(),
        };
        Ok(Envelope {
            body,
            content_type: raw
                .content_type
                .unwrap_or_else(|| super::codec::JSON.into()),
            content_encoding: raw.content_encoding.unwrap_or_else(|| "utf-8".into()),
            headers: raw.headers,
            properties: raw.properties,
        })
    }

    pub fn delivery_tag(&self) -> Option<&str> {
        self.properties.get("delivery_tag").and_then(Value::as_str)
    }

    /// `(exchange, routing_key)` from `properties.delivery_info`.
    pub fn delivery_info(&self) -> (&str, &str) {
        let info = self.properties.get("delivery_info");
        let field = |k| {
            info.and_then(|i| i.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        (field("exchange"), field("routing_key"))
    }

    pub fn priority(&self) -> i64 {
        self.properties
            .get("priority")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    pub fn redelivered(&self) -> bool {
        let flag = |v: Option<&Value>| matches!(v, Some(Value::Bool(true)));
        flag(self.headers.get("redelivered"))
            || flag(
                self.properties
                    .get("delivery_info")
                    .and_then(|i| i.get("redelivered")),
            )
    }

    /// Decodes the body and reads it as a task message (v2, or v1 converted).
    pub fn task_message(&self, accept: &crate::codec::Accept) -> Result<TaskMessage> {
        TaskMessage::parse(self.headers.clone(), self.decode_body(accept)?)
    }

    /// Like `task_message`, but a protocol 2 message takes the headers instead of copying them:
    /// `self.headers` is left `Null`, and the message's headers are the envelope's in the same
    /// order followed by the defaults Celery would have sent.
    pub fn take_task_message(&mut self, accept: &crate::codec::Accept) -> Result<TaskMessage> {
        let body = self.decode_body(accept)?;
        let headers = if self.headers.get("task").is_some() {
            std::mem::take(&mut self.headers)
        } else {
            self.headers.clone()
        };
        TaskMessage::parse(headers, body)
    }

    fn decode_body(&self, accept: &crate::codec::Accept) -> Result<Value> {
        let body = crate::compression::decompressed(&self.headers, &self.body)?;
        match crate::codec::decode_accepted(&self.content_type, &body, accept)? {
            crate::codec::Decoded::Value(body) => Ok(body),
            crate::codec::Decoded::Foreign { content_type } => Err(CodecError::invalid(format!(
                "{content_type} bodies are decoded in Python, not by the Rust consumer"
            ))),
        }
    }
}

/// Where a message goes and how it is marked.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    pub exchange: String,
    pub routing_key: String,
    pub priority: i64,
    pub delivery_mode: i64,
    pub reply_to: Option<String>,
}

/// One call from task message to the bytes `LPUSH`ed onto a kombu Redis queue.
///
/// Writes the envelope straight into one buffer: the body is serialized once and base64-encoded
/// in place; headers and properties are written from the message without copying them.
pub fn encode_task_envelope(
    message: &TaskMessage,
    serializer: Serializer,
    routing: &Routing,
    extra_properties: Value,
) -> Result<Vec<u8>> {
    let body = message.encode_body(serializer)?;
    let extra: &[(Value, Value)] = match &extra_properties {
        Value::Map(entries) => entries,
        _ => &[],
    };
    let mut tag = uuid::Uuid::encode_buffer();
    let properties = TaskProperties {
        id: message.id(),
        routing,
        delivery_tag: new_delivery_tag().hyphenated().encode_lower(&mut tag),
        extra,
    };
    let b64_len = base64::encoded_len(body.len(), true)
        .ok_or_else(|| CodecError::encode("json", "the body is too large to base64-encode"))?;
    let mut out = Vec::with_capacity(b64_len + 64 * message.headers.len() + 512);
    out.extend_from_slice(br#"{"body":""#);
    let start = out.len();
    out.resize(start + b64_len, 0);
    B64.encode_slice(&body, &mut out[start..])
        .map_err(|e| CodecError::encode("json", e))?;
    out.extend_from_slice(br#"","content-encoding":""#);
    out.extend_from_slice(serializer.content_encoding().as_bytes());
    out.extend_from_slice(br#"","content-type":""#);
    out.extend_from_slice(serializer.content_type().as_bytes());
    out.extend_from_slice(br#"","headers":"#);
    json::to_writer(&mut out, &JsonMap(&message.headers, 1))?;
    out.extend_from_slice(br#","properties":"#);
    json::to_writer(&mut out, &properties)?;
    out.push(b'}');
    Ok(out)
}

/// A version 4 UUID, as kombu's `uuid4()` delivery tags, without a getrandom syscall per message:
/// SipHash under per-thread random keys (std's `RandomState`) of (pid, counter). Tags need to be
/// unique, not secret; the pid keeps a forked child's tags apart from its parent's.
fn new_delivery_tag() -> uuid::Uuid {
    use std::cell::Cell;
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static KEYS: RandomState = RandomState::new();
        static COUNTER: Cell<u64> = const { Cell::new(0) };
    }
    let n = COUNTER.with(|c| {
        let n = c.get();
        c.set(n.wrapping_add(1));
        n
    });
    let pid = std::process::id();
    let half = |salt: u8| {
        KEYS.with(|keys| {
            let mut h = keys.build_hasher();
            h.write_u32(pid);
            h.write_u64(n);
            h.write_u8(salt);
            h.finish()
        })
    };
    let bits = (u128::from(half(0)) << 64) | u128::from(half(1));
    uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid()
}

/// The properties kombu's Redis channel gives a published task message. Entries of `extra`
/// replace the defaults in place (except `body_encoding`, which must match the body) or follow
/// them.
struct TaskProperties<'a> {
    id: &'a str,
    routing: &'a Routing,
    delivery_tag: &'a str,
    extra: &'a [(Value, Value)],
}

/// The properties of a task message's envelope, in kombu's order.
pub const TASK_PROPERTIES: [&str; 7] = [
    "correlation_id",
    "reply_to",
    "delivery_mode",
    "delivery_info",
    "priority",
    "body_encoding",
    "delivery_tag",
];

#[derive(Serialize)]
struct DeliveryInfo<'a> {
    exchange: &'a str,
    routing_key: &'a str,
}

impl Serialize for TaskProperties<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let routing = self.routing;
        let mut map = s.serialize_map(None)?;
        for key in TASK_PROPERTIES {
            if key != "body_encoding" {
                if let Some(value) = lookup(self.extra, key) {
                    map.serialize_entry(key, &JsonAt(value, 2))?;
                    continue;
                }
            }
            match key {
                "correlation_id" => map.serialize_entry(key, self.id)?,
                "reply_to" => map.serialize_entry(key, &routing.reply_to)?,
                "delivery_mode" => map.serialize_entry(key, &routing.delivery_mode)?,
                "delivery_info" => map.serialize_entry(
                    key,
                    &DeliveryInfo {
                        exchange: &routing.exchange,
                        routing_key: &routing.routing_key,
                    },
                )?,
                "priority" => map.serialize_entry(key, &routing.priority)?,
                "body_encoding" => map.serialize_entry(key, "base64")?,
                _ => map.serialize_entry(key, self.delivery_tag)?,
            }
        }
        for (key, value) in self.extra {
            if !key.as_str().is_some_and(|k| TASK_PROPERTIES.contains(&k)) {
                map.serialize_entry(&JsonKey(key), &JsonAt(value, 2))?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Accept;

    fn message() -> TaskMessage {
        crate::protocol::sample_message("id-1")
    }

    #[test]
    fn task_envelope_roundtrips() {
        let routing = Routing {
            exchange: String::new(),
            routing_key: "celery".into(),
            priority: 3,
            delivery_mode: 2,
            reply_to: Some("oid".into()),
        };
        let bytes =
            encode_task_envelope(&message(), Serializer::Json, &routing, Value::Null).unwrap();
        let env = Envelope::decode(&bytes).unwrap();
        assert_eq!(env.delivery_info(), ("", "celery"));
        assert_eq!(env.priority(), 3);
        assert_eq!(env.delivery_tag().map(str::len), Some(36));
        assert!(!env.redelivered());
        let msg = env.task_message(&Accept::json_only()).unwrap();
        assert_eq!(msg, message());
    }

    #[test]
    fn non_finite_header_values_are_written_as_python_writes_them() {
        let mut msg = message();
        msg.headers.push(("f".into(), Value::Float(f64::NAN)));
        let routing = Routing {
            exchange: String::new(),
            routing_key: "celery".into(),
            priority: 0,
            delivery_mode: 2,
            reply_to: None,
        };
        let bytes = encode_task_envelope(&msg, Serializer::Json, &routing, Value::Null).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""f":NaN"#), "{text}");
        let env = Envelope::decode(&bytes).unwrap();
        assert!(matches!(env.headers.get("f"), Some(Value::Float(f)) if f.is_nan()));
    }

    #[test]
    fn task_envelope_is_what_kombu_writes() {
        let routing = Routing {
            exchange: "ex".into(),
            routing_key: "rk".into(),
            priority: 0,
            delivery_mode: 2,
            reply_to: None,
        };
        let extra = Value::map_from([
            ("priority", Value::Int(9)),
            ("body_encoding", "utf-8".into()),
            ("expiration", "60000".into()),
        ]);
        let bytes = encode_task_envelope(&message(), Serializer::Json, &routing, extra).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let tag_at = text.find(r#""delivery_tag":""#).unwrap() + 16;
        let tag = &text[tag_at..tag_at + 36];
        assert!(uuid::Uuid::try_parse(tag).is_ok(), "{tag}");
        let body = B64
            .encode(br#"[[2,3],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]"#);
        let expected = format!(
            concat!(
                r#"{{"body":"{}","content-encoding":"utf-8","content-type":"application/json","#,
                r#""headers":{},"properties":{{"correlation_id":"id-1","reply_to":null,"#,
                r#""delivery_mode":2,"delivery_info":{{"exchange":"ex","routing_key":"rk"}},"#,
                r#""priority":9,"body_encoding":"base64","delivery_tag":"{}","#,
                r#""expiration":"60000"}}}}"#
            ),
            body,
            String::from_utf8(crate::codec::json::encode(&Value::Map(message().headers)).unwrap())
                .unwrap(),
            tag
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn delivery_tags_are_distinct_version_4_uuids() {
        let tags: std::collections::HashSet<uuid::Uuid> =
            (0..10_000).map(|_| new_delivery_tag()).collect();
        assert_eq!(tags.len(), 10_000);
        assert!(tags
            .iter()
            .all(|t| t.get_version_num() == 4 && t.get_variant() == uuid::Variant::RFC4122));
        let other_thread = std::thread::spawn(new_delivery_tag).join().unwrap();
        assert!(!tags.contains(&other_thread));
    }

    #[test]
    fn msgpack_task_envelope_roundtrips() {
        let bytes = encode_task_envelope(
            &message(),
            Serializer::Msgpack,
            &Routing::default(),
            Value::Null,
        )
        .unwrap();
        let env = Envelope::decode(&bytes).unwrap();
        assert_eq!(env.content_type, "application/x-msgpack");
        assert_eq!(env.content_encoding, "binary");
        let accept = Accept::new(&["msgpack"]).unwrap();
        assert_eq!(env.task_message(&accept).unwrap(), message());
    }

    #[test]
    fn take_task_message_moves_v2_headers_and_keeps_v1_ones() {
        let bytes = encode_task_envelope(
            &message(),
            Serializer::Json,
            &Routing::default(),
            Value::Null,
        )
        .unwrap();
        let mut env = Envelope::decode(&bytes).unwrap();
        let accept = Accept::json_only();
        assert_eq!(env.take_task_message(&accept).unwrap(), message());
        assert_eq!(env.headers, Value::Null);

        let v1 = br#"{"body": "{\"task\": \"t\", \"id\": \"i\"}", "headers": {"x": 1}}"#;
        let mut env = Envelope::decode(v1).unwrap();
        assert_eq!(env.take_task_message(&accept).unwrap().protocol, 1);
        assert_eq!(env.headers, Value::map_from([("x", Value::Int(1))]));
    }

    #[test]
    fn bad_envelopes_are_invalid_messages() {
        for bad in [
            &b"not json"[..],
            br#"{"body": "!!!", "properties": {"body_encoding": "base64"}}"#,
            br#"{"body": "", "properties": 3}"#,
            br#"{"body": 5}"#,
        ] {
            let err = Envelope::decode(bad).unwrap_err();
            assert!(matches!(err, CodecError::InvalidMessage(_)), "{err}");
        }
    }

    #[test]
    fn plain_text_body_without_base64() {
        let env =
            Envelope::decode(br#"{"body": "[[],{},{}]", "headers": {"task": "t", "id": "i"}}"#)
                .unwrap();
        assert_eq!(env.body, b"[[],{},{}]");
        assert_eq!(env.task_message(&Accept::json_only()).unwrap().task(), "t");
    }
}
