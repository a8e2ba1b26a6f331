//! Appending to the log, with group commit.
//!
//! One thread owns the open segment. [`Wal::append`] hands an operation to it and waits for the
//! reply. The thread takes every operation queued at that moment, gives them consecutive
//! indices, writes their records with one `write`, and in `fsync` mode syncs the file once
//! before replying to all of them: concurrent writers share one fsync. While it syncs, new
//! operations queue up for the next round. A segment larger than the configured size is closed
//! and a new one started, named by its first index (file and directory fsynced in `fsync` mode).
//!
//! After an I/O error the log refuses every later append: what is on disk is no longer known,
//! and acknowledging writes on top of it could lose them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crate::wal::segment::{file_name, header, push_record, scan};
use crate::wal::{codec, Entry, Op, WalMode};

/// Where and how the log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    pub dir: PathBuf,
    pub mode: WalMode,
    /// A segment larger than this is closed and a new one started.
    pub segment_bytes: u64,
}

/// Counters, readable while the log runs.
#[derive(Debug, Default)]
pub struct WalStats {
    pub records: AtomicU64,
    pub fsyncs: AtomicU64,
    pub bytes: AtomicU64,
}

struct Job {
    op: Op,
    reply: mpsc::SyncSender<Result<u64, String>>,
}

/// The log's writer. Dropping it finishes the queued appends and stops its thread.
pub struct Wal {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<WalStats>,
}

impl Wal {
    /// Starts a new segment whose first entry will have `next_index`, in `term`.
    pub fn open(config: WalConfig, next_index: u64, term: u64) -> Result<Wal, String> {
        let stats = Arc::new(WalStats::default());
        let mut writer = SegmentWriter::create(&config, next_index)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("facedb-wal".into())
            .spawn(move || {
                let mut next_index = next_index;
                let mut failed: Option<String> = None;
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    batch.extend(queue.try_iter());
                    let mut buffer = Vec::new();
                    let mut replies = Vec::with_capacity(batch.len());
                    for job in batch {
                        if let Some(error) = &failed {
                            let _ = job.reply.send(Err(error.clone()));
                            continue;
                        }
                        match codec::encode(&Entry { index: next_index, term, op: job.op }) {
                            Ok(payload) => {
                                push_record(&mut buffer, &payload);
                                replies.push((job.reply, next_index));
                                next_index += 1;
                            }
                            Err(e) => {
                                let _ = job.reply.send(Err(e));
                            }
                        }
                    }
                    if replies.is_empty() {
                        continue;
                    }
                    let written = writer.write(&buffer, &thread_stats).and_then(|()| {
                        if writer.len > config.segment_bytes {
                            writer = SegmentWriter::create(&config, next_index)?;
                        }
                        Ok(())
                    });
                    if let Err(e) = written {
                        tracing::error!("write-ahead log: {e}; refusing further writes");
                        failed = Some(e);
                    }
                    if failed.is_none() {
                        thread_stats.records.fetch_add(replies.len() as u64, Ordering::Relaxed);
                    }
                    for (reply, index) in replies {
                        let _ = reply.send(match &failed {
                            Some(e) => Err(e.clone()),
                            None => Ok(index),
                        });
                    }
                }
            })
            .map_err(|e| format!("cannot start the log writer thread: {e}"))?;
        Ok(Wal { jobs: Some(jobs), thread: Some(thread), stats })
    }

    /// Logs `op` and returns its index once it is written (and synced, in `fsync` mode).
    pub fn append(&self, op: Op) -> Result<u64, String> {
        let (reply, answer) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or("the write-ahead log is closed")?;
        jobs.send(Job { op, reply }).map_err(|_| "the write-ahead log writer has stopped".to_owned())?;
        answer.recv().map_err(|_| "the write-ahead log writer has stopped".to_owned())?
    }

    pub fn stats(&self) -> &WalStats {
        &self.stats
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The open segment.
struct SegmentWriter {
    file: Option<File>,
    mode: WalMode,
    len: u64,
}

impl SegmentWriter {
    fn create(config: &WalConfig, first_index: u64) -> Result<SegmentWriter, String> {
        if config.mode == WalMode::None {
            return Ok(SegmentWriter { file: None, mode: config.mode, len: 0 });
        }
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| format!("cannot create the log directory {}: {e}", config.dir.display()))?;
        let path = config.dir.join(file_name(first_index));
        // A segment of this name with no entry in it (rotation creates the next segment before
        // its first record) may be replaced; one with entries never is.
        if path.exists() {
            let holds_entries = scan(&path).map_or(true, |read| !read.entries.is_empty());
            if holds_entries {
                return Err(format!("{}: exists and holds log entries; refusing to overwrite it", path.display()));
            }
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| format!("cannot create log segment {}: {e}", path.display()))?;
        file.write_all(&header(first_index))
            .map_err(|e| format!("{}: cannot write the header: {e}", path.display()))?;
        if config.mode == WalMode::Fsync {
            // The segment and its directory entry must be on disk before any record in it is
            // acknowledged.
            file.sync_all().map_err(|e| format!("{}: fsync: {e}", path.display()))?;
            sync_dir(&config.dir)?;
        }
        Ok(SegmentWriter { file: Some(file), mode: config.mode, len: header(first_index).len() as u64 })
    }

    fn write(&mut self, buffer: &[u8], stats: &WalStats) -> Result<(), String> {
        let Some(file) = &mut self.file else { return Ok(()) };
        file.write_all(buffer).map_err(|e| format!("cannot append to the log: {e}"))?;
        if self.mode == WalMode::Fsync {
            // The one fsync that every record of this round waits for.
            file.sync_data().map_err(|e| format!("cannot fsync the log: {e}"))?;
            stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.len += buffer.len() as u64;
        stats.bytes.fetch_add(buffer.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Makes a directory's entries (a new or renamed file) durable.
pub fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("cannot fsync directory {}: {e}", dir.display()))
}
