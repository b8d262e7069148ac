//! The worker's AMQP consumer: one connection and channel per worker process, `basic.qos` for the
//! prefetch window, `basic.consume` on each queue, and deliveries decoded off the caller's thread.
//!
//! lapin runs on a tokio runtime this consumer creates in its constructor (in the worker child,
//! after the fork); lapin's own I/O thread reads deliveries into the consumers' buffers and
//! answers heartbeats while the caller runs tasks. `fetch` polls those buffers directly and
//! decodes with the GIL released: no thread between the socket reader and the caller. The
//! caller blocks only
//! in `fetch`: an ack or reject is queued straight into lapin's frame queue (first poll of its
//! future) without waiting for the write. That queue is FIFO and shared with the close frames, so
//! acks keep their order (an ack with `multiple=true` never overtakes a single ack it covers) and
//! reach the broker before the connection closes.
//!
//! Recovery is explicit: a lost connection ends the session, `fetch` reports it once, and the
//! next `fetch` reconnects, redeclares and resumes consuming under a new generation. Delivery
//! tags carry their generation, so an ack for a tag of a dead channel is dropped (RabbitMQ has
//! already requeued that message) instead of acking an unrelated message on the new channel.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::poll_once;
use futures_lite::stream::{self, Stream};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::runtime::{Handle, Runtime};

use super::acks::plan_acks;
use super::connection::{
    close, connect_any, open_channel, redact, runtime, set_up_or_close, Endpoint, Rotation,
};
use super::table::table_to_value;
use super::topology::{declare_error, declare_queue, QueueSpec};
use super::AmqpError;

use crate::codec::{decode_accepted, Accept, Decoded};
use crate::error::CodecError;
use crate::protocol::TaskMessage;
use crate::value::Value;

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub endpoint: Endpoint,
    pub queues: Vec<QueueSpec>,
    pub prefetch: u16,
    /// `basic.qos` global flag: per channel on classic queues, per consumer on quorum queues.
    pub global_qos: bool,
    pub accept: Accept,
    /// Also names the connection (`rabbitmqctl list_connections client_properties`).
    pub consumer_tag: String,
}

/// The task message in a delivery, or why there is none.
#[derive(Debug)]
pub enum Body {
    Message(TaskMessage),
    /// An accepted format only Python decodes (pickle, yaml).
    Foreign(&'static str),
    Error(CodecError),
}

/// One delivery, decoded.
#[derive(Debug)]
pub struct Incoming {
    pub generation: u64,
    pub tag: u64,
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
    pub priority: u8,
    pub content_type: String,
    pub content_encoding: String,
    pub reply_to: Option<String>,
    pub correlation_id: Option<String>,
    /// Celery's view of the properties, with `delivery_info`.
    pub properties: Value,
    /// The message headers while the body is not a parsed task (`Foreign`, `Error`); a parsed
    /// `Message` holds them itself.
    pub headers: Value,
    pub body: Vec<u8>,
    pub decoded: Body,
}

impl Incoming {
    /// `"<generation>.<tag>"`: what the worker hands back to `ack`/`reject`.
    pub fn delivery_tag(&self) -> String {
        format!("{}.{}", self.generation, self.tag)
    }

    /// The task id from the message, else from the raw headers (for logging undecodable ones).
    pub fn task_id(&self) -> Option<&str> {
        match &self.decoded {
            Body::Message(m) => Some(m.id()),
            _ => self.headers.get("id").and_then(Value::as_str),
        }
    }

    pub fn task_name(&self) -> Option<&str> {
        match &self.decoded {
            Body::Message(m) => Some(m.task()),
            _ => self.headers.get("task").and_then(Value::as_str),
        }
    }
}

/// Parses a tag made by [`Incoming::delivery_tag`].
pub fn parse_tag(tag: &str) -> Option<(u64, u64)> {
    let (generation, tag) = tag.split_once('.')?;
    Some((generation.parse().ok()?, tag.parse().ok()?))
}

/// What the merged consumer streams yield: a delivery of a queue, or the end of a queue's
/// consumer (cancelled by the broker, or its channel closed).
enum Event {
    Delivery(Arc<str>, Box<lapin::message::Delivery>),
    Lost(String),
}

/// `Sync` too, so the consumer can live in a Python object.
type Events = Pin<Box<dyn Stream<Item = Event> + Send + Sync>>;

struct Session {
    generation: u64,
    /// The broker it is connected to (redacted), for the message when it is lost.
    broker: String,
    connection: Connection,
    channel: Channel,
    /// Tags handed to the caller and not yet settled.
    outstanding: BTreeSet<u64>,
    events: Events,
}

pub struct AmqpConsumer {
    rt: Runtime,
    cfg: Arc<ConsumerConfig>,
    /// Every broker of the list (redacted), for the message when none answers.
    display_url: String,
    session: Option<Session>,
    generation: u64,
    /// Which broker of the list the next connection tries first.
    rotation: Rotation,
}

impl AmqpConsumer {
    /// Starts the runtime and connects; a broker that is down is a `Connection` error the caller
    /// retries, a refused declaration (mismatched queue arguments) is a `Config` error.
    pub fn new(cfg: ConsumerConfig) -> Result<Self, AmqpError> {
        if cfg.queues.is_empty() {
            return Err(AmqpError::Config(
                "the consumer needs at least one queue".into(),
            ));
        }
        let rt = runtime("fastq-amqp")?;
        let display_url = cfg.endpoint.display_url();
        let rotation = Rotation::new(&cfg.endpoint);
        let mut consumer = AmqpConsumer {
            rt,
            cfg: Arc::new(cfg),
            display_url,
            session: None,
            generation: 0,
            rotation,
        };
        consumer.connect()?;
        Ok(consumer)
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn in_flight(&self) -> usize {
        self.session.as_ref().map_or(0, |s| s.outstanding.len())
    }

    fn connect(&mut self) -> Result<(), AmqpError> {
        self.generation += 1;
        let generation = self.generation;
        let cfg = Arc::clone(&self.cfg);
        let handle = self.rt.handle().clone();
        let session = self
            .rt
            .block_on(open_session(cfg, generation, handle, &mut self.rotation))
            .map_err(|e| e.context(&self.display_url))?;
        self.session = Some(session);
        Ok(())
    }

    /// Ends the current session; its unacknowledged messages go back to the queue when the
    /// broker sees the connection close.
    fn drop_session(&mut self) {
        if let Some(session) = self.session.take() {
            // Queued acks go out before the close frames (one FIFO). A dead socket fails fast; a
            // live one gets a moment to say goodbye.
            self.rt.block_on(close(&session.connection, "consumer"));
        }
    }

    /// Queues a frame: polls its future once, which pushes the frame into lapin's queue, and
    /// drops it rather than wait for the write. A channel that is already closed fails here;
    /// a write that fails later breaks the connection, which the next `fetch` reports.
    fn send_now<F>(&mut self, what: &str, frame: F) -> Result<(), AmqpError>
    where
        F: std::future::Future<Output = lapin::Result<()>>,
    {
        match futures_lite::future::block_on(futures_lite::future::poll_once(frame)) {
            None | Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(self.lost(&format!("{what} failed: {e}"))),
        }
    }

    /// The session broke: it is dropped, and the next connection starts at another broker of
    /// the list (the node may be gone).
    fn lost(&mut self, reason: &str) -> AmqpError {
        let broker = self
            .session
            .as_ref()
            .map_or_else(|| self.display_url.clone(), |s| s.broker.clone());
        self.drop_session();
        self.rotation.advance();
        AmqpError::Connection(format!("lost the connection to {broker}: {reason}"))
    }

    /// The broker of the current session (redacted), if connected.
    pub fn broker(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.broker.as_str())
    }

    /// Waits up to `timeout` for the first delivery, then takes every one already received.
    /// Reconnects first when the previous session was lost.
    pub fn fetch(&mut self, timeout: Duration) -> Result<Vec<Incoming>, AmqpError> {
        if self.session.is_none() {
            self.connect()?;
        }
        let Some(session) = self.session.as_mut() else {
            return Ok(Vec::new());
        };
        let events = &mut session.events;
        // A delivery already buffered is taken without arming a timer: a new timer earlier than
        // the runtime's next one wakes its thread, a wake-up per fetch for nothing.
        let first = match futures_lite::future::block_on(poll_once(events.next())) {
            Some(event) => Ok(event),
            None => self
                .rt
                .block_on(async { tokio::time::timeout(timeout, events.next()).await }),
        };
        let mut batch = match first {
            Err(_) => {
                if !session.connection.status().connected() || !session.channel.status().connected()
                {
                    return Err(self.lost("the connection closed"));
                }
                return Ok(Vec::new());
            }
            Ok(None) => return Err(self.lost("every consumer stopped")),
            Ok(Some(event)) => vec![event],
        };
        // Whatever else lapin has already buffered, without waiting.
        while let Some(Some(event)) = futures_lite::future::block_on(poll_once(events.next())) {
            batch.push(event);
        }
        let mut out = Vec::with_capacity(batch.len());
        for event in batch {
            match event {
                Event::Delivery(queue, delivery) => {
                    session.outstanding.insert(delivery.delivery_tag);
                    out.push(incoming(
                        session.generation,
                        &queue,
                        *delivery,
                        &self.cfg.accept,
                    ));
                }
                // Deliveries of this batch came on the dying channel: the broker requeues them.
                Event::Lost(reason) => return Err(self.lost(&reason)),
            }
        }
        Ok(out)
    }

    /// Splits tags into this session's and stale ones (older generations or unparsable).
    fn current(&self, tags: &[String]) -> (Vec<u64>, usize) {
        let generation = self.session.as_ref().map(|s| s.generation);
        let mut current = Vec::with_capacity(tags.len());
        for tag in tags {
            match parse_tag(tag) {
                Some((g, t)) if Some(g) == generation => current.push(t),
                _ => {}
            }
        }
        let stale = tags.len() - current.len();
        (current, stale)
    }

    /// Acknowledges tags, with one `multiple=true` frame for a run that starts at the oldest
    /// outstanding tag. Returns how many tags were stale and dropped.
    pub fn ack(&mut self, tags: &[String]) -> Result<usize, AmqpError> {
        let (current, stale) = self.current(tags);
        let Some(session) = self.session.as_mut() else {
            return Ok(stale);
        };
        let channel = session.channel.clone();
        for (tag, multiple) in plan_acks(&mut session.outstanding, &current) {
            self.send_now(
                "basic.ack",
                channel.basic_ack(tag, BasicAckOptions { multiple }),
            )?;
        }
        Ok(stale)
    }

    /// Rejects one delivery; returns false when the tag was stale (nothing sent).
    pub fn reject(&mut self, tag: &str, requeue: bool) -> Result<bool, AmqpError> {
        let (current, _) = self.current(&[tag.to_owned()]);
        let Some(session) = self.session.as_mut() else {
            return Ok(false);
        };
        let Some(&tag) = current.first() else {
            return Ok(false);
        };
        if !session.outstanding.remove(&tag) {
            return Ok(false);
        }
        let channel = session.channel.clone();
        self.send_now(
            "basic.reject",
            channel.basic_reject(tag, BasicRejectOptions { requeue }),
        )?;
        Ok(true)
    }

    /// Requeues everything this consumer holds (handed out or buffered) with one
    /// `basic.nack(multiple, requeue)`; returns how many.
    pub fn restore_unacked(&mut self) -> Result<usize, AmqpError> {
        let Some(session) = self.session.as_mut() else {
            return Ok(0);
        };
        // Deliveries lapin buffered but nobody fetched are held by this channel too.
        while let Some(Some(event)) =
            futures_lite::future::block_on(poll_once(session.events.next()))
        {
            if let Event::Delivery(_, d) = event {
                session.outstanding.insert(d.delivery_tag);
            }
        }
        let count = session.outstanding.len();
        let Some(&last) = session.outstanding.last() else {
            return Ok(0);
        };
        session.outstanding.clear();
        let channel = session.channel.clone();
        // Awaited: once this frame is written, every ack queued before it is too.
        let sent = self.rt.block_on(async move {
            let requeue = BasicNackOptions {
                multiple: true,
                requeue: true,
            };
            tokio::time::timeout(Duration::from_secs(5), channel.basic_nack(last, requeue)).await
        });
        match sent {
            Ok(Ok(())) => Ok(count),
            Ok(Err(e)) => Err(self.lost(&format!("basic.nack failed: {e}"))),
            Err(_) => Err(self.lost("basic.nack was not written within 5 s")),
        }
    }

    /// Closes the connection; the broker requeues whatever is still unacknowledged.
    pub fn close(&mut self) {
        self.drop_session();
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        self.drop_session();
    }
}

async fn open_session(
    cfg: Arc<ConsumerConfig>,
    generation: u64,
    handle: Handle,
    rotation: &mut Rotation,
) -> Result<Session, AmqpError> {
    let limit = cfg.endpoint.connect_timeout;
    let (connection, index) =
        connect_any(&cfg.endpoint, rotation, &cfg.consumer_tag, handle).await?;
    let ready = set_up_or_close(&connection, "consumer", limit, set_up(&connection, &cfg)).await;
    let (channel, events) = match ready {
        Ok(ready) => ready,
        Err(e) => {
            // A node that accepts connections but cannot serve the queue (still booting, or
            // cut off from the cluster): the next attempt tries another one.
            rotation.advance();
            return Err(e);
        }
    };
    Ok(Session {
        generation,
        broker: redact(&cfg.endpoint.urls[index]),
        connection,
        channel,
        outstanding: BTreeSet::new(),
        events,
    })
}

/// Channel, QoS, declarations and one consumer per queue.
async fn set_up(
    connection: &Connection,
    cfg: &ConsumerConfig,
) -> Result<(Channel, Events), AmqpError> {
    let channel = open_channel(connection).await?;
    channel
        .basic_qos(
            cfg.prefetch,
            BasicQosOptions {
                global: cfg.global_qos,
            },
        )
        .await
        .map_err(|e| AmqpError::Connection(format!("basic.qos failed: {e}")))?;
    for queue in &cfg.queues {
        declare_queue(&channel, queue).await?;
    }
    let mut merged: Option<Events> = None;
    for (i, queue) in cfg.queues.iter().enumerate() {
        let consumer = channel
            .basic_consume(
                queue.name.as_str().into(),
                format!("{}.{i}", cfg.consumer_tag).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| declare_error(&format!("basic.consume on queue {:?}", queue.name), e))?;
        let one = queue_events(consumer, Arc::from(queue.name.as_str()));
        // `race` picks fairly among queues with deliveries ready, as kombu's round robin does.
        merged = Some(match merged {
            None => one,
            Some(others) => Box::pin(stream::race(others, one)),
        });
    }
    let events = merged.ok_or_else(|| AmqpError::Config("no queue to consume".into()))?;
    Ok((channel, events))
}

/// One queue's deliveries; an error or the consumer's end becomes a `Lost`.
fn queue_events(consumer: lapin::Consumer, queue: Arc<str>) -> Events {
    let ended = format!("the broker cancelled the consumer of queue {queue:?}");
    let deliveries = consumer.map(move |item| match item {
        Ok(delivery) => Event::Delivery(Arc::clone(&queue), Box::new(delivery)),
        Err(e) => Event::Lost(e.to_string()),
    });
    // After an error lapin ends the stream, so a second `Lost` may follow: the first one
    // already ended the session.
    Box::pin(deliveries.chain(stream::once(Event::Lost(ended))))
}

fn opt_str(s: &Option<lapin::types::ShortString>) -> Option<String> {
    s.as_ref().map(|s| s.as_str().to_owned())
}

/// A delivery as the worker sees it: properties in Celery's names and the task decoded.
pub fn incoming(
    generation: u64,
    queue: &str,
    delivery: lapin::message::Delivery,
    accept: &Accept,
) -> Incoming {
    let p = &delivery.properties;
    let headers = p
        .headers()
        .as_ref()
        .map_or(Value::Map(vec![]), table_to_value);
    let content_type = opt_str(p.content_type()).unwrap_or_else(|| crate::codec::JSON.into());
    let content_encoding = opt_str(p.content_encoding()).unwrap_or_else(|| "utf-8".into());
    let priority = p.priority().unwrap_or(0);
    let reply_to = opt_str(p.reply_to());
    let correlation_id = opt_str(p.correlation_id());
    let exchange = delivery.exchange.as_str().to_owned();
    let routing_key = delivery.routing_key.as_str().to_owned();
    let properties = Value::map_from([
        ("correlation_id", correlation_id.clone().into()),
        ("reply_to", reply_to.clone().into()),
        ("delivery_mode", p.delivery_mode().map(i64::from).into()),
        ("priority", Value::Int(i64::from(priority))),
        ("expiration", opt_str(p.expiration()).into()),
        (
            "delivery_info",
            Value::map_from([
                ("exchange", Value::from(exchange.as_str())),
                ("routing_key", Value::from(routing_key.as_str())),
                ("redelivered", Value::Bool(delivery.redelivered)),
            ]),
        ),
    ]);
    let mut body = delivery.data;
    let decoded = match crate::compression::decompressed(&headers, &body) {
        Ok(Cow::Owned(plain)) => {
            body = plain; // what a Python decoder (pickle, yaml) reads too
            decode_accepted(&content_type, &body, accept)
        }
        Ok(Cow::Borrowed(_)) => decode_accepted(&content_type, &body, accept),
        Err(e) => Err(e),
    };
    let (decoded, headers) = match decoded {
        Ok(Decoded::Value(body)) => {
            // The headers move into the message; should it be invalid, its id and name are
            // what the log and the stored failure need.
            let ids = Value::map_from([
                ("id", headers.get("id").cloned().unwrap_or(Value::Null)),
                ("task", headers.get("task").cloned().unwrap_or(Value::Null)),
            ]);
            match TaskMessage::parse(headers, body) {
                Ok(m) => (Body::Message(m), Value::Null),
                Err(e) => (Body::Error(e), ids),
            }
        }
        Ok(Decoded::Foreign { content_type }) => (Body::Foreign(content_type), headers),
        Err(e) => (Body::Error(e), headers),
    };
    Incoming {
        generation,
        tag: delivery.delivery_tag,
        queue: queue.to_owned(),
        exchange,
        routing_key,
        redelivered: delivery.redelivered,
        priority,
        content_type,
        content_encoding,
        reply_to,
        correlation_id,
        properties,
        headers,
        body,
        decoded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, ShortString};
    use lapin::BasicProperties;

    #[test]
    fn tags_carry_their_generation() {
        assert_eq!(parse_tag("3.17"), Some((3, 17)));
        assert_eq!(parse_tag("17"), None);
        assert_eq!(parse_tag("a.b"), None);
    }

    fn delivery(content_type: &str, headers: FieldTable, body: &[u8]) -> lapin::message::Delivery {
        let mut d =
            lapin::message::Delivery::mock(9, "".into(), "celery".into(), true, body.into());
        d.properties = BasicProperties::default()
            .with_content_type(ShortString::from(content_type))
            .with_headers(headers)
            .with_priority(5)
            .with_correlation_id("abc".into())
            .with_reply_to("oid".into());
        d
    }

    fn task_headers() -> FieldTable {
        let mut h = FieldTable::default();
        h.insert("task".into(), AMQPValue::LongString("proj.add".into()));
        h.insert("id".into(), AMQPValue::LongString("abc".into()));
        h
    }

    #[test]
    fn a_celery_delivery_decodes() {
        let d = delivery(
            "application/json",
            task_headers(),
            br#"[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#,
        );
        let inc = incoming(2, "celery", d, &Accept::json_only());
        assert_eq!(inc.delivery_tag(), "2.9");
        assert_eq!(inc.priority, 5);
        assert!(inc.redelivered);
        assert_eq!(inc.reply_to.as_deref(), Some("oid"));
        let Body::Message(m) = &inc.decoded else {
            panic!("{:?}", inc.decoded)
        };
        assert_eq!(m.task(), "proj.add");
        assert_eq!(m.args, vec![Value::Int(2), Value::Int(3)]);
        let info = inc.properties.get("delivery_info").unwrap();
        assert_eq!(info.get("routing_key"), Some(&Value::from("celery")));
    }

    #[test]
    fn bad_bodies_keep_their_ids_for_the_log() {
        let d = delivery("application/json", task_headers(), b"{not json");
        let inc = incoming(1, "celery", d, &Accept::json_only());
        assert!(matches!(
            inc.decoded,
            Body::Error(CodecError::Decode { .. })
        ));
        assert_eq!(inc.task_id(), Some("abc"));
        assert_eq!(inc.task_name(), Some("proj.add"));

        // JSON, but not a task body: the headers went into the parse, the ids are kept.
        let d = delivery("application/json", task_headers(), br#""not a list""#);
        let inc = incoming(1, "celery", d, &Accept::json_only());
        assert!(matches!(
            inc.decoded,
            Body::Error(CodecError::InvalidMessage(_))
        ));
        assert_eq!(inc.task_id(), Some("abc"));
        assert_eq!(inc.task_name(), Some("proj.add"));

        let d = delivery(
            "application/x-python-serialize",
            task_headers(),
            b"\x80\x04N.",
        );
        let inc = incoming(1, "celery", d, &Accept::json_only());
        assert!(matches!(
            inc.decoded,
            Body::Error(CodecError::ContentDisallowed { .. })
        ));
    }
}
