//! Snapshots: an image of every gallery at one log index, so that a restart loads one file and
//! replays only the log after it.
//!
//! The engine gives the chunk lists of all galleries at one moment
//! ([`Engine::images`](crate::engine::Engine::images)), when the log is at index `lsn` (cheap: one `Arc` clone per chunk, and chunks are copy-on-write, so none changes under
//! the writer), and hands them to [`write`] on a background thread while the server keeps
//! serving. [`write`] holds no lock.
//!
//! - **Atomic and durable.** The file is written as `{name}.tmp`, fsynced, renamed to its name,
//!   and the directory is fsynced. A crash leaves the previous snapshots as they were, plus at
//!   worst a `.tmp` file that [`list`] ignores and [`remove_temp_files`] deletes. A `.snap` file
//!   is therefore always complete, and once [`write`] returns it survives a power loss.
//! - **Checked.** The file is a header and sections, each with a CRC (`format.rs` has the byte
//!   layout, `docs/storage.md` the diagram). [`read`] checks every byte before it builds
//!   anything and names the file and the byte offset of the bad section.
//! - **Fast to load.** Vectors are raw little-endian f32 in 64-byte aligned sections: [`read`]
//!   maps the file (`memmap2`) and copies each chunk's vectors with one `memcpy`, no parsing.
//!   Inverse norms are stored too, so nothing is recomputed. Metadata columns are stored
//!   compactly (dictionary strings once, codes per row) and their reference counts rebuilt.
//!
//! Files are named by their log index, as 20 digits (`00000000000000000042.snap`), so that
//! sorting the names sorts the snapshots, as with log segments.

mod format;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

use crate::index::gallery_index::IndexOverrides;
use crate::store::chunk::Chunk;
use std::path::{Path, PathBuf};

pub use crate::engine::GalleryImage;
pub use reader::read;
pub use writer::write;

const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// File name of the snapshot at `lsn`.
pub fn file_name(lsn: u64) -> String {
    format!("{lsn:020}{SUFFIX}")
}

/// The log index of a snapshot, from its file name.
pub fn lsn_of(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Snapshots in `dir` as (lsn, path), oldest first. Other files, `*.snap.tmp` leftovers among
/// them, are ignored; a missing directory has none.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut snapshots: Vec<(u64, PathBuf)> =
        file_names(dir)?.into_iter().filter_map(|name| Some((lsn_of(&name)?, dir.join(name)))).collect();
    snapshots.sort();
    Ok(snapshots)
}

/// Removes leftover `*.snap.tmp` files (a crash while writing) and returns how many.
pub fn remove_temp_files(dir: &Path) -> Result<usize, Error> {
    let mut removed = 0;
    for name in file_names(dir)?.into_iter().filter(|name| name.ends_with(TEMP_SUFFIX)) {
        let path = dir.join(name);
        std::fs::remove_file(&path).map_err(|e| Error::file(&path, format!("cannot remove: {e}")))?;
        removed += 1;
    }
    Ok(removed)
}

/// The names of the entries of `dir` that are valid UTF-8; none if it does not exist.
fn file_names(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::file(dir, format!("cannot list: {e}"))),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::file(dir, format!("cannot list: {e}")))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// What can go wrong with a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The file (or directory) cannot be written or read, or what was to be written does not
    /// fit the format.
    #[error("{}: {problem}", file.display())]
    File { file: PathBuf, problem: String },
    /// A section is not what was written: where, and what is wrong.
    #[error("{}: byte {offset}: {problem}", file.display())]
    Corrupt { file: PathBuf, offset: u64, problem: String },
}

impl Error {
    pub fn file(file: &Path, problem: impl Into<String>) -> Error {
        Error::File { file: file.to_owned(), problem: problem.into() }
    }
}

/// A gallery as [`read`] gives it back. Chunks keep their order (and thus every face its chunk
/// and row) and the capacity they had.
#[derive(Debug)]
pub struct LoadedGallery {
    pub name: String,
    pub index: IndexOverrides,
    pub chunks: Vec<Chunk>,
}

/// What a snapshot wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    /// The size of the file.
    pub bytes: u64,
    pub faces: u64,
}

/// A snapshot as [`read`] gives it back.
#[derive(Debug)]
pub struct Loaded {
    /// The log index the snapshot is the state after.
    pub lsn: u64,
    pub term: u64,
    /// The blob given to [`write`].
    pub config: Vec<u8>,
    /// The facen size.
    pub dim: usize,
    /// The galleries, in the order given to [`write`].
    pub galleries: Vec<LoadedGallery>,
}
