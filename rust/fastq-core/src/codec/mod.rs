//! Serializers chosen by content type, and the accept rules that guard them.

pub mod json;
pub mod msgpack;

use crate::error::{CodecError, Result};
use crate::value::Value;

pub const JSON: &str = "application/json";
pub const MSGPACK: &str = "application/x-msgpack";
pub const PICKLE: &str = "application/x-python-serialize";
pub const YAML: &str = "application/x-yaml";
/// Raw payloads kombu always trusts: bytes and text.
pub const RAW_BYTES: &str = "application/data";
pub const RAW_TEXT: &str = "application/text";
pub const TEXT_PLAIN: &str = "text/plain";

/// The deepest nesting of lists and maps (kombu markers included) fastq writes and reads: what
/// serde_json's recursion limit allows, far beyond any real task message.
pub const MAX_DEPTH: usize = 127;

/// A serializer fastq runs natively in Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serializer {
    Json,
    Msgpack,
}

impl Serializer {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "json" | JSON => Some(Serializer::Json),
            "msgpack" | MSGPACK => Some(Serializer::Msgpack),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Serializer::Json => "json",
            Serializer::Msgpack => "msgpack",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Serializer::Json => JSON,
            Serializer::Msgpack => MSGPACK,
        }
    }

    pub fn content_encoding(self) -> &'static str {
        match self {
            Serializer::Json => "utf-8",
            Serializer::Msgpack => "binary",
        }
    }

    pub fn encode(self, value: &Value) -> Result<Vec<u8>> {
        match self {
            Serializer::Json => json::encode(value),
            Serializer::Msgpack => msgpack::encode(value),
        }
    }

    pub fn decode(self, data: &[u8]) -> Result<Value> {
        match self {
            Serializer::Json => json::decode(data),
            Serializer::Msgpack => msgpack::decode(data),
        }
    }
}

/// Maps a serializer name (as in `accept_content`) or MIME type to its MIME type.
pub fn mime_of(name_or_mime: &str) -> Option<&'static str> {
    Some(match normalize(name_or_mime).as_ref() {
        "json" | JSON => JSON,
        "msgpack" | MSGPACK => MSGPACK,
        "pickle" | PICKLE => PICKLE,
        "yaml" | YAML => YAML,
        "raw" | RAW_BYTES => RAW_BYTES,
        RAW_TEXT => RAW_TEXT,
        TEXT_PLAIN => TEXT_PLAIN,
        _ => return None,
    })
}

/// The MIME type without parameters, lower-cased; borrowed when it already is (every message).
fn normalize(content_type: &str) -> std::borrow::Cow<'_, str> {
    let base = content_type.split(';').next().unwrap_or("").trim();
    if base.bytes().any(|b| b.is_ascii_uppercase()) {
        base.to_ascii_lowercase().into()
    } else {
        base.into()
    }
}

fn name_of(mime: &str) -> &'static str {
    match mime {
        JSON => "json",
        MSGPACK => "msgpack",
        PICKLE => "pickle",
        YAML => "yaml",
        _ => "raw",
    }
}

/// The content types a consumer agrees to decode (`accept_content`).
#[derive(Debug, Clone)]
pub struct Accept {
    mimes: Vec<&'static str>,
    names: Vec<String>,
}

impl Accept {
    /// Builds the accept list from names or MIME types; an unknown entry is an error naming it.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<Self> {
        let mut mimes = Vec::with_capacity(entries.len());
        for entry in entries {
            let mime = mime_of(entry.as_ref()).ok_or_else(|| {
                CodecError::invalid(format!(
                    "accept_content entry {:?} is not a known serializer (json, msgpack, pickle, yaml) or MIME type",
                    entry.as_ref()
                ))
            })?;
            mimes.push(mime);
        }
        Ok(Accept {
            mimes,
            names: entries.iter().map(|e| e.as_ref().to_owned()).collect(),
        })
    }

    pub fn json_only() -> Self {
        Accept {
            mimes: vec![JSON],
            names: vec!["json".into()],
        }
    }

    /// Checks a content type against the list; raw bytes and text are always trusted, as in kombu.
    pub fn check(&self, content_type: &str) -> Result<&'static str> {
        let ct = normalize(content_type);
        let mime =
            mime_of(&ct).ok_or_else(|| CodecError::UnknownContentType(content_type.into()))?;
        if mime == RAW_BYTES || mime == RAW_TEXT || self.mimes.contains(&mime) {
            Ok(mime)
        } else {
            Err(CodecError::ContentDisallowed {
                content_type: content_type.into(),
                name: name_of(mime).into(),
                accepted: self.names.clone(),
            })
        }
    }
}

/// What decoding an accepted body produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Value(Value),
    /// An accepted format fastq does not decode in Rust (pickle, yaml): the caller decodes it.
    Foreign {
        content_type: &'static str,
    },
}

/// Decodes `data` of `content_type` if `accept` allows it.
pub fn decode_accepted(content_type: &str, data: &[u8], accept: &Accept) -> Result<Decoded> {
    let mime = accept.check(content_type)?;
    Ok(match mime {
        JSON => Decoded::Value(json::decode(data)?),
        MSGPACK => Decoded::Value(msgpack::decode(data)?),
        RAW_BYTES => Decoded::Value(Value::Bytes(data.to_vec())),
        RAW_TEXT | TEXT_PLAIN => Decoded::Value(Value::Str(
            String::from_utf8(data.to_vec()).map_err(|e| CodecError::decode(mime, e))?,
        )),
        other => Decoded::Foreign {
            content_type: other,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_refuses_pickle_by_default() {
        let accept = Accept::json_only();
        let err = accept.check(PICKLE).unwrap_err();
        assert!(matches!(err, CodecError::ContentDisallowed { .. }));
        assert!(err.to_string().contains("pickle"));
    }

    #[test]
    fn accept_takes_names_and_mimes() {
        let accept = Accept::new(&["json", MSGPACK]).unwrap();
        assert_eq!(
            accept.check("application/json; charset=utf-8").unwrap(),
            JSON
        );
        assert_eq!(accept.check(MSGPACK).unwrap(), MSGPACK);
        assert_eq!(accept.check(RAW_BYTES).unwrap(), RAW_BYTES);
        assert!(Accept::new(&["jsn"]).is_err());
    }

    #[test]
    fn unknown_content_type_is_named() {
        let err = Accept::json_only().check("application/bogus").unwrap_err();
        assert_eq!(
            err,
            CodecError::UnknownContentType("application/bogus".into())
        );
    }

    #[test]
    fn pickle_accepted_is_left_to_the_caller() {
        let accept = Accept::new(&["json", "pickle"]).unwrap();
        let decoded = decode_accepted(PICKLE, b"\x80\x04N.", &accept).unwrap();
        assert_eq!(
            decoded,
            Decoded::Foreign {
                content_type: PICKLE
            }
        );
    }
}
