//! The worker's side of the Redis result backend: a batch of results stored in one pipelined
//! round trip, on the publisher's connection code (one connection per process, fork-aware, the
//! spin socket for plain TCP).
//!
//! Most results are a task's first state under its key, so each is first `SET ... NX` (Celery's
//! key): a plain command costs Redis a third of a script call. Those stored are then
//! `PUBLISH`ed on the key's channel for waiting clients, written without waiting for the
//! replies. A key that already held something (`STARTED`, a retry's state, a duplicate
//! delivery's result) goes through the backend's store script instead (`EVALSHA`: never
//! overwriting a `SUCCESS`, publishing what it stores), awaited as before.
//!
//! The script's body is the caller's (the Python backend owns the layout); a server that does
//! not know it (restarted, `SCRIPT FLUSH`) answers `NOSCRIPT` to every `EVALSHA` of the batch,
//! so none of them ran: the script is loaded and the batch sent again.

use ::redis::Value;

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

    /// Stores `(key, meta)` pairs in order; `ttl` in seconds (0: none). Returns once every
    /// result is stored: one round trip, two for a batch with keys that already held something.
    pub fn store(&mut self, items: &[(String, Vec<u8>)], ttl: u64) -> BrokerResult<()> {
        let mut first = ::redis::pipe();
        for (key, meta) in items {
            let set = first.cmd("SET").arg(key).arg(meta).arg("NX");
            if ttl > 0 {
                set.arg("EX").arg(ttl);
            }
        }
        let replies = self.conn.query(&first)?;
        let mut publish = ::redis::pipe();
        let mut checked = ::redis::pipe();
        for ((key, meta), reply) in items.iter().zip(&replies) {
            if matches!(reply, Value::Nil) {
                // The script publishes what it stores, after the PUBLISHes before it are sent.
                self.script_call(&mut checked, key, meta, ttl);
            } else {
                publish.cmd("PUBLISH").arg(key).arg(meta);
            }
        }
        if !publish.is_empty() {
            self.conn.send_unread(&publish)?;
        }
        if !checked.is_empty() {
            self.run_script(&checked)?;
        }
        Ok(())
    }

    fn script_call(&self, pipe: &mut ::redis::Pipeline, key: &str, meta: &[u8], ttl: u64) {
        pipe.cmd("EVALSHA")
            .arg(self.sha())
            .arg(1)
            .arg(key)
            .arg(meta)
            .arg(ttl);
    }

    /// Runs a pipeline of script calls, loading the script first if the server lost it.
    fn run_script(&mut self, pipe: &::redis::Pipeline) -> BrokerResult<()> {
        match self.conn.run(pipe) {
            Err(BrokerError::Command { reason, .. }) if is_noscript(&reason) => {
                let mut load = ::redis::pipe();
                load.cmd("SCRIPT").arg("LOAD").arg(&self.code);
                self.conn.run(&load)?;
                self.conn.run(pipe)
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
