//! The worker's side of the Redis result backend: a batch of results stored in one round trip,
//! on the publisher's connection code (one connection per process, fork-aware, the spin socket
//! for plain TCP).
//!
//! The batch is one call of the caller's store script (the Python backend owns the layout and
//! the rule: never overwrite a `SUCCESS`, publish what is stored): `EVALSHA sha N key.. ttl
//! meta..`. One command is one read for Redis, where a pipeline of `SET NX` and then one of
//! `PUBLISH`es cost it two (each a few times what the commands themselves cost on a VM).
//!
//! A key that holds a value of another type (`WRONGTYPE`: something else wrote there) refuses
//! its result for good; the script reports it (`{index, error, ...}`, 1-based) and stores the
//! rest, so one such key does not hold back every result after it. Any other refusal fails the
//! batch. A server that does not know the script (restarted, `SCRIPT FLUSH`) answers
//! `NOSCRIPT`, so nothing ran: the script is loaded and the batch sent again.

use ::redis::{RedisError, Value};

use super::connection::{is_wrong_type, BrokerError, BrokerResult};
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
    /// round trip. On an error the batch can be stored again (the script never overwrites a
    /// `SUCCESS`).
    pub fn store(&mut self, items: &[(String, Vec<u8>)], ttl: u64) -> BrokerResult<Vec<Refused>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = ::redis::pipe();
        self.script_call(&mut call, items, ttl);
        let reply = match self.conn.query_each(&call)?.pop() {
            Some(Value::ServerError(e))
                if is_noscript(&RedisError::from(e.clone()).to_string()) =>
            {
                let mut load = ::redis::pipe();
                load.cmd("SCRIPT").arg("LOAD").arg(&self.code);
                self.conn.run(&load)?;
                self.conn.query_each(&call)?.pop()
            }
            other => other,
        };
        match reply {
            Some(Value::ServerError(e)) => Err(self.conn.refusal(&RedisError::from(e))),
            Some(Value::Array(flat)) => {
                refusals(items.len(), &flat).ok_or_else(|| self.unexpected(&flat))
            }
            other => Err(self.unexpected(&other)),
        }
    }

    fn script_call(&self, pipe: &mut ::redis::Pipeline, items: &[(String, Vec<u8>)], ttl: u64) {
        let call = pipe.cmd("EVALSHA").arg(self.sha()).arg(items.len());
        for (key, _) in items {
            call.arg(key);
        }
        call.arg(ttl);
        for (_, meta) in items {
            call.arg(meta);
        }
    }

    /// A reply the script does not give: another script under its SHA1, or a refusal other
    /// than `WRONGTYPE` (the batch fails, as a refused command would).
    fn unexpected(&self, reply: &impl std::fmt::Debug) -> BrokerError {
        BrokerError::Command {
            url: self.url().to_owned(),
            reason: format!(
                "the result store script answered {reply:?}, not {{index, WRONGTYPE error, ...}}"
            ),
        }
    }

    /// Closes this process's connection; the next store opens a new one.
    pub fn close(&mut self) {
        self.conn.close();
    }
}

/// The script's reply, `{index, error, ...}` with 1-based indexes, as refusals of `items[index]`;
/// `None` for anything else.
fn refusals(items: usize, flat: &[Value]) -> Option<Vec<Refused>> {
    let mut refused = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks(2) {
        let (Some(Value::Int(index)), Some(reason)) = (pair.first(), pair.get(1)) else {
            return None;
        };
        let reason = match reason {
            Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Value::SimpleString(text) => text.clone(),
            _ => return None,
        };
        let index = usize::try_from(*index)
            .ok()
            .filter(|i| (1..=items).contains(i))?;
        if !is_wrong_type(&reason) {
            return None;
        }
        refused.push(Refused {
            index: index - 1,
            reason,
        });
    }
    Some(refused)
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
    fn the_scripts_refusals_are_read_by_index() {
        let wrong = |text: &str| Value::BulkString(text.as_bytes().to_vec());
        let flat = [
            Value::Int(2),
            wrong("WRONGTYPE Operation against a key holding the wrong kind of value"),
            Value::Int(3),
            wrong("WRONGTYPE again"),
        ];
        let refused = refusals(3, &flat).unwrap();
        assert_eq!(refused.iter().map(|r| r.index).collect::<Vec<_>>(), [1, 2]);
        assert!(refused[0].reason.starts_with("WRONGTYPE Operation"));
        assert_eq!(refusals(3, &[]), Some(Vec::new()));
        // Out of range, another error, an odd length: not this script's reply.
        assert_eq!(refusals(1, &flat[..2]), None);
        assert_eq!(refusals(3, &[Value::Int(1), wrong("OOM no memory")]), None);
        assert_eq!(refusals(3, &[Value::Int(1)]), None);
    }

    #[test]
    fn the_sha_is_the_scripts_sha1() {
        let store = ResultStore::new("redis://127.0.0.1:1/0", "return 1").unwrap();
        assert_eq!(store.sha(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
