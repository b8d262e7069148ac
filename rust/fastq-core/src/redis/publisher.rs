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

use super::connection::{BrokerError, BrokerResult, Connector, CLIENT_CONNECT_TIMEOUT};
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
        // With Sentinel the master's address changes: published to through the connector,
        // which finds it.
        let plain = if connector.is_sentinel() {
            None
        } else {
            plain_tcp(connector.connection_info())
        };
        Ok(RedisPublisher {
            raw_url: url.to_owned(),
            url: connector.url().to_owned(),
            keys: KeyLayout::new(global_keyprefix),
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
        for attempt in 1..=2 {
            let (pipe, bindings) = self.pipeline(batch, &payloads);
            let (reused, result) = self.exec(&pipe)?;
            match result {
                Ok(()) => {
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

    /// Runs `pipe` (commands other than task publishes: the worker's result stores) on this
    /// process's connection, with a publish's retry: a reused connection found dead is
    /// reopened and `pipe` sent once more.
    pub fn run(&mut self, pipe: &::redis::Pipeline) -> BrokerResult<()> {
        let (reused, result) = self.exec(pipe)?;
        match result {
            Err(BrokerError::Connection { .. }) if reused => {
                self.bound.clear(); // a Redis that came back empty has lost its bindings too
                self.exec(pipe)?.1
            }
            other => other,
        }
    }

    /// Runs `pipe` on this process's connection (opened first if needed); tells whether that
    /// connection was already open. The outer error is a connector that cannot be made.
    fn exec(&mut self, pipe: &::redis::Pipeline) -> BrokerResult<(bool, BrokerResult<()>)> {
        self.connector()?;
        let connector = self.connector.as_mut().expect("made above");
        let Some((host, port)) = &self.plain else {
            let reused = connector.connected();
            return Ok((reused, connector.run(|c| pipe.exec(c))));
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
        let result = socket.exec(pipe).map_err(|e| connector.error(&e));
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
            // Every reply of a spin socket is read before its call returns.
            self.socket = None;
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
