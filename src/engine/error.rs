//! What the engine refuses, and why.
//!
//! Every refusal is deterministic: the same operation on the same state is refused the same
//! way, on a leader, on a follower and at recovery. The engine does no I/O, so it has no I/O
//! faults; those belong to the log (`crate::wal::Error`) and the database (`crate::durable`).
//! The API turns an [`Error`] into its HTTP answer in one place (`api/errors.rs`).

use serde_json::Value as Json;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("gallery {0:?} not found")]
    GalleryNotFound(String),
    #[error("gallery already exists")]
    GalleryExists(String),
    #[error("face {0} not found")]
    FaceNotFound(u64),
    #[error("face {0} already exists")]
    FaceExists(u64),
    /// The same id twice in one batch of adds.
    #[error("face {0} appears twice in the request")]
    FaceTwice(u64),
    /// A value that does not fit: `param` names it (`name`, `facen`, `meta.cam`, `id`), `value`
    /// is what was given (or the face it belongs to).
    #[error("{message}")]
    Invalid { param: String, message: String, value: Json },
    /// An add that would take the faces past `--memory-limit` (`limit` bytes).
    #[error("{message}")]
    MemoryLimit { message: String, limit: u64 },
    /// A logged operation that cannot apply to the state it is applied to: a log that does not
    /// belong to this state (recovery), or one that changes what cannot change.
    #[error("{0}")]
    Unfit(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>, value: impl Into<Json>) -> Error {
        Error::Invalid { param: param.into(), message: message.into(), value: value.into() }
    }
}
