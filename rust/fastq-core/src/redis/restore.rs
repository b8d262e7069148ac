//! Putting unacknowledged messages back on their queues, as kombu's `QoS.restore_by_tag` and
//! `Channel._do_restore_message` do: read `[M, EX, RK]` from `unacked`, mark M redelivered, find
//! its queues from the exchange's bindings, push it to the list for its priority and drop the
//! tag from `unacked`/`unacked_index` — the move itself atomic (the `MOVE_BACK` script).
//!
//! The JSON is rewritten here rather than in Lua because cjson cannot round-trip arbitrary JSON
//! (empty lists become objects, floats are rounded to 14 digits).

use std::collections::{HashMap, HashSet};

use ::redis::{Connection, RedisResult};
use serde_json::Value as Json;

use super::connection::{BrokerResult, Connector, COMMAND_TIMEOUT};
use super::keys::{clamp_priority, KeyLayout, SEP};
use super::scripts::Scripts;

/// Tags restored per round of HMGET + script, to bound the size of one script call.
const CHUNK: usize = 500;

/// Where a restored message goes relative to the consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// RPUSH: the head of the queue, served next (restore after a crash or at shutdown).
    Head,
    /// LPUSH: the back of the queue (reject with requeue).
    Back,
}

impl End {
    fn command(self) -> &'static str {
        match self {
            End::Head => "RPUSH",
            End::Back => "LPUSH",
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Messages put back on a queue.
    pub restored: usize,
    /// Entries moved to the `fastq.unrestorable` list: unreadable, or no queue for them.
    pub unrestorable: usize,
    /// Messages left in `unacked` because a queue of theirs has a key of another type.
    pub held_back: Vec<HeldBack>,
}

/// A message not restored: the list it goes to is a key of another type (`MOVE_BACK`). It stays
/// in `unacked`, restored by a later pass once the key is a list again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    pub tag: String,
    pub key: String,
    /// What the key holds (`TYPE`: string, hash, …).
    pub kind: String,
}

impl std::ops::AddAssign for RestoreReport {
    fn add_assign(&mut self, other: Self) {
        self.restored += other.restored;
        self.unrestorable += other.unrestorable;
        self.held_back.extend(other.held_back);
    }
}

/// An `unacked` entry read and rewritten for redelivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Redelivery {
    /// The envelope with `headers.redelivered` and `properties.delivery_info.redelivered` set.
    pub envelope: Vec<u8>,
    pub exchange: String,
    pub routing_key: String,
    /// kombu's `_get_message_priority`: `int(properties.priority)` clamped to 0–9, else 0.
    pub priority: i64,
}

/// Reads an `unacked` value `[envelope, exchange, routing_key]` and marks the envelope redelivered.
pub fn redelivery(entry: &[u8]) -> Result<Redelivery, String> {
    // NaN and ±Infinity (as Python's json writes them, in a header say) are carried through as
    // markers and written back as they came.
    let marked = crate::codec::json::mark_non_finite(entry);
    let parsed: Json = serde_json::from_slice(marked.as_deref().unwrap_or(entry))
        .map_err(|e| format!("not a JSON entry: {e}"))?;
    let Json::Array(mut parts) = parsed else {
        return Err("not a [message, exchange, routing_key] list".into());
    };
    if parts.len() != 3 {
        return Err(format!(
            "a list of {} items, not [message, exchange, routing_key]",
            parts.len()
        ));
    }
    // kombu writes None for a missing exchange or routing key; both read as "".
    let text = |v: &Json| v.as_str().unwrap_or_default().to_owned();
    let routing_key = text(&parts[2]);
    let exchange = text(&parts[1]);
    let mut message = parts.swap_remove(0);
    if !message.is_object() {
        return Err("the message is not a JSON object".into());
    }
    if let Some(headers) = message.get_mut("headers").and_then(Json::as_object_mut) {
        headers.insert("redelivered".into(), Json::Bool(true));
    }
    if let Some(info) = message
        .pointer_mut("/properties/delivery_info")
        .and_then(Json::as_object_mut)
    {
        info.insert("redelivered".into(), Json::Bool(true));
    }
    let priority = message
        .pointer("/properties/priority")
        .and_then(python_int)
        .map_or(0, clamp_priority);
    let mut envelope = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
    if marked.is_some() {
        envelope = crate::codec::json::unmark_non_finite(&envelope);
    }
    Ok(Redelivery {
        envelope,
        exchange,
        routing_key,
        priority,
    })
}

/// `int(value)` as Python reads the JSON kinds, `None` where Python would raise.
fn python_int(value: &Json) -> Option<i64> {
    match value {
        Json::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|_| i64::MAX))
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Json::String(s) => s.trim().parse().ok(),
        Json::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// One member of `_kombu.binding.<exchange>`: `routing_key SEP pattern SEP queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub routing_key: String,
    /// A regex for topic exchanges, empty for direct and fanout ones.
    pub pattern: String,
    pub queue: String,
}

impl Binding {
    pub fn parse(member: &[u8]) -> Option<Binding> {
        let text = std::str::from_utf8(member).ok()?;
        let mut parts = text.splitn(3, SEP);
        Some(Binding {
            routing_key: parts.next()?.to_owned(),
            pattern: parts.next()?.to_owned(),
            queue: parts.next()?.to_owned(),
        })
    }
}

/// The queues a message published to `exchange` with `routing_key` belongs to (kombu's
/// `Channel._lookup`). The default exchange `""` routes to the queue named by the key.
///
/// kombu picks direct or topic matching from the exchange type declared in the restoring
/// process; that type is not stored in Redis, so a binding with a pattern (only topic
/// exchanges write one) is matched as topic, any other as direct.
pub fn route(exchange: &str, routing_key: &str, bindings: &[Binding]) -> Vec<String> {
    if exchange.is_empty() {
        return if routing_key.is_empty() {
            Vec::new()
        } else {
            vec![routing_key.to_owned()]
        };
    }
    let mut queues: Vec<String> = Vec::new();
    for b in bindings {
        let hit = if b.pattern.is_empty() {
            b.routing_key == routing_key
        } else {
            topic_matches(&b.routing_key, routing_key)
        };
        if hit && !queues.contains(&b.queue) {
            queues.push(b.queue.clone());
        }
    }
    queues
}

/// kombu's topic match (`TopicExchange.key_to_pattern`): words split on `.`, `*` is one or more
/// characters other than `.`, `#` is any text (dots included), the whole key must match.
pub fn topic_matches(binding_key: &str, routing_key: &str) -> bool {
    let mut tokens = Vec::new();
    for (i, word) in binding_key.split('.').enumerate() {
        if i > 0 {
            tokens.push(Token::Literal("."));
        }
        tokens.push(match word {
            "*" => Token::Word,
            "#" => Token::Any,
            _ => Token::Literal(word),
        });
    }
    matches_tokens(&tokens, routing_key)
}

enum Token<'a> {
    Literal(&'a str),
    Word,
    Any,
}

fn matches_tokens(tokens: &[Token<'_>], text: &str) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return text.is_empty();
    };
    let boundaries = || (1..=text.len()).filter(|&i| text.is_char_boundary(i));
    match first {
        Token::Literal(lit) => text
            .strip_prefix(lit)
            .is_some_and(|after| matches_tokens(rest, after)),
        Token::Word => {
            let word_end = text.find('.').unwrap_or(text.len());
            boundaries()
                .take_while(|&i| i <= word_end)
                .any(|i| matches_tokens(rest, &text[i..]))
        }
        Token::Any => {
            matches_tokens(rest, text) || boundaries().any(|i| matches_tokens(rest, &text[i..]))
        }
    }
}

/// Restores `tags` (each only if still in `unacked`), removing them from `consumer_set` if given.
/// Returns the report and the tags that are no longer held (all of them, once it succeeds).
pub fn restore_tags(
    conn: &mut Connector,
    scripts: &Scripts,
    keys: &KeyLayout,
    tags: &[String],
    consumer_set: Option<&str>,
    end: End,
) -> BrokerResult<RestoreReport> {
    let mut report = RestoreReport::default();
    let mut bindings: HashMap<String, Vec<Binding>> = HashMap::new();
    let route = keys.route();
    for chunk in tags.chunks(CHUNK) {
        // Read, then move, in two calls: on a cluster each may be redirected on its own (an
        // `ASK` holds for one command), and the move is a compare-and-set of what was read.
        let moves = conn.run_at(route.as_deref(), COMMAND_TIMEOUT, |c| {
            plan_chunk(c, keys, chunk, &mut bindings)
        })?;
        report += conn.run_at(route.as_deref(), COMMAND_TIMEOUT, |c| {
            move_chunk(c, scripts, keys, &moves, consumer_set, end)
        })?;
    }
    Ok(report)
}

/// One planned move: the tag, the entry it must still have, what to push and where.
struct Move {
    tag: String,
    expected: Vec<u8>,
    payload: Vec<u8>,
    destinations: Vec<String>,
    restores: bool,
}

/// Reads the `unacked` entries of `tags` and plans where each goes.
fn plan_chunk(
    c: &mut Connection,
    keys: &KeyLayout,
    tags: &[String],
    bindings: &mut HashMap<String, Vec<Binding>>,
) -> RedisResult<Vec<Move>> {
    let entries: Vec<Option<Vec<u8>>> = ::redis::cmd("HMGET")
        .arg(keys.unacked())
        .arg(tags)
        .query(c)?;
    let parsed: Vec<Option<Result<Redelivery, String>>> = entries
        .iter()
        .map(|e| e.as_deref().map(redelivery))
        .collect();
    // On a cluster a message goes back to the queue it was claimed from (the one whose slot
    // this is): a binding could name a queue in another slot, which one script cannot reach.
    if keys.scope().is_none() {
        load_bindings(c, keys, &parsed, bindings)?;
    }

    let mut moves = Vec::with_capacity(tags.len());
    for ((tag, entry), parsed) in tags.iter().zip(entries).zip(parsed) {
        let expected = entry.unwrap_or_default();
        let mv = match parsed {
            None => Move {
                tag: tag.clone(),
                expected,
                payload: Vec::new(),
                destinations: Vec::new(),
                restores: false,
            },
            Some(Ok(r)) => {
                let table = bindings.get(&r.exchange).map_or(&[][..], Vec::as_slice);
                let queues = match keys.scope() {
                    Some(queue) => vec![queue.to_owned()],
                    None => route(&r.exchange, &r.routing_key, table),
                };
                if queues.is_empty() {
                    dead_letter(keys, tag, expected)
                } else {
                    Move {
                        tag: tag.clone(),
                        expected,
                        payload: r.envelope,
                        destinations: queues
                            .iter()
                            .map(|q| keys.queue_for_priority(q, r.priority))
                            .collect(),
                        restores: true,
                    }
                }
            }
            Some(Err(_)) => dead_letter(keys, tag, expected),
        };
        moves.push(mv);
    }
    Ok(moves)
}

/// Runs the planned moves (`MOVE_BACK`, a compare-and-set per tag).
fn move_chunk(
    c: &mut Connection,
    scripts: &Scripts,
    keys: &KeyLayout,
    moves: &[Move],
    consumer_set: Option<&str>,
    end: End,
) -> RedisResult<RestoreReport> {
    let mut invocation = scripts.move_back.prepare_invoke();
    invocation.key(keys.unacked()).key(keys.unacked_index());
    if let Some(set) = consumer_set {
        invocation.key(set);
    }
    invocation
        .arg(end.command())
        .arg(if consumer_set.is_some() { "1" } else { "0" });
    for mv in moves {
        for dest in &mv.destinations {
            invocation.key(dest);
        }
        invocation
            .arg(&mv.tag)
            .arg(&mv.expected)
            .arg(&mv.payload)
            .arg(mv.destinations.len());
    }
    let (moved, held): (HashSet<String>, Vec<String>) = invocation.invoke(c)?;
    let mut report = RestoreReport {
        held_back: held
            .chunks_exact(3)
            .map(|h| HeldBack {
                tag: h[0].clone(),
                key: h[1].clone(),
                kind: h[2].clone(),
            })
            .collect(),
        ..RestoreReport::default()
    };
    for mv in moves.iter().filter(|mv| moved.contains(&mv.tag)) {
        if mv.restores {
            report.restored += 1;
        } else {
            report.unrestorable += 1;
        }
    }
    Ok(report)
}

/// An entry with nowhere to go is kept, as it was, in the dead-letter list (kombu drops it).
fn dead_letter(keys: &KeyLayout, tag: &str, entry: Vec<u8>) -> Move {
    Move {
        tag: tag.to_owned(),
        payload: entry.clone(),
        expected: entry,
        destinations: vec![keys.unrestorable()],
        restores: false,
    }
}

/// Reads the binding tables of the exchanges these entries name, in one round trip.
fn load_bindings(
    c: &mut Connection,
    keys: &KeyLayout,
    parsed: &[Option<Result<Redelivery, String>>],
    bindings: &mut HashMap<String, Vec<Binding>>,
) -> RedisResult<()> {
    let mut wanted: Vec<&str> = Vec::new();
    for r in parsed.iter().flatten().flatten() {
        if !r.exchange.is_empty()
            && !bindings.contains_key(&r.exchange)
            && !wanted.contains(&r.exchange.as_str())
        {
            wanted.push(&r.exchange);
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let mut pipe = ::redis::pipe();
    for ex in &wanted {
        pipe.cmd("SMEMBERS").arg(keys.binding(ex));
    }
    let tables: Vec<Vec<Vec<u8>>> = pipe.query(c)?;
    for (ex, members) in wanted.into_iter().zip(tables) {
        let table = members.iter().filter_map(|m| Binding::parse(m)).collect();
        bindings.insert(ex.to_owned(), table);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_marks_both_flags_and_keeps_everything_else() {
        let entry = br#"[{"body": "W10=", "headers": {"id": "x", "stamped_headers": [], "f": 0.12345678901234568}, "properties": {"priority": 7, "delivery_info": {"exchange": "", "routing_key": "celery"}, "delivery_tag": "t1"}}, "", "celery"]"#;
        let r = redelivery(entry).unwrap();
        assert_eq!(r.exchange, "");
        assert_eq!(r.routing_key, "celery");
        assert_eq!(r.priority, 7);
        let env: Json = serde_json::from_slice(&r.envelope).unwrap();
        assert_eq!(env["headers"]["redelivered"], Json::Bool(true));
        assert_eq!(
            env["properties"]["delivery_info"]["redelivered"],
            Json::Bool(true)
        );
        assert_eq!(env["headers"]["stamped_headers"], Json::Array(vec![]));
        let text = String::from_utf8(r.envelope).unwrap();
        // cjson would have written 0.12345678901235.
        assert!(text.contains("0.12345678901234568"), "{text}");
        assert!(
            text.starts_with(r#"{"body":"W10=","headers":{"id":"x""#),
            "{text}"
        );
    }

    #[test]
    fn non_finite_floats_come_back_as_they_went() {
        let entry = br#"[{"body": "W10=", "headers": {"id": "x", "f": NaN, "s": "NaN", "l": [Infinity, -Infinity]}, "properties": {"delivery_info": {"exchange": "", "routing_key": "q"}}}, "", "q"]"#;
        let text = String::from_utf8(redelivery(entry).unwrap().envelope).unwrap();
        assert!(
            text.contains(r#""f":NaN,"s":"NaN","l":[Infinity,-Infinity],"redelivered":true"#),
            "{text}"
        );
    }

    #[test]
    fn priority_is_read_like_python_int() {
        let prio = |p: &str| {
            let entry = format!(r#"[{{"properties": {{"priority": {p}}}}}, "", "q"]"#);
            redelivery(entry.as_bytes()).unwrap().priority
        };
        assert_eq!(prio("3"), 3);
        assert_eq!(prio("42"), 9);
        assert_eq!(prio("-1"), 0);
        assert_eq!(prio("6.9"), 6);
        assert_eq!(prio(r#""5""#), 5);
        assert_eq!(prio("null"), 0);
        assert_eq!(prio(r#""high""#), 0);
    }

    #[test]
    fn unreadable_entries_are_errors() {
        for bad in [&b"nope"[..], b"[1, 2]", b"[1, \"\", \"q\"]"] {
            assert!(redelivery(bad).is_err());
        }
        // A null exchange (kombu writes None) reads as the default exchange.
        let r = redelivery(br#"[{}, null, "q"]"#).unwrap();
        assert_eq!((r.exchange.as_str(), r.routing_key.as_str()), ("", "q"));
    }

    fn bindings(members: &[&str]) -> Vec<Binding> {
        members
            .iter()
            .map(|m| Binding::parse(m.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn default_exchange_routes_to_the_queue_named_by_the_key() {
        assert_eq!(route("", "celery", &[]), ["celery"]);
        assert!(route("", "", &[]).is_empty());
    }

    #[test]
    fn direct_bindings_match_the_key_exactly() {
        let table = bindings(&[
            "celery\x06\x16\x06\x16celery",
            "video\x06\x16\x06\x16media",
            "video\x06\x16\x06\x16archive",
        ]);
        assert_eq!(route("tasks", "video", &table), ["media", "archive"]);
        assert_eq!(route("tasks", "celery", &table), ["celery"]);
        assert!(route("tasks", "audio", &table).is_empty());
    }

    #[test]
    fn topic_bindings_match_like_kombu() {
        let table = bindings(&[
            "image.*\x06\x16^image\\.[^\\.]+$\x06\x16images",
            "#.log\x06\x16^.*?\\.log$\x06\x16logs",
        ]);
        assert_eq!(route("ev", "image.png", &table), ["images"]);
        assert!(route("ev", "image.png.x", &table).is_empty());
        assert_eq!(route("ev", "a.b.log", &table), ["logs"]);
        // kombu's `#.log` is `^.*?\.log$`: the dot before `log` is required.
        assert!(route("ev", "log", &table).is_empty());
    }

    #[test]
    fn topic_wildcards() {
        assert!(topic_matches("a.*", "a.b"));
        assert!(!topic_matches("a.*", "a."));
        assert!(!topic_matches("a.*", "a"));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("a.#", "a."));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("*.é.#", "ü.é.x"));
        assert!(!topic_matches("a.b", "a.c"));
    }
}
