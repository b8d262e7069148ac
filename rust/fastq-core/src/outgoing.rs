//! One task message on its way to a broker, whichever the broker: the protocol 2 message, how it
//! is serialized, where it goes and its properties. The AMQP publisher sends it as a
//! `basic.publish`, the Redis publisher as a kombu envelope (`redis_envelope`).

use crate::codec::Serializer;
use crate::envelope::{self, Routing};
use crate::error::Result;
use crate::protocol::TaskMessage;
use crate::value::Value;

/// The AMQP properties of a task message besides the content type and headers. Celery sets
/// `correlation_id` (the task id, the default here), `reply_to`, `delivery_mode`, `priority` and,
/// with `expires`, `expiration`; the rest are there for callers that set them.
#[derive(Debug, Clone, Default)]
pub struct MessageProperties {
    /// Overrides the serializer's (Celery never does).
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub delivery_mode: u8,
    pub priority: u8,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub expiration: Option<String>,
    pub message_id: Option<String>,
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub app_id: Option<String>,
    pub timestamp: Option<u64>,
}

/// One task message to publish: the model (headers completed), its route and properties.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub message: TaskMessage,
    pub serializer: Serializer,
    /// The queue it is for: declared (with its exchange and binding) before the first publish
    /// to it on each connection; its declaration must have been given to `add_queue`.
    pub queue: String,
    /// `""` is the default exchange (Celery's route for a direct exchange).
    pub exchange: String,
    pub routing_key: String,
    pub properties: MessageProperties,
}

impl Outgoing {
    /// The kombu Redis envelope of this message: the bytes to `LPUSH`. The properties Celery
    /// sets are written in kombu's order; any other property that is set follows them, under
    /// its AMQP name (as kombu's Redis channel keeps every publish property).
    pub fn redis_envelope(&self) -> Result<Vec<u8>> {
        let p = &self.properties;
        let routing = Routing {
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            priority: i64::from(p.priority),
            delivery_mode: i64::from(p.delivery_mode),
            reply_to: p.reply_to.clone(),
        };
        let text = [
            ("correlation_id", &p.correlation_id),
            ("expiration", &p.expiration),
            ("message_id", &p.message_id),
            ("type", &p.kind),
            ("user_id", &p.user_id),
            ("app_id", &p.app_id),
            ("content_type", &p.content_type),
            ("content_encoding", &p.content_encoding),
        ];
        let mut extra: Vec<(Value, Value)> = text
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.into(), v.as_str().into())))
            .collect();
        if let Some(ts) = p.timestamp {
            extra.push(("timestamp".into(), Value::UInt(ts)));
        }
        envelope::encode_task_envelope(&self.message, self.serializer, &routing, Value::Map(extra))
    }
}

/// `proj.add(2, 3)` for `queue` through `exchange`, priority 3, with an expiration: what unit
/// tests of the publishers start from.
#[cfg(test)]
pub(crate) fn sample_outgoing(queue: &str, exchange: &str) -> Outgoing {
    Outgoing {
        message: crate::protocol::sample_message("abc"),
        serializer: Serializer::Json,
        queue: queue.into(),
        exchange: exchange.into(),
        routing_key: queue.into(),
        properties: MessageProperties {
            delivery_mode: 2,
            priority: 3,
            reply_to: Some("oid".into()),
            expiration: Some("60000".into()),
            ..MessageProperties::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Accept;
    use crate::envelope::Envelope;

    #[test]
    fn redis_envelope_carries_route_and_properties() {
        let out = Outgoing {
            routing_key: "rk".into(),
            ..sample_outgoing("q", "ex")
        };
        let env = Envelope::decode(&out.redis_envelope().unwrap()).unwrap();
        assert_eq!(env.delivery_info(), ("ex", "rk"));
        assert_eq!(env.priority(), 3);
        let prop = |k| {
            env.properties
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        assert_eq!(prop("correlation_id").as_deref(), Some("abc"));
        assert_eq!(prop("reply_to").as_deref(), Some("oid"));
        assert_eq!(prop("expiration").as_deref(), Some("60000"));
        assert_eq!(env.properties.get("message_id"), None);
        assert_eq!(env.task_message(&Accept::json_only()).unwrap(), out.message);
    }
}
