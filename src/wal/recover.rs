//! Reading a whole log back at start, and replaying it into an engine.
//!
//! [`read_log`] scans the segments in index order and checks that they continue each other.
//! A torn last record in the **last** segment (a crash mid-write) is cut off the file, with a
//! log line; a torn record anywhere else, or any corruption, stops the start with an error
//! naming the file and the byte offset. (`--force-recovery`, which skips bad records, comes
//! with the wiring.)

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::store::Engine;
use crate::wal::segment::{first_index_of, scan};
use crate::wal::{Entry, Op};

/// What a log directory holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub entries: Vec<Entry>,
    /// The index the next entry will get.
    pub next_index: u64,
    /// The segment and offset a torn tail was cut at, if one was.
    pub truncated: Option<(PathBuf, u64)>,
}

/// The segments of a log directory, in index order.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, String> {
    let mut found = Vec::new();
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(format!("cannot list the log directory {}: {e}", dir.display())),
    };
    for item in listing {
        let item = item.map_err(|e| format!("cannot list the log directory {}: {e}", dir.display()))?;
        let name = item.file_name();
        if let Some(first) = name.to_str().and_then(first_index_of) {
            found.push((first, item.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads every entry of the log in `dir`; an empty or missing directory is an empty log whose
/// next index is `first_index`.
pub fn read_log(dir: &Path, first_index: u64) -> Result<Log, String> {
    let segments = segments(dir)?;
    let mut log = Log { entries: Vec::new(), next_index: first_index, truncated: None };
    let count = segments.len();
    for (position, (first, path)) in segments.into_iter().enumerate() {
        let read = scan(&path)?;
        if read.first_index != first {
            return Err(format!("{}: header says first index {}, the name {first}", path.display(), read.first_index));
        }
        if !log.entries.is_empty() && first != log.next_index {
            return Err(format!(
                "{}: starts at index {first}, but the log before it ends at {}",
                path.display(),
                log.next_index - 1
            ));
        }
        if let Some(offset) = read.torn_at {
            if position + 1 != count {
                return Err(format!(
                    "{}: byte {offset}: record cut short in a segment that is not the last",
                    path.display()
                ));
            }
            truncate(&path, offset)?;
            tracing::warn!(file = %path.display(), offset, "write-ahead log: cut off a torn last record (a crash while it was written; it was never acknowledged)");
            log.truncated = Some((path.clone(), offset));
        }
        log.next_index = first + read.entries.len() as u64;
        log.entries.extend(read.entries);
    }
    Ok(log)
}

fn truncate(path: &Path, offset: u64) -> Result<(), String> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: cannot open to truncate: {e}", path.display()))?;
    file.set_len(offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: cannot truncate to {offset}: {e}", path.display()))
}

/// Applies logged operations to an engine, in order.
pub fn replay(engine: &Engine, entries: &[Entry]) -> Result<(), String> {
    for entry in entries {
        apply(engine, &entry.op).map_err(|e| format!("log entry {}: cannot replay: {}", entry.index, e.message))?;
    }
    Ok(())
}

fn apply(engine: &Engine, op: &Op) -> Result<(), Error> {
    match op {
        Op::CreateGallery { name } => engine.create_gallery(name),
        Op::DeleteGallery { name } => engine.delete_gallery(name),
        Op::AddFaces { gallery, faces } => engine.add_faces(gallery, faces),
        Op::UpdateFaces { gallery, updates } => engine.update_faces(gallery, updates).map(drop),
        Op::DeleteFaces { gallery, ids } => engine.delete_faces(gallery, ids),
    }
}
