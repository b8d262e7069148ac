//! Redis Cluster (fastq's own layout, see [`KeyLayout::cluster`](super::keys::KeyLayout)):
//! the `redis+cluster://` URL of a few seed nodes, the slot of a key, and the routing of each
//! command to the master that owns its slot.
//!
//! The slot map is read with `CLUSTER SLOTS` from any node that answers (the seeds at first),
//! and read again after a `MOVED` (the slot is also moved in the map at once) or a connection
//! error (a failover may have promoted a replica). An `ASK` (a slot being migrated) sends the
//! command once more to the node named, preceded by `ASKING`. A `TRYAGAIN` (a multi-key command
//! while its slot is half migrated) is a transient error for the caller, who retries as after
//! any outage: none of these replies means the command ran, so repeating it is safe.
//!
//! Synchronous, as the rest of the Redis side: one lazily opened `Connector` per node, no
//! threads, nothing to take care of across a fork that the single-node case does not have.

use std::collections::HashMap;
use std::time::Duration;

use ::redis::{Connection, ErrorKind, RedisResult, ServerErrorKind, Value};

use super::connection::{BrokerError, BrokerResult, Connector, Raw};
use super::url::redact_url;

/// The scheme of a cluster seed (`rediss+cluster://` for TLS).
pub const SCHEME: &str = "redis+cluster";
pub const TLS_SCHEME: &str = "rediss+cluster";
/// How many redirections one command may follow (a slot moved while an `ASK` was followed...).
const MAX_REDIRECTS: usize = 5;
const SLOTS: u16 = 16384;

/// Whether `url` is a cluster URL (`redis+cluster://host:port;redis+cluster://host2:port`).
pub fn is_cluster(url: &str) -> bool {
    let url = url.trim_start();
    [SCHEME, TLS_SCHEME]
        .iter()
        .any(|s| url.starts_with(&format!("{s}://")))
}

/// Each seed of a cluster URL with its password hidden.
pub fn redact(url: &str) -> String {
    url.split(';')
        .map(|part| redact_url(part.trim()))
        .collect::<Vec<_>>()
        .join(";")
}

/// The seeds of a cluster URL and how to reach any node of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `host:port` of every seed, in the order given.
    pub seeds: Vec<String>,
    tls: bool,
    /// `user:password@` (or empty), from the first seed that has one: every node gets it.
    userinfo: String,
    /// `?…` options (`ssl_*`, `protocol`...), from the first seed that has them.
    query: String,
}

impl ClusterConfig {
    /// Parses `redis+cluster://[user:password@]host:port[/0][?options];redis+cluster://…`.
    /// Redis Cluster has database 0 only: any other number is refused.
    pub fn parse(url: &str) -> BrokerResult<Self> {
        let bad = |why: String| {
            BrokerError::Config(format!("the Redis Cluster URL {}: {why}", redact(url)))
        };
        let mut config = ClusterConfig {
            seeds: Vec::new(),
            tls: false,
            userinfo: String::new(),
            query: String::new(),
        };
        for (i, part) in url.split(';').map(str::trim).enumerate() {
            if part.is_empty() {
                continue;
            }
            let (scheme, rest) = part
                .split_once("://")
                .ok_or_else(|| bad(format!("{:?} has no scheme", redact_url(part))))?;
            let tls = match scheme {
                SCHEME => false,
                TLS_SCHEME => true,
                other => {
                    return Err(bad(format!(
                        "every node must be written {SCHEME}:// (or {TLS_SCHEME}://), not \
                         {other}://"
                    )))
                }
            };
            if i > 0 && tls != config.tls {
                return Err(bad("mixes TLS and plain seeds".into()));
            }
            config.tls = tls;
            let (userinfo, rest) = match rest.rfind('@') {
                Some(at) => (&rest[..=at], &rest[at + 1..]),
                None => ("", rest),
            };
            let (rest, query) = match rest.find('?') {
                Some(q) => rest.split_at(q),
                None => (rest, ""),
            };
            let (hostport, db) = match rest.find('/') {
                Some(slash) => rest.split_at(slash),
                None => (rest, ""),
            };
            if !matches!(db, "" | "/" | "/0") {
                return Err(bad(format!(
                    "names the database {:?}: a Redis Cluster has database 0 only",
                    db.trim_start_matches('/')
                )));
            }
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => (hostport, "6379"),
            };
            let host = if host.is_empty() { "localhost" } else { host };
            let port: u16 = port
                .parse()
                .map_err(|_| bad(format!("{port:?} is not a port number")))?;
            if config.userinfo.is_empty() {
                config.userinfo = userinfo.to_owned();
            }
            if config.query.is_empty() {
                config.query = query.to_owned();
            }
            config.seeds.push(format!("{host}:{port}"));
        }
        if config.seeds.is_empty() {
            return Err(bad("names no node".into()));
        }
        Ok(config)
    }

    /// The plain (`redis://` or `rediss://`) URL of the node at `addr` (`host:port`).
    pub fn node_url(&self, addr: &str) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{}{addr}/0{}", self.userinfo, self.query)
    }
}

/// The slot of `key`: CRC16 (XMODEM) of its hash tag — the text between the first `{` and the
/// next `}` if that is not empty — or of the whole key, modulo 16384.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The connections of one cluster client: one per node, and who owns which slot.
pub(super) struct Cluster {
    config: ClusterConfig,
    url: String,
    client_name: String,
    pub(super) connect_timeout: Duration,
    nodes: HashMap<String, Connector>,
    /// `(first slot, last slot, master's host:port)`, sorted.
    ranges: Vec<(u16, u16, String)>,
    /// The map is to be read again before the next command.
    stale: bool,
}

impl Cluster {
    pub(super) fn new(
        config: ClusterConfig,
        url: String,
        client_name: &str,
        connect_timeout: Duration,
    ) -> Self {
        Cluster {
            config,
            url,
            client_name: client_name.to_owned(),
            connect_timeout,
            nodes: HashMap::new(),
            ranges: Vec::new(),
            stale: true,
        }
    }

    fn node(&mut self, addr: &str) -> BrokerResult<&mut Connector> {
        if !self.nodes.contains_key(addr) {
            let node = Connector::new(&self.config.node_url(addr), &self.client_name)?
                .with_connect_timeout(self.connect_timeout);
            self.nodes.insert(addr.to_owned(), node);
        }
        Ok(self.nodes.get_mut(addr).expect("inserted above"))
    }

    /// Reads the slot map from the first node that answers: the masters known, then the seeds.
    fn refresh(&mut self) -> BrokerResult<()> {
        let mut candidates: Vec<String> = Vec::new();
        for addr in self
            .ranges
            .iter()
            .map(|r| r.2.clone())
            .chain(self.config.seeds.iter().cloned())
        {
            if !candidates.contains(&addr) {
                candidates.push(addr);
            }
        }
        let mut failures = Vec::new();
        let timeout = self.connect_timeout.max(Duration::from_secs(2));
        for addr in candidates {
            let node = self.node(&addr)?;
            let reply = node.run_raw(timeout, false, |c| {
                ::redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(c)
            });
            match reply {
                Ok(value) => match parse_slots(value, &addr) {
                    Some(ranges) if !ranges.is_empty() => {
                        self.ranges = ranges;
                        self.stale = false;
                        return Ok(());
                    }
                    _ => failures.push(format!("{addr}: no slot map in its CLUSTER SLOTS reply")),
                },
                Err(Raw::Broker(e)) => failures.push(format!("{addr}: {e}")),
                Err(Raw::Redis(e)) => failures.push(format!("{addr}: {}", node.error(&e))),
            }
        }
        Err(BrokerError::Connection {
            url: self.url.clone(),
            reason: format!(
                "no node of the cluster gave its slot map: {}",
                failures.join("; ")
            ),
        })
    }

    fn owner(&mut self, slot: u16) -> BrokerResult<String> {
        if self.stale || self.ranges.is_empty() {
            self.refresh()?;
        }
        match self
            .ranges
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
        {
            Some((_, _, addr)) => Ok(addr.clone()),
            None => {
                self.stale = true;
                Err(BrokerError::Connection {
                    url: self.url.clone(),
                    reason: format!("no master serves slot {slot} (is the cluster state ok?)"),
                })
            }
        }
    }

    /// Moves one slot to `addr` in the map (after a `MOVED`).
    fn assign(&mut self, slot: u16, addr: &str) {
        let mut ranges = Vec::with_capacity(self.ranges.len() + 2);
        for (lo, hi, owner) in self.ranges.drain(..) {
            if (lo..=hi).contains(&slot) {
                if lo < slot {
                    ranges.push((lo, slot - 1, owner.clone()));
                }
                if slot < hi {
                    ranges.push((slot + 1, hi, owner));
                }
            } else {
                ranges.push((lo, hi, owner));
            }
        }
        ranges.push((slot, slot, addr.to_owned()));
        ranges.sort();
        self.ranges = ranges;
    }

    /// Runs `op` on the master owning `key`'s slot, following redirections.
    pub(super) fn run<T>(
        &mut self,
        key: &str,
        timeout: Duration,
        op: &mut impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> BrokerResult<T> {
        let slot = slot(key.as_bytes());
        let mut target = self.owner(slot)?;
        let mut asking = false;
        for _ in 0..MAX_REDIRECTS {
            let node = self.node(&target)?;
            match node.run_raw(timeout, asking, &mut *op) {
                Ok(value) => return Ok(value),
                Err(Raw::Broker(e)) => {
                    self.stale = true;
                    return Err(e);
                }
                Err(Raw::Redis(e)) => {
                    let redirect = e.redirect_node().map(|(addr, _)| addr.to_owned());
                    match (e.kind(), redirect) {
                        (ErrorKind::Server(ServerErrorKind::Moved), Some(addr)) => {
                            self.assign(slot, &addr);
                            self.stale = true;
                            target = addr;
                            asking = false;
                        }
                        (ErrorKind::Server(ServerErrorKind::Ask), Some(addr)) => {
                            target = addr;
                            asking = true;
                        }
                        _ => {
                            let error = node.error(&e);
                            if matches!(error, BrokerError::Connection { .. }) {
                                self.stale = true;
                            }
                            return Err(error);
                        }
                    }
                }
            }
        }
        self.stale = true;
        Err(BrokerError::Connection {
            url: self.url.clone(),
            reason: format!(
                "slot {slot} was redirected {MAX_REDIRECTS} times in a row (a resharding under way)"
            ),
        })
    }

    /// The masters' `host:port`, from the slot map.
    pub(super) fn masters(&mut self) -> BrokerResult<Vec<String>> {
        if self.stale || self.ranges.is_empty() {
            self.refresh()?;
        }
        let mut masters: Vec<String> = Vec::new();
        for (_, _, addr) in &self.ranges {
            if !masters.contains(addr) {
                masters.push(addr.clone());
            }
        }
        Ok(masters)
    }

    /// Runs `op` on the node at `addr` (a command without a key, such as `SCAN`).
    pub(super) fn run_on<T>(
        &mut self,
        addr: &str,
        op: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> BrokerResult<T> {
        let result = self.node(addr)?.run(op);
        if result.is_err() {
            self.stale = true;
        }
        result
    }

    pub(super) fn close(&mut self) {
        for node in self.nodes.values_mut() {
            node.close();
        }
    }

    pub(super) fn ever_connected(&self) -> bool {
        self.nodes.values().any(Connector::ever_connected)
    }

    pub(super) fn connected(&self) -> bool {
        self.nodes.values().any(Connector::connected)
    }
}

/// `CLUSTER SLOTS` → `(first, last, master host:port)`; a master without an address (`""`, or
/// `?` from an old server) is the node that answered.
fn parse_slots(value: Value, asked: &str) -> Option<Vec<(u16, u16, String)>> {
    let Value::Array(entries) = value else {
        return None;
    };
    let asked_host = asked.rsplit_once(':').map_or(asked, |(h, _)| h);
    let mut ranges = Vec::new();
    for entry in entries {
        let Value::Array(parts) = entry else {
            return None;
        };
        let mut parts = parts.into_iter();
        let lo: u16 = ::redis::from_redis_value(parts.next()?).ok()?;
        let hi: u16 = ::redis::from_redis_value(parts.next()?).ok()?;
        let Value::Array(master) = parts.next()? else {
            return None;
        };
        let mut master = master.into_iter();
        let host: String = ::redis::from_redis_value(master.next()?).ok()?;
        let port: u16 = ::redis::from_redis_value(master.next()?).ok()?;
        let host = if host.is_empty() || host == "?" {
            asked_host.to_owned()
        } else {
            host
        };
        ranges.push((lo, hi, format!("{host}:{port}")));
    }
    ranges.sort();
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"{celery}\x06\x163"), slot(b"celery"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
    }

    #[test]
    fn cluster_urls_parse() {
        let c = ClusterConfig::parse(
            "redis+cluster://:pw@127.0.0.1:7300;redis+cluster://127.0.0.1:7301/0",
        )
        .unwrap();
        assert_eq!(c.seeds, ["127.0.0.1:7300", "127.0.0.1:7301"]);
        assert_eq!(c.node_url("10.0.0.1:7000"), "redis://:pw@10.0.0.1:7000/0");
        let t = ClusterConfig::parse("rediss+cluster://h:7000?ssl_cert_reqs=none").unwrap();
        assert_eq!(t.node_url("h:7001"), "rediss://h:7001/0?ssl_cert_reqs=none");
        for bad in [
            "redis+cluster://h:7000/2",
            "redis+cluster://h:x",
            "redis+cluster://h:1;redis://h:2",
            "redis+cluster://h:1;rediss+cluster://h:2",
            ";",
        ] {
            assert!(ClusterConfig::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            redact("redis+cluster://:secret@h:1;redis+cluster://h:2"),
            "redis+cluster://:***@h:1;redis+cluster://h:2"
        );
        assert!(is_cluster("redis+cluster://h:1"));
        assert!(!is_cluster("redis://h:1"));
    }

    #[test]
    fn a_moved_slot_is_split_out_of_its_range() {
        let mut c = Cluster::new(
            ClusterConfig::parse("redis+cluster://a:1").unwrap(),
            String::new(),
            "t",
            Duration::from_secs(1),
        );
        c.ranges = vec![(0, 99, "a:1".into()), (100, 16383, "b:1".into())];
        c.assign(50, "b:1");
        assert_eq!(
            c.ranges,
            [
                (0, 49, "a:1".into()),
                (50, 50, "b:1".into()),
                (51, 99, "a:1".into()),
                (100, 16383, "b:1".into())
            ]
        );
    }
}
