//! The write-ahead log: every write, one record, on disk before it is acknowledged.
//!
//! A write request (gallery add/delete, faces add/update/delete) becomes one [`Entry`] (a
//! batch is one entry: all or nothing). Entries carry a Raft-style `index` (the log sequence
//! number, LSN) and `term`, so that this log can become the replicated log of the Raft issue:
//! one log, not two.
//!
//! - `codec.rs`: entries to bytes and back (serde + bincode 2.0.1, pinned; nothing else in the
//!   crate knows the encoding, so it can be swapped).
//! - `segment.rs`: the file format. A log is a directory of segment files named by their first
//!   index; each has a header with a format version, then records `[len][crc32][payload]`.
//!   Reading tells a torn last record (a crash mid-write: truncate it) from corruption
//!   elsewhere (stop, naming the file and the byte offset).
//! - `writer.rs`: one thread owns the open segment and appends; concurrent writers queue their
//!   entries and share one `fsync` (group commit). Segments rotate by size.
//! - `recover.rs`: reading a whole log back in order (cutting off a torn tail) and replaying it
//!   into an engine.
//!
//! Status: the log is complete and tested on its own; `facedb serve` does not use it yet
//! (recovery, snapshots and the wiring come next, see issue 4).

pub mod codec;
pub mod recover;
pub mod segment;
pub mod writer;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::index::gallery_index::IndexOverrides;
use crate::store::{Face, FaceUpdate};

/// A change to the database, as logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// The schema (as [`Schema::to_yaml`](crate::schema::Schema::to_yaml)) and facen size the
    /// entries after it are written in: the first entry of a new database, and again after an
    /// allowed schema change.
    Configure {
        schema: String,
        facen_size: u64,
    },
    CreateGallery {
        name: String,
    },
    DeleteGallery {
        name: String,
    },
    AddFaces {
        gallery: String,
        faces: Vec<Face>,
    },
    UpdateFaces {
        gallery: String,
        updates: Vec<FaceUpdate>,
    },
    DeleteFaces {
        gallery: String,
        ids: Vec<u64>,
    },
    /// A gallery created with index parameters of its own (one created without is a
    /// `CreateGallery`). Variants are only ever appended: their position is their tag.
    CreateIndexedGallery {
        name: String,
        index: IndexOverrides,
    },
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, from 1, without gaps.
    pub index: u64,
    /// The Raft term the entry was written in (1 on a single node).
    pub term: u64,
    pub op: Op,
}

/// When an append is acknowledged (the original's `wal_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalMode {
    /// Nothing is written: data lives in memory only.
    None,
    /// Written to the file (the page cache) before the reply: survives a process crash, not a
    /// power loss.
    Write,
    /// Written and `fsync`ed before the reply: survives a power loss.
    Fsync,
}

impl WalMode {
    pub fn parse(text: &str) -> Option<WalMode> {
        match text {
            "none" => Some(WalMode::None),
            "write" => Some(WalMode::Write),
            "fsync" => Some(WalMode::Fsync),
            _ => None,
        }
    }
}
