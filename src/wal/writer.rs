//! Appending to the log.
//!
//! [`Wal::append`] writes a round of entries (the payloads of the writes queued meanwhile, which
//! the caller batches: `crate::durable`'s commit loop) with one `write`, and in `fsync` mode
//! one fsync: concurrent writers share it (group commit). The entries get consecutive indices.
//! A segment larger than the configured size is closed and a new one started, named by its
//! first index (file and directory fsynced in `fsync` mode); [`Wal::rotate`] starts one on
//! request (a snapshot's checkpoint).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::wal::segment::{file_name, header, push_record, scan};
use crate::wal::{codec, Error, Result, WalMode};

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

/// The log's writer: the open segment and the next index.
pub struct Wal {
    config: WalConfig,
    writer: SegmentWriter,
    term: u64,
    next_index: u64,
    stats: Arc<WalStats>,
}

impl Wal {
    /// Starts a new segment whose first entry will have `next_index`, in `term`.
    pub fn open(config: WalConfig, next_index: u64, term: u64) -> Result<Wal> {
        let stats = Arc::new(WalStats::default());
        stats.last_index.store(next_index.saturating_sub(1), Ordering::Relaxed);
        let writer = SegmentWriter::create(&config, next_index)?;
        Ok(Wal { config, writer, term, next_index, stats })
    }

    /// Logs a round of entries, one per payload, with one write (and one fsync); returns the
    /// index of the first. After an error what is on disk is not known: the caller must not
    /// append again.
    pub fn append(&mut self, payloads: &[&[u8]]) -> Result<u64> {
        let first = self.next_index;
        if payloads.is_empty() {
            return Ok(first);
        }
        let mut buffer = Vec::with_capacity(payloads.iter().map(|p| p.len() + 24).sum());
        for (offset, payload) in payloads.iter().enumerate() {
            push_record(&mut buffer, &[&codec::stamp(first + offset as u64, self.term), payload]);
        }
        let last = first + payloads.len() as u64 - 1;
        self.writer.write(&buffer, &self.stats)?;
        if self.writer.len > self.config.segment_bytes {
            self.writer = SegmentWriter::create(&self.config, last + 1)?;
        }
        self.next_index = last + 1;
        self.stats.records.fetch_add(payloads.len() as u64, Ordering::Relaxed);
        self.stats.last_index.store(last, Ordering::Relaxed);
        Ok(first)
    }

    /// Closes a segment that holds entries, so that the next entry starts a new one.
    pub fn rotate(&mut self) -> Result<()> {
        if self.writer.entries > 0 {
            self.writer = SegmentWriter::create(&self.config, self.next_index)?;
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

    fn write(&mut self, buffer: &[u8], stats: &WalStats) -> Result<()> {
        let Some(file) = &mut self.file else { return Ok(()) };
        file.write_all(buffer).map_err(|e| Error::io("cannot append to the log", e))?;
        if self.mode == WalMode::Fsync {
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
