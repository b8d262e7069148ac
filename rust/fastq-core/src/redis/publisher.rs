//! The client's Redis publisher: task messages `LPUSH`ed as kombu envelopes onto the list of
//! their queue and priority step, the queue's binding recorded as kombu records it when it
//! declares a queue (once per process), a whole batch in one pipelined round trip.
//!
//! A call returns once Redis has answered every command of it: a publish that returns is in
//! the list, and one Redis refused (out of memory, a key of the wrong type) is an error. A
//! connection that turns out to be dead when a call reuses it (Redis restarted, an idle
//! connection dropped by a proxy) is reopened and the call sent once more, as redis-py's retry
//! does; a second failure is the caller's.
//!
//! To a plain-TCP Redis the publisher talks through its own socket ([`SpinSocket`]: a reply is
//! polled for a few µs before the reader sleeps, which halves a `.delay()` on a VM); TLS and unix
//! sockets go through the `redis` crate's connection.
//!
//! One connection per process: a forked child (a prefork worker's child sending canvas
//! follow-ups or retries) sees the parent's pid on it and opens its own. The parent's is
//! forgotten, never closed or read: its socket (and TLS session) is the parent's.

use std::collections::HashSet;

use thiserror::Error;

use super::connection::{
    BrokerError, BrokerResult, Connector, CLIENT_CONNECT_TIMEOUT, COMMAND_TIMEOUT,
};
use super::keys::{binding_member, KeyLayout};
use super::spin_socket::{plain_tcp, SpinSocket};
use crate::error::CodecError;
use crate::outgoing::Outgoing;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum PublishError {
    /// A message that cannot be encoded; nothing of the batch was sent.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Redis answered a command of the batch with an error; retrying will not help.
    #[error("{url} refused the publish: {reason}")]
    Refused { url: String, reason: String },
    /// Redis could not be reached (the URL redacted), or the URL is unusable.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// `(exchange, routing_key, queue)` of a binding recorded by this process.
type Bound = (String, String, String);

pub struct RedisPublisher {
    /// As given (with its password), to reopen after a fork; never shown.
    raw_url: String,
    /// With the password hidden.
    url: String,
    keys: KeyLayout,
    /// Always there, except while a publisher of a forked child is dropped. Opens the
    /// connection for TLS and unix sockets, and maps every error for all of them.
    connector: Option<Connector>,
    /// A plain-TCP Redis's `(host, port)`: published to through `socket` instead.
    plain: Option<(String, u16)>,
    /// The open connection to a plain-TCP Redis.
    socket: Option<SpinSocket>,
    /// The process the connector belongs to.
    pid: u32,
    bound: HashSet<Bound>,
}

impl RedisPublisher {
    /// Parses `url`; connects on the first publish.
    pub fn new(url: &str, global_keyprefix: &str) -> BrokerResult<Self> {
        let pid = std::process::id();
        let connector = client_connector(url, pid)?;
        let keys = super::consumer::layout(&connector, global_keyprefix)?;
        // With Sentinel the master's address changes, and a cluster has many: published to
        // through the connector, which finds them.
        let plain = if connector.is_sentinel() || connector.is_cluster() {
            None
        } else {
            plain_tcp(connector.connection_info())
        };
        Ok(RedisPublisher {
            raw_url: url.to_owned(),
            url: connector.url().to_owned(),
            keys,
            plain,
            connector: Some(connector),
            socket: None,
            pid,
            bound: HashSet::new(),
        })
    }

    /// The URL with its password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Publishes `batch` in order, in one round trip; every message is encoded before anything
    /// is sent.
    pub fn publish(&mut self, batch: &[Outgoing]) -> Result<(), PublishError> {
        let payloads = batch
            .iter()
            .map(Outgoing::redis_envelope)
            .collect::<Result<Vec<_>, _>>()?;
        if self.keys.is_cluster() {
            return self.publish_cluster(batch, payloads);
        }
        for attempt in 1..=2 {
            let (pipe, bindings) = self.pipeline(batch, &payloads);
            let (reused, result) = self.exec(&pipe, false)?;
            match result {
                Ok(_) => {
                    self.bound.extend(bindings);
                    return Ok(());
                }
                Err(BrokerError::Command { url, reason }) => {
                    return Err(PublishError::Refused { url, reason })
                }
                Err(e @ BrokerError::Connection { .. }) => {
                    // A Redis that came back empty has lost its bindings too.
                    self.bound.clear();
                    if !(reused && attempt == 1) {
                        return Err(e.into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        unreachable!("the second attempt returns")
    }

    /// On a cluster: one `LPUSH` per list (all of a batch's messages for it, in order) on the
    /// master owning its queue's slot, one list after the other. No binding is recorded: on a
    /// cluster a message is restored to the queue it was taken from, never routed again.
    fn publish_cluster(
        &mut self,
        batch: &[Outgoing],
        payloads: Vec<Vec<u8>>,
    ) -> Result<(), PublishError> {
        let mut lists: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        for (m, payload) in batch.iter().zip(payloads) {
            if let Some(problem) = super::keys::cluster_name_problem("queue name", &m.queue) {
                return Err(BrokerError::Config(problem).into());
            }
            let key = self
                .keys
                .queue_for_priority(&m.queue, i64::from(m.properties.priority));
            match lists.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => list.push(payload),
                None => lists.push((key, vec![payload])),
            }
        }
        let connector = self.connector()?;
        for (key, list) in &lists {
            for attempt in 1..=2 {
                let reused = connector.connected();
                let result = connector.run_at(Some(key), COMMAND_TIMEOUT, |c| {
                    ::redis::cmd("LPUSH").arg(key).arg(list).exec(c)
                });
                match result {
                    Ok(()) => break,
                    Err(BrokerError::Command { url, reason }) => {
                        return Err(PublishError::Refused { url, reason })
                    }
                    Err(BrokerError::Connection { .. }) if reused && attempt == 1 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Runs `pipe` (commands other than task publishes: the worker's result stores) on this
    /// process's connection, with a publish's retry: a reused connection found dead is
    /// reopened and `pipe` sent once more. Not on a cluster (a pipeline spans slots).
    pub fn run(&mut self, pipe: &::redis::Pipeline) -> BrokerResult<()> {
        self.query(pipe).map(drop)
    }

    /// `run`, returning the replies in order.
    pub fn query(&mut self, pipe: &::redis::Pipeline) -> BrokerResult<Vec<::redis::Value>> {
        self.query_with(pipe, false)
    }

    /// `query`, except that a command Redis refused has its error reply in its place
    /// (`Value::ServerError`, see [`refusal`](Self::refusal)) instead of failing the batch: for
    /// batches of commands that stand alone. An unreachable Redis still fails it.
    pub fn query_each(&mut self, pipe: &::redis::Pipeline) -> BrokerResult<Vec<::redis::Value>> {
        self.query_with(pipe, true)
    }

    /// What a refused command's error reply means for the caller, as `query` would report it.
    pub fn refusal(&self, error: &::redis::RedisError) -> BrokerError {
        match &self.connector {
            Some(connector) => connector.error(error),
            None => BrokerError::Command {
                url: self.url.clone(),
                reason: error.to_string(),
            },
        }
    }

    fn query_with(
        &mut self,
        pipe: &::redis::Pipeline,
        each: bool,
    ) -> BrokerResult<Vec<::redis::Value>> {
        self.refuse_cluster()?;
        let (reused, result) = self.exec(pipe, each)?;
        match result {
            Err(BrokerError::Connection { .. }) if reused => {
                self.bound.clear(); // a Redis that came back empty has lost its bindings too
                self.exec(pipe, each)?.1
            }
            other => other,
        }
    }

    /// Writes `pipe` on this process's connection without waiting for its replies (read before
    /// the next call's); no retry. Not on a cluster.
    pub fn send_unread(&mut self, pipe: &::redis::Pipeline) -> BrokerResult<()> {
        self.refuse_cluster()?;
        self.connector()?;
        let connector = self.connector.as_mut().expect("made above");
        let Some(mut socket) = self.socket.take() else {
            // No spin socket (TLS, unix, or none open yet): the connector's own.
            return connector.send_unread(&pipe.get_packed_pipeline(), pipe.len());
        };
        let result = socket.send_unread(pipe).map_err(|e| connector.error(&e));
        if result.is_ok() {
            self.socket = Some(socket);
        }
        result
    }

    fn refuse_cluster(&self) -> BrokerResult<()> {
        if self.keys.is_cluster() {
            return Err(BrokerError::Config(
                "the Rust result store speaks to a single Redis, not a Redis Cluster (fastq \
                 stores results on a cluster from Python)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Runs `pipe` on this process's connection (opened first if needed); tells whether that
    /// connection was already open. The outer error is a connector that cannot be made.
    #[allow(clippy::type_complexity)]
    /// `each`: error replies are returned in their places (`query_each`).
    fn exec(
        &mut self,
        pipe: &::redis::Pipeline,
        each: bool,
    ) -> BrokerResult<(bool, BrokerResult<Vec<::redis::Value>>)> {
        self.connector()?;
        let connector = self.connector.as_mut().expect("made above");
        let Some((host, port)) = &self.plain else {
            let reused = connector.connected();
            if each {
                let mut each_pipe = pipe.clone();
                each_pipe.ignore_errors();
                return Ok((reused, connector.run(|c| each_pipe.query(c))));
            }
            return Ok((reused, connector.run(|c| pipe.query(c))));
        };
        let reused = self.socket.is_some();
        let mut socket = match self.socket.take() {
            Some(socket) => socket,
            None => {
                let settings = connector.connection_info().redis_settings();
                let opened = SpinSocket::open(
                    (host, *port),
                    settings,
                    connector.client_name(),
                    connector.connect_timeout(),
                );
                match opened {
                    Ok(socket) => socket,
                    Err(e) => return Ok((false, Err(connector.connect_error(&e)))),
                }
            }
        };
        // Any error drops the socket: after a timeout or a half-read reply it may be out of
        // step with the server, and reconnecting is cheap.
        let result = if each {
            socket.replies(pipe)
        } else {
            socket.query(pipe)
        };
        let result = result.map_err(|e| connector.error(&e));
        if result.is_ok() {
            self.socket = Some(socket);
        }
        Ok((reused, result))
    }

    /// The batch's commands: each message's `LPUSH`, preceded by an `SADD` of its queue's
    /// binding the first time this process sends to it.
    fn pipeline(
        &self,
        batch: &[Outgoing],
        payloads: &[Vec<u8>],
    ) -> (::redis::Pipeline, Vec<Bound>) {
        let mut pipe = ::redis::pipe();
        let mut bindings: Vec<Bound> = Vec::new();
        for (m, payload) in batch.iter().zip(payloads) {
            let exchange = if m.exchange.is_empty() {
                &m.queue
            } else {
                &m.exchange
            };
            let binding = (exchange.clone(), m.routing_key.clone(), m.queue.clone());
            if !self.bound.contains(&binding) && !bindings.contains(&binding) {
                pipe.cmd("SADD")
                    .arg(self.keys.binding(exchange))
                    .arg(binding_member(&m.routing_key, "", &m.queue));
                bindings.push(binding);
            }
            let key = self
                .keys
                .queue_for_priority(&m.queue, i64::from(m.properties.priority));
            pipe.cmd("LPUSH").arg(key).arg(payload);
        }
        (pipe, bindings)
    }

    /// This process's connector: in a forked child, the parent's is left alone (forgotten) and
    /// a new one made.
    fn connector(&mut self) -> BrokerResult<&mut Connector> {
        let pid = std::process::id();
        if pid != self.pid || self.connector.is_none() {
            std::mem::forget(self.connector.take());
            std::mem::forget(self.socket.take());
            self.connector = Some(client_connector(&self.raw_url, pid)?);
            self.pid = pid;
        }
        Ok(self.connector.as_mut().expect("set above"))
    }

    /// Closes the connection (this process's only; a parent's is left alone).
    pub fn close(&mut self) {
        if self.pid == std::process::id() {
            if let Some(connector) = &mut self.connector {
                connector.close();
            }
            if let Some(socket) = self.socket.take() {
                socket.close();
            }
        }
    }
}

impl Drop for RedisPublisher {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            // Not this process's to close: its socket (and TLS session) is the parent's.
            std::mem::forget(self.connector.take());
            std::mem::forget(self.socket.take());
        }
    }
}

fn client_name(pid: u32) -> String {
    format!("fastq publisher pid {pid}")
}

/// A publisher's connection: named for its process, and given the client's longer connect
/// timeout.
fn client_connector(url: &str, pid: u32) -> BrokerResult<Connector> {
    Ok(Connector::new(url, &client_name(pid))?.with_connect_timeout(CLIENT_CONNECT_TIMEOUT))
}
