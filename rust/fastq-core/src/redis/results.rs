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
//! A key that holds a value of another type (`WRONGTYPE`: something else wrote there) refuses
//! its result for good; that result is reported back and the rest of the batch stored, so one
//! such key does not hold back every result after it. Any other refusal fails the batch.
//!
//! The script's body is the caller's (the Python backend owns the layout); a server that does
//! not know it (restarted, `SCRIPT FLUSH`) answers `NOSCRIPT` to every `EVALSHA` of the batch,
//! so none of them ran: the script is loaded and the batch sent again.

use ::redis::{RedisError, Value};

use super::connection::{is_wrong_type, BrokerResult};
use super::publisher::RedisPublisher;

/// A result Redis refused for its key alone: `items[index]`, with Redis's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub index: usize,
    pub reason: String,
}

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
    /// result is stored but those refused for their key alone (see the module's comment): one
    /// round trip, two for a batch with keys that already held something. On an error the
    /// batch can be stored again (the script never overwrites a `SUCCESS`).
    pub fn store(&mut self, items: &[(String, Vec<u8>)], ttl: u64) -> BrokerResult<Vec<Refused>> {
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
        let mut checked_items = Vec::new();
        for (index, ((key, meta), reply)) in items.iter().zip(&replies).enumerate() {
            if matches!(reply, Value::Nil) {
                // The script publishes what it stores, after the PUBLISHes before it are sent.
                self.script_call(&mut checked, key, meta, ttl);
                checked_items.push(index);
            } else {
                publish.cmd("PUBLISH").arg(key).arg(meta);
            }
        }
        if !publish.is_empty() {
            self.conn.send_unread(&publish)?;
        }
        if checked.is_empty() {
            return Ok(Vec::new());
        }
        let mut refused = Vec::new();
        for (index, reply) in checked_items.into_iter().zip(self.run_script(&checked)?) {
            if let Value::ServerError(reply) = reply {
                let error = RedisError::from(reply);
                if !is_wrong_type(&error.to_string()) {
                    return Err(self.conn.refusal(&error));
                }
                refused.push(Refused {
                    index,
                    reason: reply_text(&error),
                });
            }
        }
        Ok(refused)
    }

    fn script_call(&self, pipe: &mut ::redis::Pipeline, key: &str, meta: &[u8], ttl: u64) {
        pipe.cmd("EVALSHA")
            .arg(self.sha())
            .arg(1)
            .arg(key)
            .arg(meta)
            .arg(ttl);
    }

    /// Runs a pipeline of script calls, loading the script first if the server lost it; each
    /// call's reply, an error reply in its place.
    fn run_script(&mut self, pipe: &::redis::Pipeline) -> BrokerResult<Vec<Value>> {
        let replies = self.conn.query_each(pipe)?;
        let lost = replies.iter().any(|reply| match reply {
            Value::ServerError(e) => is_noscript(&RedisError::from(e.clone()).to_string()),
            _ => false,
        });
        if !lost {
            return Ok(replies);
        }
        let mut load = ::redis::pipe();
        load.cmd("SCRIPT").arg("LOAD").arg(&self.code);
        self.conn.run(&load)?;
        self.conn.query_each(pipe)
    }

    /// Closes this process's connection; the next store opens a new one.
    pub fn close(&mut self) {
        self.conn.close();
    }
}

/// An error reply as Redis wrote it (`WRONGTYPE Operation against ...`).
fn reply_text(error: &RedisError) -> String {
    match (error.code(), error.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => error.to_string(),
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
