//! The client's AMQP publisher: one connection and channel per process, the queues and exchanges
//! declared as Celery declares them (once per connection), and whole batches of task messages
//! encoded and published in one call.
//!
//! What a call guarantees is what py-amqp's `basic_publish` does: when it returns, every frame of
//! every message has been written to the socket (lapin resolves a publish when its last frame is
//! written), so a `.delay()` followed by the process exiting loses nothing the kernel accepted.
//! The frames of a batch are all queued before the first wait, so a batch costs one wake-up of
//! lapin's I/O thread, not one per message. With publisher confirms (fastq's default) a call
//! waits instead for the broker's ack of every message, once for the whole batch: the acks of a
//! batch are awaited together after its last frame is queued, so a batch costs about one round
//! trip (and one fsync of the broker's) more, not one per message. A call shared between
//! threads (`publish_via` on a mutex) holds the publisher only while it writes: threads wait for
//! their confirms together. A nack is an error naming the task. Without confirms, a broker that
//! dies loses what it had received but not yet written to disk, though the call returned.
//!
//! The runtime and the connection are created on first use, in the process that uses them, so an
//! app built before a fork starts no thread. A forked child sees the parent's pid on them and
//! builds its own; the parent's are leaked, never dropped: their threads do not exist in the
//! child, and their socket is the parent's.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures_lite::future::poll_once;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::BasicProperties;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection, PublisherConfirm};
use thiserror::Error;
use tokio::runtime::{Handle, Runtime};

use super::connection::{
    channel_error, close, connect_any, open_channel, runtime, set_up_or_close, Endpoint, Rotation,
};
use super::table::headers_table;
use super::topology::{declare_exchange, declare_queue, QueueSpec};
use super::AmqpError;
use crate::codec::Serializer;
use crate::error::CodecError;
use crate::outgoing::{MessageProperties, Outgoing};

#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub endpoint: Endpoint,
    /// Publisher confirms (`broker_confirm_publish`, on by default): a call returns once the
    /// broker acked every message of it, so a returned `.delay()` means the task is queued.
    pub confirm: bool,
    /// Shown by `rabbitmqctl list_connections client_properties` (and how to close it by hand).
    pub connection_name: String,
    /// `publish_timeout`: the longest a call waits without progress (for its next write to
    /// finish or its next confirm to come); `None` waits as long as the connection lives, as
    /// py-amqp does.
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum PublishError {
    /// A message that cannot be encoded; nothing of the batch was sent.
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    /// The broker refused a message (basic.nack, with confirms on); never retried.
    #[error("{0}")]
    Refused(String),
}

/// A message ready for `basic.publish`.
struct Publication {
    task_id: String,
    queue: String,
    /// An exchange that is not the queue's, declared (direct, durable) before use, as Celery's
    /// producer does for a route naming one.
    extra_exchange: Option<String>,
    exchange: ShortString,
    routing_key: ShortString,
    properties: BasicProperties,
    body: Vec<u8>,
}

/// Why a send stopped, and how far it got.
struct Failure {
    /// Messages of the attempt that are known to be out (written, or acked with confirms).
    done: usize,
    error: PublishError,
    /// A lost connection: another attempt may succeed. A refusal will not.
    retryable: bool,
    /// The session it happened on (`Session::serial`), dropped unless `keeps_session`.
    session: Option<u64>,
    /// A nack, a `publish_timeout` or an unroutable message: the connection is as good as
    /// before. Dropping it would cut the calls of other threads waiting on it (their messages
    /// then sent again, possibly twice) and lose the frames of this call still queued for a
    /// blocked broker.
    keeps_session: bool,
    /// A nack: the channel is replaced once no call waits on it. After a quorum queue's leader
    /// died, RabbitMQ (3.10) can go on nacking every publish of a channel that had published
    /// to it, where a new channel succeeds.
    renew_channel: bool,
}

impl Failure {
    fn new(done: usize, error: PublishError, retryable: bool) -> Self {
        Failure {
            done,
            error,
            retryable,
            session: None,
            keeps_session: false,
            renew_channel: false,
        }
    }

    fn keeping_session(mut self) -> Self {
        self.keeps_session = true;
        self
    }

    fn renewing_channel(mut self) -> Self {
        self.renew_channel = true;
        self
    }

    fn on(mut self, session: u64) -> Self {
        self.session = Some(session);
        self
    }

    /// A lapin error while publishing: a channel-level refusal, or the connection.
    fn lapin(done: usize, what: &str, e: &lapin::Error) -> Self {
        match channel_error(e) {
            Some(err) => Failure::new(
                done,
                AmqpError::Config(format!("the broker refused {what}: {err}")).into(),
                false,
            ),
            None => Failure::new(
                done,
                AmqpError::Connection(format!("{what} failed: {e}")).into(),
                true,
            ),
        }
    }
}

struct Session {
    /// Tells this connection from the next one: a failure seen by a thread that waited for
    /// confirms without the publisher drops the session it happened on, not a newer one.
    serial: u64,
    /// The broker it is connected to (redacted URL), for error messages.
    broker: String,
    /// A publish on `channel` was nacked: the next call with no other call waiting on the
    /// channel's confirms opens a new one.
    renew_channel: bool,
    connection: Connection,
    channel: Channel,
    /// Queues (by name) and `exchange:<name>`s declared on this connection.
    declared: HashSet<String>,
}

impl Session {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

/// The runtime and connection of the process `pid`.
struct State {
    pid: u32,
    rt: Runtime,
    session: Option<Session>,
    serial: u64,
    /// The calls waiting for confirms on the runtime without the publisher: `close` lets them
    /// finish before it stops the runtime.
    waiters: Waiters,
    /// Which broker of the list the next connection tries first.
    rotation: Rotation,
}

/// Counts the calls waiting for their confirms; `close` sleeps until the count is 0.
#[derive(Clone, Default)]
struct Waiters(Arc<(Mutex<usize>, Condvar)>);

/// One call waiting; it stops counting when dropped.
struct Waiting(Waiters);

impl Waiters {
    fn enter(&self) -> Waiting {
        *lock(&self.0 .0) += 1;
        Waiting(self.clone())
    }

    /// Whether no call waits now.
    fn idle(&self) -> bool {
        *lock(&self.0 .0) == 0
    }

    /// Whether every call finished before `deadline`.
    fn wait_idle(&self, deadline: Instant) -> bool {
        let (count, idle) = &*self.0;
        let mut count = lock(count);
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            count = idle
                .wait_timeout(count, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let (count, idle) = &*self.0 .0;
        *lock(count) -= 1;
        idle.notify_all();
    }
}

/// A poisoned lock still holds a valid count.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct AmqpPublisher {
    cfg: PublisherConfig,
    display_url: String,
    queues: HashMap<String, QueueSpec>,
    state: Option<State>,
}

impl AmqpPublisher {
    /// No I/O and no thread until the first publish.
    pub fn new(cfg: PublisherConfig) -> Self {
        let display_url = cfg.endpoint.display_url();
        AmqpPublisher {
            cfg,
            display_url,
            queues: HashMap::new(),
            state: None,
        }
    }

    pub fn connection_name(&self) -> &str {
        &self.cfg.connection_name
    }

    /// Registers (or replaces) how to declare a queue; it is declared on the next publish to it.
    pub fn add_queue(&mut self, spec: QueueSpec) {
        if let Some(session) = self.state.as_mut().and_then(|s| s.session.as_mut()) {
            session.declared.remove(&spec.name);
        }
        self.queues.insert(spec.name.clone(), spec);
    }

    /// True when this process holds an open connection (nothing is checked on the wire).
    pub fn connected(&self) -> bool {
        self.state.as_ref().is_some_and(|s| {
            s.pid == std::process::id() && s.session.as_ref().is_some_and(Session::usable)
        })
    }

    /// Encodes every message, then publishes them in order on this process's connection
    /// (opened, or reopened when it broke, first). With `retry`, a connection lost part-way
    /// is reopened once and the messages not yet out are sent again. Returns how many times it
    /// reconnected after a loss (0 or 1), for the caller's log.
    pub fn publish(&mut self, batch: Vec<Outgoing>, retry: bool) -> Result<u32, PublishError> {
        publish_via(self, batch, retry)
    }

    fn prepare_all(&self, batch: &[Outgoing]) -> Result<Vec<Publication>, PublishError> {
        batch.iter().map(|out| self.prepare(out)).collect()
    }

    /// Closes the connection (the next publish opens a new one) and stops the runtime.
    pub fn close(&mut self) {
        if let Some(state) = self.state.take() {
            if state.pid != std::process::id() {
                std::mem::forget(state);
                return;
            }
            if let Some(session) = &state.session {
                state.rt.block_on(close(&session.connection, "publisher"));
            }
            // Calls still waiting for confirms run on this runtime: with the connection closed
            // they settle at once. One that does not is left its runtime (leaked, not stopped).
            if !state
                .waiters
                .wait_idle(Instant::now() + Duration::from_secs(5))
            {
                std::mem::forget(state);
            }
        }
    }

    fn prepare(&self, out: &Outgoing) -> Result<Publication, PublishError> {
        let spec = self.queues.get(&out.queue).ok_or_else(|| {
            AmqpError::Config(format!(
                "no declaration for queue {:?} (add_queue first)",
                out.queue
            ))
        })?;
        let extra_exchange = (!out.exchange.is_empty() && out.exchange != spec.exchange)
            .then(|| out.exchange.clone());
        let task_id = out.message.id().to_owned();
        let body = out.message.encode_body(out.serializer)?;
        let headers = headers_table(&out.message.headers)
            .map_err(|reason| CodecError::encode("AMQP headers", reason))?;
        let properties =
            basic_properties(out.properties.clone(), out.serializer, &task_id, headers)?;
        Ok(Publication {
            extra_exchange,
            exchange: short("the exchange name", out.exchange.clone())?,
            routing_key: short("the routing key", out.routing_key.clone())?,
            task_id,
            queue: out.queue.clone(),
            properties,
            body,
        })
    }

    /// Marks session `serial` (if current) for a new channel, opened by the next call that
    /// finds no call waiting on the old one.
    fn renew_channel(&mut self, serial: u64) {
        let current = self.state.as_mut().and_then(|s| s.session.as_mut());
        if let Some(session) = current.filter(|s| s.serial == serial) {
            session.renew_channel = true;
        }
    }

    /// The broker (redacted URL) of session `serial` if it is the current one, else the list.
    fn broker_of(&self, serial: Option<u64>) -> String {
        let current = self.state.as_ref().and_then(|s| s.session.as_ref());
        match current {
            Some(session) if Some(session.serial) == serial => session.broker.clone(),
            _ => self.display_url.clone(),
        }
    }

    /// Forgets the session a failure happened on (if it is still the current one); a broken
    /// connection fails its close at once. The next connection starts at another broker of the
    /// list (the node may be gone).
    fn drop_session(&mut self, serial: u64) {
        if let Some(state) = self.state.as_mut() {
            if state.session.as_ref().is_some_and(|s| s.serial == serial) {
                if let Some(session) = state.session.take() {
                    state.rt.block_on(close(&session.connection, "publisher"));
                    state.rotation.advance();
                }
            }
        }
    }

    /// Declares what the messages need and writes them; with confirms, returns the confirms to
    /// wait for, which the caller awaits without holding the publisher.
    fn send(&mut self, pubs: &mut [Publication]) -> Result<Option<Unconfirmed>, Failure> {
        let cfg = &self.cfg;
        let queues = &self.queues;
        let state = state_of(&mut self.state, &cfg.endpoint)
            .map_err(|e| Failure::new(0, e.into(), false))?;
        // A connection the broker closed since the last call (lapin's I/O thread noticed):
        // replace it before writing into it, starting at another broker of the list.
        if state.session.as_ref().is_some_and(|s| !s.usable()) {
            if let Some(stale) = state.session.take() {
                state.rt.block_on(close(&stale.connection, "publisher"));
                state.rotation.advance();
            }
        }
        if state.session.is_none() {
            let handle = state.rt.handle().clone();
            state.serial += 1;
            let session = state
                .rt
                .block_on(open(cfg, handle, state.serial, &mut state.rotation))
                .map_err(|e| Failure::new(0, e.into(), true))?;
            state.session = Some(session);
        }
        let Some(session) = state.session.as_mut() else {
            return Err(Failure::new(
                0,
                AmqpError::Connection("no connection".into()).into(),
                true,
            ));
        };
        let serial = session.serial;
        // After a nack, a new channel, once no call waits on the old one's confirms (none can
        // start while this one holds the publisher). The queues declared stay declared.
        if session.renew_channel && state.waiters.idle() {
            let renewed = state.rt.block_on(async {
                let channel = new_channel(&session.connection, cfg.confirm).await?;
                let old = std::mem::replace(&mut session.channel, channel);
                let bye = old.close(200, "fastq publisher: a new channel after a nack".into());
                let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
                Ok::<_, AmqpError>(())
            });
            session.renew_channel = false;
            renewed.map_err(|e| Failure::new(0, e.into(), true).on(serial))?;
        }
        let confirms = state
            .rt
            .block_on(async {
                declare_for(session, queues, pubs).await?;
                publish_all(&session.channel, pubs, cfg.confirm, cfg.timeout).await
            })
            .map_err(|f| f.on(serial))?;
        if !cfg.confirm {
            return Ok(None);
        }
        Ok(Some(Unconfirmed {
            handle: state.rt.handle().clone(),
            _waiting: state.waiters.enter(),
            serial,
            stall: cfg.timeout,
            confirms: pubs
                .iter()
                .map(|p| p.task_id.clone())
                .zip(confirms)
                .collect(),
        }))
    }
}

/// How a publisher is reached: owned (`&mut`), or shared between threads behind a mutex, which
/// is released while a call waits for its confirms so that the calls of several threads
/// overlap their round trips to the broker (and its disk writes) instead of queueing for them.
pub trait Access {
    fn with<R>(&mut self, f: impl FnOnce(&mut AmqpPublisher) -> R) -> R;
}

impl Access for &mut AmqpPublisher {
    fn with<R>(&mut self, f: impl FnOnce(&mut AmqpPublisher) -> R) -> R {
        f(self)
    }
}

impl Access for &Mutex<AmqpPublisher> {
    fn with<R>(&mut self, f: impl FnOnce(&mut AmqpPublisher) -> R) -> R {
        // A panic mid-publish leaves nothing half-updated that the next call cannot handle.
        f(&mut self.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Encodes every message, then publishes them in order on this process's connection (opened,
/// or reopened when it broke, first) and, with confirms, waits for the broker's acks of all of
/// them without holding the publisher. With `retry`, a connection lost part-way is reopened
/// once and the messages not yet out (or not acked) are sent again. Returns how many times it
/// reconnected after a loss (0 or 1), for the caller's log.
pub fn publish_via(
    mut publisher: impl Access,
    batch: Vec<Outgoing>,
    retry: bool,
) -> Result<u32, PublishError> {
    // Every message is encoded before the first is sent: one that cannot be, sends none.
    let mut pubs = publisher.with(|p| p.prepare_all(&batch))?;
    let mut start = 0;
    let mut reconnects = 0;
    while !pubs.is_empty() {
        let failure = match publisher.with(|p| p.send(&mut pubs)) {
            Ok(None) => break,
            Ok(Some(unconfirmed)) => match unconfirmed.wait() {
                Ok(()) => break,
                Err(failure) => failure,
            },
            Err(failure) => failure,
        };
        let display_url = publisher.with(|p| {
            // The broker the failed session was connected to, before it is dropped.
            let broker = p.broker_of(failure.session);
            if let (Some(serial), false) = (failure.session, failure.keeps_session) {
                p.drop_session(serial);
            }
            if let (Some(serial), true) = (failure.session, failure.renew_channel) {
                p.renew_channel(serial);
            }
            broker
        });
        start += failure.done;
        if !(retry && failure.retryable && reconnects == 0) {
            return Err(match failure.error {
                PublishError::Amqp(e) => e.context(&display_url).into(),
                other => other,
            });
        }
        reconnects += 1;
        // The dead channel took the frames' properties: the rest are prepared again.
        pubs = publisher.with(|p| p.prepare_all(&batch[start..]))?;
    }
    Ok(reconnects)
}

/// The confirms of one call's messages, in order, with their task ids.
struct Unconfirmed {
    handle: Handle,
    _waiting: Waiting,
    serial: u64,
    /// `publish_timeout`: the longest wait for the next confirm.
    stall: Option<Duration>,
    confirms: Vec<(String, PublisherConfirm)>,
}

impl Unconfirmed {
    fn wait(self) -> Result<(), Failure> {
        let Unconfirmed {
            handle,
            _waiting,
            serial,
            stall,
            confirms,
        } = self;
        let total = confirms.len();
        let settle = async move {
            for (i, (task_id, pending)) in confirms.into_iter().enumerate() {
                let Some(settled) = within(stall, pending).await else {
                    return Err(timed_out(total - i, stall.unwrap_or_default(), true));
                };
                match settled {
                    Ok(Confirmation::Ack(Some(returned))) => {
                        // Published as mandatory: nothing was bound to take it (basic.return).
                        let delivery = &returned.delivery;
                        return Err(Failure::new(
                            i,
                            PublishError::Refused(format!(
                                "task {task_id} was not routed: exchange {:?} has no queue bound \
                                 for routing key {:?} ({} {}); it was not queued",
                                delivery.exchange.as_str(),
                                delivery.routing_key.as_str(),
                                returned.reply_code,
                                returned.reply_text.as_str(),
                            )),
                            false,
                        )
                        .keeping_session());
                    }
                    Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => {}
                    Ok(Confirmation::Nack(_)) => {
                        return Err(Failure::new(
                            i,
                            PublishError::Refused(format!(
                                "the broker refused (nacked) task {task_id}: it was not queued"
                            )),
                            false,
                        )
                        .keeping_session()
                        .renewing_channel())
                    }
                    Err(e) => return Err(Failure::lapin(i, "waiting for the confirm", &e)),
                }
            }
            Ok(())
        };
        handle.block_on(settle).map_err(|f| f.on(serial))
    }
}

/// Awaits `fut`, or gives up (None) after `stall` without it settling. A future that is
/// already settled arms no timer (one per message of a batch would wake the runtime for
/// nothing); the limit is on a wait without progress, so a large batch that keeps moving is
/// never cut short.
async fn within<F: Future>(stall: Option<Duration>, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    if let Some(out) = poll_once(fut.as_mut()).await {
        return Some(out);
    }
    match stall {
        None => Some(fut.await),
        Some(limit) => tokio::time::timeout(limit, fut).await.ok(),
    }
}

fn timed_out(count: usize, limit: Duration, confirm: bool) -> Failure {
    let message = if confirm {
        format!(
            "the broker confirmed none of the last {count} message(s) for {limit:.0?} \
             (publish_timeout); it may be blocking publishers (a memory or disk alarm). They \
             stay on the connection and are queued when it reads again, unless the connection \
             breaks first"
        )
    } else {
        format!(
            "none of the last {count} message(s) could be written for {limit:.0?} \
             (publish_timeout; the broker may be blocking publishers); they stay on the \
             connection and go out when it reads again, unless the connection breaks first"
        )
    };
    Failure::new(0, AmqpError::Connection(message).into(), false).keeping_session()
}

impl Drop for AmqpPublisher {
    fn drop(&mut self) {
        self.close();
    }
}

/// The state of this process: a child of a fork leaks its parent's and starts afresh.
fn state_of<'a>(
    slot: &'a mut Option<State>,
    endpoint: &Endpoint,
) -> Result<&'a mut State, AmqpError> {
    let pid = std::process::id();
    if slot.as_ref().is_some_and(|s| s.pid != pid) {
        std::mem::forget(slot.take());
    }
    if slot.is_none() {
        let rt = runtime("fastq-amqp-publish")?;
        *slot = Some(State {
            pid,
            rt,
            session: None,
            serial: 0,
            waiters: Waiters::default(),
            rotation: Rotation::new(endpoint),
        });
    }
    match slot.as_mut() {
        Some(state) => Ok(state),
        None => Err(AmqpError::Connection("no AMQP runtime".into())),
    }
}

fn short(what: &str, value: String) -> Result<ShortString, CodecError> {
    let len = value.len();
    ShortString::try_new(value)
        .map_err(|_| CodecError::invalid(format!("{what} is {len} bytes long; AMQP allows 255")))
}

fn short_opt(what: &str, value: Option<String>) -> Result<Option<ShortString>, CodecError> {
    value.map(|v| short(what, v)).transpose()
}

fn basic_properties(
    p: MessageProperties,
    serializer: Serializer,
    task_id: &str,
    headers: FieldTable,
) -> Result<BasicProperties, CodecError> {
    let content_type = p
        .content_type
        .unwrap_or_else(|| serializer.content_type().into());
    let content_encoding = p
        .content_encoding
        .unwrap_or_else(|| serializer.content_encoding().into());
    let correlation_id = p.correlation_id.unwrap_or_else(|| task_id.to_owned());
    let mut props = BasicProperties::default()
        .with_content_type(short("content_type", content_type)?)
        .with_content_encoding(short("content_encoding", content_encoding)?)
        .with_headers(headers)
        .with_delivery_mode(p.delivery_mode)
        .with_priority(p.priority)
        .with_correlation_id(short("correlation_id", correlation_id)?);
    if let Some(v) = short_opt("reply_to", p.reply_to)? {
        props = props.with_reply_to(v);
    }
    if let Some(v) = short_opt("expiration", p.expiration)? {
        props = props.with_expiration(v);
    }
    if let Some(v) = short_opt("message_id", p.message_id)? {
        props = props.with_message_id(v);
    }
    if let Some(v) = short_opt("type", p.kind)? {
        props = props.with_type(v);
    }
    if let Some(v) = short_opt("user_id", p.user_id)? {
        props = props.with_user_id(v);
    }
    if let Some(v) = short_opt("app_id", p.app_id)? {
        props = props.with_app_id(v);
    }
    if let Some(v) = p.timestamp {
        props = props.with_timestamp(v);
    }
    Ok(props)
}

async fn open(
    cfg: &PublisherConfig,
    handle: Handle,
    serial: u64,
    rotation: &mut Rotation,
) -> Result<Session, AmqpError> {
    let limit = cfg.endpoint.connect_timeout;
    let (connection, index) =
        connect_any(&cfg.endpoint, rotation, &cfg.connection_name, handle).await?;
    let set_up = new_channel(&connection, cfg.confirm);
    let channel = match set_up_or_close(&connection, "publisher", limit, set_up).await {
        Ok(channel) => channel,
        Err(e) => {
            rotation.advance(); // a node that cannot serve: the next attempt tries another
            return Err(e);
        }
    };
    Ok(Session {
        serial,
        broker: super::connection::redact(&cfg.endpoint.urls[index]),
        renew_channel: false,
        connection,
        channel,
        declared: HashSet::new(),
    })
}

/// A channel for publishing, in confirm mode with confirms.
async fn new_channel(connection: &Connection, confirm: bool) -> Result<Channel, AmqpError> {
    let channel = open_channel(connection).await?;
    if confirm {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| AmqpError::Connection(format!("confirm.select failed: {e}")))?;
    }
    Ok(channel)
}

/// Declares what the batch needs and this connection has not declared yet (a round trip each,
/// so only the first publish to a queue pays for it).
async fn declare_for(
    session: &mut Session,
    queues: &HashMap<String, QueueSpec>,
    pubs: &[Publication],
) -> Result<(), Failure> {
    for p in pubs {
        if !session.declared.contains(&p.queue) {
            if let Some(spec) = queues.get(&p.queue) {
                declare_queue(&session.channel, spec)
                    .await
                    .map_err(retryable_unless_config)?;
            }
            session.declared.insert(p.queue.clone());
        }
        if let Some(exchange) = &p.extra_exchange {
            let key = format!("exchange:{exchange}");
            if !session.declared.contains(&key) {
                declare_exchange(&session.channel, exchange, "direct", true)
                    .await
                    .map_err(retryable_unless_config)?;
                session.declared.insert(key);
            }
        }
    }
    Ok(())
}

fn retryable_unless_config(e: AmqpError) -> Failure {
    let retryable = matches!(e, AmqpError::Connection(_));
    Failure::new(0, e.into(), retryable)
}

type Write<'a> = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + 'a>>;

/// A `basic.publish` whose frames are queued: still being written, or already settled.
enum Queued<'a> {
    Writing(Write<'a>),
    Settled(lapin::Result<PublisherConfirm>),
}

/// Queues every message's frames, then waits until the last is written; with confirms, returns
/// each message's pending confirm, in order. The frames take each message's exchange, routing
/// key and properties (no copy per message); its body and task id stay.
async fn publish_all(
    channel: &Channel,
    pubs: &mut [Publication],
    confirm: bool,
    stall: Option<Duration>,
) -> Result<Vec<PublisherConfirm>, Failure> {
    let taken: Vec<_> = pubs
        .iter_mut()
        .map(|p| {
            let properties = std::mem::take(&mut p.properties);
            let route = (
                std::mem::take(&mut p.exchange),
                std::mem::take(&mut p.routing_key),
            );
            (route, properties)
        })
        .collect();
    let pubs: &[Publication] = pubs;
    let mut queued = Vec::with_capacity(pubs.len());
    for (p, ((exchange, routing_key), properties)) in pubs.iter().zip(taken) {
        let mut write: Write<'_> = Box::pin(channel.basic_publish(
            exchange,
            routing_key,
            // With confirms, an unroutable message comes back (basic.return) before its ack, so
            // the call can raise instead of RabbitMQ dropping the task.
            BasicPublishOptions {
                mandatory: confirm,
                ..BasicPublishOptions::default()
            },
            &p.body,
            properties,
        ));
        // The first poll puts the frames in lapin's queue (FIFO, written by its I/O thread
        // while the rest are queued); it is Pending until they are written.
        queued.push(match poll_once(&mut write).await {
            Some(settled) => Queued::Settled(settled),
            None => Queued::Writing(write),
        });
    }
    let mut confirms = Vec::with_capacity(if confirm { pubs.len() } else { 0 });
    let total = queued.len();
    for (i, q) in queued.into_iter().enumerate() {
        let written = match q {
            Queued::Writing(write) => match within(stall, write).await {
                Some(written) => written,
                None => return Err(timed_out(total - i, stall.unwrap_or_default(), false)),
            },
            Queued::Settled(result) => result,
        };
        match written {
            Ok(pending) if confirm => confirms.push(pending),
            Ok(_) => {}
            Err(e) => {
                let done = if confirm { acked(confirms).await } else { i };
                return Err(Failure::lapin(done, "basic.publish", &e));
            }
        }
    }
    Ok(confirms)
}

/// How many of the first messages were acked before the connection broke (the rest are sent
/// again on retry). The channel is dead, so each pending confirm settles at once.
async fn acked(confirms: Vec<PublisherConfirm>) -> usize {
    let mut done = 0;
    for pending in confirms {
        let settled = tokio::time::timeout(Duration::from_secs(1), pending).await;
        if !matches!(settled, Ok(Ok(Confirmation::Ack(_)))) {
            break;
        }
        done += 1;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outgoing::sample_outgoing as outgoing;
    use crate::value::Value;
    use lapin::types::AMQPValue;

    fn publisher() -> AmqpPublisher {
        let mut p = AmqpPublisher::new(PublisherConfig {
            endpoint: Endpoint::single(
                "amqp://guest:s3cret@127.0.0.1:5679/%2f".into(),
                None,
                Duration::from_millis(500),
            ),
            confirm: false,
            connection_name: "fastq test".into(),
            timeout: None,
        });
        p.add_queue(QueueSpec {
            name: "celery".into(),
            exchange: "celery".into(),
            exchange_type: "direct".into(),
            routing_key: "celery".into(),
            durable: true,
            auto_delete: false,
            arguments: Value::Null,
        });
        p
    }

    #[test]
    fn messages_carry_celerys_properties() {
        let p = publisher().prepare(&outgoing("celery", "")).unwrap();
        let props = &p.properties;
        assert_eq!(
            props.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(props.content_encoding().as_ref().unwrap().as_str(), "utf-8");
        assert_eq!(*props.delivery_mode(), Some(2));
        assert_eq!(*props.priority(), Some(3));
        assert_eq!(props.correlation_id().as_ref().unwrap().as_str(), "abc");
        assert_eq!(props.reply_to().as_ref().unwrap().as_str(), "oid");
        assert_eq!(props.expiration().as_ref().unwrap().as_str(), "60000");
        let headers = props.headers().as_ref().unwrap();
        assert_eq!(
            headers.inner().get("task"),
            Some(&AMQPValue::LongString("proj.add".into()))
        );
        assert_eq!(headers.inner().get("retries"), Some(&AMQPValue::LongInt(0)));
        assert_eq!(p.exchange.as_str(), "");
        assert_eq!(p.routing_key.as_str(), "celery");
        assert!(p.extra_exchange.is_none());
        assert_eq!(
            p.body,
            br#"[[2,3],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]"#
        );
    }

    #[test]
    fn a_routes_other_exchange_is_declared_and_bad_input_sends_nothing() {
        let publisher = publisher();
        let p = publisher.prepare(&outgoing("celery", "media")).unwrap();
        assert_eq!(p.extra_exchange.as_deref(), Some("media"));
        let p = publisher.prepare(&outgoing("celery", "celery")).unwrap();
        assert!(p.extra_exchange.is_none());
        assert!(matches!(
            publisher.prepare(&outgoing("unknown", "")),
            Err(PublishError::Amqp(AmqpError::Config(_)))
        ));
        let mut long = outgoing("celery", "");
        long.routing_key = "k".repeat(256);
        assert!(matches!(
            publisher.prepare(&long),
            Err(PublishError::Codec(CodecError::InvalidMessage(_)))
        ));
    }

    #[test]
    fn close_waits_for_the_calls_waiting_on_confirms_and_no_longer() {
        let waiters = Waiters::default();
        assert!(waiters.wait_idle(Instant::now()));
        let waiting = waiters.enter();
        let started = Instant::now();
        assert!(!waiters.wait_idle(started + Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(50));
        let done = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(waiting);
        });
        // Woken by the drop, well before the deadline.
        assert!(waiters.wait_idle(Instant::now() + Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(5));
        done.join().unwrap();
    }

    #[test]
    fn an_unreachable_broker_is_a_redacted_connection_error_and_starts_nothing() {
        let mut publisher = publisher();
        assert!(!publisher.connected());
        assert!(
            publisher.state.is_none(),
            "no runtime before the first publish"
        );
        let err = publisher
            .publish(vec![outgoing("celery", "")], true)
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PublishError::Amqp(AmqpError::Connection(_))));
        assert!(
            text.contains("127.0.0.1:5679") && !text.contains("s3cret"),
            "{text}"
        );
    }
}
