//! Redis Sentinel: the master of a named group, found by asking the sentinels.
//!
//! A Sentinel URL lists the sentinels as kombu writes them, separated by `;`
//! (`sentinel://:pw@s1:26379/0;sentinel://s2:26379`): the user, password and db of the *first*
//! are the master's, as kombu and Celery read them. The rest of the configuration is in the
//! query of any part (the Python side puts it there from the transport options): `master_name`
//! (required), `sentinel_username` / `sentinel_password` (Sentinel's own credentials, kombu's
//! `sentinel_kwargs`), `min_other_sentinels` and `sentinel_timeout` (seconds).
//!
//! Every connect asks the sentinels in turn (`SENTINEL get-master-addr-by-name`; with
//! `min_other_sentinels`, `SENTINEL MASTER` to see how many other sentinels agree), connects to
//! the address the first one that knows gives, and checks with `ROLE` that the node is a master
//! (right after a failover a sentinel may still name the old one). The sentinel that answered
//! moves to the front of the list, as redis-py does. A connection in use is checked against the
//! sentinels' view every [`RECHECK`]: when the master has moved, the connection is dropped and
//! the caller told (a connection error), so it reconnects to the new master and does whatever a
//! broken connection asks of it.

use std::time::{Duration, Instant};

use ::redis::{
    Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, Value,
};

use super::connection::BrokerError;
use super::url::redact_url;

/// How often a connection in use asks the sentinels whether the master moved: a demoted
/// master keeps accepting writes until Sentinel reconfigures it, and everything written there
/// meanwhile is lost, so this bounds how long a worker or client goes on writing to it.
pub const RECHECK: Duration = Duration::from_millis(500);
/// The sentinels' port when a part of the URL gives none (kombu's).
const DEFAULT_PORT: u16 = 26379;
/// After a check that no sentinel answered, the next waits this long: asking unreachable
/// sentinels can take their timeout each, and the master itself may be fine.
const RECHECK_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// How long connecting to a sentinel and its answer may take, unless `sentinel_timeout` says.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq)]
pub struct SentinelConfig {
    /// `(host, port)` of each sentinel, in the order tried.
    pub sentinels: Vec<(String, u16)>,
    pub master_name: String,
    /// The master's credentials and database.
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
    /// Sentinel's own credentials.
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    /// A sentinel's answer counts only if it sees at least this many other sentinels.
    pub min_other_sentinels: u64,
    pub timeout: Duration,
}

/// Whether `url` is a Sentinel URL.
pub fn is_sentinel(url: &str) -> bool {
    url.get(..11)
        .is_some_and(|s| s.eq_ignore_ascii_case("sentinel://"))
}

/// Every `;`-separated part redacted on its own.
pub fn redact(url: &str) -> String {
    url.split(';').map(redact_url).collect::<Vec<_>>().join(";")
}

impl SentinelConfig {
    pub fn parse(url: &str) -> Result<Self, BrokerError> {
        let shown = redact(url);
        let bad = |why: String| BrokerError::Config(format!("the Sentinel URL {shown}: {why}"));
        let mut config = SentinelConfig {
            sentinels: Vec::new(),
            master_name: String::new(),
            username: None,
            password: None,
            db: 0,
            sentinel_username: None,
            sentinel_password: None,
            min_other_sentinels: 0,
            timeout: DEFAULT_TIMEOUT,
        };
        for (i, part) in url.split(';').map(str::trim).enumerate() {
            if part.is_empty() {
                continue;
            }
            if !is_sentinel(part) {
                return Err(bad(format!(
                    "every part must be a sentinel:// URL, not {}",
                    redact_url(part)
                )));
            }
            let rest = &part[11..];
            // The query starts after the user part (a password may hold a `?`).
            let after_user = rest.rfind('@').map_or(0, |at| at + 1);
            let (rest, query) = match rest[after_user..].find('?') {
                Some(q) => (&rest[..after_user + q], &rest[after_user + q + 1..]),
                None => (rest, ""),
            };
            let (userinfo, hostpath) = match rest.rfind('@') {
                Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
                None => (None, rest),
            };
            let (hostport, path) = hostpath.split_once('/').unwrap_or((hostpath, ""));
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && !hostport.ends_with(']') => (
                    h,
                    p.parse::<u16>()
                        .map_err(|_| bad(format!("{p:?} is not a port number")))?,
                ),
                _ => (hostport, DEFAULT_PORT),
            };
            let host = if host.is_empty() { "localhost" } else { host };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            config.sentinels.push((host.to_owned(), port));
            if i == 0 {
                if let Some(userinfo) = userinfo {
                    let (user, password) = match userinfo.split_once(':') {
                        Some((u, p)) => (u, Some(p)),
                        None => (userinfo, None),
                    };
                    config.username = (!user.is_empty()).then(|| decode(user));
                    config.password = password.filter(|p| !p.is_empty()).map(decode);
                }
                let db = path.trim_matches('/');
                if !db.is_empty() {
                    config.db = db
                        .parse()
                        .map_err(|_| bad(format!("the database {db:?} is not a number")))?;
                }
            }
            for param in query.split('&').filter(|p| !p.is_empty()) {
                let (name, value) = param.split_once('=').unwrap_or((param, ""));
                let value = decode(value);
                match name {
                    "master_name" => config.master_name = value,
                    "sentinel_username" => config.sentinel_username = Some(value),
                    "sentinel_password" => config.sentinel_password = Some(value),
                    "min_other_sentinels" => {
                        config.min_other_sentinels = value.parse().map_err(|_| {
                            bad(format!("min_other_sentinels {value:?} is not a count"))
                        })?
                    }
                    "sentinel_timeout" => {
                        config.timeout = value
                            .parse::<f64>()
                            .ok()
                            .and_then(|s| Duration::try_from_secs_f64(s).ok())
                            .filter(|d| !d.is_zero())
                            .ok_or_else(|| {
                                bad(format!("sentinel_timeout {value:?} is not a duration"))
                            })?
                    }
                    // kombu reads these from the transport options, never from the URL.
                    _ => {
                        return Err(bad(format!(
                            "the option {name:?} is not understood (master_name, \
                             sentinel_username, sentinel_password, min_other_sentinels, \
                             sentinel_timeout are)"
                        )))
                    }
                }
            }
        }
        if config.sentinels.is_empty() {
            return Err(bad("it names no sentinel".into()));
        }
        if config.master_name.is_empty() {
            return Err(bad(
                "the master's name is missing: set the transport option 'master_name' (the \
                 name the sentinels monitor it under, e.g. 'mymaster')"
                    .into(),
            ));
        }
        Ok(config)
    }

    fn sentinel_info(&self, host: &str, port: u16) -> ::redis::RedisResult<ConnectionInfo> {
        let (user, password) = (&self.sentinel_username, &self.sentinel_password);
        tcp_info(host, port, 0, user.as_deref(), password.as_deref())
    }

    /// The master's connection info at `(host, port)`.
    pub fn master_info(&self, host: &str, port: u16) -> ::redis::RedisResult<ConnectionInfo> {
        let (user, password) = (&self.username, &self.password);
        tcp_info(host, port, self.db, user.as_deref(), password.as_deref())
    }

    /// What the sentinel at `index` says the master's address is.
    fn ask(&self, index: usize) -> Result<(String, u16), String> {
        let (host, port) = &self.sentinels[index];
        let info = self.sentinel_info(host, *port).map_err(|e| e.to_string())?;
        let client = Client::open(info).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| self.scrub(&e.to_string()))?;
        conn.set_read_timeout(Some(self.timeout))
            .and_then(|()| conn.set_write_timeout(Some(self.timeout)))
            .map_err(|e| e.to_string())?;
        if self.min_other_sentinels == 0 {
            let addr: Option<(String, String)> = ::redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.master_name)
                .query(&mut conn)
                .map_err(|e| self.scrub(&e.to_string()))?;
            let (ip, port) = addr.ok_or_else(|| self.unknown())?;
            let port = port
                .parse()
                .map_err(|_| format!("gave the port {port:?}"))?;
            return Ok((ip, port));
        }
        let reply: Value = ::redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(&self.master_name)
            .query(&mut conn)
            .map_err(|e| {
                if e.to_string().contains("No such master") {
                    self.unknown()
                } else {
                    self.scrub(&e.to_string())
                }
            })?;
        let fields: Vec<String> =
            ::redis::from_redis_value(reply).map_err(|e| format!("answered oddly: {e}"))?;
        let field = |name: &str| {
            fields
                .chunks(2)
                .find(|kv| kv.len() == 2 && kv[0] == name)
                .map(|kv| kv[1].clone())
                .unwrap_or_default()
        };
        let flags = field("flags");
        if flags.contains("s_down") || flags.contains("o_down") {
            return Err(format!("sees the master as down ({flags})"));
        }
        let others: u64 = field("num-other-sentinels").parse().unwrap_or(0);
        if others < self.min_other_sentinels {
            return Err(format!(
                "sees {others} other sentinel(s), fewer than min_other_sentinels ({})",
                self.min_other_sentinels
            ));
        }
        let port = field("port");
        let port = port
            .parse()
            .map_err(|_| format!("gave the port {port:?}"))?;
        Ok((field("ip"), port))
    }

    fn unknown(&self) -> String {
        format!(
            "monitors no master named {:?} (check master_name)",
            self.master_name
        )
    }

    fn scrub(&self, text: &str) -> String {
        let once = super::url::scrub(text, self.sentinel_password.as_deref());
        super::url::scrub(&once, self.password.as_deref())
    }
}

/// Asks the sentinels in turn; what to connect to, or why nothing can be.
pub struct Resolver {
    pub config: SentinelConfig,
    /// The master connected to last.
    pub current: Option<(String, u16)>,
    /// When the sentinels are next asked whether it is still the master.
    due: Instant,
}

impl Resolver {
    pub fn new(config: SentinelConfig) -> Self {
        Resolver {
            config,
            current: None,
            due: Instant::now(),
        }
    }

    /// The master's address from the first sentinel that knows it (moved to the front), with
    /// what each one before it said.
    pub fn master(&mut self) -> Result<(String, u16), Vec<String>> {
        let mut failures = Vec::new();
        for index in 0..self.config.sentinels.len() {
            match self.config.ask(index) {
                Ok(addr) => {
                    if index > 0 {
                        let first = self.config.sentinels.remove(index);
                        self.config.sentinels.insert(0, first);
                    }
                    return Ok(addr);
                }
                Err(why) => {
                    let (host, port) = &self.config.sentinels[index];
                    failures.push(format!("sentinel {host}:{port} {why}"));
                }
            }
        }
        Err(failures)
    }

    /// Notes that the connection to `addr` was just opened (and checked to be a master).
    pub fn connected(&mut self, addr: (String, u16)) {
        self.current = Some(addr);
        self.due = Instant::now() + RECHECK;
    }

    /// Whether the master moved since the connection opened, asked at most every [`RECHECK`].
    /// `None` when it did not or no sentinel answered (the connection is then kept: the
    /// sentinels' trouble is not the master's). The new address otherwise.
    pub fn moved(&mut self) -> Option<(String, u16)> {
        if Instant::now() < self.due {
            return None;
        }
        let Ok(now) = self.master() else {
            self.due = Instant::now() + RECHECK_AFTER_FAILURE;
            return None;
        };
        self.due = Instant::now() + RECHECK;
        (self.current.as_ref() != Some(&now)).then_some(now)
    }
}

fn tcp_info(
    host: &str,
    port: u16,
    db: i64,
    user: Option<&str>,
    password: Option<&str>,
) -> ::redis::RedisResult<ConnectionInfo> {
    let mut settings = RedisConnectionInfo::default().set_db(db);
    if let Some(user) = user {
        settings = settings.set_username(user);
    }
    if let Some(password) = password {
        settings = settings.set_password(password);
    }
    Ok(ConnectionAddr::Tcp(host.to_owned(), port)
        .into_connection_info()?
        .set_redis_settings(settings))
}

/// `%xx` escapes of a URL's user, password or option value.
fn decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kombu_sentinel_urls_parse() {
        let c = SentinelConfig::parse(
            "sentinel://:s3cret@h1:26380/3?master_name=mymaster&sentinel_password=sp;\
             sentinel://h2;sentinel://[::1]:26381",
        )
        .unwrap();
        assert_eq!(
            c.sentinels,
            vec![
                ("h1".to_owned(), 26380),
                ("h2".to_owned(), 26379),
                ("::1".to_owned(), 26381)
            ]
        );
        assert_eq!(c.master_name, "mymaster");
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert_eq!(c.username, None);
        assert_eq!(c.db, 3);
        assert_eq!(c.sentinel_password.as_deref(), Some("sp"));
    }

    #[test]
    fn master_name_is_required() {
        let e = SentinelConfig::parse("sentinel://h:26379").unwrap_err();
        assert!(e.to_string().contains("master_name"), "{e}");
    }

    #[test]
    fn unknown_options_are_refused() {
        let e = SentinelConfig::parse("sentinel://h?master_name=m&ssl=1").unwrap_err();
        assert!(e.to_string().contains("\"ssl\""), "{e}");
    }

    #[test]
    fn passwords_are_hidden_in_every_part() {
        assert_eq!(
            redact("sentinel://:pw@h1/0?master_name=m&sentinel_password=x;sentinel://u:p@h2"),
            "sentinel://:***@h1/0?master_name=m&sentinel_password=***;sentinel://u:***@h2"
        );
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(decode("a%40b%3A"), "a@b:");
        assert_eq!(decode("100%"), "100%");
    }
}
