//! One fetched message, decoded as far as it goes: a bad envelope or body becomes an error on
//! the delivery instead of failing the batch, so the worker can report it and move on.

use crate::codec::Accept;
use crate::envelope::Envelope;
use crate::error::CodecError;
use crate::protocol::TaskMessage;
use crate::value::Value;

use super::keys::clamp_priority;

#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Empty only when the envelope could not be recorded as unacknowledged (then it went to
    /// the `fastq.malformed` list and there is nothing to ack).
    pub delivery_tag: String,
    /// The queue's name, without priority suffix or key prefix.
    pub queue: String,
    /// `properties.delivery_info.exchange` ("" for the default exchange).
    pub exchange: String,
    pub priority: i64,
    pub redelivered: bool,
    pub content_type: String,
    /// The envelope's `properties` (a map; empty when the envelope is unreadable).
    pub properties: Value,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
    pub message: Result<TaskMessage, CodecError>,
    /// From the headers even when the body is bad, so a FAILURE can still be stored for it.
    pub task_id: Option<String>,
    pub task_name: Option<String>,
    /// The envelope exactly as it was in Redis.
    pub raw: Vec<u8>,
}

impl Delivery {
    /// Decodes `raw`, popped from `queue`. An empty `delivery_tag` means the claim script could
    /// not record it, and `malformed_key` names the list it was kept in.
    pub fn decode(
        raw: Vec<u8>,
        delivery_tag: String,
        queue: String,
        accept: &Accept,
        malformed_key: &str,
    ) -> Delivery {
        let envelope = match Envelope::decode(&raw) {
            Ok(env) => env,
            Err(err) => {
                let err = if delivery_tag.is_empty() {
                    kept_aside(err, malformed_key)
                } else {
                    err
                };
                return Delivery::unreadable(raw, delivery_tag, queue, err);
            }
        };
        let message = if delivery_tag.is_empty() {
            // Lua's JSON parser refused it or it has no tag: it cannot be acknowledged, so it
            // is reported, never run.
            Err(CodecError::invalid(format!(
                "the envelope has no usable properties.delivery_tag, so it cannot be \
                 acknowledged; it was moved to the {malformed_key:?} list"
            )))
        } else {
            envelope.task_message(accept)
        };
        let header = |key: &str| envelope.headers.get(key).and_then(Value::as_str);
        let property = |key: &str| {
            envelope
                .properties
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let correlation_id = property("correlation_id");
        let (task_id, task_name) = match &message {
            Ok(msg) => (Some(msg.id().to_owned()), Some(msg.task().to_owned())),
            Err(_) => (
                header("id").map(str::to_owned).or(correlation_id.clone()),
                header("task").map(str::to_owned),
            ),
        };
        Delivery {
            delivery_tag,
            queue,
            exchange: envelope.delivery_info().0.to_owned(),
            priority: clamp_priority(envelope.priority()),
            redelivered: envelope.redelivered(),
            content_type: envelope.content_type.clone(),
            reply_to: property("reply_to"),
            correlation_id,
            properties: match envelope.properties {
                Value::Map(_) => envelope.properties,
                _ => Value::Map(Vec::new()),
            },
            message,
            task_id,
            task_name,
            raw,
        }
    }

    /// An envelope that does not parse: whatever headers can still be read from the JSON.
    fn unreadable(raw: Vec<u8>, delivery_tag: String, queue: String, err: CodecError) -> Self {
        let json: Option<serde_json::Value> = serde_json::from_slice(&raw).ok();
        let text = |pointer: &str| {
            json.as_ref()
                .and_then(|j| j.pointer(pointer))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let correlation_id = text("/properties/correlation_id");
        Delivery {
            delivery_tag,
            queue,
            exchange: text("/properties/delivery_info/exchange").unwrap_or_default(),
            priority: 0,
            redelivered: false,
            content_type: String::new(),
            properties: Value::Map(Vec::new()),
            reply_to: text("/properties/reply_to"),
            task_id: text("/headers/id").or(correlation_id.clone()),
            task_name: text("/headers/task"),
            correlation_id,
            message: Err(err),
            raw,
        }
    }
}

fn kept_aside(err: CodecError, malformed_key: &str) -> CodecError {
    match err {
        CodecError::InvalidMessage(reason) => CodecError::InvalidMessage(format!(
            "{reason}; it was moved to the {malformed_key:?} list"
        )),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Serializer;
    use crate::envelope::{encode_task_envelope, Routing};

    fn good_envelope() -> Vec<u8> {
        let msg = crate::protocol::sample_message("id-1");
        let routing = Routing {
            routing_key: "celery".into(),
            priority: 12,
            reply_to: Some("oid".into()),
            ..Routing::default()
        };
        encode_task_envelope(&msg, Serializer::Json, &routing, Value::Null).unwrap()
    }

    fn decode(raw: Vec<u8>, tag: &str) -> Delivery {
        Delivery::decode(
            raw,
            tag.into(),
            "celery".into(),
            &Accept::json_only(),
            "fastq.malformed",
        )
    }

    #[test]
    fn a_good_envelope_decodes() {
        let d = decode(good_envelope(), "t1");
        let msg = d.message.as_ref().unwrap();
        assert_eq!(msg.task(), "proj.add");
        assert_eq!(d.task_id.as_deref(), Some("id-1"));
        assert_eq!(d.correlation_id.as_deref(), Some("id-1"));
        assert_eq!(d.reply_to.as_deref(), Some("oid"));
        assert_eq!(d.priority, 9);
        assert!(!d.redelivered);
        assert_eq!(d.content_type, "application/json");
    }

    #[test]
    fn a_bad_body_keeps_the_task_id() {
        let raw = br#"{"body": "bm90IGpzb24=", "content-type": "application/json",
            "headers": {"task": "proj.add", "id": "id-2"},
            "properties": {"body_encoding": "base64", "delivery_tag": "t2"}}"#;
        let d = decode(raw.to_vec(), "t2");
        assert!(matches!(d.message, Err(CodecError::Decode { .. })));
        assert_eq!(d.task_id.as_deref(), Some("id-2"));
        assert_eq!(d.task_name.as_deref(), Some("proj.add"));
        assert_eq!(d.delivery_tag, "t2");
    }

    #[test]
    fn an_unparsable_envelope_says_where_it_went() {
        let d = decode(b"{not json".to_vec(), "");
        let err = d.message.unwrap_err();
        assert!(err.to_string().contains("fastq.malformed"), "{err}");
        assert!(d.properties == Value::Map(vec![]));
    }

    #[test]
    fn an_envelope_without_a_tag_is_not_run() {
        let d = decode(good_envelope(), "");
        let err = d.message.unwrap_err();
        assert!(err.to_string().contains("delivery_tag"), "{err}");
        assert_eq!(d.task_id.as_deref(), Some("id-1"));
    }

    #[test]
    fn bad_base64_still_yields_the_task_id() {
        let raw = br#"{"body": "!!", "headers": {"task": "t", "id": "id-3"},
            "properties": {"body_encoding": "base64", "delivery_tag": "t3"}}"#;
        let d = decode(raw.to_vec(), "t3");
        assert!(matches!(d.message, Err(CodecError::InvalidMessage(_))));
        assert_eq!(d.task_id.as_deref(), Some("id-3"));
        assert_eq!(d.delivery_tag, "t3");
    }
}
