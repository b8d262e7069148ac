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
            "cannot connect: no answer from {}:{} within {limit:.0?} (a host that is down or \
             a firewall dropping the packets)",
            target.host, target.port
        ))),
    }
}

/// What a failed connection attempt was aimed at, to say why it failed in words an operator can
/// act on. Never the password.
struct Target {
    host: String,
    port: u16,
    user: String,
    vhost: String,
    tls: bool,
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

    fn why(&self, e: &lapin::Error) -> String {
        let (host, port) = (&self.host, self.port);
        match e.kind() {
            ErrorKind::ProtocolError(err) => {
                let said = err.get_message();
                match err.kind() {
                    AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => format!(
                        "login refused for user {:?}: wrong user name or password, or the \
                         user may not log in from here (broker said: {said})",
                        self.user
                    ),
                    AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => format!(
                        "virtual host {:?} does not exist or user {:?} has no permission on \
                         it (broker said: {said})",
                        self.vhost, self.user
                    ),
                    _ => format!("the broker refused the connection: {said}"),
                }
            }
            ErrorKind::IOError(io) => {
                let text = io.to_string();
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => format!(
                        "connection refused by {host}:{port}: nothing listens there (is \
                         RabbitMQ running, and is this its port?)"
                    ),
                    // rustls's alerts reach us as I/O errors; a plain AMQP server answers a TLS
                    // hello with bytes rustls calls corrupt.
                    // rustls's verdict on the server's certificate, or the server's alert
                    // about ours.
                    _ if self.tls && text.contains("invalid peer certificate") => format!(
                        "TLS handshake with {host}:{port} failed: the server's certificate is not \
                         trusted ({text}). Give the CA that signed it as broker_use_ssl \
                         {{'ca_certs': <PEM file>}}, and check that the URL's host is a name in it"
                    ),
                    _ if self.tls && text.contains("alert") && text.contains("Certificate") => {
                        format!(
                            "TLS handshake with {host}:{port} failed: the server refused the \
                             client certificate ({text}). Give one it trusts as broker_use_ssl \
                             {{'certfile': <PEM file>, 'keyfile': <PEM file>}}"
                        )
                    }
                    _ if self.tls && is_tls_failure(&text) => format!(
                        "TLS handshake with {host}:{port} failed ({text}): the server does not \
                         speak TLS there. amqps:// needs RabbitMQ's TLS listener (usually port \
                         5671); use amqp:// for the plain one (5672)"
                    ),
                    _ if text.contains("lookup") || text.contains("resolve") => {
                        format!("cannot resolve the host name {host:?}: {text}")
                    }
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                        if !self.tls =>
                    {
                        format!(
                            "{host}:{port} closed the connection during the AMQP handshake \
                             ({text}): is it a TLS port (then use amqps://) or not RabbitMQ?"
                        )
                    }
                    _ => format!("{host}:{port}: {text}"),
                }
            }
            _ => e.to_string(),
        }
    }
}

fn is_tls_failure(text: &str) -> bool {
    [
        "corrupt message",
        "InvalidContentType",
        "HandshakeFailure",
        "handshake",
        "certificate",
    ]
    .iter()
    .any(|needle| text.contains(needle))
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
    use super::redact;

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
