//! One lazily opened Redis connection, dropped after any failure and reopened by the next call,
//! and the mapping of every client error to a [`BrokerError`] that never carries the password.
//!
//! The caller (the worker's Python loop) owns retries and backoff: a failed call raises, the
//! next call reconnects. Nothing here sleeps or loops.

use std::sync::Arc;
use std::time::Duration;

use ::redis::{
    Client, ClientTlsConfig, Connection, ErrorKind, RedisError, RedisResult, ServerErrorKind,
    TlsCertificates,
};
use thiserror::Error;

use super::cluster::{self, Cluster, ClusterConfig};
use super::sentinel::{self, Resolver, SentinelConfig};
use super::url::{client_url, redact_url, scrub, TlsOptions};

/// Opening a connection (TCP, TLS handshake, AUTH, SELECT) takes milliseconds on any sane
/// network. Kept short so a broker that cannot answer — above all a `rediss://` URL to a port
/// without TLS, where the handshake just waits — is reported within seconds and a warm stop is
/// never held up for long; the worker retries every second, so a slow network costs retries,
/// not a stuck worker.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A client publishing tasks waits longer to connect: it has no loop that retries for it, so
/// a slow network (a distant TLS endpoint) must not fail its `.delay()`.
pub const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any reply may take, apart from a blocking pop's own wait: a claim over a batch takes
/// milliseconds, so a longer silence means the server or the network is gone.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Error)]
pub enum BrokerError {
    /// Redis cannot be reached, went away, timed out, refused the credentials, or is not ready
    /// (loading its data, a read-only replica after failover). Retrying later may work.
    #[error("cannot reach the Redis broker at {url}: {reason}")]
    Connection { url: String, reason: String },
    /// A call was interrupted by a signal (EINTR: a handler ran, or the process was stopped and
    /// resumed by a debugger or a profiler). The broker is fine, but whether the command ran is
    /// unknown: as after a dropped connection, the connection is reopened by the next call and
    /// the caller treats the command as possibly done.
    #[error(
        "a call to the Redis broker at {url} was interrupted by a signal before its reply came \
         (the broker is fine; the command may have run): {reason}"
    )]
    Interrupted { url: String, reason: String },
    /// Redis answered with an error (a key of the wrong type, out of memory, a script error).
    #[error("the Redis broker at {url} refused a command: {reason}")]
    Command { url: String, reason: String },
    /// The URL or an argument cannot work; retrying will not help.
    #[error("{0}")]
    Config(String),
}

impl BrokerError {
    /// Whether the connection was lost for the call (unreachable or interrupted): what it wrote
    /// may or may not have taken effect, and the next call reconnects.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            BrokerError::Connection { .. } | BrokerError::Interrupted { .. }
        )
    }
}

pub type BrokerResult<T> = std::result::Result<T, BrokerError>;

/// How often [`Connector::run_idempotent`] sends a command again that a signal interrupted.
const INTERRUPTED_RETRIES: usize = 3;

/// A failed call before its error is mapped: the server's own error is kept, so a cluster client
/// can follow a `MOVED` or `ASK`.
pub(super) enum Raw {
    Broker(BrokerError),
    Redis(RedisError),
}

pub struct Connector {
    /// The server's client; with Sentinel, the master's found by the last connect.
    client: Client,
    /// With a `sentinel://` URL: who to ask for the master, and when it was last asked.
    sentinel: Option<Resolver>,
    /// With a `redis+cluster://` URL: a connector per node and the slot map (`client` is then
    /// the first seed's, never used to connect).
    cluster: Option<Box<Cluster>>,
    /// The URL with its password hidden: the only form that goes into messages.
    url: String,
    password: Option<String>,
    /// `CLIENT SETNAME` on every connection, so `CLIENT LIST` shows which consumer it is.
    client_name: String,
    conn: Option<Connection>,
    /// The socket read timeout currently set, to skip a system call on every command.
    read_timeout: Option<Duration>,
    /// Replies owed to commands sent without waiting (`send_unread`); read before the next call.
    unread: usize,
    /// A connection was opened at least once: until then the server holds nothing of ours.
    ever_connected: bool,
    /// How long opening a connection may take (`CONNECT_TIMEOUT` unless set otherwise).
    connect_timeout: Duration,
}

impl Connector {
    /// Parses `url` (`redis://`, `rediss://`, `unix://`; db number in the path); does not connect.
    /// `client_name` is shown by `CLIENT LIST` (spaces become `_`, which Redis requires).
    pub fn new(url: &str, client_name: &str) -> BrokerResult<Self> {
        if sentinel::is_sentinel(url) {
            return Self::with_sentinel(url, client_name);
        }
        if cluster::is_cluster(url) {
            return Self::with_cluster(url, client_name);
        }
        let redacted = redact_url(url);
        let (target, tls) = client_url(url);
        let client = match tls_certificates(&tls)? {
            Some(certs) => Client::build_with_tls(target.as_str(), certs),
            None => Client::open(target.as_str()),
        }
        .map_err(|e| {
            BrokerError::Config(format!(
                "the Redis URL {redacted} is not usable: {}",
                scrub(&e.to_string(), password_in(url).as_deref())
            ))
        })?;
        let password = client
            .get_connection_info()
            .redis_settings()
            .password()
            .map(str::to_owned);
        Ok(Self::assemble(
            client,
            None,
            redacted,
            password,
            client_name,
        ))
    }

    fn assemble(
        client: Client,
        sentinel: Option<Resolver>,
        url: String,
        password: Option<String>,
        client_name: &str,
    ) -> Self {
        Connector {
            client,
            sentinel,
            cluster: None,
            url,
            password,
            client_name: client_name.replace(|c: char| c.is_whitespace(), "_"),
            conn: None,
            read_timeout: None,
            unread: 0,
            ever_connected: false,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }

    /// A connector to the master the sentinels of `url` name (see `sentinel`).
    fn with_sentinel(url: &str, client_name: &str) -> BrokerResult<Self> {
        let config = SentinelConfig::parse(url)?;
        let redacted = sentinel::redact(url);
        // Replaced by the master's on every connect; never used to connect itself.
        let placeholder = config
            .master_info("localhost", 6379)
            .and_then(Client::open)
            .map_err(|e| BrokerError::Config(format!("the Sentinel URL {redacted}: {e}")))?;
        let password = config.password.clone();
        let resolver = Some(Resolver::new(config));
        Ok(Self::assemble(
            placeholder,
            resolver,
            redacted,
            password,
            client_name,
        ))
    }

    /// A connector to a Redis Cluster: commands go through [`run_at`](Self::run_at), routed by
    /// their key's slot.
    fn with_cluster(url: &str, client_name: &str) -> BrokerResult<Self> {
        let config = ClusterConfig::parse(url)?;
        let redacted = cluster::redact(url);
        let placeholder = Connector::new(&config.node_url(&config.seeds[0]), client_name)?;
        let mut connector = Self::assemble(
            placeholder.client,
            None,
            redacted.clone(),
            placeholder.password,
            client_name,
        );
        connector.cluster = Some(Box::new(Cluster::new(
            config,
            redacted,
            &connector.client_name,
            CONNECT_TIMEOUT,
        )));
        Ok(connector)
    }

    /// Whether the URL is a Redis Cluster URL (commands must be routed by key).
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Runs `op` where `route` (a key) lives: on a cluster, on the master owning its slot,
    /// following `MOVED`/`ASK` (so `op` may run more than once, each time on a server that did
    /// not run it); otherwise on the one server, `route` unused.
    pub fn run_at<T>(
        &mut self,
        route: Option<&str>,
        timeout: Duration,
        mut op: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> BrokerResult<T> {
        match (self.cluster.as_mut(), route) {
            (Some(cluster), Some(key)) => cluster.run(key, timeout, &mut op),
            (Some(_), None) => Err(unrouted()),
            (None, _) => self.run_with_timeout(timeout, op),
        }
    }

    /// The masters of a cluster (`host:port`); the one server otherwise (an empty name).
    pub fn masters(&mut self) -> BrokerResult<Vec<String>> {
        match self.cluster.as_mut() {
            Some(cluster) => cluster.masters(),
            None => Ok(vec![String::new()]),
        }
    }

    /// Runs `op` on one master named by [`masters`](Self::masters) (a command without a key).
    pub fn run_on<T>(
        &mut self,
        master: &str,
        op: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> BrokerResult<T> {
        match self.cluster.as_mut() {
            Some(cluster) => cluster.run_on(master, op),
            None => self.run(op),
        }
    }

    /// Whether the URL is a Sentinel URL (the server's address changes with failovers).
    pub fn is_sentinel(&self) -> bool {
        self.sentinel.is_some()
    }

    /// With Sentinel, a connection that is open to a master the sentinels no longer name is
    /// dropped, and the caller told (a connection error): whatever it wrote there since the
    /// failover is lost when Sentinel turns that node into a replica, and whatever a broken
    /// connection asks of the caller (acks sent again, a claim's lost reply reconciled) is due.
    fn follow_failover(&mut self) -> BrokerResult<()> {
        let Some(resolver) = self.sentinel.as_mut() else {
            return Ok(());
        };
        if self.conn.is_none() {
            return Ok(());
        }
        let Some((host, port)) = resolver.moved() else {
            return Ok(());
        };
        let old = resolver
            .current
            .as_ref()
            .map(|(h, p)| format!("{h}:{p}"))
            .unwrap_or_default();
        self.close();
        Err(BrokerError::Connection {
            url: self.url.clone(),
            reason: format!(
                "the sentinels now name {host}:{port} as the master instead of {old} (a \
                 failover): reconnecting"
            ),
        })
    }

    /// How long opening a connection may take, instead of `CONNECT_TIMEOUT`.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.connect_timeout = timeout;
        }
        self
    }

    /// The URL with its password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether a connection was ever opened (so a command may have reached the server).
    pub fn ever_connected(&self) -> bool {
        match &self.cluster {
            Some(cluster) => cluster.ever_connected(),
            None => self.ever_connected,
        }
    }

    /// Whether a connection is open now (opened by an earlier call and not dropped since).
    pub fn connected(&self) -> bool {
        match &self.cluster {
            Some(cluster) => cluster.connected(),
            None => self.conn.is_some(),
        }
    }

    /// Runs `op` with the usual reply timeout.
    pub fn run<T>(
        &mut self,
        op: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> BrokerResult<T> {
        self.run_with_timeout(COMMAND_TIMEOUT, op)
    }

    /// [`run`](Self::run) for an `op` whose second run changes nothing (an ack): one interrupted
    /// by a signal is run again, on a new connection, instead of failing.
    pub fn run_idempotent<T>(
        &mut self,
        mut op: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> BrokerResult<T> {
        let mut retries = 0;
        loop {
            match self.run(&mut op) {
                Err(BrokerError::Interrupted { .. }) if retries < INTERRUPTED_RETRIES => {
                    retries += 1;
                }
                other => return other,
            }
        }
    }

    /// Runs `op` on the connection, opening it first if needed, with the socket read timeout set
    /// to `read_timeout` (a blocking pop waits longer than other commands). Any error drops the
    /// connection: after a timeout or a half-read reply it may be out of step with the server,
    /// and reconnecting is cheap.
    pub fn run_with_timeout<T>(
        &mut self,
        read_timeout: Duration,
        op: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> BrokerResult<T> {
        if self.cluster.is_some() {
            return Err(unrouted());
        }
        match self.run_raw(read_timeout, false, op) {
            Ok(value) => Ok(value),
            Err(Raw::Broker(e)) => Err(e),
            Err(Raw::Redis(e)) => Err(self.error(&e)),
        }
    }

    /// [`run_with_timeout`](Self::run_with_timeout) with the server's error kept as it is;
    /// `asking` sends `ASKING` first (a cluster's `ASK` redirection).
    pub(super) fn run_raw<T>(
        &mut self,
        read_timeout: Duration,
        asking: bool,
        op: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, Raw> {
        self.follow_failover().map_err(Raw::Broker)?;
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.connect().map_err(Raw::Broker)?,
        };
        let result = self
            .set_read_timeout(&conn, read_timeout)
            .and_then(|()| drain(&mut conn, std::mem::take(&mut self.unread)))
            .and_then(|()| {
                if asking {
                    ::redis::cmd("ASKING").exec(&mut conn)?;
                }
                op(&mut conn)
            });
        match result {
            Ok(value) => {
                self.conn = Some(conn);
                Ok(value)
            }
            Err(e) => {
                self.read_timeout = None;
                self.unread = 0;
                Err(Raw::Redis(e))
            }
        }
    }

    /// Writes an already packed command without reading its `replies`: they are read before
    /// the next command. The bytes are in the server's socket before this returns, so the command
    /// takes effect even if this process dies before reading the reply.
    pub fn send_unread(&mut self, packed: &[u8], replies: usize) -> BrokerResult<()> {
        if self.cluster.is_some() {
            return Err(unrouted());
        }
        self.follow_failover()?;
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.connect()?,
        };
        match conn.send_packed_command(packed) {
            Ok(()) => {
                self.unread += replies;
                self.conn = Some(conn);
                Ok(())
            }
            Err(e) => {
                self.read_timeout = None;
                self.unread = 0;
                Err(self.error(&e))
            }
        }
    }

    /// Reads the replies still owed, then drops the connection. Unread replies would make the
    /// kernel reset the socket, which can discard commands the server has not read yet.
    pub fn close(&mut self) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.close();
        }
        if let Some(mut conn) = self.conn.take() {
            let _ = conn
                .set_read_timeout(Some(Duration::from_secs(2)))
                .and_then(|()| drain(&mut conn, self.unread));
        }
        self.unread = 0;
        self.read_timeout = None;
    }

    fn connect(&mut self) -> BrokerResult<Connection> {
        self.read_timeout = None;
        let mut conn = if self.sentinel.is_some() {
            self.connect_to_master()?
        } else {
            self.client
                .get_connection_with_timeout(self.connect_timeout)
                .map_err(|e| self.connect_error(&e))?
        };
        conn.set_write_timeout(Some(COMMAND_TIMEOUT))
            .and_then(|()| {
                ::redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(&self.client_name)
                    .exec(&mut conn)
            })
            .map_err(|e| self.connection_error(&e))?;
        self.ever_connected = true;
        Ok(conn)
    }

    /// Asks the sentinels for the master, connects to it and checks with `ROLE` that it is one.
    fn connect_to_master(&mut self) -> BrokerResult<Connection> {
        let resolver = self.sentinel.as_mut().expect("only called with Sentinel");
        let name = resolver.config.master_name.clone();
        let (host, port) = resolver
            .master()
            .map_err(|failures| BrokerError::Connection {
                url: self.url.clone(),
                reason: format!(
                    "no sentinel gave the address of the master {name:?}: {}",
                    failures.join("; ")
                ),
            })?;
        let client = resolver
            .config
            .master_info(&host, port)
            .and_then(Client::open)
            .map_err(|e| BrokerError::Config(format!("the master {host}:{port}: {e}")))?;
        self.client = client;
        let mut conn = self
            .client
            .get_connection_with_timeout(self.connect_timeout)
            .map_err(|e| BrokerError::Connection {
                url: self.url.clone(),
                reason: format!(
                    "the master {name:?} at {host}:{port} (as the sentinels say): {}",
                    self.connect_reason(&e)
                ),
            })?;
        conn.set_read_timeout(Some(self.connect_timeout))
            .map_err(|e| self.connection_error(&e))?;
        let role: ::redis::Value = ::redis::cmd("ROLE")
            .query(&mut conn)
            .map_err(|e| self.connection_error(&e))?;
        let role = match role {
            ::redis::Value::Array(items) => items
                .into_iter()
                .next()
                .and_then(|v| ::redis::from_redis_value::<String>(v).ok())
                .unwrap_or_default(),
            _ => String::new(),
        };
        if role != "master" {
            return Err(BrokerError::Connection {
                url: self.url.clone(),
                reason: format!(
                    "{host}:{port}, which the sentinels name as the master {name:?}, is a \
                     {role} (a failover is under way)"
                ),
            });
        }
        if let Some(resolver) = self.sentinel.as_mut() {
            resolver.connected((host, port));
        }
        Ok(conn)
    }

    /// What a failure to open a connection means for the caller.
    pub fn connect_error(&self, e: &RedisError) -> BrokerError {
        if is_interrupted(e) {
            // A signal while connecting (the handshake's read, the connect's wait): the broker
            // may be fine, and an idempotent call tries again (a prefork supervisor takes a
            // SIGCHLD at every child's end).
            return self.connection_error(e);
        }
        match e.kind() {
            // e.g. `rediss://` without TLS support compiled in.
            ErrorKind::InvalidClientConfig => BrokerError::Config(format!(
                "cannot connect to the Redis broker at {}: {}",
                self.url,
                self.reason(e)
            )),
            // Everything else while connecting (refused, timed out, AUTH, SELECT) is about
            // reaching the broker, and may work on a later try.
            _ => BrokerError::Connection {
                url: self.url.clone(),
                reason: self.connect_reason(e),
            },
        }
    }

    /// Where the URL points, and the credentials and db to set a connection up with.
    pub fn connection_info(&self) -> &::redis::ConnectionInfo {
        self.client.get_connection_info()
    }

    /// The name `CLIENT SETNAME` gives each connection.
    pub fn client_name(&self) -> &str {
        &self.client_name
    }

    /// How long opening a connection may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    fn set_read_timeout(&mut self, conn: &Connection, timeout: Duration) -> RedisResult<()> {
        if self.read_timeout != Some(timeout) {
            conn.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
        }
        Ok(())
    }

    /// Why a connection could not be opened, in words a user can act on, then the client's own.
    fn connect_reason(&self, e: &RedisError) -> String {
        let tls = self.url.starts_with("rediss://");
        let detail = self.reason(e);
        let hint = if is_auth_error(e) {
            "Redis refused the credentials (authentication failed): check the user name and \
             password in the broker URL"
                .to_owned()
        } else if e.is_connection_refusal() {
            "connection refused: nothing accepts connections at that host and port (is Redis \
             running there?)"
                .to_owned()
        } else if e.is_timeout() {
            let secs = self.connect_timeout.as_secs_f64();
            if tls {
                format!(
                    "no TLS handshake within {secs}s: the server does not seem to speak TLS \
                     (a rediss:// URL to a port without TLS waits like this; use redis:// for \
                     it)"
                )
            } else {
                format!(
                    "no answer within {secs}s (host down, packets dropped by a firewall, or a \
                     TLS-only port reached with redis://)"
                )
            }
        } else if tls && crate::tls::is_handshake_failure(&detail) {
            "the TLS handshake failed (is this port serving TLS, with a certificate this \
             client trusts?)"
                .to_owned()
        } else if !tls && (e.is_connection_dropped() || detail.contains("end of file")) {
            "the server closed the connection at once (a TLS-only port reached with redis://? \
             use rediss://)"
                .to_owned()
        } else {
            return detail;
        };
        format!("{hint} [{detail}]")
    }

    fn reason(&self, e: &RedisError) -> String {
        scrub(&e.to_string(), self.password.as_deref())
    }

    fn connection_error(&self, e: &RedisError) -> BrokerError {
        let (url, reason) = (self.url.clone(), self.reason(e));
        if is_interrupted(e) {
            BrokerError::Interrupted { url, reason }
        } else {
            BrokerError::Connection { url, reason }
        }
    }

    /// What a failed command means for the caller: the broker unreachable (retry later) or the
    /// command refused.
    pub fn error(&self, e: &RedisError) -> BrokerError {
        if is_transient(e) {
            self.connection_error(e)
        } else {
            BrokerError::Command {
                url: self.url.clone(),
                reason: self.reason(e),
            }
        }
    }
}

/// A command sent to a cluster without a key to route it by: a fastq bug, never the user's.
fn unrouted() -> BrokerError {
    BrokerError::Config(
        "a command without a key was sent to a Redis Cluster, where it cannot be routed (a fastq \
         bug: please report it)"
            .into(),
    )
}

fn is_auth_error(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}

/// Reads `replies` replies owed to commands sent by `send_unread`.
fn drain(conn: &mut Connection, replies: usize) -> RedisResult<()> {
    for _ in 0..replies {
        conn.recv_response()?;
    }
    Ok(())
}

/// Whether `e` is a read or write interrupted by a signal (EINTR). Linux never restarts a socket
/// read with a timeout (`SO_RCVTIMEO`, set on every connection here) after a signal handler ran,
/// and fails it after the process was stopped (SIGSTOP, ptrace) even without one.
fn is_interrupted(e: &RedisError) -> bool {
    let Some(source) = std::error::Error::source(e) else {
        return false;
    };
    // The client keeps its io error behind an `Arc`, which `source` hands out as it is (the
    // unit test below checks that this still finds it).
    source
        .downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>()
        .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
}

/// A refusal of a key that holds another type than the command reads (`WRONGTYPE`; inside a
/// script's error text on servers before 7): that key's alone, for as long as it holds it.
pub(super) fn is_wrong_type(reason: &str) -> bool {
    reason.contains("WRONGTYPE")
}

/// Errors that mean "the broker is not there (or not ready) right now", as opposed to a command
/// Redis understood and refused.
fn is_transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::AuthenticationFailed
                | ErrorKind::Parse
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::ClusterDown
                )
        )
        // A demoted master unblocks its blocked clients, and one that lost its replicas
        // refuses writes (min-replicas-to-write): both pass with the failover.
        || matches!(
            e.code(),
            Some("NOAUTH" | "WRONGPASS" | "UNBLOCKED" | "NOREPLICAS")
        )
}

/// Reads the PEM files the URL names; `None` when it names none (the system's CAs are trusted).
fn tls_certificates(tls: &TlsOptions) -> BrokerResult<Option<TlsCertificates>> {
    let read = |option: &str, path: &str| {
        std::fs::read(path).map_err(|e| {
            BrokerError::Config(format!("cannot read the {option} file {path:?}: {e}"))
        })
    };
    let client_tls = match (&tls.certfile, &tls.keyfile) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("ssl_certfile", cert)?,
            client_key: read("ssl_keyfile", key)?,
        }),
        (None, None) => None,
        _ => {
            return Err(BrokerError::Config(
                "ssl_certfile and ssl_keyfile must be given together (a client certificate and its key)"
                    .into(),
            ))
        }
    };
    let root_cert = match &tls.ca_certs {
        Some(path) => Some(read("ssl_ca_certs", path)?),
        None => None,
    };
    Ok(
        (client_tls.is_some() || root_cert.is_some()).then_some(TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}

/// The password as written in a URL that did not even parse, so it can still be scrubbed.
fn password_in(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let userinfo = &rest[..rest.rfind('@')?];
    userinfo.split_once(':').map(|(_, p)| p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::signal_test::interrupt_me_after;

    #[test]
    fn an_interrupted_call_is_not_an_unreachable_broker() {
        let connector = Connector::new("redis://:secret@127.0.0.1:1/0", "test").unwrap();
        let interrupted = RedisError::from(std::io::Error::from(std::io::ErrorKind::Interrupted));
        let error = connector.error(&interrupted);
        assert!(
            matches!(error, BrokerError::Interrupted { .. }),
            "{error:?}"
        );
        // Nor is one while connecting, which `run_idempotent` then tries again.
        let connecting = connector.connect_error(&interrupted);
        assert!(
            matches!(connecting, BrokerError::Interrupted { .. }),
            "{connecting:?}"
        );
        assert!(error.is_connection());
        assert!(!error.to_string().contains("cannot reach"), "{error}");
        let reset = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(
            connector.error(&reset),
            BrokerError::Connection { .. }
        ));
    }

    /// A Redis to test against (`FASTQ_TEST_REDIS`, else the local default), or None: skipped.
    fn test_redis() -> Option<Connector> {
        let url =
            std::env::var("FASTQ_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let mut connector = Connector::new(&url, "test").ok()?;
        let pong = connector.run(|c| ::redis::cmd("PING").query::<String>(c));
        if pong.is_err() {
            eprintln!("skipped: no Redis at {url}");
            return None;
        }
        Some(connector)
    }

    #[test]
    fn a_signal_while_connecting_is_an_interrupted_call() {
        // A server that accepts and never answers: the connection's handshake waits for it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
        let mut connector = Connector::new(&format!("redis://127.0.0.1:{port}/0"), "test").unwrap();
        let signal = interrupt_me_after(Duration::from_millis(200));
        let interrupted = connector.run(|c| ::redis::cmd("PING").query::<String>(c));
        signal.join().unwrap();
        assert!(
            matches!(interrupted, Err(BrokerError::Interrupted { .. })),
            "{interrupted:?}"
        );
        drop(server.join().unwrap());
    }

    /// A `BLPOP` that waits 0.3 s for nothing: a reply a signal can come before.
    fn wait(c: &mut Connection) -> RedisResult<Option<(String, String)>> {
        ::redis::cmd("BLPOP")
            .arg("fastq-test-eintr-nothing")
            .arg(0.3)
            .query(c)
    }

    #[test]
    fn a_call_a_signal_interrupts_says_so_and_an_idempotent_one_runs_again() {
        let Some(mut connector) = test_redis() else {
            return;
        };
        let signal = interrupt_me_after(Duration::from_millis(100));
        let interrupted = connector.run(wait);
        signal.join().unwrap();
        assert!(
            matches!(interrupted, Err(BrokerError::Interrupted { .. })),
            "{interrupted:?}"
        );
        let mut runs = 0;
        let signal = interrupt_me_after(Duration::from_millis(100));
        let again = connector.run_idempotent(|c| {
            runs += 1;
            wait(c)
        });
        signal.join().unwrap();
        assert_eq!((again, runs), (Ok(None), 2));
    }
}
