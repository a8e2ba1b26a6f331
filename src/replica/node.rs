//! The node loop: one thread per replica owns raft-rs's `RawNode` over the [`LogStore`].
//!
//! A write comes checked ([`Engine::check`]) with its op and the op's bytes, and is proposed.
//! The thread takes every job queued when it wakes, proposes the writes, then handles one
//! `Ready` (the raft-rs `on_ready` shape): apply the entries it says are committed, log the new
//! entries with one write and one fsync (concurrent writers share it: group commit) and the hard
//! state when it changed, advance, then apply and answer what that committed. A replica set of
//! one commits what it logs at once, so a write is logged, applied and answered in one pass, as
//! by a single server. Entries are applied through [`Engine::apply`] only, in log order; a write
//! proposed here is applied with its op as decoded by the request thread (no second decode).
//!
//! A checkpoint runs between two passes, when every entry committed is applied and no later one:
//! it starts a new log segment and takes the galleries' chunk lists, the image a snapshot writes,
//! with the applied index and its term.
//!
//! After the log fails, or an apply fails or panics (a write the engine accepted but cannot
//! apply: a bug), every later write is refused with the first failure and raft is not advanced
//! again: what is on disk, or in memory, is no longer known to match the acknowledged writes.
//! Reads go on.
//!
//! Messages to other replicas and snapshots from a leader come with replica sets of more than
//! one; a set of one has neither.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::eraftpb::{Entry, EntryType};
use raft::{RawNode, StateRole};

use super::storage::LogStore;
use super::{logger, Error};
use crate::engine::op;
use crate::engine::{Applied, Engine, GalleryImage, Op};
use crate::wal::writer::WalStats;
use crate::wal::WalMode;

type Reply<T> = mpsc::SyncSender<Result<T, Error>>;

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
}

impl NodeConfig {
    /// A replica set of one: replica 1, its only voter.
    pub fn single() -> NodeConfig {
        NodeConfig { id: 1, voters: vec![1], tick: Duration::from_millis(100), election_ticks: 10, heartbeat_ticks: 2 }
    }

    /// raft-rs's configuration: its unsafe defaults set explicitly (see the tests).
    fn raft(&self, applied: u64) -> Result<raft::Config, Error> {
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
        let applied = store.applied();
        let raw = RawNode::new(&config.raft(applied)?, store, &logger::logger(config.id))
            .map_err(|e| Error::Raft(format!("cannot start: {e}")))?;
        let mut state =
            Loop { raw, engine, proposals: VecDeque::new(), checkpoints: Vec::new(), applied, failed: None };
        if config.voters == [config.id] {
            state.raw.campaign().map_err(|e| Error::Raft(format!("cannot elect the only voter: {e}")))?;
            state.on_ready();
            if let Some(error) = state.failed.take() {
                return Err(error);
            }
            if state.raw.raft.state != StateRole::Leader || state.applied < state.raw.raft.raft_log.last_index() {
                return Err(Error::Raft("the only voter of its set did not become its leader".to_owned()));
            }
        }
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

/// A write proposed here, waiting for its entry.
struct Proposal {
    index: u64,
    term: u64,
    /// The op as the request thread decoded it (taken when it is applied).
    op: Option<Op>,
    reply: Reply<Applied>,
}

/// The state of the node thread.
struct Loop {
    raw: RawNode<LogStore>,
    engine: Arc<Engine>,
    /// Proposed here, by index.
    proposals: VecDeque<Proposal>,
    checkpoints: Vec<Reply<Checkpoint>>,
    /// The last entry applied.
    applied: u64,
    /// The first failure; every later write is refused with it.
    failed: Option<Error>,
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
                self.raw.tick();
                next_tick = Instant::now() + tick;
            }
            self.on_ready();
            self.run_checkpoints();
        }
    }

    fn take(&mut self, job: Job) {
        match job {
            Job::Write { op, payload, reply } => self.propose(op, payload, reply),
            Job::Checkpoint { reply } => {
                // After the writes queued before it.
                self.on_ready();
                self.checkpoints.push(reply);
                self.run_checkpoints();
            }
        }
    }

    fn propose(&mut self, op: Op, payload: Vec<u8>, reply: Reply<Applied>) {
        if let Some(error) = &self.failed {
            self.engine.abandon(&op);
            let _ = reply.send(Err(error.clone()));
            return;
        }
        match self.raw.propose(Vec::new(), payload) {
            Ok(()) => {
                let (index, term) = (self.raw.raft.raft_log.last_index(), self.raw.raft.term);
                self.proposals.push_back(Proposal { index, term, op: Some(op), reply });
            }
            Err(e) => {
                self.engine.abandon(&op);
                let _ = reply.send(Err(Error::Raft(format!("the write was not proposed: {e}"))));
            }
        }
    }

    /// Handles raft's `Ready`s until it has none (it hands out at most 64 MiB of committed
    /// entries in one).
    fn on_ready(&mut self) {
        while self.failed.is_none() && self.raw.has_ready() {
            self.handle_ready();
        }
    }

    fn handle_ready(&mut self) {
        let mut ready = self.raw.ready();
        if !ready.snapshot().is_empty() {
            self.fail(Error::Raft("a leader sent a snapshot; installing one comes with replicas".to_owned()));
            return;
        }
        self.apply(ready.take_committed_entries());
        let store = self.raw.mut_store();
        let persisted = match ready.hs() {
            Some(hs) => store.set_hard_state(hs),
            None => Ok(()),
        }
        .and_then(|()| store.append(ready.entries(), ready.must_sync()));
        if let Err(e) = persisted {
            self.fail(Error::Log(Arc::new(e)));
            return;
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        self.apply(light.take_committed_entries());
        self.raw.advance_apply();
        let applied = self.applied;
        self.raw.mut_store().applied_to(applied);
    }

    /// Applies committed entries in order, answering the writes proposed here.
    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            let index = entry.index;
            let mut proposal = self.proposal_of(&entry);
            let answer = if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                // A new leader's empty first entry (membership changes come with replicas).
                self.engine.skip(index);
                Ok(Applied::Done)
            } else if let Some(error) = &self.failed {
                Err(error.clone())
            } else {
                // Proposed here: the op the request thread decoded; else decoded from the entry.
                let op = match proposal.as_mut().and_then(|p| p.op.take()) {
                    Some(op) => Ok(op),
                    None => op::decode(&entry.data),
                };
                match op {
                    Ok(op) => self.apply_op(index, op),
                    Err(e) => {
                        let error = Error::Stopped(format!("log entry {index} cannot be decoded: {e}"));
                        self.fail(error.clone());
                        Err(error)
                    }
                }
            };
            self.applied = index;
            if let Some(proposal) = proposal {
                let _ = proposal.reply.send(answer);
            }
        }
    }

    /// The proposal `entry` answers, if it was proposed here: the same index and term. Proposals
    /// before it that it passed over were replaced by another leader's entries: not applied.
    fn proposal_of(&mut self, entry: &Entry) -> Option<Proposal> {
        while self.proposals.front().is_some_and(|p| p.index <= entry.index) {
            let proposal = self.proposals.pop_front()?;
            if proposal.index == entry.index && proposal.term == entry.term {
                return Some(proposal);
            }
            if let Some(op) = &proposal.op {
                self.engine.abandon(op);
            }
            let _ = proposal.reply.send(Err(Error::NotApplied(proposal.index)));
        }
        None
    }

    fn apply_op(&mut self, index: u64, op: Op) -> Result<Applied, Error> {
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
        let error = Error::Stopped(failure);
        self.fail(error.clone());
        Err(error)
    }

    /// Stops writes with `error`: every waiting write gets it.
    fn fail(&mut self, error: Error) {
        if self.failed.is_none() {
            tracing::error!("{error}; refusing further writes (reads go on; a restart recovers from the log)");
        }
        for proposal in self.proposals.drain(..) {
            if let Some(op) = &proposal.op {
                self.engine.abandon(op);
            }
            let _ = proposal.reply.send(Err(error.clone()));
        }
        self.failed.get_or_insert(error);
    }

    fn run_checkpoints(&mut self) {
        for reply in std::mem::take(&mut self.checkpoints) {
            let _ = reply.send(self.checkpoint());
        }
    }

    fn checkpoint(&mut self) -> Result<Checkpoint, Error> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let store = self.raw.mut_store();
        store.rotate().map_err(|e| Error::Log(Arc::new(e)))?;
        let index = self.applied;
        let term = store.term_of(index).ok_or_else(|| Error::Raft(format!("the term of entry {index} is unknown")))?;
        Ok(Checkpoint { index, term, images: self.engine.images() })
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
