//! Appending to the log.
//!
//! [`Wal::append`] (or [`Wal::write`], given each entry's term and kind) writes a round of entries (the payloads of the writes queued meanwhile, which
//! the caller batches: `crate::replica`'s node loop) with one `write`, and in `fsync` mode
//! one fsync: concurrent writers share it (group commit). The entries get consecutive indices.
//! A segment larger than the configured size is closed and a new one started, named by its
//! first index (file and directory fsynced in `fsync` mode); [`Wal::rotate`] starts one on
//! request (a snapshot's checkpoint).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::wal::recover::segments;
use crate::wal::segment::{file_name, header, push_record, scan};
use crate::wal::{codec, kind, Error, Result, WalMode};

/// Where and how the log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    pub dir: PathBuf,
    pub mode: WalMode,
    /// A segment larger than this is closed and a new one started.
    pub segment_bytes: u64,
}

impl WalConfig {
    /// A log that writes nothing: memory only.
    pub fn in_memory() -> WalConfig {
        WalConfig { dir: PathBuf::new(), mode: WalMode::None, segment_bytes: u64::MAX }
    }
}

/// Counters, readable while the log runs.
#[derive(Debug, Default)]
pub struct WalStats {
    pub records: AtomicU64,
    pub fsyncs: AtomicU64,
    pub bytes: AtomicU64,
    /// The index of the last entry written (0: none yet).
    pub last_index: AtomicU64,
}

/// An entry to log: its index is the position in [`Wal::write`]'s list.
#[derive(Debug, Clone, Copy)]
pub struct Appended<'a> {
    pub term: u64,
    /// One of [`crate::wal::kind`]'s values.
    pub kind: u8,
    pub payload: &'a [u8],
}

/// The log's writer: the open segment and the next index.
pub struct Wal {
    config: WalConfig,
    writer: SegmentWriter,
    term: u64,
    next_index: u64,
    /// An empty entry at `next_index - 1` of this term, not yet on disk: the next record
    /// stands for it too ([`Wal::defer_empty`]).
    deferred_empty: Option<u64>,
    stats: Arc<WalStats>,
}

impl Wal {
    /// Starts a new segment whose first entry will have `next_index`; [`Wal::append`] logs
    /// entries of `term`.
    pub fn open(config: WalConfig, next_index: u64, term: u64) -> Result<Wal> {
        let stats = Arc::new(WalStats::default());
        stats.last_index.store(next_index.saturating_sub(1), Ordering::Relaxed);
        if config.mode != WalMode::None {
            remove_empty_last_segment(&config, next_index)?;
        }
        let writer = SegmentWriter::create(&config, next_index)?;
        Ok(Wal { config, writer, term, next_index, deferred_empty: None, stats })
    }

    /// Logs a round of normal entries of the log's term, one per payload, with one write (and
    /// one fsync); returns the index of the first. After an error what is on disk is not
    /// known: the caller must not append again.
    pub fn append(&mut self, payloads: &[&[u8]]) -> Result<u64> {
        let first = self.next_index;
        let entries: Vec<Appended> =
            payloads.iter().map(|&payload| Appended { term: self.term, kind: kind::NORMAL, payload }).collect();
        self.write(first, &entries, true)?;
        Ok(first)
    }

    /// Logs `entries` at indices `first`, `first + 1`, ... with one write and, in `fsync` mode
    /// and if `sync`, one fsync. `first` must be the next index: to replace entries, cut them
    /// off first ([`Wal::truncate_from`]). After an error what is on disk is not known: the
    /// caller must not write again.
    pub fn write(&mut self, first: u64, entries: &[Appended], sync: bool) -> Result<()> {
        if first != self.next_index {
            let problem =
                format!("entries written from index {first}, but the log's next index is {}", self.next_index);
            return Err(Error::Layout { file: self.config.dir.clone(), problem });
        }
        if entries.is_empty() {
            return Ok(());
        }
        let mut buffer = Vec::with_capacity(entries.iter().map(|e| e.payload.len() + 32).sum::<usize>() + 32);
        let mut empty_before = self.deferred_empty.take();
        if empty_before.is_some_and(|term| term != entries[0].term) {
            // The deferred empty entry has another term than what follows: a record of its own.
            let term = empty_before.take().unwrap_or_default();
            push_record(&mut buffer, &[&codec::stamp(first - 1, term, kind::NORMAL)]);
        }
        for (offset, entry) in entries.iter().enumerate() {
            let flag = if empty_before.take().is_some() { codec::EMPTY_BEFORE } else { 0 };
            let stamp = codec::stamp(first + offset as u64, entry.term, entry.kind | flag);
            push_record(&mut buffer, &[&stamp, entry.payload]);
        }
        let last = first + entries.len() as u64 - 1;
        self.writer.write(&buffer, sync, &self.stats)?;
        if self.writer.len > self.config.segment_bytes {
            self.writer = SegmentWriter::create(&self.config, last + 1)?;
        }
        self.next_index = last + 1;
        self.stats.records.fetch_add(entries.len() as u64, Ordering::Relaxed);
        self.stats.last_index.store(last, Ordering::Relaxed);
        Ok(())
    }

    /// Takes the next index for an empty normal entry of `term` (a new Raft leader's first)
    /// without writing it: the next record logged stands for it too (a flag in its kind), so
    /// that the log of a replica set of one holds one record per write. Until then it is not
    /// on disk: only a replica that is its set's only voter may defer (after a crash it comes
    /// back without the entry, which nobody waited for, and elects itself again).
    pub fn defer_empty(&mut self, term: u64) -> Result<()> {
        if let Some(earlier) = self.deferred_empty.take() {
            // Two in a row, with no write in between: the first becomes a record of its own.
            let mut buffer = Vec::new();
            push_record(&mut buffer, &[&codec::stamp(self.next_index - 1, earlier, kind::NORMAL)]);
            self.writer.write(&buffer, false, &self.stats)?;
            self.stats.records.fetch_add(1, Ordering::Relaxed);
        }
        self.deferred_empty = Some(term);
        self.next_index += 1;
        self.stats.last_index.store(self.next_index - 1, Ordering::Relaxed);
        Ok(())
    }

    /// Cuts the entries from `index` on off the log (a Raft follower replacing entries its
    /// leader does not have; they were never committed). Later segments are deleted newest
    /// first, then the segment holding `index` is cut before it, so that a crash at any point
    /// leaves the log a prefix of what it was; the next entry starts a new segment at `index`.
    pub fn truncate_from(&mut self, index: u64) -> Result<()> {
        if index >= self.next_index {
            return Ok(());
        }
        if index == 0 {
            let problem = "cannot cut the log from index 0".to_owned();
            return Err(Error::Layout { file: self.config.dir.clone(), problem });
        }
        if self.deferred_empty.is_some() && index == self.next_index - 1 {
            // Only the deferred empty entry is cut, and it is on no disk.
            self.deferred_empty = None;
            self.next_index = index;
            self.stats.last_index.store(index - 1, Ordering::Relaxed);
            return Ok(());
        }
        self.deferred_empty = None;
        if self.config.mode != WalMode::None {
            self.writer.file = None;
            let dir = &self.config.dir;
            let segments = segments(dir)?;
            let keep = segments.iter().take_while(|(first, _)| *first < index).count();
            for (_, path) in segments[keep..].iter().rev() {
                std::fs::remove_file(path)
                    .map_err(|e| Error::io(format!("cannot delete log segment {}", path.display()), e))?;
            }
            if keep < segments.len() && self.config.mode == WalMode::Fsync {
                sync_dir(dir)?;
            }
            if let Some((_, path)) = keep.checked_sub(1).map(|last| &segments[last]) {
                let read = scan(path)?;
                if let Some(position) = read.entries.iter().position(|entry| entry.index == index) {
                    cut(path, read.offsets[position], self.config.mode)?;
                }
            }
        }
        self.writer = SegmentWriter::create(&self.config, index)?;
        self.next_index = index;
        self.stats.last_index.store(index - 1, Ordering::Relaxed);
        Ok(())
    }

    /// Closes a segment that holds entries, so that the next entry starts a new one.
    pub fn rotate(&mut self) -> Result<()> {
        if self.writer.entries > 0 {
            // A deferred empty entry goes with the next record, into the new segment.
            let first = self.next_index - u64::from(self.deferred_empty.is_some());
            self.writer = SegmentWriter::create(&self.config, first)?;
        }
        Ok(())
    }

    /// The index of the last entry logged (0: none).
    pub fn last_index(&self) -> u64 {
        self.next_index - 1
    }

    pub fn stats(&self) -> &Arc<WalStats> {
        &self.stats
    }

    pub fn mode(&self) -> WalMode {
        self.config.mode
    }
}

/// Removes a last segment that holds no entry and is named before `next_index`: a rotation
/// started it at an empty entry that was deferred and never written (see [`Wal::defer_empty`]).
/// The log goes on at `next_index`, and a segment in between would leave a gap.
fn remove_empty_last_segment(config: &WalConfig, next_index: u64) -> Result<()> {
    let Some((first, path)) = segments(&config.dir)?.pop() else { return Ok(()) };
    if first >= next_index || !scan(&path).is_ok_and(|read| read.entries.is_empty() && read.torn_at.is_none()) {
        return Ok(());
    }
    std::fs::remove_file(&path).map_err(|e| Error::io(format!("cannot delete log segment {}", path.display()), e))?;
    if config.mode == WalMode::Fsync {
        sync_dir(&config.dir)?;
    }
    Ok(())
}

/// Cuts a segment's file at `offset` (and syncs it in `fsync` mode).
fn cut(path: &Path, offset: u64, mode: WalMode) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("{}: cannot open to cut", path.display()), e))?;
    file.set_len(offset).map_err(|e| Error::io(format!("{}: cannot cut at {offset}", path.display()), e))?;
    if mode == WalMode::Fsync {
        file.sync_all().map_err(|e| Error::io(format!("{}: fsync", path.display()), e))?;
    }
    Ok(())
}

/// The open segment.
struct SegmentWriter {
    file: Option<File>,
    mode: WalMode,
    len: u64,
    /// Whether any record was written to this segment.
    entries: u64,
}

impl SegmentWriter {
    fn create(config: &WalConfig, first_index: u64) -> Result<SegmentWriter> {
        if config.mode == WalMode::None {
            return Ok(SegmentWriter { file: None, mode: config.mode, len: 0, entries: 0 });
        }
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| Error::io(format!("cannot create the log directory {}", config.dir.display()), e))?;
        let path = config.dir.join(file_name(first_index));
        // A segment of this name with no entry in it (rotation creates the next segment before
        // its first record) may be replaced; one with entries never is.
        if path.exists() {
            let holds_entries = scan(&path).map_or(true, |read| !read.entries.is_empty());
            if holds_entries {
                let problem = "exists and holds log entries; refusing to overwrite it".to_owned();
                return Err(Error::Layout { file: path, problem });
            }
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot create log segment {}", path.display()), e))?;
        file.write_all(&header(first_index))
            .map_err(|e| Error::io(format!("{}: cannot write the header", path.display()), e))?;
        if config.mode == WalMode::Fsync {
            // The segment and its directory entry must be on disk before any record in it is
            // acknowledged.
            file.sync_all().map_err(|e| Error::io(format!("{}: fsync", path.display()), e))?;
            sync_dir(&config.dir)?;
        }
        Ok(SegmentWriter { file: Some(file), mode: config.mode, len: header(first_index).len() as u64, entries: 0 })
    }

    fn write(&mut self, buffer: &[u8], sync: bool, stats: &WalStats) -> Result<()> {
        let Some(file) = &mut self.file else { return Ok(()) };
        file.write_all(buffer).map_err(|e| Error::io("cannot append to the log", e))?;
        if sync && self.mode == WalMode::Fsync {
            // The one fsync that every record of this round waits for.
            file.sync_data().map_err(|e| Error::io("cannot fsync the log", e))?;
            stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.len += buffer.len() as u64;
        self.entries += 1;
        stats.bytes.fetch_add(buffer.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Makes a directory's entries (a new or renamed file) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot fsync directory {}", dir.display()), e))
}
