//! The commit loop: the one thread that logs writes and applies them.
//!
//! A write comes checked ([`Engine::check`]) with its op and the op's bytes. The thread takes
//! every write queued at that moment, appends them to the log with one write and, in `fsync`
//! mode, one fsync (concurrent writers share it), then applies them with
//! [`Engine::apply`] in log order and answers each. So memory changes in log order, and no
//! reader sees a write before it is durable (in `fsync` mode) or written (in `write` mode).
//! While the thread syncs, new writes queue up for the next round.
//!
//! A checkpoint runs between two rounds, when every entry logged is applied and no later one:
//! it starts a new log segment and takes the galleries' chunk lists, the image a snapshot writes.
//!
//! After the log fails, or an apply fails or panics (a write the engine accepted but cannot
//! apply: a bug), every later write is refused with the first failure: what is on disk, or in
//! memory, is no longer known to match the acknowledged writes. Reads go on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use super::Error;
use crate::engine::{Applied, Engine, GalleryImage, Op};
use crate::wal::writer::{Wal, WalStats};
use crate::wal::WalMode;

type Reply<T> = mpsc::SyncSender<Result<T, Error>>;

enum Job {
    Write { op: Op, payload: Vec<u8>, reply: Reply<Applied> },
    Checkpoint { reply: Reply<(u64, Vec<GalleryImage>)> },
}

/// Waits for a queued write to be logged and applied.
#[must_use = "a write is acknowledged only once its waiter says so"]
pub struct Waiter<T>(mpsc::Receiver<Result<T, Error>>);

impl<T> Waiter<T> {
    pub fn wait(self) -> Result<T, Error> {
        self.0.recv().map_err(|_| Error::Stopped("the commit loop has stopped".to_owned()))?
    }
}

/// The commit loop's handle. Dropping it finishes the queued writes and stops the thread.
pub struct Committer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<WalStats>,
    mode: WalMode,
}

impl Committer {
    /// Starts the loop over `wal`, applying to `engine`.
    pub fn start(engine: Arc<Engine>, wal: Wal) -> Result<Committer, Error> {
        let (stats, mode) = (wal.stats().clone(), wal.mode());
        let (jobs, queue) = mpsc::channel::<Job>();
        let mut state = Loop { engine, wal, failed: None };
        let thread = std::thread::Builder::new()
            .name("facedb-commit".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut round = Vec::new();
                    for job in std::iter::once(first).chain(queue.try_iter()) {
                        match job {
                            Job::Write { op, payload, reply } => round.push((op, payload, reply)),
                            Job::Checkpoint { reply } => {
                                state.commit(std::mem::take(&mut round));
                                let _ = reply.send(state.checkpoint());
                            }
                        }
                    }
                    state.commit(round);
                }
            })
            .map_err(|e| Error::Stopped(format!("cannot start the commit thread: {e}")))?;
        Ok(Committer { jobs: Some(jobs), thread: Some(thread), stats, mode })
    }

    /// Queues a checked write: `payload` is `op` encoded. Writes are logged and applied in the
    /// order they are queued.
    pub fn submit(&self, op: Op, payload: Vec<u8>) -> Waiter<Applied> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Write { op, payload, reply });
        Waiter(answer)
    }

    /// The index of the last entry applied and the galleries' images at that point; the next
    /// entry starts a new log segment.
    pub fn checkpoint(&self) -> Waiter<(u64, Vec<GalleryImage>)> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Checkpoint { reply });
        Waiter(answer)
    }

    fn send(&self, job: Job) {
        // A send fails only once the thread is gone; the waiter then reports it.
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(job);
        }
    }

    pub fn stats(&self) -> &WalStats {
        &self.stats
    }

    pub fn mode(&self) -> WalMode {
        self.mode
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The state of the commit thread.
struct Loop {
    engine: Arc<Engine>,
    wal: Wal,
    /// The first failure; every later write is refused with it.
    failed: Option<Error>,
}

impl Loop {
    /// Logs a round of writes with one write (and one fsync), then applies and answers them.
    fn commit(&mut self, round: Vec<(Op, Vec<u8>, Reply<Applied>)>) {
        if round.is_empty() {
            return;
        }
        if let Some(error) = &self.failed {
            for (op, _, reply) in round {
                self.engine.abandon(&op);
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
        let payloads: Vec<&[u8]> = round.iter().map(|(_, payload, _)| payload.as_slice()).collect();
        let first = match self.wal.append(&payloads) {
            Ok(first) => first,
            Err(e) => {
                let error = Error::Log(Arc::new(e));
                tracing::error!("write-ahead log: {error}; refusing further writes");
                for (op, _, reply) in round {
                    self.engine.abandon(&op);
                    let _ = reply.send(Err(error.clone()));
                }
                self.failed = Some(error);
                return;
            }
        };
        for (offset, (op, _, reply)) in round.into_iter().enumerate() {
            let index = first + offset as u64;
            let answer = match &self.failed {
                Some(error) => Err(error.clone()),
                None => self.apply(index, op),
            };
            let _ = reply.send(answer);
        }
    }

    fn apply(&mut self, index: u64, op: Op) -> Result<Applied, Error> {
        let failure = match catch_unwind(AssertUnwindSafe(|| self.engine.apply(index, op))) {
            Ok(Ok(applied)) => return Ok(applied),
            Ok(Err(refused)) => format!("log entry {index} was accepted but cannot be applied: {refused}"),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                format!("applying log entry {index} panicked: {what}")
            }
        };
        tracing::error!("{failure}; refusing further writes (reads go on; a restart recovers from the log)");
        let error = Error::Stopped(failure);
        self.failed = Some(error.clone());
        Err(error)
    }

    fn checkpoint(&mut self) -> Result<(u64, Vec<GalleryImage>), Error> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        self.wal.rotate().map_err(|e| Error::Log(Arc::new(e)))?;
        Ok((self.wal.last_index(), self.engine.images()))
    }
}
