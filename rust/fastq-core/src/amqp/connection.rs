//! Opening and closing connections to RabbitMQ, shared by the consumer and the publisher: the
//! URL and its heartbeat, the runtime lapin runs on, the set-up of a new connection within its
//! time limit, and why a connection failed in words an operator can act on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind};
use tokio::runtime::{Handle, Runtime};

use super::AmqpError;

/// The runtime lapin runs on: one worker thread (its I/O and heartbeats), created in the process
/// that uses it, after any fork.
pub(super) fn runtime(thread_name: &str) -> Result<Runtime, AmqpError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(thread_name)
        .enable_all()
        .build()
        .map_err(|e| AmqpError::Connection(format!("cannot start the AMQP runtime: {e}")))
}

/// The URL with its password replaced by `***`, for every message that names the broker.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    if user.len() == userinfo.len() {
        return url.to_owned();
    }
    format!("{scheme}://{user}:***{}", &rest[at..])
}

/// Where a consumer or publisher connects, and how.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// AMQP URIs lapin understands (`amqp://` or `amqps://`, vhost percent-encoded): one, or
    /// one per node of a cluster (Celery's `broker_url = "amqp://h1;amqp://h2"`), tried in the
    /// order `failover` says until one answers.
    pub urls: Vec<String>,
    /// Which URL a new connection tries next (`broker_failover_strategy`).
    pub failover: Failover,
    /// Seconds; `None` takes the broker's proposal, `Some(0)` disables heartbeats.
    pub heartbeat: Option<u16>,
    /// The longest a connection, and then its set-up (channel, declarations), may take.
    pub connect_timeout: Duration,
    /// For `amqps://`: what to trust and how to prove who we are, beyond the system's roots.
    pub tls: Tls,
}

/// TLS settings beyond `amqps://`, Celery's `broker_use_ssl` mapping. The files are read at
/// each connection, so a renewed certificate is taken by the next one.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// PEM certificates of authorities trusted besides the system's (`ca_certs`).
    pub ca_certs: Option<PathBuf>,
    /// The client certificate (PEM), for a broker that asks for one (`certfile`).
    pub certfile: Option<PathBuf>,
    /// Its private key (PEM, `keyfile`); without one the key is read from `certfile`.
    pub keyfile: Option<PathBuf>,
}

impl Tls {
    fn config(&self) -> Result<OwnedTLSConfig, AmqpError> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|e| {
                AmqpError::Config(format!("cannot read the {what} {}: {e}", path.display()))
            })
        };
        let cert_chain = match &self.ca_certs {
            Some(path) => Some(
                String::from_utf8(read("CA certificates (ca_certs)", path)?).map_err(|_| {
                    AmqpError::Config(format!("{} is not a PEM file (ca_certs)", path.display()))
                })?,
            ),
            None => None,
        };
        let identity = match (&self.certfile, &self.keyfile) {
            (Some(cert), key) => {
                let pem = read("client certificate (certfile)", cert)?;
                let key = match key {
                    Some(key) => read("client key (keyfile)", key)?,
                    None => pem.clone(),
                };
                Some(OwnedIdentity::PKCS8 { pem, key })
            }
            (None, Some(_)) => {
                return Err(AmqpError::Config(
                    "keyfile without certfile: give the client certificate too".into(),
                ))
            }
            (None, None) => None,
        };
        Ok(OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }
}

impl Endpoint {
    /// One broker: what a single URL makes.
    pub fn single(url: String, heartbeat: Option<u16>, connect_timeout: Duration) -> Self {
        Endpoint {
            urls: vec![url],
            failover: Failover::RoundRobin,
            heartbeat,
            connect_timeout,
            tls: Tls::default(),
        }
    }

    /// The URLs with their passwords replaced by `***`, `;`-separated as Celery writes a list,
    /// for every message that names the broker.
    pub fn display_url(&self) -> String {
        let shown: Vec<String> = self.urls.iter().map(|u| redact(u)).collect();
        shown.join(";")
    }
}

/// kombu's failover strategies: which broker of a list a new connection tries next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Failover {
    /// The next URL of the list after the one that failed, wrapping around (the default).
    #[default]
    RoundRobin,
    /// Another URL picked at random.
    Shuffle,
}

impl Failover {
    /// `round-robin` or `shuffle`, the names `broker_failover_strategy` takes.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "round-robin" => Some(Failover::RoundRobin),
            "shuffle" => Some(Failover::Shuffle),
            _ => None,
        }
    }
}

/// Where in its list of brokers a consumer or publisher stands. The first connection tries the
/// first URL, as kombu's does; when it is refused the others are tried at once, each in turn
/// (a broker list is one attempt: the caller backs off only when all failed). A connection that
/// was lost moves on, so the next one starts at another node, the one that died being tried
/// last.
#[derive(Debug, Clone)]
pub struct Rotation {
    current: usize,
    len: usize,
    failover: Failover,
    /// xorshift state for `Shuffle` (seeded from a random UUID: no dependency for so little).
    seed: u64,
}

impl Rotation {
    pub fn new(endpoint: &Endpoint) -> Self {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&bytes[..8]);
        Rotation {
            current: 0,
            len: endpoint.urls.len().max(1),
            failover: endpoint.failover,
            seed: u64::from_le_bytes(seed) | 1,
        }
    }

    /// The URL index in use (or to be tried first).
    pub fn current(&self) -> usize {
        self.current
    }

    fn random(&mut self) -> u64 {
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        x
    }

    /// The order of one attempt: the current URL, then every other one in the strategy's order.
    pub fn round(&mut self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len)
            .map(|i| (self.current + i) % self.len)
            .collect();
        if self.failover == Failover::Shuffle {
            // Fisher-Yates over the others: the current one stays first.
            for i in (2..self.len).rev() {
                let j = 1 + (self.random() % i as u64) as usize;
                order.swap(i, j);
            }
        }
        order
    }

    /// A connection to `index` succeeded: it is the current one.
    pub fn connected(&mut self, index: usize) {
        self.current = index % self.len;
    }

    /// The current connection was lost: the next attempt starts at another URL.
    pub fn advance(&mut self) {
        if self.len < 2 {
            return;
        }
        self.current = match self.failover {
            Failover::RoundRobin => (self.current + 1) % self.len,
            Failover::Shuffle => {
                let step = 1 + (self.random() % (self.len as u64 - 1)) as usize;
                (self.current + step) % self.len
            }
        };
    }
}

/// Connects to the first broker of `endpoint` that answers, in `rotation`'s order, and returns
/// the connection and the index of its URL. With several URLs, a failure says why each one was
/// refused.
pub(super) async fn connect_any(
    endpoint: &Endpoint,
    rotation: &mut Rotation,
    name: &str,
    handle: Handle,
) -> Result<(Connection, usize), AmqpError> {
    let order = rotation.round();
    if endpoint.urls.len() < 2 {
        let url = endpoint.urls.first().map(String::as_str).unwrap_or("");
        return Ok((connect(endpoint, url, name, handle).await?, 0));
    }
    let mut why = Vec::with_capacity(order.len());
    for index in order {
        match connect(endpoint, &endpoint.urls[index], name, handle.clone()).await {
            Ok(connection) => {
                rotation.connected(index);
                return Ok((connection, index));
            }
            // A URL that cannot work (a typo) is a configuration error at once.
            Err(AmqpError::Config(m)) => {
                return Err(AmqpError::Config(format!(
                    "{}: {m}",
                    redact(&endpoint.urls[index])
                )))
            }
            Err(AmqpError::Connection(m)) => {
                let m = m.replacen("cannot connect: ", "", 1);
                // Each reason names its broker (a login refusal does not by itself).
                let at = host_port(&endpoint.urls[index]);
                why.push(if m.contains(&at) {
                    m
                } else {
                    format!("{at}: {m}")
                });
            }
        }
    }
    Err(AmqpError::Connection(format!(
        "cannot connect to any of the {} brokers: {}",
        endpoint.urls.len(),
        why.join("; ")
    )))
}

/// `host:port` of an AMQP URI (as the failure messages write it).
fn host_port(url: &str) -> String {
    match url.parse::<AMQPUri>() {
        Ok(uri) => format!("{}:{}", uri.authority.host, uri.authority.port),
        Err(_) => redact(url),
    }
}

/// Opens a connection named `name` (shown by `rabbitmqctl list_connections client_properties`)
/// to one broker, `url`.
pub(super) async fn connect(
    endpoint: &Endpoint,
    url: &str,
    name: &str,
    handle: Handle,
) -> Result<Connection, AmqpError> {
    let limit = endpoint.connect_timeout;
    let mut uri: AMQPUri = url
        .parse()
        .map_err(|e: String| AmqpError::Config(format!("invalid AMQP URL: {e}")))?;
    if endpoint.heartbeat.is_some() {
        uri.query.heartbeat = endpoint.heartbeat;
    }
    let props = ConnectionProperties::default().with_connection_name(name.to_owned().into());
    let target = Target::of(&uri);
    let connect = Connection::connect_uri_with_config(
        uri,
        props,
        endpoint.tls.config()?,
        async_rs::Runtime::tokio_with_handle(handle),
    );
    match tokio::time::timeout(limit, connect).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(AmqpError::Connection(format!(
            "cannot connect: {}",
            target.why(&e)
        ))),
        Err(_) => Err(AmqpError::Connection(format!(
            "cannot connect: {}",
            target.explain(Failure::NoAnswer, "", Some(limit))
        ))),
    }
}

/// Why a connection attempt failed, sorted so that an operator knows what to change. The Rust
/// clients sort lapin's errors ([`Target::why`]); fastq's py-amqp connections sort py-amqp's
/// and have them worded here too (`_core.amqp_connect_failure`), so both say the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    LoginRefused,
    VhostRefused,
    /// Another refusal of the broker's.
    BrokerRefused,
    /// Nothing listens on the port.
    PortRefused,
    /// TLS: the server's certificate is not one we trust.
    Untrusted,
    /// TLS: the server wants a client certificate it trusts.
    ClientCertificateRefused,
    /// TLS to a port that does not speak it.
    NotTls,
    Unresolved,
    NoAnswer,
    /// Plain AMQP to a port that hung up during the handshake (a TLS port, or not RabbitMQ).
    ClosedInHandshake,
    Other,
}

impl Failure {
    /// The names Python passes (`login_refused`…).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "login_refused" => Failure::LoginRefused,
            "vhost_refused" => Failure::VhostRefused,
            "broker_refused" => Failure::BrokerRefused,
            "port_refused" => Failure::PortRefused,
            "untrusted" => Failure::Untrusted,
            "client_certificate_refused" => Failure::ClientCertificateRefused,
            "not_tls" => Failure::NotTls,
            "unresolved" => Failure::Unresolved,
            "no_answer" => Failure::NoAnswer,
            "closed_in_handshake" => Failure::ClosedInHandshake,
            "other" => Failure::Other,
            _ => return None,
        })
    }
}

/// What a failed connection attempt was aimed at, to say why it failed in words an operator can
/// act on. Never the password.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub vhost: String,
    pub tls: bool,
}

impl Target {
    fn of(uri: &AMQPUri) -> Self {
        Target {
            host: uri.authority.host.clone(),
            port: uri.authority.port,
            user: uri.authority.userinfo.username.clone(),
            vhost: uri.vhost.clone(),
            tls: uri.scheme == lapin::uri::AMQPScheme::AMQPS,
        }
    }

    /// The failure in words; `detail` is what the client or the broker said, `limit` how long
    /// an unanswered attempt waited (if known).
    pub fn explain(&self, failure: Failure, detail: &str, limit: Option<Duration>) -> String {
        let (host, port) = (&self.host, self.port);
        match failure {
            Failure::LoginRefused => format!(
                "login refused for user {:?}: wrong user name or password, or the user may not \
                 log in from here (broker said: {detail})",
                self.user
            ),
            Failure::VhostRefused => format!(
                "virtual host {:?} does not exist or user {:?} has no permission on it (broker \
                 said: {detail})",
                self.vhost, self.user
            ),
            Failure::BrokerRefused => format!("the broker refused the connection: {detail}"),
            Failure::PortRefused => format!(
                "connection refused by {host}:{port}: nothing listens there (is RabbitMQ \
                 running, and is this its port?)"
            ),
            Failure::Untrusted => format!(
                "TLS handshake with {host}:{port} failed: the server's certificate is not trusted \
                 ({detail}). Give the CA that signed it as broker_use_ssl {{'ca_certs': <PEM \
                 file>}}, and check that the URL's host is a name in it"
            ),
            Failure::ClientCertificateRefused => format!(
                "TLS handshake with {host}:{port} failed: the server refused the client \
                 certificate ({detail}). Give one it trusts as broker_use_ssl {{'certfile': \
                 <PEM file>, 'keyfile': <PEM file>}}"
            ),
            Failure::NotTls => format!(
                "TLS handshake with {host}:{port} failed ({detail}): the server does not speak \
                 TLS there. amqps:// needs RabbitMQ's TLS listener (usually port 5671); use \
                 amqp:// for the plain one (5672)"
            ),
            Failure::Unresolved => format!("cannot resolve the host name {host:?}: {detail}"),
            Failure::NoAnswer => {
                let within = limit
                    .map(|l| format!(" within {l:.0?}"))
                    .unwrap_or_default();
                format!(
                    "no answer from {host}:{port}{within} (a host that is down or a firewall \
                     dropping the packets)"
                )
            }
            Failure::ClosedInHandshake => format!(
                "{host}:{port} closed the connection during the AMQP handshake ({detail}): is it \
                 a TLS port (then use amqps://) or not RabbitMQ?"
            ),
            Failure::Other => format!("{host}:{port}: {detail}"),
        }
    }

    /// lapin's error, sorted and worded.
    fn why(&self, e: &lapin::Error) -> String {
        let (failure, detail) = match e.kind() {
            ErrorKind::ProtocolError(err) => {
                let failure = match err.kind() {
                    AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => Failure::LoginRefused,
                    AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => Failure::VhostRefused,
                    _ => Failure::BrokerRefused,
                };
                (failure, err.get_message().to_string())
            }
            ErrorKind::IOError(io) => {
                let text = io.to_string();
                let failure = match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => Failure::PortRefused,
                    // rustls's verdicts and alerts reach us as I/O errors: on the server's
                    // certificate, the server's about ours, and a plain AMQP server's answer to
                    // a TLS hello (bytes rustls calls corrupt).
                    _ if self.tls && text.contains("invalid peer certificate") => {
                        Failure::Untrusted
                    }
                    _ if self.tls && text.contains("alert") && text.contains("Certificate") => {
                        Failure::ClientCertificateRefused
                    }
                    _ if self.tls && crate::tls::is_handshake_failure(&text) => Failure::NotTls,
                    _ if text.contains("lookup") || text.contains("resolve") => Failure::Unresolved,
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                        if !self.tls =>
                    {
                        Failure::ClosedInHandshake
                    }
                    _ => Failure::Other,
                };
                (failure, text)
            }
            _ => return e.to_string(),
        };
        self.explain(failure, &detail, None)
    }
}

/// A new channel on `connection`.
pub(super) async fn open_channel(connection: &Connection) -> Result<Channel, AmqpError> {
    connection
        .create_channel()
        .await
        .map_err(|e| AmqpError::Connection(format!("cannot open a channel: {e}")))
}

/// The broker's channel-level (soft) error, if that is what `e` is: a refusal that reconnecting
/// does not cure.
pub(super) fn channel_error(e: &lapin::Error) -> Option<&lapin::protocol::AMQPError> {
    match e.kind() {
        ErrorKind::ProtocolError(err) if matches!(err.kind(), AMQPErrorKind::Soft(_)) => Some(err),
        _ => None,
    }
}

/// Runs a new connection's set-up (channel, QoS, declarations…) within `limit`. One that fails
/// or stalls (a broker still starting) must not leave the connection open: it would keep
/// heartbeating and could hold prefetched messages nobody acks.
pub(super) async fn set_up_or_close<T>(
    connection: &Connection,
    who: &str,
    limit: Duration,
    set_up: impl std::future::Future<Output = Result<T, AmqpError>>,
) -> Result<T, AmqpError> {
    let outcome = match tokio::time::timeout(limit, set_up).await {
        Ok(outcome) => outcome,
        Err(_) => Err(AmqpError::Connection(format!(
            "the broker did not finish setting up the channel within {limit:.0?}"
        ))),
    };
    if outcome.is_err() {
        close(connection, who).await;
    }
    outcome
}

pub(super) async fn close(connection: &Connection, who: &str) {
    let bye = connection.close(200, format!("fastq {who} closing").into());
    let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
}

#[cfg(test)]
mod tests {
    use super::{redact, Duration, Endpoint, Failover, Failure, Rotation, Target};

    fn endpoint(n: usize, failover: Failover) -> Endpoint {
        let urls = (0..n).map(|i| format!("amqp://h{i}/")).collect();
        Endpoint {
            failover,
            urls,
            ..Endpoint::single(String::new(), None, Duration::from_secs(1))
        }
    }

    #[test]
    fn round_robin_starts_at_the_first_url_and_moves_on_after_a_loss() {
        let mut r = Rotation::new(&endpoint(3, Failover::RoundRobin));
        assert_eq!(r.round(), vec![0, 1, 2]);
        r.advance();
        assert_eq!(r.round(), vec![1, 2, 0]);
        r.connected(2);
        r.advance();
        assert_eq!((r.current(), r.round()), (0, vec![0, 1, 2]));
        let mut one = Rotation::new(&endpoint(1, Failover::RoundRobin));
        one.advance();
        assert_eq!(one.round(), vec![0]);
    }

    #[test]
    fn shuffle_tries_the_current_url_first_and_never_stays_after_a_loss() {
        let mut r = Rotation::new(&endpoint(4, Failover::Shuffle));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            let mut round = r.round();
            assert_eq!(round[0], r.current());
            round.sort_unstable();
            assert_eq!(round, vec![0, 1, 2, 3]);
            let before = r.current();
            r.advance();
            assert_ne!(r.current(), before);
            seen.insert(r.current());
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(Failover::from_name("shuffle"), Some(Failover::Shuffle));
        assert_eq!(Failover::from_name("random"), None);
        assert_eq!(
            endpoint(2, Failover::RoundRobin).display_url(),
            "amqp://h0/;amqp://h1/"
        );
    }

    #[test]
    fn failures_are_worded_for_the_operator() {
        let target = Target {
            host: "rabbit".into(),
            port: 5671,
            user: "guest".into(),
            vhost: "prod".into(),
            tls: true,
        };
        let say = |name: &str, limit| {
            let failure = Failure::from_name(name).unwrap();
            target.explain(failure, "said", limit)
        };
        assert!(say("login_refused", None).starts_with("login refused for user \"guest\""));
        assert!(say("vhost_refused", None).contains("virtual host \"prod\" does not exist"));
        assert!(say("untrusted", None).contains("not trusted (said). Give the CA"));
        assert_eq!(
            say("no_answer", Some(Duration::from_secs(5))),
            "no answer from rabbit:5671 within 5s (a host that is down or a firewall dropping \
             the packets)"
        );
        assert!(!say("no_answer", None).contains("within"));
        assert_eq!(say("other", None), "rabbit:5671: said");
        assert_eq!(Failure::from_name("nope"), None);
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("amqp://guest:s3cr@t@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact("amqp://host/vh"), "amqp://host/vh");
        assert_eq!(redact("amqps://user@host/"), "amqps://user@host/");
    }
}
