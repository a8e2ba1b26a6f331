//! The data of a shard: galleries of faces, in copy-on-write chunks of columns.
//!
//! - [`chunk`]: a few thousand faces: ids, vectors, inverse norms and one column per field.
//! - [`column`]: a metadata field's values in a chunk (dictionary-coded strings, sets).
//! - [`gallery`]: the chunks of one gallery, the id map, and the changes a write makes.
//!
//! This layer holds data and changes it as told; it decides nothing. What may change, and in
//! which order, is the engine's (`crate::engine`): it checks every write and applies the log.

macro_rules! malformed {
    ($($arg:tt)*) => {
        $crate::store::Malformed(format!($($arg)*))
    };
}

pub mod chunk;
pub mod column;
pub mod gallery;

pub use chunk::Face;
pub use gallery::{FaceUpdate, Gallery, Snapshot};

/// Stored data that does not fit together: a chunk against the schema or the facen size, a
/// column's codes against its dictionary, an id stored twice. What a snapshot reader reports
/// as corruption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);
