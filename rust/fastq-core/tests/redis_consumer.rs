//! The consumer and the publisher against the local Redis (db 15). Each test works under its own key prefix, so
//! they run in parallel and leave the rest of the database alone; without Redis they skip.

use std::time::Duration;

use fastq_core::codec::Serializer;
use fastq_core::envelope::{encode_task_envelope, Routing};
use fastq_core::protocol::TaskMessage;
use fastq_core::redis::{
    restore_consumer, BrokerError, ConsumerConfig, PublishError, RedisConsumer, RedisPublisher,
    RestoreReport,
};
use fastq_core::{MessageProperties, Outgoing, Value};

const URL: &str = "redis://127.0.0.1:6379/15";

/// A key prefix of its own and a connection to check state with; deletes its keys when dropped.
struct Sandbox {
    prefix: String,
    conn: redis::Connection,
}

impl Sandbox {
    fn new() -> Option<Sandbox> {
        let client = redis::Client::open(URL).ok()?;
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok();
        if conn.is_none() {
            eprintln!("skipped: no Redis on 127.0.0.1:6379");
        }
        Some(Sandbox {
            prefix: format!("fastq-test-{}:", uuid::Uuid::new_v4().simple()),
            conn: conn?,
        })
    }

    fn consumer(&self, prefetch: usize, consumer_id: &str) -> RedisConsumer {
        RedisConsumer::new(ConsumerConfig {
            url: URL.into(),
            queues: vec!["celery".into()],
            accept: vec!["json".into()],
            prefetch,
            consumer_id: consumer_id.into(),
            global_keyprefix: self.prefix.clone(),
            visibility_timeout: 3600.0,
        })
        .unwrap()
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn push(&mut self, raw: &[u8]) {
        redis::cmd("LPUSH")
            .arg(self.key("celery"))
            .arg(raw)
            .exec(&mut self.conn)
            .unwrap();
    }

    fn count(&mut self, command: &str, name: &str) -> usize {
        redis::cmd(command)
            .arg(self.key(name))
            .query(&mut self.conn)
            .unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut self.conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _ = redis::cmd("DEL").arg(keys).exec(&mut self.conn);
        }
    }
}

fn envelope(id: &str) -> Vec<u8> {
    let msg = TaskMessage::new(
        Value::map_from([("task", "proj.add".into()), ("id", id.into())]),
        Value::List(vec![Value::Int(1)]),
        Value::Null,
        Value::Null,
    )
    .unwrap();
    let routing = Routing {
        routing_key: "celery".into(),
        ..Routing::default()
    };
    encode_task_envelope(&msg, Serializer::Json, &routing, Value::Null).unwrap()
}

#[test]
fn fetch_records_and_ack_forgets() {
    let Some(mut sb) = Sandbox::new() else { return };
    sb.push(&envelope("a"));
    sb.push(&envelope("b"));
    let mut consumer = sb.consumer(1, "c1");

    let got = consumer.fetch(Duration::from_secs(1)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].task_id.as_deref(), Some("a"));
    assert_eq!(sb.count("HLEN", "unacked"), 1);
    assert_eq!(sb.count("ZCARD", "unacked_index"), 1);
    assert_eq!(sb.count("SCARD", "fastq.consumer.c1"), 1);
    assert!(consumer.fetch(Duration::from_secs(1)).unwrap().is_empty());

    consumer.ack(&[got[0].delivery_tag.clone()]).unwrap();
    assert_eq!(consumer.in_flight(), 0);
    assert_eq!(sb.count("HLEN", "unacked"), 0);
    assert_eq!(sb.count("ZCARD", "unacked_index"), 0);
    assert_eq!(sb.count("LLEN", "celery"), 1);
}

#[test]
fn malformed_envelopes_are_kept_aside_not_recorded() {
    let Some(mut sb) = Sandbox::new() else { return };
    sb.push(b"\xff not json");
    sb.push(&envelope("good"));
    let mut consumer = sb.consumer(5, "c1");

    let got = consumer.fetch(Duration::ZERO).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].delivery_tag, "");
    assert!(got[0].message.is_err());
    assert_eq!(got[1].task_id.as_deref(), Some("good"));
    assert_eq!(sb.count("LLEN", "fastq.malformed"), 1);
    assert_eq!(sb.count("HLEN", "unacked"), 1);
    assert_eq!(consumer.in_flight(), 1);
}

#[test]
fn a_dead_consumers_messages_come_back_redelivered() {
    let Some(mut sb) = Sandbox::new() else { return };
    for id in ["a", "b", "c"] {
        sb.push(&envelope(id));
    }
    let mut dead = sb.consumer(2, "dead");
    assert_eq!(dead.fetch(Duration::ZERO).unwrap().len(), 2);
    drop(dead);

    let report = restore_consumer(URL, "dead", &sb.prefix).unwrap();
    assert_eq!(
        report,
        RestoreReport {
            restored: 2,
            unrestorable: 0,
            held_back: Vec::new(),
        }
    );
    assert_eq!(sb.count("HLEN", "unacked"), 0);
    let got = sb.consumer(10, "heir").fetch(Duration::ZERO).unwrap();
    let seen: Vec<_> = got
        .iter()
        .map(|d| (d.task_id.clone().unwrap(), d.redelivered))
        .collect();
    assert_eq!(seen.len(), 3);
    assert!(seen[..2].iter().all(|(_, redelivered)| *redelivered));
    assert_eq!(seen[2], ("c".to_owned(), false));
}

#[test]
fn an_unreachable_broker_is_a_connection_error_without_the_password() {
    let mut consumer = RedisConsumer::new(ConsumerConfig {
        url: "redis://:topsecret@127.0.0.1:6390/15".into(),
        queues: vec!["celery".into()],
        accept: vec!["json".into()],
        prefetch: 1,
        consumer_id: "c".into(),
        global_keyprefix: String::new(),
        visibility_timeout: 3600.0,
    })
    .unwrap();
    let err = consumer.fetch(Duration::ZERO).unwrap_err();
    assert!(matches!(err, BrokerError::Connection { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("redis://:***@127.0.0.1:6390/15"), "{text}");
    assert!(!text.contains("topsecret"), "{text}");
}

fn outgoing(id: &str, priority: u8) -> Outgoing {
    Outgoing {
        message: TaskMessage::new(
            Value::map_from([("task", "proj.add".into()), ("id", id.into())]),
            Value::List(vec![Value::Int(1)]),
            Value::Null,
            Value::Null,
        )
        .unwrap(),
        serializer: Serializer::Json,
        queue: "celery".into(),
        exchange: String::new(),
        routing_key: "celery".into(),
        properties: MessageProperties {
            delivery_mode: 2,
            priority,
            ..MessageProperties::default()
        },
    }
}

#[test]
fn published_messages_are_in_kombus_layout_and_reach_the_consumer() {
    let Some(mut sb) = Sandbox::new() else { return };
    let mut publisher = RedisPublisher::new(URL, &sb.prefix).unwrap();
    publisher
        .publish(&[outgoing("low", 0), outgoing("high", 5)])
        .unwrap();
    publisher.publish(&[outgoing("again", 0)]).unwrap();
    assert_eq!(sb.count("LLEN", "celery"), 2);
    assert_eq!(sb.count("LLEN", "celery\x06\x163"), 1);
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(sb.key("_kombu.binding.celery"))
        .query(&mut sb.conn)
        .unwrap();
    assert_eq!(members, ["celery\x06\x16\x06\x16celery"]);
    let got = sb.consumer(10, "c").fetch(Duration::ZERO).unwrap();
    let mut ids: Vec<_> = got.iter().map(|d| d.task_id.clone().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["again", "high", "low"]);
}

#[test]
fn a_publish_redis_refuses_is_an_error() {
    let Some(mut sb) = Sandbox::new() else { return };
    redis::cmd("SET")
        .arg(sb.key("celery"))
        .arg("not a list")
        .exec(&mut sb.conn)
        .unwrap();
    let mut publisher = RedisPublisher::new(URL, &sb.prefix).unwrap();
    let err = publisher.publish(&[outgoing("x", 0)]).unwrap_err();
    assert!(matches!(err, PublishError::Refused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("refused the publish") && text.contains("WRONGTYPE"),
        "{text}"
    );
    // The connection stays usable for the next publish.
    publisher.publish(&[outgoing("y", 3)]).unwrap();
    assert_eq!(sb.count("LLEN", "celery\x06\x163"), 1);
}

#[test]
fn publishing_to_an_unreachable_broker_is_a_connection_error_without_the_password() {
    let mut publisher = RedisPublisher::new("redis://:topsecret@127.0.0.1:6390/15", "").unwrap();
    let err = publisher.publish(&[outgoing("x", 0)]).unwrap_err();
    assert!(
        matches!(err, PublishError::Broker(BrokerError::Connection { .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("redis://:***@127.0.0.1:6390/15"), "{text}");
    assert!(!text.contains("topsecret"), "{text}");
}
