//! A small value kept beside the log and replaced now and then: Raft's hard state (term, vote,
//! commit), written when a term or a vote changes, before any message that depends on it.
//!
//! The file has the segments' format (`segment.rs`): the 24-byte header (first index 0), then
//! records `[len u32][crc32 u32][payload]`, each a whole value; the last whole record is the
//! value. A write appends a record (and fsyncs, in `fsync` mode) so that a crash mid-write
//! leaves the previous value readable (the torn record is cut off at the next open). Past
//! [`REWRITE_BYTES`] the file is rewritten with the value alone: a temporary file, fsync,
//! rename, fsync of the directory.
//!
//! The log's segments hold one record per write; this file keeps the rest of Raft's state out
//! of them, so a replica set of one logs exactly what a single server did.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::wal::segment::{header, push_record, HEADER_LEN, MAGIC, RECORD_HEADER_LEN};
use crate::wal::writer::sync_dir;
use crate::wal::{Error, Result, WalMode};

/// A file larger than this is rewritten with its last value alone.
pub const REWRITE_BYTES: u64 = 64 * 1024;

/// The open state file.
pub struct StateFile {
    path: PathBuf,
    file: Option<File>,
    len: u64,
    mode: WalMode,
}

impl StateFile {
    /// Opens the file at `path`, creating it (and its directory) if need be, and returns it
    /// with the last value written (`None`: none yet). With [`WalMode::None`] nothing is read
    /// or written.
    pub fn open(path: &Path, mode: WalMode) -> Result<(StateFile, Option<Vec<u8>>)> {
        let mut state = StateFile { path: path.to_owned(), file: None, len: 0, mode };
        if mode == WalMode::None {
            return Ok((state, None));
        }
        let value = match std::fs::read(path) {
            Ok(bytes) => state.read(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(format!("{}: cannot read", path.display()), e)),
        };
        match &value {
            Some(value) => state.rewrite(value)?,
            None => state.rewrite_empty()?,
        }
        Ok((state, value))
    }

    /// Writes `value`; it is on disk (in `fsync` mode) when this returns.
    pub fn write(&mut self, value: &[u8]) -> Result<()> {
        let Some(file) = &mut self.file else { return Ok(()) };
        if self.len + (value.len() + RECORD_HEADER_LEN) as u64 > REWRITE_BYTES {
            return self.rewrite(value);
        }
        let mut record = Vec::with_capacity(value.len() + RECORD_HEADER_LEN);
        push_record(&mut record, &[value]);
        file.write_all(&record).map_err(|e| Error::io(format!("{}: cannot write", self.path.display()), e))?;
        if self.mode == WalMode::Fsync {
            file.sync_data().map_err(|e| Error::io(format!("{}: fsync", self.path.display()), e))?;
        }
        self.len += record.len() as u64;
        Ok(())
    }

    /// The last whole value of the file's bytes. A record cut short at the end is a torn write
    /// (the value before it stands); anything else wrong is an error naming the byte.
    fn read(&self, bytes: &[u8]) -> Result<Option<Vec<u8>>> {
        let corrupt = |offset: usize, problem: &str| Error::Corrupt {
            file: self.path.clone(),
            offset: offset as u64,
            problem: problem.into(),
        };
        if bytes.len() < HEADER_LEN {
            // Created, but the header never fully written.
            return Ok(None);
        }
        if bytes[..8] != MAGIC {
            return Err(corrupt(0, "not a facedb state file (bad magic)"));
        }
        let mut value = None;
        let mut at = HEADER_LEN;
        while bytes.len() - at >= RECORD_HEADER_LEN {
            let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
            let len = word(at) as usize;
            let payload = at + RECORD_HEADER_LEN;
            if bytes.len() - payload < len {
                break; // A torn last record.
            }
            if crc32fast::hash(&bytes[payload..payload + len]) != word(at + 4) {
                return Err(corrupt(at, "record checksum mismatch (crc32)"));
            }
            value = Some(bytes[payload..payload + len].to_vec());
            at = payload + len;
        }
        Ok(value)
    }

    /// Replaces the file with one holding `value` alone.
    fn rewrite(&mut self, value: &[u8]) -> Result<()> {
        let mut bytes = header(0).to_vec();
        push_record(&mut bytes, &[value]);
        self.replace(&bytes)
    }

    fn rewrite_empty(&mut self) -> Result<()> {
        self.replace(&header(0))
    }

    fn replace(&mut self, bytes: &[u8]) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let temp = self.path.with_extension("tmp");
        let failed = |what: &str, e| Error::io(format!("{}: cannot {what}", temp.display()), e);
        let mut file =
            OpenOptions::new().write(true).create(true).truncate(true).open(&temp).map_err(|e| failed("create", e))?;
        file.write_all(bytes).map_err(|e| failed("write", e))?;
        if self.mode == WalMode::Fsync {
            file.sync_all().map_err(|e| failed("fsync", e))?;
        }
        std::fs::rename(&temp, &self.path).map_err(|e| failed("rename", e))?;
        if self.mode == WalMode::Fsync {
            sync_dir(dir)?;
        }
        self.file = Some(file);
        self.len = bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir as Dir;

    #[test]
    fn the_last_value_written_is_read_back_also_after_a_torn_write_and_a_rewrite() {
        let dir = Dir::new("wal-state");
        let path = dir.0.join("raft.state");
        let (mut state, value) = StateFile::open(&path, WalMode::Fsync).unwrap();
        assert_eq!(value, None);
        state.write(b"term 1").unwrap();
        state.write(b"term 2").unwrap();
        drop(state);
        let (mut state, value) = StateFile::open(&path, WalMode::Fsync).unwrap();
        assert_eq!(value.as_deref(), Some(&b"term 2"[..]));
        // Reopening rewrote the file with the value alone.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), (HEADER_LEN + RECORD_HEADER_LEN + 6) as u64);
        state.write(b"term 3").unwrap();
        drop(state);
        // A crash in the middle of a write: the value before it stands.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let (mut state, value) = StateFile::open(&path, WalMode::Fsync).unwrap();
        assert_eq!(value.as_deref(), Some(&b"term 2"[..]));
        // Many writes stay within the rewrite size.
        for n in 0..10_000u32 {
            state.write(&n.to_le_bytes()).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= REWRITE_BYTES);
        drop(state);
        assert_eq!(StateFile::open(&path, WalMode::Fsync).unwrap().1, Some(9_999u32.to_le_bytes().to_vec()));
        // Damage inside a whole record is corruption, named by its byte.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_LEN + RECORD_HEADER_LEN] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let error = StateFile::open(&path, WalMode::Fsync).err().unwrap().to_string();
        assert!(error.contains(&format!("byte {HEADER_LEN}")) && error.contains("checksum"), "{error}");
        // Mode none: nothing on disk.
        let none = dir.0.join("none.state");
        let (mut state, _) = StateFile::open(&none, WalMode::None).unwrap();
        state.write(b"x").unwrap();
        assert!(!none.exists());
    }
}
