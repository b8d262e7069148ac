//! Every way a message can fail to decode or encode, each with a message a user can act on.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CodecError {
    /// The bytes are not valid for the content type they claim.
    #[error("cannot decode {content_type} body: {reason}")]
    Decode {
        content_type: String,
        reason: String,
    },
    /// A value has no representation in the chosen serializer.
    #[error("cannot encode with {serializer}: {reason}")]
    Encode { serializer: String, reason: String },
    /// The content type is known but the app does not accept it (pickle, yaml…).
    #[error("refusing content of type {content_type} ({name}): it is not in accept_content {accepted:?}")]
    ContentDisallowed {
        content_type: String,
        name: String,
        accepted: Vec<String>,
    },
    /// fastq has no codec for this content type at all.
    #[error(
        "unknown content type {0:?}: fastq decodes application/json and application/x-msgpack"
    )]
    UnknownContentType(String),
    /// The envelope or task message is well-formed data but not a valid message.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
}

pub type Result<T> = std::result::Result<T, CodecError>;

impl CodecError {
    pub(crate) fn decode(content_type: &str, reason: impl ToString) -> Self {
        CodecError::Decode {
            content_type: content_type.to_owned(),
            reason: reason.to_string(),
        }
    }
    pub(crate) fn encode(serializer: &str, reason: impl ToString) -> Self {
        CodecError::Encode {
            serializer: serializer.to_owned(),
            reason: reason.to_string(),
        }
    }
    pub fn invalid(reason: impl ToString) -> Self {
        CodecError::InvalidMessage(reason.to_string())
    }
}
