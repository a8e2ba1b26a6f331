//! The node loop: one thread per replica drives its [`Replica`] (raft-rs's `RawNode` over the
//! [`LogStore`], and the engine).
//!
//! A write comes checked ([`Engine::check`]) with its op and the op's bytes, and is proposed.
//! The thread takes every job queued when it wakes, proposes the writes, then handles raft's
//! `Ready`: the new entries go to the log with one write and one fsync (concurrent writers share
//! it: group commit), and what is committed is applied and answered. A replica set of one commits
//! what it logs at once, so a write is logged, applied and answered in one pass, as by a single
//! server. The thread ticks Raft's clock every `tick`.
//!
//! A checkpoint runs between two passes, when every entry committed is applied and no later one:
//! it starts a new log segment and takes the galleries' chunk lists, the image a snapshot writes,
//! with the applied index and its term.
//!
//! Messages to other replicas and snapshots from a leader come with replica sets of more than
//! one (the transport); a set of one has neither.

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::member::{Replica, Reply};
use super::storage::LogStore;
use super::Error;
use crate::engine::{Applied, Engine, GalleryImage, Op};
use crate::wal::writer::WalStats;
use crate::wal::WalMode;

/// A replica's place in its set, and Raft's timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// This replica's id, from 1.
    pub id: u64,
    /// The set's voters (this replica among them).
    pub voters: Vec<u64>,
    /// Between two ticks of Raft's clock.
    pub tick: Duration,
    /// Ticks without a leader's word before a follower stands for election (randomised by
    /// raft-rs between this and twice this).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// raft-rs draws each election timeout between `election_ticks` and twice that; without
    /// jitter it is `election_ticks` exactly (the simulation, whose schedule of ticks is random
    /// and seeded itself).
    pub election_jitter: bool,
}

impl NodeConfig {
    /// A replica set of one: replica 1, its only voter.
    pub fn single() -> NodeConfig {
        NodeConfig {
            id: 1,
            voters: vec![1],
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            election_jitter: true,
        }
    }

    /// raft-rs's configuration: its unsafe defaults set explicitly (see the tests).
    pub(super) fn raft(&self, applied: u64) -> Result<raft::Config, Error> {
        let config = raft::Config {
            id: self.id,
            election_tick: self.election_ticks,
            heartbeat_tick: self.heartbeat_ticks,
            applied,
            // A leader that has not heard from a quorum for an election timeout steps down, and
            // a follower that heard from its leader refuses votes meanwhile.
            check_quorum: true,
            // A replica back from a partition asks whether it could win before it bumps the term.
            pre_vote: true,
            // Proposals queued meanwhile go to followers together...
            batch_append: true,
            // ...up to 4 MiB a message (0, raft-rs's default, is one entry a message).
            max_size_per_msg: 4 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_size: 256 << 20,
            max_committed_size_per_ready: 64 << 20,
            ..raft::Config::default()
        };
        let config = match self.election_jitter {
            true => config,
            false => raft::Config {
                min_election_tick: self.election_ticks,
                max_election_tick: self.election_ticks + 1,
                ..config
            },
        };
        config.validate().map_err(|e| Error::Raft(format!("configuration: {e}")))?;
        Ok(config)
    }
}

/// What a checkpoint returns: the applied index, its term, and the galleries at that point.
pub struct Checkpoint {
    pub index: u64,
    pub term: u64,
    pub images: Vec<GalleryImage>,
}

enum Job {
    Write { op: Op, payload: Vec<u8>, reply: Reply<Applied> },
    Checkpoint { reply: Reply<Checkpoint> },
}

/// Waits for a queued write to be committed and applied.
#[must_use = "a write is acknowledged only once its waiter says so"]
pub struct Waiter<T>(mpsc::Receiver<Result<T, Error>>);

impl<T> Waiter<T> {
    pub fn wait(self) -> Result<T, Error> {
        self.0.recv().map_err(|_| Error::Stopped("the replica's node loop has stopped".to_owned()))?
    }
}

/// The node loop's handle. Dropping it finishes the queued writes and stops the thread.
pub struct Node {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<WalStats>,
    mode: WalMode,
}

impl Node {
    /// Starts the loop over `store`, applying to `engine`. The set's only voter elects itself
    /// before this returns, and has applied its new term's first entry: writes are taken at once.
    pub fn start(engine: Arc<Engine>, store: LogStore, config: NodeConfig) -> Result<Node, Error> {
        let (stats, mode) = (store.stats().clone(), store.mode());
        let replica = Replica::new(engine, store, &config)?;
        let state = Loop { replica, checkpoints: Vec::new() };
        let (jobs, queue) = mpsc::channel::<Job>();
        let tick = config.tick;
        let thread = std::thread::Builder::new()
            .name("facedb-node".into())
            .spawn(move || state.run(queue, tick))
            .map_err(|e| Error::Stopped(format!("cannot start the node thread: {e}")))?;
        Ok(Node { jobs: Some(jobs), thread: Some(thread), stats, mode })
    }

    /// Proposes a checked write: `payload` is `op` encoded. Writes are logged and applied in the
    /// order they are queued.
    pub fn submit(&self, op: Op, payload: Vec<u8>) -> Waiter<Applied> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Job::Write { op, payload, reply });
        Waiter(answer)
    }

    /// The index of the last entry applied, its term, and the galleries' images at that point;
    /// the next entry starts a new log segment.
    pub fn checkpoint(&self) -> Waiter<Checkpoint> {
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

impl Drop for Node {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The state of the node thread.
struct Loop {
    replica: Replica,
    checkpoints: Vec<Reply<Checkpoint>>,
}

impl Loop {
    fn run(mut self, queue: mpsc::Receiver<Job>, tick: Duration) {
        let mut next_tick = Instant::now() + tick;
        loop {
            match queue.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
                Ok(first) => {
                    for job in std::iter::once(first).chain(queue.try_iter()) {
                        self.take(job);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_tick {
                self.replica.tick();
                next_tick = Instant::now() + tick;
            }
            self.on_ready();
            self.run_checkpoints();
        }
    }

    fn take(&mut self, job: Job) {
        match job {
            Job::Write { op, payload, reply } => self.replica.propose(op, payload, reply),
            Job::Checkpoint { reply } => {
                // After the writes queued before it.
                self.on_ready();
                self.checkpoints.push(reply);
                self.run_checkpoints();
            }
        }
    }

    fn on_ready(&mut self) {
        // A replica set of one has nobody to send to; the transport comes with larger sets.
        let messages = self.replica.on_ready();
        debug_assert!(messages.is_empty(), "a replica set of one sent {} messages", messages.len());
    }

    fn run_checkpoints(&mut self) {
        for reply in std::mem::take(&mut self.checkpoints) {
            let _ = reply.send(self.replica.checkpoint());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_unsafe_defaults_are_set_explicitly() {
        let config = NodeConfig::single().raft(7).unwrap();
        assert!(config.check_quorum && config.pre_vote && config.batch_append);
        assert_eq!(
            (config.max_size_per_msg, config.applied, config.election_tick, config.heartbeat_tick),
            (4 << 20, 7, 10, 2)
        );
        let bad = NodeConfig { heartbeat_ticks: 10, ..NodeConfig::single() };
        let error = bad.raft(0).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("election tick must be greater than heartbeat tick"), "{error}");
    }
}
