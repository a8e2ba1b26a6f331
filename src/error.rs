//! The one error type of the engine and the API.
//!
//! Every failure a client can cause or see is an [`Error`]: an HTTP status, one of the
//! original product's machine-readable kinds (`BAD_PARAM`, `CONFLICT`, ...), a message for
//! people, and where it applies the parameter (`meta.person_id`, `filter.id.range`, ...) and
//! the value that were wrong. The API layer turns it into the single error body
//! `{"error":{"code","kind","message","param","value"}}`; nothing else builds error bodies.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The machine-readable error codes of the original product's API (its "Common Error Codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorKind {
    /// The request could be read but a parameter is invalid; `param` and `value` say which.
    BadParam,
    /// The request is not JSON, or not JSON of the expected shape.
    MalformedRequest,
    /// The thing to create exists already.
    Conflict,
    /// A face with the given id does not exist (or a path does not exist).
    NotFound,
    /// The named gallery does not exist.
    GalleryNotFound,
    /// A write would pass the memory limit (`--memory-limit`); reads keep working.
    InsufficientStorage,
    /// Face detection or feature extraction failed in the models.
    ExtractionError,
    /// The extraction queue is full; try again later (503).
    OverCapacity,
    /// The face a search names as its sample (`filter.facen.face`) does not exist.
    SourceNotFound,
    /// The gallery a search names for its sample face does not exist.
    SourceGallery,
    /// A feature this server does not have (face attributes: no such models offline).
    NotImplemented,
    /// A storage shard did not answer (down, or slower than the router's timeout); the error
    /// names it (503).
    StorageError,
    /// A shard was sent a request meant for another shard (its cluster record is not the one in
    /// the router's `X-Facedb-Cluster` header, or it has none): it refuses before doing anything
    /// (421). A router answers its client 503 `STORAGE_ERROR` naming the shard.
    WrongShard,
    /// A failure of the server itself.
    UnknownError,
}

/// An error with everything the client needs to fix the request.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct Error {
    /// The HTTP status the error is answered with.
    pub code: u16,
    pub kind: ErrorKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: u16, kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { code, kind, message: message.into(), param: None, value: None }
    }

    /// 400 `BAD_PARAM` naming the parameter.
    pub fn bad_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Error::new(400, ErrorKind::BadParam, message).with_param(param)
    }

    /// 400 `MALFORMED_REQUEST`: the body could not be read as the expected JSON.
    pub fn malformed(message: impl Into<String>) -> Self {
        Error::new(400, ErrorKind::MalformedRequest, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Error::new(409, ErrorKind::Conflict, message)
    }

    pub fn face_not_found(id: u64) -> Self {
        Error::new(404, ErrorKind::NotFound, format!("face {id} not found")).with_param("id").with_value(id)
    }

    pub fn gallery_not_found(name: &str) -> Self {
        Error::new(404, ErrorKind::GalleryNotFound, format!("gallery {name:?} not found"))
            .with_param("name")
            .with_value(name)
    }

    /// 503 `STORAGE_ERROR`: the shard `shard` (its URL or name) failed; `param` is "shard".
    pub fn storage(shard: &str, message: impl std::fmt::Display) -> Self {
        Error::new(503, ErrorKind::StorageError, format!("shard {shard}: {message}"))
            .with_param("shard")
            .with_value(shard)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(500, ErrorKind::UnknownError, message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_value(mut self, value: impl Into<Value>) -> Self {
        self.value = Some(value.into());
        self
    }
}
