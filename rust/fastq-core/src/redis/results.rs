//! The worker's side of the Redis result backend: a batch of results stored in one pipelined
//! round trip, each by the backend's store script (`EVALSHA`: Celery's key, never overwriting a
//! `SUCCESS`, `PUBLISH`ed on the key's channel for waiting clients), on the publisher's
//! connection code (one connection per process, fork-aware, the spin socket for plain TCP).
//!
//! The script's body is the caller's (the Python backend owns the layout); a server that does
//! not know it (restarted, `SCRIPT FLUSH`) answers `NOSCRIPT` to every `EVALSHA` of the batch,
//! so none of them ran: the script is loaded and the batch sent again.

use super::connection::{BrokerError, BrokerResult};
use super::publisher::RedisPublisher;

pub struct ResultStore {
    conn: RedisPublisher,
    script: ::redis::Script,
    code: String,
}

impl ResultStore {
    /// Parses `url`; connects on the first store.
    pub fn new(url: &str, script: &str) -> BrokerResult<Self> {
        Ok(ResultStore {
            conn: RedisPublisher::new(url, "")?,
            script: ::redis::Script::new(script),
            code: script.to_owned(),
        })
    }

    /// The URL with its password hidden.
    pub fn url(&self) -> &str {
        self.conn.url()
    }

    /// The script's SHA1, as `EVALSHA` names it.
    pub fn sha(&self) -> &str {
        self.script.get_hash()
    }

    /// Stores `(key, meta)` pairs in order, in one round trip; `ttl` in seconds (0: none) is
    /// the script's second argument. Returns once Redis has answered every command.
    pub fn store(&mut self, items: &[(String, Vec<u8>)], ttl: u64) -> BrokerResult<()> {
        let mut pipe = ::redis::pipe();
        for (key, meta) in items {
            pipe.cmd("EVALSHA")
                .arg(self.sha())
                .arg(1)
                .arg(key)
                .arg(meta)
                .arg(ttl);
        }
        match self.conn.run(&pipe) {
            Err(BrokerError::Command { reason, .. }) if is_noscript(&reason) => {
                let mut load = ::redis::pipe();
                load.cmd("SCRIPT").arg("LOAD").arg(&self.code);
                self.conn.run(&load)?;
                self.conn.run(&pipe)
            }
            other => other,
        }
    }

    /// Closes this process's connection; the next store opens a new one.
    pub fn close(&mut self) {
        self.conn.close();
    }
}

fn is_noscript(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("noscript") || reason.contains("no matching script")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noscript_replies_are_recognised() {
        assert!(is_noscript(
            "NoScriptError: No matching script. Please use EVAL."
        ));
        assert!(is_noscript("NOSCRIPT No matching script"));
        assert!(!is_noscript("WRONGTYPE Operation against a key"));
    }

    #[test]
    fn the_sha_is_the_scripts_sha1() {
        let store = ResultStore::new("redis://127.0.0.1:1/0", "return 1").unwrap();
        assert_eq!(store.sha(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
