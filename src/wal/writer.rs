//! Appending to the log, with group commit, and applying what was logged.
//!
//! One thread owns the open segment. A caller [`submit`](Wal::submit)s an encoded operation
//! together with the closure that applies it to memory, and waits on the returned [`Waiter`].
//! The thread takes every job queued at that moment, gives the operations consecutive indices,
//! writes their records with one `write`, and in `fsync` mode syncs the file once: concurrent
//! writers share one fsync. Only then does it run the apply closures, in index order, and
//! answer. So memory changes in log order, and no reader sees a write before it is durable
//! (in `fsync` mode) or written (in `write` mode). While the thread syncs, new jobs queue up for
//! the next round. A segment larger than the configured size is closed and a new one started,
//! named by its first index (file and directory fsynced in `fsync` mode).
//!
//! A [`barrier`](Wal::barrier) runs a closure on the thread between two rounds, when every
//! earlier operation is applied and no later one is: the consistent point a snapshot is taken
//! at.
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
use crate::wal::{codec, Op, WalMode};

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

/// Applies a logged operation to memory; gets the entry's index.
pub type Apply = Box<dyn FnOnce(u64) + Send>;

type Reply = mpsc::SyncSender<Result<u64, String>>;

enum Job {
    Append { op: Vec<u8>, apply: Apply, reply: Reply },
    Barrier { rotate: bool, run: Apply, reply: Reply },
}

/// Waits for a submitted operation to be logged and applied.
#[must_use = "a write is acknowledged only once its waiter says so"]
pub struct Waiter(mpsc::Receiver<Result<u64, String>>);

impl Waiter {
    /// The entry's index once it is logged and applied.
    pub fn wait(self) -> Result<u64, String> {
        self.0.recv().map_err(|_| "the write-ahead log writer has stopped".to_owned())?
    }
}

/// The log's writer. Dropping it finishes the queued jobs and stops its thread.
pub struct Wal {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<WalStats>,
    mode: WalMode,
}

impl Wal {
    /// Starts a new segment whose first entry will have `next_index`, in `term`.
    pub fn open(config: WalConfig, next_index: u64, term: u64) -> Result<Wal, String> {
        let stats = Arc::new(WalStats::default());
        stats.last_index.store(next_index.saturating_sub(1), Ordering::Relaxed);
        let writer = SegmentWriter::create(&config, next_index)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let mode = config.mode;
        let mut log = LogThread { config, writer, term, next_index, failed: None, stats: stats.clone() };
        let thread = std::thread::Builder::new()
            .name("facedb-wal".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut round = Vec::new();
                    for job in std::iter::once(first).chain(queue.try_iter()) {
                        match job {
                            Job::Append { op, apply, reply } => round.push((op, apply, reply)),
                            Job::Barrier { rotate, run, reply } => {
                                log.commit(std::mem::take(&mut round));
                                log.barrier(rotate, run, reply);
                            }
                        }
                    }
                    log.commit(round);
                }
            })
            .map_err(|e| format!("cannot start the log writer thread: {e}"))?;
        Ok(Wal { jobs: Some(jobs), thread: Some(thread), stats, mode })
    }

    /// Queues an encoded operation (see [`codec::encode_op`]) and the closure that applies it
    /// once it is logged. Operations are logged and applied in the order they are submitted.
    pub fn submit(&self, op: Vec<u8>, apply: Apply) -> Waiter {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Append { op, apply, reply });
        Waiter(answer)
    }

    /// Runs `run` on the log thread once everything submitted before is logged and applied,
    /// before anything submitted after; it gets the last index. With `rotate`, a segment that
    /// holds entries is closed first, so the next entry starts a new segment.
    pub fn barrier(&self, rotate: bool, run: Apply) -> Waiter {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Barrier { rotate, run, reply });
        Waiter(answer)
    }

    fn send(&self, job: Job) {
        // A send fails only once the thread is gone; the waiter then reports it.
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
    }

    /// Logs `op` with nothing to apply and returns its index once it is written.
    pub fn append(&self, op: Op) -> Result<u64, String> {
        self.submit(codec::encode_op(&op)?, Box::new(|_| {})).wait()
    }

    pub fn stats(&self) -> &WalStats {
        &self.stats
    }

    pub fn mode(&self) -> WalMode {
        self.mode
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

/// The state of the log thread.
struct LogThread {
    config: WalConfig,
    writer: SegmentWriter,
    term: u64,
    next_index: u64,
    failed: Option<String>,
    stats: Arc<WalStats>,
}

impl LogThread {
    /// Logs a round of operations with one write (and one fsync), then applies and answers them.
    fn commit(&mut self, round: Vec<(Vec<u8>, Apply, Reply)>) {
        if round.is_empty() {
            return;
        }
        if let Some(error) = &self.failed {
            for (_, _, reply) in round {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
        let first = self.next_index;
        let mut buffer = Vec::with_capacity(round.iter().map(|(op, _, _)| op.len() + 24).sum());
        for (offset, (op, _, _)) in round.iter().enumerate() {
            push_record(&mut buffer, &[&codec::stamp(first + offset as u64, self.term), op]);
        }
        let last = first + round.len() as u64 - 1;
        let written = self.writer.write(&buffer, &self.stats).and_then(|()| {
            if self.writer.len > self.config.segment_bytes {
                self.writer = SegmentWriter::create(&self.config, last + 1)?;
            }
            Ok(())
        });
        if let Err(e) = written {
            tracing::error!("write-ahead log: {e}; refusing further writes");
            for (_, _, reply) in round {
                let _ = reply.send(Err(e.clone()));
            }
            self.failed = Some(e);
            return;
        }
        self.next_index = last + 1;
        self.stats.records.fetch_add(round.len() as u64, Ordering::Relaxed);
        self.stats.last_index.store(last, Ordering::Relaxed);
        for (offset, (_, apply, reply)) in round.into_iter().enumerate() {
            let index = first + offset as u64;
            apply(index);
            let _ = reply.send(Ok(index));
        }
    }

    fn barrier(&mut self, rotate: bool, run: Apply, reply: Reply) {
        if let Some(error) = &self.failed {
            let _ = reply.send(Err(error.clone()));
            return;
        }
        if rotate && self.writer.entries > 0 {
            match SegmentWriter::create(&self.config, self.next_index) {
                Ok(writer) => self.writer = writer,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let last = self.next_index - 1;
        run(last);
        let _ = reply.send(Ok(last));
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
    fn create(config: &WalConfig, first_index: u64) -> Result<SegmentWriter, String> {
        if config.mode == WalMode::None {
            return Ok(SegmentWriter { file: None, mode: config.mode, len: 0, entries: 0 });
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
        Ok(SegmentWriter { file: Some(file), mode: config.mode, len: header(first_index).len() as u64, entries: 0 })
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
        self.entries += 1;
        stats.bytes.fetch_add(buffer.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Makes a directory's entries (a new or renamed file) durable.
pub fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("cannot fsync directory {}: {e}", dir.display()))
}
