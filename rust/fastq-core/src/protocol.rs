//! Celery task message protocol v2 (and v1, read into the v2 model).
//!
//! A v2 message is headers (the task's metadata) plus the body `[args, kwargs, embed]`; a v1
//! message has empty headers and everything in one body dict.

use crate::codec::{json, msgpack, Serializer};
use crate::compression;
use crate::error::{CodecError, Result};
use crate::value::Value;

/// Every header a Celery 5.x client sends, in its order; missing ones are filled with defaults.
pub const V2_HEADERS: [&str; 19] = [
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
];

pub const EMBED_KEYS: [&str; 4] = ["callbacks", "errbacks", "chain", "chord"];

type Entries = Vec<(Value, Value)>;

#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// v2 headers with every key of `V2_HEADERS` present, plus any extra ones the sender added.
    pub headers: Entries,
    pub args: Vec<Value>,
    pub kwargs: Entries,
    /// `callbacks`, `errbacks`, `chain`, `chord`, each a value or null.
    pub embed: Entries,
    /// 2, or 1 when the message arrived in the old format.
    pub protocol: u8,
}

impl TaskMessage {
    /// Builds the model from message headers and a decoded body, detecting v1 by a missing `task`
    /// header as Celery does.
    pub fn parse(headers: Value, body: Value) -> Result<Self> {
        let headers = into_entries(headers, "message headers")?;
        if lookup(&headers, "task").is_some() {
            Self::parse_v2(headers, body)
        } else if matches!(body, Value::List(_)) {
            // A protocol 1 body is a mapping; a list is a v2 body that lost its headers.
            Err(CodecError::invalid(
                "the `task` header is missing: a protocol 2 body [args, kwargs, embed] \
                 needs `task` and `id` headers",
            ))
        } else {
            Self::parse_v1(headers, body)
        }
    }

    /// Builds a v2 message from caller-supplied headers, checking and completing them.
    pub fn new(headers: Value, args: Value, kwargs: Value, embed: Value) -> Result<Self> {
        let headers = complete_headers(into_entries(headers, "headers")?)?;
        Ok(TaskMessage {
            headers,
            args: into_args(args)?,
            kwargs: into_kwargs(kwargs)?,
            embed: complete_embed(embed)?,
            protocol: 2,
        })
    }

    fn parse_v2(headers: Entries, body: Value) -> Result<Self> {
        let Value::List(mut parts) = body else {
            return Err(CodecError::invalid(format!(
                "a protocol 2 body must be the list [args, kwargs, embed], got a {}",
                body.type_name()
            )));
        };
        if !(2..=3).contains(&parts.len()) {
            return Err(CodecError::invalid(format!(
                "a protocol 2 body must be [args, kwargs, embed], got a list of {} items",
                parts.len()
            )));
        }
        let embed = if parts.len() == 3 {
            parts.pop().unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        let kwargs = parts.pop().unwrap_or(Value::Null);
        let args = parts.pop().unwrap_or(Value::Null);
        Ok(TaskMessage {
            headers: complete_headers(headers)?,
            args: into_args(args)?,
            kwargs: into_kwargs(kwargs)?,
            embed: complete_embed(embed)?,
            protocol: 2,
        })
    }

    fn parse_v1(extra_headers: Entries, body: Value) -> Result<Self> {
        let body = into_entries(body, "a protocol 1 body")?;
        let field = |k: &str| lookup(&body, k).cloned().unwrap_or(Value::Null);
        let or = |k: &str, default: Value| match lookup(&body, k) {
            Some(v) if !v.is_null() => v.clone(),
            _ => default,
        };
        if lookup(&body, "task").is_none() {
            return Err(CodecError::invalid(
                "no `task` header (protocol 2) and no `task` field in the body (protocol 1)",
            ));
        }
        let group = match lookup(&body, "group") {
            Some(v) if !v.is_null() => v.clone(),
            _ => field("taskset"),
        };
        let mut headers: Entries = vec![
            ("lang".into(), or("lang", "py".into())),
            ("task".into(), field("task")),
            ("id".into(), field("id")),
            ("shadow".into(), field("shadow")),
            ("eta".into(), field("eta")),
            ("expires".into(), field("expires")),
            ("group".into(), group),
            ("group_index".into(), field("group_index")),
            ("retries".into(), or("retries", Value::Int(0))),
            (
                "timelimit".into(),
                or("timelimit", Value::List(vec![Value::Null, Value::Null])),
            ),
            ("root_id".into(), field("root_id")),
            ("parent_id".into(), field("parent_id")),
            ("argsrepr".into(), field("argsrepr")),
            ("kwargsrepr".into(), field("kwargsrepr")),
            ("origin".into(), field("origin")),
        ];
        for (k, v) in extra_headers {
            set(&mut headers, k, v);
        }
        let embed = Value::map_from([
            ("callbacks", field("callbacks")),
            ("errbacks", field("errbacks")),
            ("chain", Value::Null),
            ("chord", field("chord")),
        ]);
        Ok(TaskMessage {
            headers: complete_headers(headers)?,
            args: into_args(or("args", Value::List(vec![])))?,
            kwargs: into_kwargs(or("kwargs", Value::Map(vec![])))?,
            embed: complete_embed(embed)?,
            protocol: 1,
        })
    }

    pub fn task(&self) -> &str {
        lookup(&self.headers, "task")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn id(&self) -> &str {
        lookup(&self.headers, "id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn header(&self, key: &str) -> Option<&Value> {
        lookup(&self.headers, key)
    }

    /// The body as it goes on the wire: serialized, then compressed when the `compression`
    /// header names a method (kombu's order).
    pub fn encode_body(&self, serializer: Serializer) -> Result<Vec<u8>> {
        let body = self.serialize_body(serializer)?;
        match compression::named_by(self.header(compression::HEADER))? {
            Some(method) => method.compress(&body),
            None => Ok(body),
        }
    }

    /// Serializes the v2 body `[args, kwargs, embed]` without copying it into one `Value`.
    pub fn serialize_body(&self, serializer: Serializer) -> Result<Vec<u8>> {
        match serializer {
            Serializer::Json => {
                let mut out = Vec::with_capacity(512);
                json::write_task_body(&mut out, &self.args, &self.kwargs, &self.embed)?;
                Ok(out)
            }
            Serializer::Msgpack => msgpack::encode_task_body(&self.args, &self.kwargs, &self.embed),
        }
    }

    /// The v2 body `[args, kwargs, embed]`.
    pub fn body(&self) -> Value {
        Value::List(vec![
            Value::List(self.args.clone()),
            Value::Map(self.kwargs.clone()),
            Value::Map(self.embed.clone()),
        ])
    }

    pub fn into_parts(self) -> (Entries, Vec<Value>, Entries, Entries) {
        (self.headers, self.args, self.kwargs, self.embed)
    }
}

/// Checks the required headers and fills every missing v2 header with Celery's default.
pub fn complete_headers(mut headers: Entries) -> Result<Entries> {
    let task = lookup(&headers, "task");
    match task {
        Some(Value::Str(s)) if !s.is_empty() => {}
        Some(other) => {
            return Err(CodecError::invalid(format!(
                "the `task` header must be a non-empty task name, got {}",
                describe(other)
            )))
        }
        None => return Err(CodecError::invalid("the `task` header is missing")),
    }
    let id = match lookup(&headers, "id") {
        Some(Value::Str(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(CodecError::invalid(format!(
                "the `id` header must be a non-empty task id string, got {}",
                describe(other)
            )))
        }
        None => return Err(CodecError::invalid("the `id` header is missing")),
    };
    if let Some(retries) = lookup(&headers, "retries") {
        if !retries.is_null() && retries.as_i64().is_none() {
            return Err(CodecError::invalid(format!(
                "the `retries` header must be an integer, got {}",
                describe(retries)
            )));
        }
    }
    // One pass marks the headers present (lookups per key cost more than the rest of encoding).
    let mut present = [false; V2_HEADERS.len()];
    for (key, _) in &headers {
        if let Some(i) = key
            .as_str()
            .and_then(|k| V2_HEADERS.iter().position(|h| *h == k))
        {
            present[i] = true;
        }
    }
    headers.reserve(present.iter().filter(|p| !**p).count());
    for (&key, _) in V2_HEADERS.iter().zip(present).filter(|(_, p)| !p) {
        let default = match key {
            "lang" => "py".into(),
            "retries" | "replaced_task_nesting" => Value::Int(0),
            "timelimit" => Value::List(vec![Value::Null, Value::Null]),
            "root_id" => Value::Str(id.clone()),
            "stamps" => Value::Map(vec![]),
            _ => Value::Null,
        };
        headers.push((Value::from(key), default));
    }
    Ok(headers)
}

fn complete_embed(embed: Value) -> Result<Entries> {
    let mut entries = match embed {
        Value::Null => Vec::new(),
        Value::Map(entries) => entries,
        other => {
            return Err(CodecError::invalid(format!(
                "the body's third item (embed) must be a mapping, got {}",
                describe(&other)
            )))
        }
    };
    for key in EMBED_KEYS {
        match lookup(&entries, key) {
            None => entries.push((key.into(), Value::Null)),
            Some(value) => check_embedded(key, value)?,
        }
    }
    Ok(entries)
}

/// `callbacks`, `errbacks` and `chain` are lists of signatures, `chord` one signature; the worker
/// would fail on anything else only after running the task.
fn check_embedded(key: &str, value: &Value) -> Result<()> {
    match (key, value) {
        (_, Value::Null) | ("chord", Value::Map(_)) => Ok(()),
        ("chord", other) => Err(CodecError::invalid(format!(
            "embed `chord` must be a signature mapping or null, got {}",
            describe(other)
        ))),
        (_, Value::List(signatures)) => {
            match signatures.iter().find(|s| !matches!(s, Value::Map(_))) {
                None => Ok(()),
                Some(other) => Err(CodecError::invalid(format!(
                    "embed `{key}` must hold signature mappings, got {}",
                    describe(other)
                ))),
            }
        }
        (_, other) => Err(CodecError::invalid(format!(
            "embed `{key}` must be a list of signatures or null, got {}",
            describe(other)
        ))),
    }
}

fn into_args(args: Value) -> Result<Vec<Value>> {
    match args {
        Value::List(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(CodecError::invalid(format!(
            "task args must be a list, got {}",
            describe(&other)
        ))),
    }
}

fn into_kwargs(kwargs: Value) -> Result<Entries> {
    match kwargs {
        Value::Map(entries) => {
            if let Some((k, _)) = entries.iter().find(|(k, _)| k.as_str().is_none()) {
                return Err(CodecError::invalid(format!(
                    "task kwargs keys must be strings, got {}",
                    describe(k)
                )));
            }
            Ok(entries)
        }
        Value::Null => Ok(Vec::new()),
        other => Err(CodecError::invalid(format!(
            "task kwargs must be a mapping, got {}",
            describe(&other)
        ))),
    }
}

fn into_entries(v: Value, what: &str) -> Result<Entries> {
    match v {
        Value::Map(entries) => Ok(entries),
        Value::Null => Ok(Vec::new()),
        other => Err(CodecError::invalid(format!(
            "{what} must be a mapping, got {}",
            describe(&other)
        ))),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Str(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::Int(i) => format!("the number {i}"),
        other => format!("a {}", other.type_name()),
    }
}

pub(crate) fn lookup<'a>(entries: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    entries
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn set(entries: &mut Entries, key: Value, value: Value) {
    match entries.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => entries.push((key, value)),
    }
}

/// `proj.add(2, 3)` with the id `id`, fresh from `TaskMessage::new`: what unit tests start from.
#[cfg(test)]
pub(crate) fn sample_message(id: &str) -> TaskMessage {
    TaskMessage::new(
        Value::map_from([("task", "proj.add".into()), ("id", id.into())]),
        Value::List(vec![Value::Int(2), Value::Int(3)]),
        Value::Null,
        Value::Null,
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::json;

    #[test]
    fn v2_headers_are_completed_with_celery_defaults() {
        let msg = sample_message("abc");
        assert_eq!(msg.headers.len(), V2_HEADERS.len());
        assert_eq!(msg.header("root_id"), Some(&Value::from("abc")));
        assert_eq!(msg.header("retries"), Some(&Value::Int(0)));
        assert_eq!(msg.embed.len(), 4);
        let body = json::encode(&msg.body()).unwrap();
        assert_eq!(
            body,
            br#"[[2,3],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]"#
        );
    }

    #[test]
    fn v2_parse_checks_shapes() {
        let h = Value::map_from([("task", "t".into()), ("id", "i".into())]);
        let bad_bodies = [
            r#"{"a":1}"#,
            r#"[[], {}]"#.replace("{}", "[]").leak(),
            r#"["x", {}, {}]"#,
            r#"[[], {}, 3]"#,
            r#"[[], {}, {}, {}]"#,
        ];
        for body in bad_bodies {
            let err = TaskMessage::parse(h.clone(), json::decode(body.as_bytes()).unwrap());
            assert!(err.is_err(), "{body}");
        }
        let ok = TaskMessage::parse(h, json::decode(br#"[[1], {"k": 2}]"#).unwrap()).unwrap();
        assert_eq!(ok.args, vec![Value::Int(1)]);
    }

    #[test]
    fn bad_ids_are_named() {
        let h = Value::map_from([("task", "t".into()), ("id", Value::Int(5))]);
        let err = TaskMessage::parse(h, json::decode(b"[[],{},{}]").unwrap()).unwrap_err();
        assert!(err.to_string().contains("`id`"), "{err}");
    }

    #[test]
    fn v1_body_becomes_v2() {
        let body = json::decode(
            br#"{"task":"proj.add","id":"u1","args":[1,2],"kwargs":{},"retries":1,
                 "eta":null,"taskset":"g1","callbacks":[{"task":"cb"}],"utc":true}"#,
        )
        .unwrap();
        let msg = TaskMessage::parse(Value::Map(vec![]), body).unwrap();
        assert_eq!(msg.protocol, 1);
        assert_eq!(msg.task(), "proj.add");
        assert_eq!(msg.id(), "u1");
        assert_eq!(msg.header("group"), Some(&Value::from("g1")));
        assert_eq!(msg.header("retries"), Some(&Value::Int(1)));
        assert_eq!(msg.args, vec![Value::Int(1), Value::Int(2)]);
        assert!(lookup(&msg.embed, "callbacks").is_some_and(|v| !v.is_null()));
    }

    #[test]
    fn embedded_signatures_are_checked() {
        let h = Value::map_from([("task", "t".into()), ("id", "i".into())]);
        for (embed, needle) in [
            (r#"{"callbacks": 5}"#, "`callbacks` must be a list"),
            (r#"{"chain": [1]}"#, "`chain` must hold signature mappings"),
            (r#"{"chord": []}"#, "`chord` must be a signature mapping"),
        ] {
            let body = format!("[[], {{}}, {embed}]");
            let err = TaskMessage::parse(h.clone(), json::decode(body.as_bytes()).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
        let ok = json::decode(br#"[[], {}, {"chain": [{"task": "b"}], "chord": {"task": "c"}}]"#);
        assert!(TaskMessage::parse(h, ok.unwrap()).is_ok());
    }

    #[test]
    fn a_v2_body_without_task_header_names_the_header() {
        let err = TaskMessage::parse(Value::Null, json::decode(b"[[],{},{}]").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`task` header is missing"), "{err}");
    }

    #[test]
    fn encode_body_matches_body() {
        let msg = TaskMessage::new(
            Value::map_from([("task", "t".into()), ("id", "i".into())]),
            Value::List(vec![Value::Bytes(vec![0xff]), Value::Float(0.5)]),
            Value::map_from([("k", Value::Null)]),
            Value::Null,
        )
        .unwrap();
        for ser in [Serializer::Json, Serializer::Msgpack] {
            let bytes = msg.encode_body(ser).unwrap();
            assert_eq!(ser.decode(&bytes).unwrap(), msg.body());
        }
    }

    #[test]
    fn v1_without_task_is_invalid() {
        let err =
            TaskMessage::parse(Value::Null, json::decode(br#"{"id":"x"}"#).unwrap()).unwrap_err();
        assert!(err.to_string().contains("task"));
    }
}
