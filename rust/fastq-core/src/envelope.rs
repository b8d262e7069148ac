//! The kombu Redis envelope: one JSON document per list element, the body base64-encoded.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::codec::json::Json;
use crate::codec::Serializer;
use crate::error::{CodecError, Result};
use crate::protocol::TaskMessage;
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
struct RawEnvelope {
    body: Option<String>,
    #[serde(rename = "content-type")]
    content_type: Option<String>,
    #[serde(rename = "content-encoding")]
    content_encoding: Option<String>,
    #[serde(default)]
    headers: Value,
    #[serde(default)]
    properties: Value,
}

#[derive(Serialize)]
struct OutEnvelope<'a> {
    body: &'a str,
    #[serde(rename = "content-encoding")]
    content_encoding: &'a str,
    #[serde(rename = "content-type")]
    content_type: &'a str,
    headers: Json<'a>,
    properties: Json<'a>,
}

impl Envelope {
    pub fn decode(data: &[u8]) -> Result<Self> {
        let raw: RawEnvelope = serde_json::from_slice(data).map_err(|e| {
            CodecError::invalid(format!("the Redis envelope is not valid kombu JSON: {e}"))
        })?;
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
            _ => text.into_bytes(),
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

    /// Writes the envelope with a base64 body, as kombu's Redis transport does.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut properties = self.properties.clone();
        set_property(&mut properties, "body_encoding", "base64".into());
        let body = B64.encode(&self.body);
        let out = OutEnvelope {
            body: &body,
            content_encoding: &self.content_encoding,
            content_type: &self.content_type,
            headers: Json(&self.headers),
            properties: Json(&properties),
        };
        let mut bytes = Vec::with_capacity(body.len() + 512);
        serde_json::to_writer(&mut bytes, &out).map_err(|e| CodecError::encode("json", e))?;
        Ok(bytes)
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
        match crate::codec::decode_accepted(&self.content_type, &self.body, accept)? {
            crate::codec::Decoded::Value(body) => TaskMessage::parse(self.headers.clone(), body),
            crate::codec::Decoded::Foreign { content_type } => Err(CodecError::invalid(format!(
                "{content_type} bodies are decoded in Python, not by the Rust consumer"
            ))),
        }
    }
}

/// Builds kombu's Redis `properties` for a task message; a missing delivery tag gets a new UUID.
pub fn task_properties(message: &TaskMessage, routing: &Routing, extra: Value) -> Value {
    let mut props: Vec<(Value, Value)> = vec![
        ("correlation_id".into(), Value::from(message.id())),
        ("reply_to".into(), Value::from(routing.reply_to.clone())),
        ("delivery_mode".into(), Value::Int(routing.delivery_mode)),
        (
            "delivery_info".into(),
            Value::map_from([
                ("exchange", Value::from(routing.exchange.as_str())),
                ("routing_key", Value::from(routing.routing_key.as_str())),
            ]),
        ),
        ("priority".into(), Value::Int(routing.priority)),
        ("body_encoding".into(), "base64".into()),
        (
            "delivery_tag".into(),
            Value::Str(uuid::Uuid::new_v4().to_string()),
        ),
    ];
    if let Value::Map(entries) = extra {
        for (k, v) in entries {
            match props.iter_mut().find(|(pk, _)| *pk == k) {
                Some(slot) => slot.1 = v,
                None => props.push((k, v)),
            }
        }
    }
    Value::Map(props)
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
pub fn encode_task_envelope(
    message: &TaskMessage,
    serializer: Serializer,
    routing: &Routing,
    extra_properties: Value,
) -> Result<Vec<u8>> {
    let envelope = Envelope {
        body: serializer.encode(&message.body())?,
        content_type: serializer.content_type().into(),
        content_encoding: serializer.content_encoding().into(),
        headers: Value::Map(message.headers.clone()),
        properties: task_properties(message, routing, extra_properties),
    };
    envelope.encode()
}

fn set_property(properties: &mut Value, key: &str, value: Value) {
    if let Value::Map(entries) = properties {
        match entries.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
            Some(slot) => slot.1 = value,
            None => entries.push((key.into(), value)),
        }
    } else {
        *properties = Value::map_from([(key, value)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Accept;

    fn message() -> TaskMessage {
        TaskMessage::new(
            Value::map_from([("task", "proj.add".into()), ("id", "id-1".into())]),
            Value::List(vec![Value::Int(2), Value::Int(3)]),
            Value::Null,
            Value::Null,
        )
        .unwrap()
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
