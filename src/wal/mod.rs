//! The write-ahead log: entries of bytes, on disk before they are acknowledged.
//!
//! An entry is an `index` (the log sequence number, from 1, without gaps), the Raft `term` it
//! was written in, its `kind` (raft-rs's entry types: normal, or a membership change) and a
//! payload of bytes. What the payload means is the engine's (`crate::engine::op`) or Raft's;
//! this layer only keeps bytes in order, checked.
//!
//! - `codec.rs`: an entry's record payload: index, term and kind, then the bytes.
//! - `segment.rs`: the file format. A log is a directory of segment files named by their first
//!   index; each has a header with a format version, then records `[len][crc32][payload]`.
//!   Reading tells a torn last record (a crash mid-write: truncate it) from corruption
//!   elsewhere (stop, naming the file and the byte offset).
//! - `writer.rs`: appending a round of entries with one `write` and, in `fsync` mode, one
//!   fsync (group commit: the caller, `crate::replica`'s node loop, batches the writes that
//!   queued meanwhile); segments rotate by size.
//!   [`Wal::truncate_from`](writer::Wal::truncate_from) cuts a suffix off (a Raft follower
//!   replacing entries a new leader does not have).
//! - `recover.rs`: reading a whole log back in order (cutting off a torn tail), and deleting
//!   the segments a snapshot made unnecessary.
//! - `state.rs`: a small file of the same format beside the segments, holding the latest of a
//!   value written now and then (Raft's hard state: term, vote, commit).

pub mod codec;
pub mod recover;
pub mod segment;
pub mod state;
pub mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, from 1, without gaps.
    pub index: u64,
    /// The Raft term the entry was written in.
    pub term: u64,
    /// What the entry is: one of [`kind`]'s values.
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// The kinds of entry: raft-rs's `EntryType` values, so that a Raft entry round-trips.
pub mod kind {
    /// A write (an op of `crate::engine::op`), or empty: a new Raft leader's first entry.
    pub const NORMAL: u8 = 0;
    /// A membership change (raft-rs's `ConfChange`).
    pub const CONF_CHANGE: u8 = 1;
    /// A membership change (raft-rs's `ConfChangeV2`).
    pub const CONF_CHANGE_V2: u8 = 2;

    pub fn is_known(kind: u8) -> bool {
        kind <= CONF_CHANGE_V2
    }
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

    pub fn name(self) -> &'static str {
        match self {
            WalMode::None => "none",
            WalMode::Write => "write",
            WalMode::Fsync => "fsync",
        }
    }
}

/// What can go wrong with a log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed; `what` says which, naming the file.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Bytes of a segment are not what was written.
    #[error("{}: byte {offset}: {problem}", file.display())]
    Corrupt { file: PathBuf, offset: u64, problem: String },
    /// The segments do not continue each other, or a file is in the way.
    #[error("{}: {problem}", file.display())]
    Layout { file: PathBuf, problem: String },
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
