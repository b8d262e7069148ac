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
    /// An AMQP URI lapin understands (`amqp://` or `amqps://`, vhost percent-encoded).
    pub url: String,
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
    /// The URL with its password replaced by `***`, for every message that names the broker.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }
}

/// Opens a connection named `name` (shown by `rabbitmqctl list_connections client_properties`).
pub(super) async fn connect(
    endpoint: &Endpoint,
    name: &str,
    handle: Handle,
) -> Result<Connection, AmqpError> {
    let limit = endpoint.connect_timeout;
    let mut uri: AMQPUri = endpoint
        .url
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
    use super::{redact, Duration, Failure, Target};

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
